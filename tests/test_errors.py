"""Every bad argument raises an error that names the argument, what was expected and what came.

Each case is a ``pytest.raises(match=...)`` on the message a user would read.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import clearlstm

I, H, T, B = 3, 4, 5, 2


def lstm(**kwargs) -> clearlstm.LSTM:
    torch.manual_seed(0)
    return clearlstm.LSTM(I, H, **kwargs)


def cell(**kwargs) -> clearlstm.LSTMCell:
    torch.manual_seed(0)
    return clearlstm.LSTMCell(I, H, **kwargs)


def shape(*dims: int) -> str:
    """The regex for ``(d0, d1, ...)`` as the messages print shapes."""
    return re.escape(str(tuple(dims)))


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


# ---------------------------------------------------------------------------------------
# NaN and Inf

FINITE_HINT = r"\(NaN or Inf\); clean the data, or pass check_finite=False"


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("where", ["input", "h_0", "c_0"])
def test_lstm_non_finite_input_and_state(where, value) -> None:
    x, h0, c0 = torch.randn(T, B, I), torch.zeros(1, B, H), torch.zeros(1, B, H)
    {"input": x, "h_0": h0, "c_0": c0}[where].view(-1)[1] = value
    with pytest.raises(
        ValueError, match=rf"LSTM: {where} contains 1 non-finite value\(s\) {FINITE_HINT}"
    ):
        lstm()(x, (h0, c0))
    # with check_finite=False the values go through (a saturated gate can absorb an Inf)
    out, (_, c_n) = lstm(check_finite=False)(x, (h0, c0))
    if math.isnan(value):
        assert out.isnan().any() and c_n.isnan().any()


def test_lstm_non_finite_packed_input() -> None:
    x = torch.randn(T, B, I)
    x[0, 0, 0] = math.nan
    with pytest.raises(ValueError, match=r"LSTM: input contains 1 non-finite value\(s\)"):
        lstm()(pack_padded_sequence(x, [T, 2]))


@pytest.mark.parametrize("name", ["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l1"])
def test_lstm_non_finite_weights(name) -> None:
    module = lstm(num_layers=2)
    with torch.no_grad():
        getattr(module, name).view(-1)[0] = math.nan
    with pytest.raises(
        ValueError, match=rf"LSTM: parameter {name} contains 1 non-finite value\(s\) {FINITE_HINT}"
    ):
        module(torch.randn(T, B, I))
    module.check_finite = False
    out, _ = module(torch.randn(T, B, I))
    assert out.isnan().any()


@pytest.mark.parametrize("how", ["no_grad", "data"])
def test_lstm_weight_changed_in_place_after_a_good_call(how) -> None:
    """The check sees a weight that turned NaN after earlier calls passed, however it was set.

    Writes through ``param.data`` bump no version counter, so a cache keyed on versions
    would miss them.
    """
    module = lstm(proj_size=2)
    module(torch.randn(T, B, I))
    if how == "data":
        module.weight_hr_l0.data[0, 0] = math.inf
    else:
        with torch.no_grad():
            module.weight_hr_l0[0, 0] = math.inf
    with pytest.raises(ValueError, match=r"LSTM: parameter weight_hr_l0 contains 1 non-finite"):
        module(torch.randn(T, B, I))
    module.weight_hr_l0.data[0, 0] = 0.5  # repaired: calls work again
    out, _ = module(torch.randn(T, B, I))
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("where", ["input", "h", "c", "weight_ih", "bias_hh"])
def test_lstm_cell_non_finite(where) -> None:
    module = cell()
    x, h, c = torch.randn(B, I), torch.zeros(B, H), torch.zeros(B, H)
    module((x, (h, c))[0])  # a good call first
    name = f"parameter {where}" if where.startswith(("weight", "bias")) else where
    target = {"input": x, "h": h, "c": c}.get(where)
    if target is None:
        getattr(module, where).data.view(-1)[0] = math.nan
    else:
        target.view(-1)[0] = math.nan
    with pytest.raises(
        ValueError, match=rf"LSTMCell: {name} contains 1 non-finite value\(s\) {FINITE_HINT}"
    ):
        module(x, (h, c))
    module.check_finite = False
    h1, _ = module(x, (h, c))
    assert h1.isnan().any()


# ---------------------------------------------------------------------------------------
# lengths


@pytest.mark.parametrize(
    "lengths",
    [[0, 3], [T + 1, 2], torch.tensor([3, 0]), torch.tensor([-1, 2]), [T, T + 10]],
    ids=["zero", "longer-than-T", "zero-tensor", "negative", "far-too-long"],
)
def test_lengths_out_of_range(lengths) -> None:
    got = re.escape(str(torch.as_tensor(lengths).tolist()))
    with pytest.raises(
        ValueError,
        match=rf"LSTM: every length must be between 1 and the sequence length {T}; got {got}",
    ):
        lstm()(torch.randn(T, B, I), lengths=lengths)


@pytest.mark.parametrize(
    ("lengths", "received"),
    [([T], (1,)), ([T, T, T], (3,)), (torch.tensor([[T, T]]), (1, 2)), (torch.tensor(T), ())],
    ids=["too-few", "too-many", "2-D", "0-D"],
)
def test_lengths_with_wrong_count(lengths, received) -> None:
    with pytest.raises(
        ValueError,
        match=rf"LSTM: expected lengths with one entry per sequence \({B}\); "
        rf"got shape {shape(*received)}",
    ):
        lstm()(torch.randn(T, B, I), lengths=lengths)


@pytest.mark.parametrize(
    "lengths", [torch.tensor([5.0, 2.0]), torch.tensor([True, True])], ids=["float", "bool"]
)
def test_lengths_tensor_of_non_integers(lengths) -> None:
    with pytest.raises(
        TypeError, match=rf"LSTM: lengths must hold integers; got dtype {lengths.dtype}"
    ):
        lstm()(torch.randn(T, B, I), lengths=lengths)


@pytest.mark.parametrize(
    "lengths",
    [[5.0, 2.0], [True, 1], 5, "52", [[5, 2]]],
    ids=["float", "bool", "int", "str", "nested"],
)
def test_lengths_not_a_list_of_ints(lengths) -> None:
    with pytest.raises(
        TypeError,
        match=rf"LSTM: lengths must be a 1-D integer tensor or a list of ints; "
        rf"got {re.escape(repr(lengths))}",
    ):
        lstm()(torch.randn(T, B, I), lengths=lengths)


@pytest.mark.parametrize(
    "lengths",
    [
        [5, 2],
        (5, 2),
        torch.tensor([5, 2]),
        torch.tensor([5, 2], dtype=torch.int32),
        np.array([5, 2]),
    ],
)
def test_lengths_accepted_forms_agree(lengths) -> None:
    module, x = lstm(), torch.randn(T, B, I)
    want, _ = module(x, lengths=[5, 2])
    got, _ = module(x, lengths=lengths)
    assert torch.equal(got, want)
    assert not got[2:, 1].any()


def test_lengths_with_a_packed_sequence() -> None:
    packed = pack_padded_sequence(torch.randn(T, B, I), [T, 2])
    with pytest.raises(
        ValueError,
        match="LSTM: pass lengths= only with a padded tensor, not with a PackedSequence",
    ):
        lstm()(packed, lengths=[T, 2])


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


# ---------------------------------------------------------------------------------------
# Trace


@pytest.mark.parametrize(
    ("key", "shown"),
    [(2, "[2, 0]"), ((0, 1), "[0, 1]"), ((-3, 0), "[-3, 0]"), ((1, -2), "[1, -2]")],
)
def test_trace_index_out_of_range(key, shown) -> None:
    _, _, trace = lstm(num_layers=2)(torch.randn(T, B, I), trace=True)
    with pytest.raises(
        IndexError,
        match=rf"Trace: no record {re.escape(shown)}; this trace has 2 layer\(s\) and "
        rf"1 direction\(s\), indexed trace\[layer, direction\]",
    ):
        trace[key]
    assert trace[-2, -1] is trace[0, 0]


def test_trace_retention_of_a_missing_direction() -> None:
    _, _, trace = lstm()(torch.randn(T, B, I), trace=True)
    with pytest.raises(IndexError, match=r"Trace: no record \[-1, 1\]; this trace has 1 layer"):
        trace.retention(direction=1)
    with pytest.raises(IndexError, match=r"Trace: no record \[-1, 1\]"):
        trace.half_life(direction=1)


@pytest.mark.parametrize("start", [-1, T, T + 3])
def test_trace_retention_start_out_of_range(start) -> None:
    _, _, trace = lstm()(torch.randn(T, B, I), trace=True)
    with pytest.raises(
        ValueError, match=rf"Trace\.retention: start must be in \[0, {T - 1}\]; got {start}"
    ):
        trace.retention(start=start)


def test_finite_input_whose_sum_overflows_is_accepted() -> None:
    # The finite check first sums the tensor; an overflowing sum must not be taken for NaN/Inf.
    lstm = clearlstm.LSTM(1, 2)
    x = torch.full((4, 1, 1), 3.0e38)
    assert not torch.isfinite(x.sum())
    output, _ = lstm(x)
    assert torch.isfinite(output).all()


@pytest.mark.parametrize("backend", ["reference", "auto"])
def test_nan_in_padding_is_ignored_by_the_check_and_the_gradients(backend) -> None:
    # Padded steps are never read: NaN there is neither an error nor a NaN gradient.
    torch.manual_seed(0)
    lstm = clearlstm.LSTM(2, 3, backend=backend)
    x = torch.randn(5, 2, 2)
    x[3:, 1] = float("nan")
    output, (h_n, _) = lstm(x, lengths=[5, 3])
    (output.sum() + h_n.sum()).backward()
    assert torch.isfinite(output).all()
    for name, p in lstm.named_parameters():
        assert torch.isfinite(p.grad).all(), name
    x[1, 0, 0] = float("nan")  # a step that is read still raises
    with pytest.raises(ValueError, match="LSTM: input contains 1 non-finite value"):
        lstm(x, lengths=[5, 3])


@pytest.mark.parametrize("path", ["numba", "torch"])  # small tensors take numba, large torch
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_non_finite_count_on_both_paths(path, dtype, monkeypatch) -> None:
    from clearlstm.nn import checks

    if path == "torch":
        monkeypatch.setattr(checks, "_NUMBA_MAX_NUMEL", 0)
    gen = torch.Generator().manual_seed(1)
    for shape in [(1,), (7, 3), (4, 5, 6), (1000, 2, 3)]:
        x = torch.randn(shape, generator=gen, dtype=dtype)
        flat = x.view(-1)
        spots = torch.randperm(flat.numel(), generator=gen)[:3]
        for t in (x, x.transpose(0, -1)):  # contiguous and strided
            assert checks._count_nonfinite(t) == 0
        flat[spots] = torch.tensor([float("nan"), float("inf"), -float("inf")], dtype=dtype)[
            : len(spots)
        ]
        for t in (x, x.transpose(0, -1)):
            assert checks._count_nonfinite(t) == len(spots)
    huge = torch.full((5,), torch.finfo(dtype).max, dtype=dtype)  # the sum overflows
    assert checks._count_nonfinite(huge) == 0
    with pytest.raises(ValueError, match=r"LSTM: input contains 2 non-finite value\(s\)"):
        checks.check_finite("LSTM", [("input", torch.tensor([1.0, math.nan, math.inf]))])
