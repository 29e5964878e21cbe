"""Threads learnt from timings (:mod:`clearlstm.fused.chooser`): the chooser runs the faster of
one thread and several, and which one it picks never changes a bit of a forward-only call
(outputs, final states and every trace field, on the whole-sequence and per-step kernels,
padded or not, one and two layers and directions, float32 and float64), nor of one
sequence's training step (its gradient GEMMs on one thread or two)."""

from __future__ import annotations

import math

import numba
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import clearlstm
from clearlstm.fused import chooser, dispatch, gemm
from clearlstm.fused.chooser import PROBE_BUDGET, PROBE_EVERY, ThreadChooser

TWO_THREADS = numba.config.NUMBA_NUM_THREADS >= 2 and dispatch.numba_threads_usable()
needs_two_threads = pytest.mark.skipif(not TWO_THREADS, reason="needs two numba threads")


def run_calls(choice: ThreadChooser, key: tuple, seconds: dict[int, float], calls: int) -> list:
    """``calls`` calls of ``key``, each option taking ``seconds[threads]``; the picks."""
    picks = []
    for _ in range(calls):
        threads = choice.threads(key, 1, 2)
        choice.record(key, threads, seconds[threads])
        picks.append(threads)
    return picks


def test_chooser_measures_both_then_runs_the_faster_and_probes_the_other() -> None:
    picks = run_calls(ThreadChooser(), ("k",), {1: 2.0, 2: 1.0}, 4 + 3 * PROBE_EVERY)
    assert picks[:5] == [1, 1, 2, 2, 2], "each: a first call not counted, then timed twice"
    # ... unless its first timing was SECOND_LOOK times the other's (one thread, here)
    probes = [call for call, threads in enumerate(picks[4:], start=4) if threads == 1]
    assert probes == [PROBE_EVERY, 2 * PROBE_EVERY, 3 * PROBE_EVERY], "one probe per 64 calls"


def test_a_costly_probe_waits_longer() -> None:
    """Two threads 85x slower (a busy second core): probed again only once the calls since
    the last probe took PROBE_BUDGET times its extra cost."""
    picks = run_calls(ThreadChooser(), ("k",), {1: 1.0, 2: 85.0}, 6000)
    probes = [call for call, threads in enumerate(picks) if threads == 2]
    wait = math.ceil(PROBE_BUDGET * 84.0)
    assert probes == [2, 3, 3 + wait, 3 + 2 * wait]


def test_three_slow_calls_hand_over_to_the_other() -> None:
    """Two threads win while the machine is idle; once the other core is busy, three slow
    calls in a row (the fastest of the last three counts) hand over to one thread."""
    choice, key = ThreadChooser(), ("k",)
    assert run_calls(choice, key, {1: 2.0, 2: 1.0}, 10)[4:] == [2] * 6
    assert run_calls(choice, key, {1: 2.0, 2: 85.0}, 5) == [2, 2, 2, 1, 1]


class Fixed:
    """A chooser that always answers ``one`` or always ``many``, counting the calls it saw."""

    def __init__(self, many: bool) -> None:
        self.many, self.calls = many, 0

    def threads(self, key: tuple, one: int, many: int) -> int:
        self.calls += 1
        return many if self.many else one

    def record(self, key: tuple, threads: int, seconds: float) -> None:
        pass


@st.composite
def forward_case(draw):
    """A call whose default plan is learnt: the sequence kernel (hidden up to 128, more than 8
    inputs so it is not a small call) or the per-step GEMM (hidden above 256)."""
    hidden = draw(st.sampled_from([3, 16, 64, 80, 264]))
    steps = draw(st.integers(1, 12))
    batch = draw(st.integers(2, 9))
    lengths = None
    if draw(st.booleans()):  # padded, the longest at least once
        lengths = draw(st.lists(st.integers(1, steps), min_size=batch, max_size=batch))
        lengths[draw(st.integers(0, batch - 1))] = steps
    inputs = draw(st.sampled_from([9, 12]))
    assume(steps * batch * 4 * hidden * (inputs + hidden) > dispatch.SMALL_CALL_MACS)
    return {
        "shape": (steps, batch, inputs, hidden),
        "lengths": lengths,
        "layers": draw(st.integers(1, 2)),
        "bidirectional": draw(st.booleans()),
        "dtype": draw(st.sampled_from([torch.float32, torch.float64])),
        "state": draw(st.booleans()),
        "seed": draw(st.integers(0, 2**16)),
    }


def forward_values(case: dict, many: bool, monkeypatch) -> tuple[dict[str, bytes], int]:
    """Every value of an inference call and a trace call, as bytes, with the chooser answering
    one thread or several; and how many plans it made."""
    steps, batch, inputs, hidden = case["shape"]
    gen = torch.Generator().manual_seed(case["seed"])
    options = {"num_layers": case["layers"], "bidirectional": case["bidirectional"]}
    torch.manual_seed(case["seed"])
    lstm = clearlstm.LSTM(inputs, hidden, backend="fused", dtype=case["dtype"], **options)
    x = torch.randn(steps, batch, inputs, generator=gen, dtype=case["dtype"])
    lengths = case["lengths"]
    if lengths is not None:
        for b, n in enumerate(lengths):
            x[n:, b] = math.nan  # padding: never read
    hx = None
    if case["state"]:
        states = case["layers"] * (2 if case["bidirectional"] else 1)
        hx = tuple(torch.randn(states, batch, hidden, generator=gen, dtype=case["dtype"])
                   for _ in range(2))  # fmt: skip
    fixed = Fixed(many)
    monkeypatch.setattr(chooser, "thread_chooser", fixed)
    with torch.no_grad():
        out, (h_n, c_n) = lstm(x, hx, lengths=lengths)
        t_out, (t_h, t_c), trace = lstm(x, hx, lengths=lengths, trace=True)
    values = {"output": out, "h_n": h_n, "c_n": c_n, "trace output": t_out}
    values |= {"trace h_n": t_h, "trace c_n": t_c}
    for layer in range(trace.num_layers):
        for direction in range(trace.num_directions):
            for field, value in trace[layer, direction]._asdict().items():
                values[f"trace {layer},{direction} {field}"] = value
    return {k: v.numpy().tobytes() for k, v in values.items()}, fixed.calls


@needs_two_threads
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(case=forward_case())
def test_learnt_thread_counts_give_identical_bits(monkeypatch, case) -> None:
    """One thread or two (sequences split across numba threads, every GEMM on torch's threads,
    from any size): the same bytes, outputs and every trace field."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    monkeypatch.setattr(gemm, "LEARNT_GEMM_FLOPS", 0)
    try:
        one, planned = forward_values(case, False, monkeypatch)
        two, planned_two = forward_values(case, True, monkeypatch)
    finally:
        torch.set_num_threads(before)
    assert planned > 0 and planned == planned_two, "the first layer's plans are learnt"
    assert one.keys() == two.keys()
    for name, value in one.items():
        assert two[name] == value, f"{name} differs between one thread and two"


# (m, k, n): the forward GEMMs of the benchmark's traces (input products T * B x I x 4H, the
# per-step product B x H x 4H), the gradients of one sequence's training (T x I x 4H) and a
# few others.
GEMM_SHAPES = [
    (800, 16, 256),
    (3200, 64, 1024),
    (3200, 128, 2048),
    (16, 512, 2048),
    (1, 512, 2048),
    (64, 1024, 4096),
    (200, 8, 128),
    (1000, 32, 512),
    (1000, 8, 256),
    (300, 1, 128),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("kind", ["input", "step", "gradient"])
@pytest.mark.parametrize("shape", GEMM_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_forward_gemms_split_rows_and_columns_not_sums(kind, shape, dtype) -> None:
    """threads_keep_bits tells the truth (a learnt plan runs GEMMs on torch's threads only
    where it says so), and on this torch it says so at the benchmark's shapes: MKL and oneDNN
    split a GEMM's rows and columns across threads, never its sums. A failure of the second
    assertion on another build costs speed there, not bits."""
    m, k, n = shape
    gen = torch.Generator().manual_seed(3)
    a, w, b = (torch.randn(*s, generator=gen, dtype=dtype) for s in ((m, k), (n, k), (n,)))
    dz, h_prev = (torch.randn(m, s, generator=gen, dtype=dtype) for s in (n, n // 4))
    step = gemm.step_product(w, m)
    before, results = torch.get_num_threads(), []
    for count in (1, 2):
        torch.set_num_threads(count)
        try:
            if kind == "gradient":
                results.append(gemm.gradient_products(dz, a, w, h_prev, (True,) * 4))
            else:
                results.append((step(a) if kind == "step" else gemm.input_product(a, w, b)).clone())
        finally:
            torch.set_num_threads(before)
    if kind == "gradient":
        same = all(torch.equal(*pair) for pair in zip(*results, strict=True))
    else:
        same = torch.equal(*results)
    assert gemm.threads_keep_bits(kind, m, k, n, dtype, 2) == same
    assert same, f"{kind} GEMM {shape} {dtype}: 2 threads changed the bits on this torch"


@needs_two_threads
@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    steps=st.integers(2, 80),
    inputs=st.sampled_from([1, 9, 32]),
    hidden=st.sampled_from([16, 64, 96, 128]),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    seed=st.integers(0, 2**16),
)
def test_one_sequence_training_gives_the_same_bits_on_either_option(
    monkeypatch, steps, inputs, hidden, dtype, seed
) -> None:
    """One sequence's training is learnt (:func:`clearlstm.fused.dispatch.plan`): the chooser
    answering one thread or two (the split kernel, or the sequence kernel with its gradient
    GEMMs on two threads) gives the same output and gradient bytes."""
    torch.manual_seed(seed)
    lstm = clearlstm.LSTM(inputs, hidden, backend="fused", dtype=dtype)
    x = torch.randn(steps, 1, inputs, dtype=dtype, requires_grad=True)
    assume(not dispatch.small_call(x, lstm.weight_hh_l0, True))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    monkeypatch.setattr(gemm, "LEARNT_GEMM_FLOPS", 0)
    runs = []
    try:
        for many in (False, True):
            fixed = Fixed(many)
            monkeypatch.setattr(chooser, "thread_chooser", fixed)
            lstm.zero_grad(set_to_none=True)
            x.grad = None
            out, (h_n, c_n) = lstm(x)
            (out.square().sum() + h_n.sum() + c_n.sum()).backward()
            assert fixed.calls == 1, "one sequence's training is learnt"
            values = [out, h_n, c_n, x.grad] + [p.grad for p in lstm.parameters()]
            runs.append([v.detach().numpy().tobytes() for v in values])
    finally:
        torch.set_num_threads(before)
    assert runs[0] == runs[1]


@needs_two_threads
def test_training_threads_stay_the_size_rule(monkeypatch) -> None:
    """A call with a gradient and a batch never asks the chooser: its threads follow the sizes
    only."""
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    fixed = Fixed(True)
    monkeypatch.setattr(chooser, "thread_chooser", fixed)
    x, w_hh = torch.empty(100, 8, 16), torch.empty(256, 64)
    assert dispatch.plan(x, w_hh, True) == dispatch.Plan("sequence", 1)
    assert dispatch.plan(x, torch.empty(2048, 512), True) == dispatch.Plan("blas", 2)
    assert fixed.calls == 0
    learnt = dispatch.plan(x, w_hh, False, record=True)
    assert learnt.threads == 2 and learnt.learn is not None and fixed.calls == 1


def test_each_option_is_timed_twice_before_the_choice_settles() -> None:
    """One unlucky timing of the faster option (a preempted call) does not settle the choice
    for PROBE_EVERY calls: each option is timed twice first."""
    choice, key = ThreadChooser(), ("k",)
    times = iter([9.0, 2.0, 9.0, 3.0, 2.0, 1.0])  # one: warm, 2.0; two: warm, 3.0 (unlucky)
    picks = []
    for _ in range(6):
        threads = choice.threads(key, 1, 2)
        choice.record(key, threads, next(times))
        picks.append(threads)
    assert picks == [1, 1, 2, 2, 1, 2], "a second timing of each"
    assert [choice.threads(key, 1, 2) for _ in range(3)] == [2, 2, 2], "two's 1.0 counts"


def test_gradient_gemms_are_checked_only_up_to_a_size() -> None:
    """Beyond GRADIENT_CHECK_MAX dz elements the check allocates nothing and says no: a
    learnt one-sequence training step then keeps the size rule on either option."""
    rows = gemm.GRADIENT_CHECK_MAX // 512 + 1
    assert not gemm.threads_keep_bits("gradient", rows, 8, 512, torch.float32, 2)
    assert gemm.threads_keep_bits("gradient", rows, 8, 512, torch.float32, 1)
