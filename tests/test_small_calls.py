"""Tiny calls: one kernel call forward and one backward, and nothing else around them.

Below ``dispatch.SMALL_CALL_MACS`` multiply-adds the fixed costs are the call. A training step
runs ``kernels_small``'s forward and backward; an inference call of a one-layer LSTM (no
gradient, no trace) also skips the general path, its NaN/Inf check done inside the kernel.
These tests pin that the short ways are taken, that they give the general path's bits, and
that the check inside the kernel errs exactly like the general one.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch.testing import assert_close

import clearlstm
from clearlstm.core.records import LayerRecord
from clearlstm.fused import dispatch, kernels_small, small_layers
from clearlstm.fused.layer import run_layer
from clearlstm.nn import checks

TOL = {torch.float64: {"atol": 1e-10, "rtol": 1e-9}, torch.float32: {"atol": 5e-5, "rtol": 1e-4}}
FINITE_HINT = r"\(NaN or Inf\); clean the data, or pass check_finite=False"


def spy_on(monkeypatch, owner, name: str, calls: list) -> None:
    original = getattr(owner, name)

    def spy(*args, **kwargs):
        calls.append(name)
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, spy)


def test_tiny_training_step_is_two_kernels(monkeypatch) -> None:
    calls = []
    for name in ("forward_small", "backward_small"):
        spy_on(monkeypatch, kernels_small, name, calls)
    torch.manual_seed(0)
    lstm = clearlstm.LSTM(1, 1, backend="fused")
    x = torch.randn(5, 1, 1, requires_grad=True)
    lstm(x)[0].sum().backward()
    assert calls == ["forward_small", "backward_small"], "a (5, 1, 1, 1) step is two kernels"
    usual = run_layer(x, *torch.zeros(2, 1, 1), lstm.layer_weights(0), None, False, False,
                      "sequence").output  # fmt: skip
    assert_close(lstm(x)[0], usual, **TOL[torch.float32])


@pytest.mark.parametrize("hx", [False, True])
@pytest.mark.parametrize("lengths", [None, [4, 2]])
@pytest.mark.parametrize("backend", ["auto", "fused"])
def test_tiny_inference_is_one_kernel_call(monkeypatch, hx, lengths, backend) -> None:
    calls = []
    spy_on(monkeypatch, kernels_small, "infer_small_checked", calls)
    spy_on(monkeypatch, checks, "check_call_finite", calls)  # the torch-op check
    lstm = clearlstm.LSTM(2, 3, backend=backend)
    state = (torch.randn(1, 2, 3), torch.randn(1, 2, 3)) if hx else None
    with torch.no_grad():
        lstm(torch.randn(4, 2, 2), state, lengths=lengths)
    assert calls == ["infer_small_checked"]


def train_step(module, x, hx, lengths) -> list[torch.Tensor]:
    """Outputs and every gradient of one step (inputs, state, parameters)."""
    inputs = [x.clone().requires_grad_()]
    state = None if hx is None else tuple(h.clone().requires_grad_() for h in hx)
    inputs += [] if state is None else list(state)
    out, (h_n, c_n) = module(inputs[0], state, lengths=lengths)
    (out.sum() + 0.5 * h_n.sum() + 0.25 * c_n.sum()).backward()
    grads = [t.grad for t in inputs] + [p.grad for p in module.parameters()]
    return [out, h_n, c_n, *grads]


def test_which_calls_are_one_kernel_call() -> None:
    def small(steps, batch, inputs, hidden, training=False, dtype=torch.float32):
        x = torch.empty(steps, batch, inputs, dtype=dtype)
        return dispatch.small_call(x, torch.empty(4 * hidden, hidden, dtype=dtype), training)

    assert small(5, 1, 1, 1, training=True) and small(24, 1, 1, 32) and small(24, 4, 2, 16)
    assert not small(200, 1, 9, 32), "many inputs: BLAS does the input product better"
    assert small(24, 1, 8, 128) and not small(24, 1, 8, 129), "large layers: other kernels"
    assert small(255, 2, 1, 32) and not small(256, 2, 1, 32), "256 KiB: pooled buffers"
    assert not small(128, 2, 1, 32, dtype=torch.float64)
    assert small(100_000, 1, 1, 32), "one sequence, one thread anyway: its buffer pooled"
    assert not small(1000, 1, dispatch.SMALL_LONG_CALL_INPUTS + 1, 32)
    assert not small(1000, 1, 1, dispatch.SMALL_LONG_CALL_MAX_HIDDEN), "four rows at a time"
    assert small(255, 1, 1, 32, training=True) and not small(256, 1, 1, 32, training=True)


def test_unbatched_tiny_inference_matches_batched() -> None:
    lstm = clearlstm.LSTM(2, 3)
    x = torch.randn(5, 2)
    with torch.no_grad():
        out, (h_n, c_n) = lstm(x)
        batched, (h_b, c_b) = lstm(x[:, None])
    assert out.shape == (5, 3) and h_n.shape == c_n.shape == (1, 3)
    assert torch.equal(out, batched[:, 0]) and torch.equal(h_n, h_b[:, 0])
    assert torch.equal(c_n, c_b[:, 0])


@pytest.mark.parametrize("value", [math.nan, math.inf])
@pytest.mark.parametrize(
    "where", ["input", "h_0", "c_0", "weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"]
)
def test_tiny_inference_errs_like_the_general_path(where, value) -> None:
    lstm = clearlstm.LSTM(2, 3)
    x, h0, c0 = torch.randn(4, 2, 2), torch.zeros(1, 2, 3), torch.zeros(1, 2, 3)
    with torch.no_grad():
        target = {"input": x, "h_0": h0, "c_0": c0}.get(where)
        if target is None:
            target = getattr(lstm, where)
            where = "parameter " + where
        target.view(-1)[1] = value
        with pytest.raises(ValueError, match=rf"LSTM: {where} contains 1 non-finite value\(s\) "):
            lstm(x, (h0, c0))
        lstm.check_finite = False  # then the values go through
        out, (_, c_n) = lstm(x, (h0, c0))
    if math.isnan(value):
        assert out.isnan().any() and c_n.isnan().any()


def test_tiny_inference_ignores_nan_in_padding(monkeypatch) -> None:
    calls = []
    spy_on(monkeypatch, checks, "check_call_finite", calls)  # the torch-op check
    lstm = clearlstm.LSTM(2, 3)
    x = torch.randn(5, 2, 2)
    x[3:, 1] = math.nan
    with torch.no_grad():
        output, _ = lstm(x, lengths=[5, 3])
        assert torch.isfinite(output).all()
        assert calls == [], "padding is not checked: the kernel found nothing to name"
        x[2, 1, 0] = math.nan  # a step that is read
        error = rf"LSTM: input contains 1 non-finite value\(s\) {FINITE_HINT}"
        with pytest.raises(ValueError, match=error):
            lstm(x, lengths=[5, 3])


def test_small_training_step_sees_a_weight_changed_before_the_backward() -> None:
    """The backward reuses the forward's arrays, yet a weight changed in place in between is
    an error, as in torch, not a silently wrong gradient."""
    lstm = clearlstm.LSTM(2, 3)
    output, _ = lstm(torch.randn(4, 2, 2))
    with torch.no_grad():
        lstm.weight_hh_l0.add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        output.sum().backward()


def test_long_single_sequence_is_one_kernel_call_over_a_pooled_buffer(monkeypatch) -> None:
    calls = []
    spy_on(monkeypatch, kernels_small, "infer_small_checked", calls)
    torch.manual_seed(4)
    lstm = clearlstm.LSTM(2, 32)
    reference = copy.deepcopy(lstm)
    reference.backend = "reference"
    x = torch.randn(600, 1, 2)  # 300 KiB of input products: from the pool
    hx = tuple(torch.randn(2, 1, 1, 32))
    with torch.no_grad():
        expected, (h_e, c_e) = reference(x, hx, lengths=[550])
        for _ in range(2):  # the second call reuses the pooled block
            out, (h_n, c_n) = lstm(x, hx, lengths=[550])
            for ours, theirs in ((out, expected), (h_n, h_e), (c_n, c_e)):
                assert_close(ours, theirs, **TOL[torch.float32])
    assert calls == ["infer_small_checked"] * 2


def test_long_single_sequence_trace_keeps_its_pooled_records() -> None:
    """Records of a long one-sequence trace come from the pool: each trace keeps its own
    while it lives, and they equal the reference path's."""
    torch.manual_seed(6)
    lstm = clearlstm.LSTM(1, 32, dtype=torch.float64)
    reference = copy.deepcopy(lstm)
    reference.backend = "reference"
    x = torch.randn(1100, 1, 1, dtype=torch.float64)  # 1.1 MB of gates: pooled
    with torch.no_grad():
        *_, expected = reference(x, trace=True)
        first = lstm(x, trace=True)[2]
        kept = first[0].forget_gate.clone()
        second = lstm(-x, trace=True)[2]  # other values, while the first trace lives
    assert torch.equal(first[0].forget_gate, kept), "the first trace's block was reused"
    assert not torch.equal(second[0].forget_gate, kept)
    for name, ours, theirs in zip(LayerRecord._fields, first[0], expected[0], strict=True):
        assert_close(ours, theirs, **TOL[torch.float64], msg=name)


def test_weight_views_follow_every_change_of_the_weights() -> None:
    """The kept NumPy views of small layers' weights never serve stale values: in-place
    updates show through them, and new tensors, shapes or strides are new keys."""
    torch.manual_seed(4)
    x = torch.randn(6, 2, 3)

    def check(lstm) -> None:
        reference = copy.deepcopy(lstm)
        reference.backend = "reference"
        with torch.no_grad():
            assert_close(lstm(x)[0], reference(x)[0], **TOL[torch.float32])

    lstm = clearlstm.LSTM(3, 5)
    check(lstm)
    with torch.no_grad():
        lstm.weight_hh_l0.mul_(-2.0)  # in place, as an optimizer step
    check(lstm)
    lstm.weight_ih_l0.data = torch.randn(20, 3)  # a new tensor of the same shape
    check(lstm)
    lstm.load_state_dict(clearlstm.LSTM(3, 5).state_dict())  # copied in place
    check(lstm)
    others = [clearlstm.LSTM(3, 5) for _ in range(2 * small_layers._WEIGHT_VIEWS_KEPT)]
    for other in others:  # more layers than views kept
        check(other)
    check(lstm)
    memory = torch.randn(100)
    lstm.weight_hh_l0.data = memory.view(20, 5)
    check(lstm)
    lstm.weight_hh_l0.data = memory.as_strided((20, 5), (1, 20))  # same address and shape
    check(lstm)
    assert not lstm.weight_hh_l0.is_contiguous()
    assert len(small_layers._WEIGHT_VIEWS) <= small_layers._WEIGHT_VIEWS_KEPT
