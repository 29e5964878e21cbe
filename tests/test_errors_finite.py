"""NaN and Inf in inputs, states or weights: an error naming where and how many, unless
``check_finite=False``; padded steps and overflowing sums are not taken for NaN/Inf.
"""

from __future__ import annotations

import math

import pytest
import torch
from error_helpers import B, H, I, T, cell, lstm
from torch.nn.utils.rnn import pack_padded_sequence

import clearlstm

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
