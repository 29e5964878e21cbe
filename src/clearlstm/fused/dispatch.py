"""Which fused kernel runs a call, on how many threads: :func:`plan` and what it learns.

``"sequence"`` (whole sequence, recurrent product fused; several sequences split across
threads), ``"split"`` (one sequence, its units split across threads; worth it only when each
thread has a core, which :class:`SplitChooser` learns from the calls' timings) or ``"blas"``
(a GEMM per step, once ``w_hh`` outgrows the caches). Tiny calls (:func:`small_call`) run
as whole layers in :mod:`clearlstm.kernels_small`. Threads follow
``torch.get_num_threads()``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NamedTuple

import numba
import torch
from torch import Tensor

from clearlstm.core.records import LayerWeights
from clearlstm.fused import pool

DTYPES = (torch.float32, torch.float64)
KERNELS = ("sequence", "split", "blas")
# Whole-sequence kernels (four sequences per pass over w_hh.T) up to hidden 128 at any
# batch and to 256 for a batch * hidden up to 8192; beyond, a GEMM per step on oneDNN's
# prepacked weights (gates split across threads) beats them, except that one sequence may
# split its units up to hidden 512 (the split chooser times both). Measured on 2 cores,
# T = 50-100, trace and training step, whole-sequence time against the GEMM per step,
# (batch, hidden): (64, 128) 0.80-0.95x, (16, 256) 0.64-0.81x, (32, 256) 0.86-0.96x,
# (64, 256) 1.09-1.16x, (8, 512) 1.09-1.38x, (4, 1024) 2.2-3.4x; one sequence at 512:
# split 0.68x (training) to 1.8x (trace).
SEQUENCE_MAX_HIDDEN = 128
SEQUENCE_WIDE_HIDDEN = 256
SEQUENCE_MAX_UNITS = 8192  # batch * hidden, up to SEQUENCE_WIDE_HIDDEN
SPLIT_MAX_HIDDEN = 512
# Fewer sequences than threads: split the units once w_hh.T (16 H^2 bytes) outgrows L1.
SPLIT_MIN_HIDDEN = 64
SPLIT_PROBE_EVERY = 32  # calls; see SplitChooser


class SplitChooser:
    """Learns, per batch and hidden size, whether splitting the units across threads pays.

    Whether it does depends on the machine's state as much as on the size: when the second
    core is shared (another process, or torch's idle OpenMP workers spinning ~10 ms after a
    parallel region) or far away (virtual CPUs on different dies), every step waits for the
    slower thread and one thread is faster. So both kernels are timed per step on real calls
    (each kernel's first call, which may compile or start threads, is not counted); the
    faster one runs, and every :data:`SPLIT_PROBE_EVERY` calls the other is timed again. An
    abandoned split call counts with the time it took, rerun included.
    """

    def __init__(self) -> None:
        self._seconds: dict[tuple, list[float]] = {}  # (batch, hidden, training, kernel) ->
        self._warm: set[tuple] = set()  # the last few seconds per step, newest last
        self._calls: dict[tuple, int] = {}

    def split(self, batch: int, hidden: int, training: bool = False) -> bool:
        """Whether the next call of this size should split the units. Training calls (timed
        forward and backward) are learnt apart from inference."""
        size = (batch, hidden, training)
        calls = self._calls.get(size, 0)
        self._calls[size] = calls + 1
        split = self._seconds.get((*size, "split"))
        one = self._seconds.get((*size, "sequence"))
        if split is None or one is None:  # measure split, then one thread
            return split is None
        faster = min(split) <= min(one)
        return faster != (calls % SPLIT_PROBE_EVERY == 0)  # now and then the other one

    def record(
        self, batch: int, hidden: int, training: bool, kernel: str, seconds: float, steps: int
    ) -> None:
        """One forward or backward pass of ``kernel`` took ``seconds`` for ``steps`` steps.

        The fastest of the last three counts (noise only ever adds time): one fast probe of the
        other kernel brings it back, and three slow calls in a row drop the kernel in use.
        """
        key = (batch, hidden, training, kernel)
        if key not in self._warm:
            self._warm.add(key)
            return
        recent = self._seconds.setdefault(key, [])
        recent.append(seconds / max(steps, 1))
        del recent[:-3]


split_chooser = SplitChooser()  # the process's; tests may swap it


SMALL_GEMM_FLOPS = 2**20  # below this a GEMM runs on one thread (2 win from ~1.6 MFLOP)
# Below this many multiply-adds a call runs as one kernel forward and one backward
# (kernels_small), input product and gradient GEMMs included: no tensor operations.
SMALL_CALL_MACS = 2**14
SMALL_CALL_INPUTS = 8  # see small_call
SMALL_CALL_MAX_HIDDEN = 128  # see small_call
SMALL_TRAINING_BYTES = 1 << 17  # of input products, see small_call
SMALL_LONG_CALL_INPUTS = 2  # see small_call


class Plan(NamedTuple):
    """How one call runs: ``kernel`` is ``"sequence"`` (fused recurrent product, batch split
    across threads), ``"split"`` (the same with the units split across threads, for fewer
    sequences than threads) or ``"blas"`` (a GEMM per step); ``threads`` for the numba
    kernels and the big GEMMs."""

    kernel: str
    threads: int


def set_numba_threads(threads: int) -> None:
    """``numba.set_num_threads``; the first call starts numba's OpenMP workers, with
    ``OMP_WAIT_POLICY=PASSIVE`` unless the user set a policy: idle workers then sleep at once
    instead of spinning for milliseconds on a core that torch's threads (a second OpenMP
    runtime in the process) need next. Both pools stay busy only while they compute."""
    if not _NUMBA_STARTED:
        policy = os.environ.get("OMP_WAIT_POLICY")
        if policy is None:
            os.environ["OMP_WAIT_POLICY"] = "PASSIVE"  # read once, when OpenMP loads
        try:
            numba.set_num_threads(threads)
        finally:
            if policy is None:
                del os.environ["OMP_WAIT_POLICY"]
        _NUMBA_STARTED.append(os.getpid())
    numba.set_num_threads(threads)


_NUMBA_STARTED: list[int] = []  # the process that started numba's OpenMP workers


def numba_threads_usable() -> bool:
    """False in a process forked after numba's OpenMP workers started: GNU OpenMP cannot run
    there (numba would terminate the process), so such a child computes on one thread."""
    return not _NUMBA_STARTED or _NUMBA_STARTED[0] == os.getpid()


def supports(x: Tensor, weights: LayerWeights) -> bool:
    """True when the fused kernels handle this call: CPU, float32/64, no projection."""
    return x.device.type == "cpu" and x.dtype in DTYPES and weights.w_hr is None


def plan(batch: int, hidden: int, training: bool = False) -> Plan:
    """Pick the kernel for the size, using at most torch's thread count."""
    threads = max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
    if not numba_threads_usable():
        threads = 1
    if hidden > SPLIT_MAX_HIDDEN:
        return Plan("blas", threads)
    split = batch < threads and hidden >= SPLIT_MIN_HIDDEN and hidden % threads == 0
    if split and split_chooser.split(batch, hidden, training):
        return Plan("split", threads)
    # split and not taken: the chooser times the sequence kernel against it
    wide = hidden <= SEQUENCE_WIDE_HIDDEN and batch * hidden <= SEQUENCE_MAX_UNITS
    if split or hidden <= SEQUENCE_MAX_HIDDEN or wide:
        return Plan("sequence", min(threads, batch))
    return Plan("blas", threads)


@contextmanager
def gemm_threads(flops: float, threads: int) -> Iterator[None]:
    """Run small GEMMs on one thread: waking a thread pool costs more than they take (and on
    a busy machine a parallel region can wait milliseconds for a descheduled thread)."""
    before = torch.get_num_threads()
    wanted = 1 if flops < SMALL_GEMM_FLOPS else max(1, min(threads, before))
    if wanted == before:
        yield
        return
    torch.set_num_threads(wanted)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def small_call(x: Tensor, w_hh: Tensor, training: bool = False) -> bool:
    """Whether a call of ``x (T, B, I)`` runs as one kernel call each way (kernels_small).

    Any tiny call does, and so does one up to ``hidden_size`` :data:`SMALL_CALL_MAX_HIDDEN`
    with few inputs whose buffers malloc recycles without page faults: the input product in
    numba then costs less than a BLAS call and the tensor plumbing around it, and threads
    would not pay yet. Measured, inference: (24, 1, 1, 32) 2.4x faster, (24, 4, 2, 16) 2.2x,
    (100, 1, 8, 128) 1.08x; training steps: (24, 1, 1, 32) 1.5x, (100, 1, 8, 64) 1.1x, but
    0.9x at 200 KB of input products, hence a lower bound. Inference (and the trace) of one
    sequence with one or two inputs below :data:`SPLIT_MIN_HIDDEN` (one thread either way)
    does at any length, its large buffers pooled: (1000, 1, 1, 32) 0.82-0.97x the time (with
    4 or 8 inputs 0.94-1.07x, so not there).
    """
    steps, batch, inputs = x.shape
    width, hidden = w_hh.shape
    if steps * batch * width * (inputs + hidden) <= SMALL_CALL_MACS:
        return True
    if hidden > SMALL_CALL_MAX_HIDDEN or inputs > SMALL_CALL_INPUTS:
        return False
    nbytes = steps * batch * width * x.element_size()
    if training:
        return nbytes < SMALL_TRAINING_BYTES
    if nbytes < pool.MIN_BYTES:
        return True
    one_thread = batch == 1 and hidden < SPLIT_MIN_HIDDEN
    return one_thread and inputs <= SMALL_LONG_CALL_INPUTS
