"""Every bad argument raises an error that names the argument, what was expected and what came.

Each case is a ``pytest.raises(match=...)`` on the message a user would read. This file: the
module's constructor arguments, and dtypes and devices that disagree. The inputs and states,
NaN/Inf, lengths and the trace have files of their own (``test_errors_*.py``).
"""

from __future__ import annotations

import math
import re

import pytest
import torch
from error_helpers import B, H, I, T, cell, lstm
from torch.nn.utils.rnn import pack_padded_sequence

import clearlstm

# ---------------------------------------------------------------------------------------
# constructor arguments


@pytest.mark.parametrize("name", ["input_size", "hidden_size", "num_layers"])
@pytest.mark.parametrize("value", [0, -1, 2.5, True, "4", None])
def test_lstm_sizes_must_be_positive_integers(name, value) -> None:
    kwargs = {"input_size": I, "hidden_size": H, "num_layers": 1, name: value}
    with pytest.raises(
        ValueError, match=rf"LSTM: {name} must be an integer >= 1; got {re.escape(repr(value))}"
    ):
        clearlstm.LSTM(**kwargs)


@pytest.mark.parametrize("value", [-1, 1.5, True])
def test_lstm_proj_size_must_be_a_non_negative_integer(value) -> None:
    with pytest.raises(
        ValueError, match=rf"LSTM: proj_size must be an integer >= 0; got {value!r}"
    ):
        clearlstm.LSTM(I, H, proj_size=value)


@pytest.mark.parametrize("value", [H, H + 1])
def test_lstm_proj_size_must_be_smaller_than_hidden_size(value) -> None:
    with pytest.raises(
        ValueError, match=rf"LSTM: proj_size must be smaller than hidden_size \({H}\); got {value}"
    ):
        clearlstm.LSTM(I, H, proj_size=value)


@pytest.mark.parametrize("value", [-0.1, 1.5, math.inf, math.nan])
def test_lstm_dropout_out_of_range(value) -> None:
    with pytest.raises(ValueError, match=rf"LSTM: dropout must be in \[0, 1\]; got {value}"):
        clearlstm.LSTM(I, H, num_layers=2, dropout=value)


@pytest.mark.parametrize("value", ["0.5", None, True, [0.5]])
def test_lstm_dropout_must_be_a_number(value) -> None:
    with pytest.raises(
        TypeError,
        match=rf"LSTM: dropout must be a number in \[0, 1\]; got {re.escape(repr(value))}",
    ):
        clearlstm.LSTM(I, H, num_layers=2, dropout=value)


def test_lstm_dropout_with_one_layer_warns() -> None:
    with pytest.warns(UserWarning, match="dropout applies between layers.*num_layers=1"):
        clearlstm.LSTM(I, H, dropout=0.5)


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool, torch.complex64])
def test_non_float_dtype(dtype) -> None:
    with pytest.raises(
        TypeError, match=rf"LSTM: dtype must be a floating-point dtype; got {dtype}"
    ):
        clearlstm.LSTM(I, H, dtype=dtype)
    with pytest.raises(
        TypeError, match=rf"LSTMCell: dtype must be a floating-point dtype; got {dtype}"
    ):
        clearlstm.LSTMCell(I, H, dtype=dtype)


@pytest.mark.parametrize("backend", ["cuda", "fast", "", None])
def test_unknown_backend(backend) -> None:
    with pytest.raises(
        ValueError, match=rf"LSTM: backend must be one of \(.*'reference'.*\); got {backend!r}"
    ):
        clearlstm.LSTM(I, H, backend=backend)


@pytest.mark.parametrize("name", ["input_size", "hidden_size"])
@pytest.mark.parametrize("value", [0, -3, 1.0, False])
def test_lstm_cell_sizes(name, value) -> None:
    kwargs = {"input_size": I, "hidden_size": H, name: value}
    with pytest.raises(
        ValueError, match=rf"LSTMCell: {name} must be an integer >= 1; got {value!r}"
    ):
        clearlstm.LSTMCell(**kwargs)


# ---------------------------------------------------------------------------------------
# dtypes and devices


def test_lstm_input_dtype_differs_from_weights() -> None:
    with pytest.raises(
        TypeError,
        match=r"LSTM: input has dtype torch.float64 but the dtype of the weights is "
        r"torch.float32; convert one of them \(e.g. module.to\(torch.float64\)\)",
    ):
        lstm()(torch.randn(T, B, I, dtype=torch.float64))


@pytest.mark.parametrize("bad", ["h_0", "c_0"])
def test_lstm_state_dtype_differs_from_input(bad) -> None:
    hx = [torch.zeros(1, B, H), torch.zeros(1, B, H)]
    hx[bad == "c_0"] = hx[bad == "c_0"].double()
    with pytest.raises(
        TypeError,
        match=rf"LSTM: {bad} has dtype torch.float64 but the dtype of input is torch.float32",
    ):
        lstm()(torch.randn(T, B, I), tuple(hx))


def test_lstm_packed_input_dtype_differs_from_weights() -> None:
    packed = pack_padded_sequence(torch.randn(T, B, I, dtype=torch.float64), [T, 3])
    with pytest.raises(TypeError, match=r"LSTM: input has dtype torch\.float64 but the dtype of"):
        lstm()(packed)


# Without a second real device, the "meta" device stands in for one: tensors there have a
# shape and dtype but no data, and the device check comes before any arithmetic.


def test_lstm_input_on_another_device_than_the_weights() -> None:
    with pytest.raises(
        ValueError,
        match=r"LSTM: input is on device cpu but the device of the weights is meta; "
        r"move them to the same device",
    ):
        clearlstm.LSTM(I, H, device="meta")(torch.randn(T, B, I))


@pytest.mark.parametrize("bad", ["h_0", "c_0"])
def test_lstm_state_on_another_device_than_the_input(bad) -> None:
    hx = [torch.zeros(1, B, H), torch.zeros(1, B, H)]
    hx[bad == "c_0"] = torch.zeros(1, B, H, device="meta")
    with pytest.raises(
        ValueError, match=rf"LSTM: {bad} is on device meta but the device of input is cpu"
    ):
        lstm()(torch.randn(T, B, I), tuple(hx))


def test_lstm_cell_dtype_and_device() -> None:
    with pytest.raises(TypeError, match=r"LSTMCell: input has dtype torch\.float64 but the dtype"):
        cell()(torch.randn(B, I, dtype=torch.float64))
    with pytest.raises(
        TypeError,
        match=r"LSTMCell: c has dtype torch\.float64 but the dtype of input is torch\.float32",
    ):
        cell()(torch.randn(B, I), (torch.zeros(B, H), torch.zeros(B, H, dtype=torch.float64)))
    with pytest.raises(ValueError, match="LSTMCell: input is on device cpu but the device of"):
        clearlstm.LSTMCell(I, H, device="meta")(torch.randn(B, I))
    with pytest.raises(ValueError, match="LSTMCell: h is on device meta but the device of input"):
        cell()(torch.randn(B, I), (torch.zeros(B, H, device="meta"), torch.zeros(B, H)))
