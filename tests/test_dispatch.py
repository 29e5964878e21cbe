"""The kernel choice (:func:`clearlstm.fused.dispatch.plan`), the split kernel's threads, the
GEMMs around the kernels, and a forked child: each route still equals the reference."""

from __future__ import annotations

import numba
import numpy as np
import pytest
import torch
from test_kernels import DTYPES, TOL, assert_same, make_layer, run_layer

import clearlstm
from clearlstm.fused import barrier, dispatch, gemm, step_kernels
from clearlstm.fused.layer import run_layer as fused_layer


def plan(batch: int, hidden: int, training: bool = False) -> dispatch.Plan:
    """The plan for a layer of this size with more inputs than a small call takes."""
    x = torch.empty(10, batch, dispatch.SMALL_CALL_INPUTS + 1)
    return dispatch.plan(x, torch.empty(4 * hidden, hidden), training)


def test_split_kernel_gives_up_when_its_partner_never_arrives() -> None:
    """A thread waiting at the step barrier for a partner that never runs abandons the call
    (the caller then reruns on one thread) instead of hanging the process."""
    from clearlstm.fused import kernels_split

    steps, hidden = 3, 4
    f32 = np.float32
    xw = np.zeros((steps, 1, 4 * hidden), f32)
    parts = np.zeros((2, hidden, 2 * hidden), f32)
    state = np.zeros((1, hidden), f32)
    out = np.zeros((steps, 1, hidden), f32)
    none = np.empty((0, 0, 0), f32)
    hbuf = np.zeros((2, hidden), f32)
    counters = barrier.new_counters(2, barrier.PATIENCE)
    lengths = np.full(1, steps, np.int64)
    kernels_split._forward_slice(
        xw, parts[0], state, lengths, False, out, state.copy(), state.copy(), none, none, none,
        False, False, hbuf, counters, 0, 2, 0, hidden // 2,
    )  # fmt: skip
    assert counters[2 * barrier.PAD] == 1


@pytest.fixture
def two_threads(monkeypatch):
    """torch at two threads."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_abandoned_split_call_is_rerun_on_one_thread(monkeypatch, two_threads) -> None:
    from clearlstm.fused import kernels_split

    torch.manual_seed(5)
    inputs = dispatch.SMALL_CALL_INPUTS + 1  # not one kernel call (kernels_small)
    lstm = clearlstm.LSTM(inputs, 64, kernel="split")
    x = torch.randn(20, 1, inputs)
    with torch.no_grad():
        expected = fused_layer(x, *torch.zeros(2, 1, 64), lstm.layer_weights(0), None, False,
                               False, "sequence").output  # fmt: skip
        calls = []
        monkeypatch.setattr(kernels_split, "forward_split", lambda *args: calls.append(1))
        assert torch.equal(lstm(x)[0], expected)
    assert calls, "the split kernel should have been tried"


def test_plan_keeps_whole_sequence_kernels_while_w_hh_fits_the_caches(monkeypatch) -> None:
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    if not dispatch.numba_threads_usable() or numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs two numba threads")
    hidden = (128, 256, 512)
    kernel = {(b, h): plan(b, h).kernel for b in (1, 2, 16, 32, 64, 256) for h in hidden}
    assert all(kernel[b, 128] == "sequence" for b in (2, 16, 256)), "hidden 128: any batch"
    assert kernel[32, 256] == "sequence" and kernel[64, 256] == "blas", "256: a few sequences"
    assert all(kernel[b, 512] == "blas" for b in (2, 16, 256)), "512: a GEMM per step"
    assert kernel[1, 512] in ("sequence", "split"), "one sequence: whole-sequence kernels"
    assert plan(1, 1024).kernel == "blas", "w_hh of 16 MiB: a GEMM per step"
    assert plan(4, 1024, training=True).kernel == "blas"


def test_default_threads_split_sequences_only_where_the_wait_is_amortised(monkeypatch) -> None:
    """At 2 threads a training call's whole-sequence kernel splits the batch only from
    SEQUENCE_PARALLEL_MACS recurrent multiply-adds per call; below, one thread (a parallel
    region waits for a descheduled thread on a busy machine). Sizes decide, not timings;
    forward-only calls are learnt (tests/test_threads.py)."""
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    if not dispatch.numba_threads_usable() or numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs two numba threads")
    inputs, hidden, batch = dispatch.SMALL_CALL_INPUTS + 1, 128, 8
    w_hh = torch.empty(4 * hidden, hidden)
    per_step = batch * 4 * hidden * hidden
    at = -(-dispatch.SEQUENCE_PARALLEL_MACS // per_step)  # the first length that splits
    below = dispatch.plan(torch.empty(at - 1, batch, inputs), w_hh, True)
    above = dispatch.plan(torch.empty(at, batch, inputs), w_hh, True)
    assert below == dispatch.Plan("sequence", 1)
    assert above == dispatch.Plan("sequence", 2)
    one = dispatch.plan(torch.empty(10 * at, 1, inputs), w_hh, True)
    assert one.learn is not None, "one sequence: sequence (1 thread) or split (2), learnt"
    assert one[:2] in (("sequence", 1), ("split", 2))


def test_small_gemms_run_on_one_thread() -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with gemm.gemm_threads(gemm.SMALL_GEMM_FLOPS - 1, 2):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        with gemm.gemm_threads(gemm.SMALL_GEMM_FLOPS, 2):
            assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("onednn", [True, False], ids=["oneDNN", "torch.mm"])
def test_blas_kernel_gemms_with_and_without_onednn(monkeypatch, onednn) -> None:
    """float32 GEMMs (input product, per-step products) go to oneDNN's linear when torch has
    it, else to torch.mm; either way the reference's results and gradients."""
    if onednn and not gemm.has_onednn_linear():
        pytest.skip("this torch has no oneDNN linear")
    monkeypatch.setattr(gemm, "has_onednn_linear", lambda: onednn)
    monkeypatch.setattr(gemm, "ONEDNN_MIN_FLOPS", 0)
    calls = []
    linear = torch.ops.mkldnn._linear_pointwise
    monkeypatch.setattr(
        torch.ops.mkldnn, "_linear_pointwise", lambda *a: calls.append(1) or linear(*a)
    )
    case = {"shape": (5, 3, 4, 8), "lengths": [5, 2, 4], "reverse": True, "bias": True}
    inputs = make_layer({**case, "scale": 1.0, "seed": 11}, torch.float32)
    ref = run_layer(inputs, True, "reference")
    ours = run_layer(inputs, True, "fused", "blas")
    assert_same(ref, ours, TOL[torch.float32])
    steps = case["shape"][0]
    assert len(calls) == (1 + 2 * steps if onednn else 0), "input product, each step both ways"


def test_step_kernels_split_a_large_batch_across_threads(monkeypatch) -> None:
    """Above ``PARALLEL_GATES_MIN`` gate values per step the blas kernel's gate loops run on
    two threads, each over part of the batch: the reference's results and gradients."""
    if numba.config.NUMBA_NUM_THREADS < 2 or not dispatch.numba_threads_usable():
        pytest.skip("needs two numba threads")
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    monkeypatch.setattr(step_kernels, "PARALLEL_GATES_MIN", 0)
    calls = []

    def spy(name):
        original = getattr(step_kernels, name)
        return lambda *args: calls.append(name) or original(*args)

    for name in ("_forward_gates_parallel", "_backward_gates_parallel"):
        monkeypatch.setattr(step_kernels, name, spy(name))
    case = {"shape": (4, 5, 3, 6), "lengths": [4, 1, 3, 4, 2], "reverse": False, "bias": True}
    for dtype in DTYPES.values():
        inputs = make_layer({**case, "scale": 1.0, "seed": 2}, dtype)
        ref = run_layer(inputs, False, "reference")
        assert_same(ref, run_layer(inputs, False, "fused", "blas"), TOL[dtype])
    assert set(calls) == {"_forward_gates_parallel", "_backward_gates_parallel"}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("hidden", [40, 64, 128])
@pytest.mark.parametrize("patience", [barrier.PATIENCE, 0])
def test_split_backward_gives_the_sequence_kernels_bits(dtype, reverse, hidden, patience):
    """The split backward, on two threads or abandoned (``patience`` 0: redone on one),
    against the one-thread sequence kernel: the same bits, so a choice between them on
    timings, or a thread losing its core, never changes a gradient."""
    from clearlstm.fused import kernels, kernels_split

    rng = np.random.default_rng(3)
    steps, batch = 9, 2
    width = 4 * hidden
    gates = rng.uniform(0.05, 0.95, (steps, batch, width)).astype(dtype)
    cs, grad_out = (rng.standard_normal((steps, batch, hidden)).astype(dtype) for _ in range(2))
    grad_hn, grad_cn, c0 = (rng.standard_normal((batch, hidden)).astype(dtype) for _ in range(3))
    w_hh = (rng.standard_normal((width, hidden)) * hidden**-0.5).astype(dtype)
    lengths = np.array([steps, 4], np.int64)
    args = (grad_out, grad_hn, grad_cn, gates, cs, c0, w_hh, lengths, reverse)
    results = []
    for split in (True, False):
        dz = np.full((steps, batch, width), np.nan, dtype)
        dh0, dc0 = np.full((batch, hidden), np.nan, dtype), np.full((batch, hidden), np.nan, dtype)
        if split:
            kernels_split.backward_split(*args, dz, dh0, dc0, 2, patience)
        else:
            kernels.backward_rows(*args, dz, dh0, dc0, 0, batch)
        results.append((dz, dh0, dc0))
    for a, b in zip(*results, strict=True):
        assert not np.isnan(a).any()
        assert np.array_equal(a, b)


FORKED_CHILD = """
import os, torch, clearlstm
torch.set_num_threads(2)
lstm, x = clearlstm.LSTM(8, 64), torch.randn(200, 1, 8)
with torch.no_grad():
    expected = lstm(x)[0]  # starts numba's OpenMP workers (split kernel) in the parent
    lstm(x)
pid = os.fork()
if pid == 0:
    with torch.no_grad():
        same = torch.allclose(lstm(x)[0], expected, atol=1e-6)
    torch.set_num_threads(1)  # as DataLoader workers do; torch's own threads cannot fork
    lstm(x)[0].sum().backward()
    os._exit(0 if same else 3)
print(os.waitpid(pid, 0)[1])
"""


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork")
def test_a_process_forked_after_the_threads_started_computes_on_one_thread() -> None:
    """GNU OpenMP cannot run in a forked child (numba would terminate it): the child takes
    one thread and gets the same numbers."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", FORKED_CHILD], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "0", f"child exit status {done.stdout!r}; {done.stderr}"
