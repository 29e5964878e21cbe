"""One sequence's calls may run on the split kernel (its units across two threads) when
timings say it pays (:func:`clearlstm.fused.dispatch.plan`): that is allowed only because it
gives the sequence kernel's bits on one thread, checked here at the sizes where it can be
chosen: outputs, final states, every record and every gradient, float32 and float64, padded
or not, both directions, with and without the record."""

from __future__ import annotations

import numba
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clearlstm.core.records import LayerWeights
from clearlstm.fused import chooser, dispatch
from clearlstm.fused.layer import run_layer as fused_layer

TWO_THREADS = numba.config.NUMBA_NUM_THREADS >= 2 and dispatch.numba_threads_usable()
needs_two_threads = pytest.mark.skipif(not TWO_THREADS, reason="needs two numba threads")


@st.composite
def one_sequence(draw):
    steps = draw(st.integers(1, 300))
    batch = draw(st.sampled_from([1, 1, 1, 2, 5]))
    lengths = None
    if draw(st.booleans()):
        lengths = draw(st.lists(st.integers(1, steps), min_size=batch, max_size=batch))
    return {
        "steps": steps,
        "batch": batch,
        "inputs": draw(st.sampled_from([9, 32])),
        "hidden": draw(st.sampled_from([64, 96, 128, 256])),
        "dtype": draw(st.sampled_from([torch.float32, torch.float64])),
        "lengths": lengths,
        "reverse": draw(st.booleans()),
        "record": draw(st.booleans()),
        "scale": draw(st.sampled_from([0.1, 0.5])),
        "seed": draw(st.integers(0, 2**16)),
    }


def layer(case: dict):
    """``x, h0, c0, weights, lengths`` for one layer-direction."""
    gen = torch.Generator().manual_seed(case["seed"])
    steps, batch, inputs, hidden = (case[k] for k in ("steps", "batch", "inputs", "hidden"))
    width = 4 * hidden

    def rand(*shape, scale=case["scale"]):
        return scale * torch.randn(*shape, generator=gen, dtype=case["dtype"])

    weights = LayerWeights(rand(width, inputs), rand(width, hidden, scale=case["scale"] / 4),
                           rand(width), rand(width), None)  # fmt: skip
    x, h0, c0 = rand(steps, batch, inputs, scale=1.0), rand(batch, hidden), rand(batch, hidden)
    lengths = None if case["lengths"] is None else torch.tensor(case["lengths"])
    if lengths is not None:
        for b, n in enumerate(case["lengths"]):
            x[n:, b] = 0.0  # the caller zeroes padding
    return x, h0, c0, weights, lengths


def values(result) -> dict[str, torch.Tensor]:
    found = {"output": result.output, "h_n": result.h_n, "c_n": result.c_n}
    if result.record is not None:
        found |= {f"record.{k}": v.nan_to_num(7.0) for k, v in result.record._asdict().items()}
    return found


@needs_two_threads
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=one_sequence())
def test_split_forward_gives_the_sequence_kernels_bits(case) -> None:
    """``kernel="split"`` against ``kernel="sequence"``, no gradient: torch.equal throughout."""
    x, h0, c0, weights, lengths = layer(case)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with torch.no_grad():
            one, two = (
                fused_layer(x, h0, c0, weights, lengths, case["reverse"], case["record"], kernel)
                for kernel in ("sequence", "split")
            )
    finally:
        torch.set_num_threads(before)
    one, two = values(one), values(two)
    assert one.keys() == two.keys()
    for name, value in one.items():
        assert torch.equal(value, two[name]), name


class Fixed:
    """A chooser that always answers its first option or always its second."""

    def __init__(self, second: bool) -> None:
        self.second, self.options = second, []

    def threads(self, key: tuple, one, many):
        self.options.append((one, many))
        return many if self.second else one

    def record(self, key: tuple, option, seconds: float) -> None:
        pass


@needs_two_threads
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow,
          HealthCheck.function_scoped_fixture])  # fmt: skip
@given(case=one_sequence())
def test_learnt_split_gives_the_same_bits(monkeypatch, case) -> None:
    """The default plan of one sequence without a gradient learns between the sequence kernel
    on one thread and the split kernel on two (GEMMs on the learnt threads included): either
    answer, the same bytes."""
    case = {**case, "batch": 1, "lengths": None if case["lengths"] is None else [case["steps"]]}
    x, h0, c0, weights, lengths = layer(case)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    results = []
    try:
        for second in (False, True):
            fixed = Fixed(second)
            monkeypatch.setattr(chooser, "thread_chooser", fixed)
            with torch.no_grad():
                results.append(values(fused_layer(x, h0, c0, weights, lengths, case["reverse"],
                                                  case["record"])))  # fmt: skip
            assert fixed.options == [(("sequence", 1), ("split", 2))]
    finally:
        torch.set_num_threads(before)
    for name, value in results[0].items():
        assert torch.equal(value, results[1][name]), name


def gradients(case: dict, kernel: str) -> dict[str, torch.Tensor]:
    """Outputs and the gradients of every input of a training call on ``kernel``."""
    x, h0, c0, weights, lengths = layer(case)
    leaves = [x, h0, c0, weights.w_ih, weights.w_hh, weights.b_ih, weights.b_hh]
    for t in leaves:
        t.requires_grad_(True)
    result = fused_layer(x, h0, c0, weights, lengths, case["reverse"], case["record"], kernel)
    found = values(result)
    gen = torch.Generator().manual_seed(case["seed"] + 1)
    seeds = [torch.randn(v.shape, generator=gen, dtype=v.dtype) for v in found.values()]
    total = sum((v * g).sum() for v, g in zip(found.values(), seeds, strict=True))
    grads = torch.autograd.grad(total, leaves, allow_unused=True)
    names = ["x", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh"]
    return {k: v.detach() for k, v in found.items()} | {
        f"grad.{n}": g for n, g in zip(names, grads, strict=True) if g is not None
    }


@needs_two_threads
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=one_sequence())
def test_split_training_gives_the_sequence_kernels_bits(case) -> None:
    """``kernel="split"`` against ``kernel="sequence"`` with a gradient: the outputs and
    every gradient torch.equal (the split backward sums each unit as the sequence one)."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        one, two = (gradients(case, kernel) for kernel in ("sequence", "split"))
    finally:
        torch.set_num_threads(before)
    assert one.keys() == two.keys()
    for name, value in one.items():
        assert torch.equal(value, two[name]), name


@needs_two_threads
def test_split_is_learnt_only_for_one_sequence(monkeypatch) -> None:
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    fixed = Fixed(True)
    monkeypatch.setattr(chooser, "thread_chooser", fixed)

    def plan(batch, hidden, training=False):
        x = torch.empty(100, batch, 32)
        return dispatch.plan(x, torch.empty(4 * hidden, hidden), training)

    for hidden in (64, 128, 256, dispatch.SPLIT_MAX_HIDDEN):
        assert plan(1, hidden)[:2] == ("split", 2), hidden
        training = plan(1, hidden, training=True)
        split = hidden >= dispatch.SPLIT_TRAINING_MIN_HIDDEN
        assert training[:2] == ("split" if split else "sequence", 2), hidden
        assert training.learn != plan(1, hidden).learn, "training timed apart"
    assert plan(1, 32) == dispatch.Plan("sequence", 1), "w_hh fits L1: one thread"
    training = plan(1, 32, training=True)
    assert training[:2] == ("sequence", 2) and training.learn, "its GEMMs on two threads"
    assert plan(1, 66)[:2] == ("split", 2)
    assert plan(1, 65) == dispatch.Plan("sequence", 1), "odd: no split"
    assert plan(2, 128)[:2] == ("sequence", 2), "two sequences: one per thread"
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    assert plan(1, 128) == dispatch.Plan("sequence", 1), "torch on one thread"
