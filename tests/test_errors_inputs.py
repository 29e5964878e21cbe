"""Inputs and states of the wrong shape or type name what was expected and what came.

Each case is a ``pytest.raises(match=...)`` on the message a user would read: LSTM input,
LSTM initial state, LSTMCell input and state.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from error_helpers import B, H, I, T, cell, lstm, shape
from torch.nn.utils.rnn import pack_padded_sequence

# ---------------------------------------------------------------------------------------
# LSTM input


@pytest.mark.parametrize("dims", [(I,), (2, 3, 4, 5), ()])
def test_lstm_input_of_wrong_rank(dims) -> None:
    x = torch.randn(dims)
    with pytest.raises(
        ValueError,
        match=rf"LSTM: expected input of shape \(T, B, {I}\), batch-first \(B, T, {I}\) or "
        rf"unbatched \(T, {I}\); got a {len(dims)}-D tensor of shape {shape(*dims)}",
    ):
        lstm()(x)


@pytest.mark.parametrize("value", [[[1.0, 2.0, 3.0]], np.zeros((T, B, I)), None])
def test_lstm_input_must_be_a_tensor(value) -> None:
    with pytest.raises(TypeError, match=r"LSTM: input must be a torch\.Tensor; got"):
        lstm()(value)


@pytest.mark.parametrize(
    ("batch_first", "dims", "layout"),
    [
        (False, (T, B, I + 2), r"\(T, B, I\)"),
        (True, (B, T, I + 2), r"\(B, T, I\)"),
        (False, (T, I + 2), r"\(T, I\)"),
        (True, (T, I + 2), r"\(T, I\)"),
    ],
)
def test_lstm_input_with_wrong_feature_size(batch_first, dims, layout) -> None:
    with pytest.raises(
        ValueError,
        match=rf"LSTM: expected input with {I} features \(input_size\), laid out {layout}; "
        rf"got {I + 2} features in shape {shape(*dims)}",
    ):
        lstm(batch_first=batch_first)(torch.randn(dims))


def test_lstm_packed_input_with_wrong_feature_size() -> None:
    packed = pack_padded_sequence(torch.randn(T, B, I + 1), [T, 2])
    with pytest.raises(
        ValueError, match=rf"expected input with {I} features.*got {I + 1} features in shape"
    ):
        lstm()(packed)


@pytest.mark.parametrize(
    ("batch_first", "dims", "steps", "batch"),
    [
        (False, (0, B, I), 0, B),
        (False, (T, 0, I), T, 0),
        (True, (B, 0, I), 0, B),
        (True, (0, T, I), T, 0),
        (False, (0, I), 0, 1),
    ],
)
def test_lstm_empty_input(batch_first, dims, steps, batch) -> None:
    with pytest.raises(
        ValueError,
        match=rf"LSTM: input is empty: needs at least one step and one sequence; "
        rf"got {steps} step\(s\) and {batch} sequence\(s\)",
    ):
        lstm(batch_first=batch_first)(torch.randn(dims))


# ---------------------------------------------------------------------------------------
# LSTM initial state


@pytest.mark.parametrize(
    ("config", "h0_dims", "c0_dims", "bad", "expected"),
    [
        (dict(), (2, B, H), (1, B, H), "h_0", (1, B, H)),  # too many layers
        (dict(), (1, B + 1, H), (1, B, H), "h_0", (1, B, H)),  # wrong batch
        (dict(), (1, B, H), (1, B, H + 1), "c_0", (1, B, H)),  # wrong hidden size
        (dict(num_layers=2, bidirectional=True), (2, B, H), (4, B, H), "h_0", (4, B, H)),
        (dict(proj_size=2), (1, B, H), (1, B, H), "h_0", (1, B, 2)),  # h_0 is projected
        (dict(proj_size=2), (1, B, 2), (1, B, 2), "c_0", (1, B, H)),  # c_0 is not
        (dict(), (B, H), (B, H), "h_0", (1, B, H)),  # unbatched state, batched input
    ],
)
def test_lstm_initial_state_of_wrong_shape(config, h0_dims, c0_dims, bad, expected) -> None:
    dims = {"h_0": h0_dims, "c_0": c0_dims}[bad]
    with pytest.raises(
        ValueError,
        match=rf"LSTM: expected {bad} of shape {shape(*expected)} "
        rf"\(num_layers \* num_directions, batch, size\); got shape {shape(*dims)}",
    ):
        lstm(**config)(torch.randn(T, B, I), (torch.randn(h0_dims), torch.randn(c0_dims)))


@pytest.mark.parametrize(
    ("h0_dims", "c0_dims", "bad", "expected"),
    [
        ((1, 1, H), (1, H), "h_0", (1, H)),  # batched state, unbatched input
        ((1, H), (2, H), "c_0", (1, H)),
        ((H,), (1, H), "h_0", (1, H)),
    ],
)
def test_lstm_unbatched_initial_state_of_wrong_shape(h0_dims, c0_dims, bad, expected) -> None:
    dims = {"h_0": h0_dims, "c_0": c0_dims}[bad]
    with pytest.raises(
        ValueError,
        match=rf"LSTM: expected {bad} of shape {shape(*expected)} "
        rf"\(num_layers \* num_directions, size\) for unbatched input; got shape {shape(*dims)}",
    ):
        lstm()(torch.randn(T, I), (torch.randn(h0_dims), torch.randn(c0_dims)))


@pytest.mark.parametrize(
    ("hx", "received"),
    [
        (torch.zeros(1, B, H), "Tensor"),
        ((torch.zeros(1, B, H),), "tuple"),
        ((torch.zeros(1, B, H),) * 3, "tuple"),
        ({"h": 0}, "dict"),
    ],
)
def test_lstm_hx_must_be_a_pair(hx, received) -> None:
    with pytest.raises(
        TypeError, match=rf"LSTM: hx must be a tuple \(h_0, c_0\) of two tensors; got {received}"
    ):
        lstm()(torch.randn(T, B, I), hx)


@pytest.mark.parametrize("bad", ["h_0", "c_0"])
def test_lstm_state_entries_must_be_tensors(bad) -> None:
    hx = [torch.zeros(1, B, H), torch.zeros(1, B, H)]
    hx[bad == "c_0"] = [[0.0] * H] * B
    with pytest.raises(TypeError, match=rf"LSTM: {bad} must be a torch.Tensor; got list"):
        lstm()(torch.randn(T, B, I), tuple(hx))


# ---------------------------------------------------------------------------------------
# LSTMCell input and state


@pytest.mark.parametrize("dims", [(B, I + 1), (I - 1,), (2, B, I), ()])
def test_lstm_cell_input_shape(dims) -> None:
    with pytest.raises(
        ValueError,
        match=rf"LSTMCell: expected input of shape \(B, {I}\) or \({I},\); "
        rf"got shape {shape(*dims)}",
    ):
        cell()(torch.randn(dims))


def test_lstm_cell_input_must_be_a_tensor() -> None:
    with pytest.raises(TypeError, match=r"LSTMCell: input must be a torch\.Tensor; got list"):
        cell()([0.0] * I)


def test_lstm_cell_empty_batch() -> None:
    with pytest.raises(ValueError, match="LSTMCell: input is empty: got a batch of 0 sequences"):
        cell()(torch.randn(0, I))


@pytest.mark.parametrize(
    ("x_dims", "h_dims", "c_dims", "bad", "expected", "what"),
    [
        ((B, I), (B, H + 1), (B, H), "h", (B, H), r"\(batch, hidden_size\)"),
        ((B, I), (B, H), (B + 1, H), "c", (B, H), r"\(batch, hidden_size\)"),
        ((B, I), (H,), (H,), "h", (B, H), r"\(batch, hidden_size\)"),
        ((I,), (B, H), (B, H), "h", (H,), r"\(hidden_size,\) for unbatched input"),
        ((I,), (H,), (1, H), "c", (H,), r"\(hidden_size,\) for unbatched input"),
    ],
)
def test_lstm_cell_state_of_wrong_shape(x_dims, h_dims, c_dims, bad, expected, what) -> None:
    dims = {"h": h_dims, "c": c_dims}[bad]
    with pytest.raises(
        ValueError,
        match=rf"LSTMCell: expected {bad} of shape {shape(*expected)} {what}; "
        rf"got shape {shape(*dims)}",
    ):
        cell()(torch.randn(x_dims), (torch.zeros(h_dims), torch.zeros(c_dims)))


@pytest.mark.parametrize(
    ("hx", "received"), [(torch.zeros(B, H), "Tensor"), ((torch.zeros(B, H),), "tuple")]
)
def test_lstm_cell_hx_must_be_a_pair(hx, received) -> None:
    with pytest.raises(TypeError, match=rf"LSTMCell: hx must be a tuple \(h, c\); got {received}"):
        cell()(torch.randn(B, I), hx)


def test_lstm_cell_state_entries_must_be_tensors() -> None:
    with pytest.raises(TypeError, match=r"LSTMCell: c must be a torch\.Tensor; got float"):
        cell()(torch.randn(B, I), (torch.zeros(B, H), 0.0))
