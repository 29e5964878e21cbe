"""Which fused kernel runs a layer-direction, on how many threads: :func:`plan`, the one place
that decides it. The kernel follows the sizes and torch's thread count; so do a training
call's threads, except for one sequence (sequence kernel on one thread or split kernel on
two); a forward-only call's threads follow timings (:mod:`clearlstm.fused.chooser`), which
cannot change its bits. Same input, same bits.

``"small"`` (tiny calls: the whole layer forward and backward as one kernel call each,
:mod:`clearlstm.fused.kernels_small`), ``"sequence"`` (whole sequence, recurrent product
fused; several sequences split across threads), ``"blas"`` (a GEMM per step, once ``w_hh``
outgrows the caches) and ``"split"`` (one sequence, its units split across two threads). The
split kernel pays only while each thread has a core to itself (1.33x at (1000, 1, 32, 128)
on an idle machine); with the second core busy its barrier per step made it slower than one
thread at every size measured (2026-12, one sequence: (300, 1, 32, 128) 1.11x,
(1000, 1, 32, 128) 3.7x, (300, 1, 32, 64) ~700x the sequence kernel's time). Its forward and
backward give the sequence kernel's bits (each unit's sums in the same order), so ``"auto"``
lets timings choose it for one sequence (:func:`learnt_plan`; a training call is timed as a
whole, and on two threads runs its gradient GEMMs there too; below
:data:`SPLIT_TRAINING_MIN_HIDDEN` the second thread runs only those).
A training call splits several sequences across threads only when it is large enough to
amortise waking a second thread (:data:`SEQUENCE_PARALLEL_MACS`), so the default thread
count is never slower than one thread because of a busy core; a forward-only call (the
trace, inference on the fused kernels) splits them, and runs its GEMMs on torch's threads,
while timings show that it pays (:func:`learnt_plan`): each sequence's arithmetic, and the
GEMMs' sums, are the same on one thread and on several.

The LSTM variants (peepholes, coupled input-forget gate, cell clip; with layer norm, zoneout
or dropout :mod:`clearlstm.fused.kernels_general`) run on the whole-sequence kernels only
(:mod:`clearlstm.fused.kernels_variant`), at every size, their threads by the same rules:
:func:`variant_plan`.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import numba
import torch
from torch import Tensor

from clearlstm.fused import KERNELS, chooser, pool

# Whole-sequence kernels (four sequences per pass over w_hh.T) up to hidden 128 at any
# batch and to 256 for a batch * hidden up to 8192; beyond, a GEMM per step on oneDNN's
# prepacked weights (gates split across threads) beats them, except for one sequence up to
# hidden 512. Measured on 2 cores,
# T = 50-100, trace and training step, whole-sequence time against the GEMM per step,
# (batch, hidden): (64, 128) 0.80-0.95x, (16, 256) 0.64-0.81x, (32, 256) 0.86-0.96x,
# (64, 256) 1.09-1.16x, (8, 512) 1.09-1.38x, (4, 1024) 2.2-3.4x; one sequence at 512:
# split 0.68x (training) to 1.8x (trace).
SEQUENCE_MAX_HIDDEN = 128
SEQUENCE_WIDE_HIDDEN = 256
SEQUENCE_MAX_UNITS = 8192  # batch * hidden, up to SEQUENCE_WIDE_HIDDEN
SPLIT_MAX_HIDDEN = 512
SPLIT_MIN_HIDDEN = 64  # see split_learnt
# One sequence's training step on the split kernels (gradient GEMMs on two threads) against
# the sequence kernels (kernel="sequence": GEMMs on one), 2 idle cores, 2026-12:
# (1000, 1, 8, 64) 1.10x the time, (1000, 1, 32, 128) 0.92-0.94x.
SPLIT_TRAINING_MIN_HIDDEN = 128

# A training call splits sequences across threads only from this many recurrent
# multiply-adds (T * B * 4H * H, ~15 ms on one core; forward-only calls: learnt_plan). A
# parallel region waits for its second thread to be scheduled: up to a time slice (~3 ms)
# with the other core busy, tens of ms on an oversubscribed machine, and with the work split
# in halves the thread that shares its core finishes its half no sooner than one thread does
# the whole. Measured 2026-12 on 2 busy
# cores, 2 threads / 1: (100, 8, 16, 64) trace 24x, training 5.7x; below this size the
# default (2 threads) must never be slower than 1 thread, so it runs on one.
SEQUENCE_PARALLEL_MACS = 2**29


# Below this many multiply-adds a call runs as one kernel forward and one backward
# (kernels_small), input product and gradient GEMMs included: no tensor operations.
SMALL_CALL_MACS = 2**14
SMALL_CALL_INPUTS = 8  # see small_call
SMALL_CALL_MAX_HIDDEN = 128  # see small_call
SMALL_TRAINING_BYTES = 1 << 17  # of input products, see small_call
SMALL_LONG_CALL_INPUTS = 2  # see small_call
SMALL_LONG_CALL_MAX_HIDDEN = 64  # see small_call


class Plan(NamedTuple):
    """How one layer-direction runs: ``kernel``, one of :data:`KERNELS` (see the module's
    docstring); ``threads`` for the numba kernels and the per-step GEMMs; ``learn``: the
    chooser's key when the threads were learnt from timings (:func:`learnt_plan`), else
    None."""

    kernel: str
    threads: int
    learn: tuple | None = None


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


def plan(
    x: Tensor, w_hh: Tensor, training: bool, kernel: str = "auto", record: bool = False
) -> Plan:
    """The kernel and threads for one layer-direction: ``x (T, B, I)``, ``w_hh (G, H)``.

    A training call's kernel and threads depend on the sizes and torch's thread count only,
    except one sequence's. A forward-only call (no gradient, with or without the ``record``)
    of the sequence or blas kernel runs on one thread or several, and one sequence (training
    too) on the sequence kernel or the split kernel (:func:`split_learnt`), as timings found
    faster (:func:`learnt_plan`): all give the same bits, so the same call gives the same
    bits every time. ``kernel``:
    ``"auto"`` or one of :data:`KERNELS` to run that one on torch's threads (raises if it
    cannot run here).
    """
    if kernel != "auto":
        return _forced(kernel, w_hh.shape[1])
    if small_call(x, w_hh, training):
        return Plan("small", 1)
    batch, hidden = x.shape[1], w_hh.shape[1]
    threads = _threads()
    wide = hidden <= SEQUENCE_WIDE_HIDDEN and batch * hidden <= SEQUENCE_MAX_UNITS
    if hidden <= SEQUENCE_MAX_HIDDEN or wide or (batch < threads and hidden <= SPLIT_MAX_HIDDEN):
        if split_learnt(batch, hidden, threads, training):
            return learnt_plan("sequence", x, w_hh, record, 2, "split", training)
        if training and batch == 1 and threads >= 2:  # the second core for the GEMMs only
            return learnt_plan("sequence", x, w_hh, record, 2, tag=training)
        return _sequence_plan(x, w_hh, training, record, threads)
    if training or threads < 2:
        return Plan("blas", threads)
    return learnt_plan("blas", x, w_hh, record, threads)


def learnt_plan(
    kernel: str, x: Tensor, w_hh: Tensor, record: bool, many: int, many_kernel: str = "",
    tag: object = None,
) -> Plan:  # fmt: skip
    """A plan learnt from timings: ``kernel`` on one thread or ``many_kernel`` (``kernel``
    unless given) on ``many``, whichever :data:`clearlstm.fused.chooser.thread_chooser`
    found faster at this size (and ``tag``: a training call's, a variant's) lately; the same
    bits either way (each thread runs whole sequences, or the split kernel's units sum as
    the sequence kernel's). The caller reports the time (:func:`report`)."""
    steps, batch, inputs = x.shape
    one, two = (kernel, 1), (many_kernel or kernel, many)
    key = (kernel, steps.bit_length(), batch, inputs, w_hh.shape[1], record, x.dtype, two,
           tag)  # fmt: skip
    return Plan(*chooser.thread_chooser.threads(key, one, two), key)


def report(how: Plan, seconds: float, steps: int) -> None:
    """A call run on the learnt plan ``how`` took ``seconds`` for ``steps`` steps."""
    if how.learn is not None:
        option = (how.kernel, how.threads)
        chooser.thread_chooser.record(how.learn, option, seconds / max(steps, 1))


def split_learnt(batch: int, hidden: int, threads: int, training: bool = False) -> bool:
    """Whether a call may run on the split kernel when timings say it pays (forward and
    backward give the sequence kernel's bits; a training call is timed as a whole): one
    sequence, an even ``hidden`` from :data:`SPLIT_MIN_HIDDEN` (below, ``w_hh`` fits a
    core's L1 and the barrier per step costs more than it saves; a training call's backward,
    from :data:`SPLIT_TRAINING_MIN_HIDDEN`) to :data:`SPLIT_MAX_HIDDEN`, two threads.
    Where it may not, one sequence's training chooses between its GEMMs on one thread or
    on two (:func:`plan`)."""
    even = hidden % 2 == 0
    least = SPLIT_TRAINING_MIN_HIDDEN if training else SPLIT_MIN_HIDDEN
    return batch == 1 and threads >= 2 and even and least <= hidden <= SPLIT_MAX_HIDDEN


def _sequence_plan(x: Tensor, w_hh: Tensor, training: bool, record: bool, threads: int,
                   tag: object = None) -> Plan:  # fmt: skip
    """The whole-sequence kernel's threads: a training call's (or one sequence's, or on one
    thread) from the sizes, a forward-only call's learnt (per ``tag``)."""
    batch = x.shape[1]
    if training or batch < 2 or threads < 2:
        return Plan("sequence", sequence_threads(x, w_hh.shape[1], threads))
    return learnt_plan("sequence", x, w_hh, record, min(threads, batch), tag=tag)


def sequence_threads(x: Tensor, hidden: int, threads: int) -> int:
    """Threads for the whole-sequence kernels on ``x (T, B, I)``: the batch split across up
    to ``threads`` only for calls of :data:`SEQUENCE_PARALLEL_MACS` or more."""
    steps, batch = x.shape[0], x.shape[1]
    if threads < 2 or batch < 2 or steps * batch * 4 * hidden * hidden < SEQUENCE_PARALLEL_MACS:
        return 1
    return min(threads, batch)


VARIANT_KERNELS = ("sequence",)  # the kernels that run the LSTM variants


def variant_plan(
    x: Tensor, w_hh: Tensor, training: bool, kernel: str = "auto", record: bool = False,
    variant: object = None,
) -> Plan:  # fmt: skip
    """:func:`plan` for a layer-direction with ``variant`` (``LayerWeights.variant``): the
    whole-sequence kernel, on the threads the plain LSTM's rules give (a training call's from
    the sizes, a forward-only call's learnt from timings, per variant: each thread runs whole
    sequences, so the bits are the same). An explicit ``kernel`` without variant math raises;
    ``"sequence"`` runs on torch's threads."""
    if kernel != "auto" and kernel not in VARIANT_KERNELS:
        if kernel not in KERNELS:
            raise ValueError(f"LSTM: kernel must be 'auto' or one of {KERNELS}; got {kernel!r}")
        raise ValueError(
            f"LSTM: kernel {kernel!r} does not run the LSTM variants (peephole, "
            "coupled_input_forget, cell_clip, layer_norm, zoneout, dropout); use kernel='auto' "
            f"or one of {VARIANT_KERNELS}"
        )
    threads, batch = _threads(), x.shape[1]
    if kernel != "auto":
        return Plan("sequence", min(threads, batch))
    return _sequence_plan(x, w_hh, training, record, threads, variant)


def _threads() -> int:
    """Threads for the kernels: torch's setting, within numba's pool (1 in a forked child)."""
    if not numba_threads_usable():
        return 1
    return max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))


def _forced(kernel: str, hidden: int) -> Plan:
    """The plan for an explicitly chosen kernel."""
    if kernel not in KERNELS:
        raise ValueError(f"LSTM: kernel must be 'auto' or one of {KERNELS}; got {kernel!r}")
    if kernel == "split":
        if numba.config.NUMBA_NUM_THREADS < 2 or hidden % 2 or not numba_threads_usable():
            raise ValueError(
                "LSTM: kernel 'split' needs 2 numba threads (not in a process forked after "
                "they started) and an even hidden size; got "
                f"{numba.config.NUMBA_NUM_THREADS} thread(s) and hidden size {hidden}"
            )
        return Plan("split", 2)
    return Plan(kernel, 1 if kernel == "small" else _threads())


def small_call(x: Tensor, w_hh: Tensor, training: bool = False) -> bool:
    """Whether a call of ``x (T, B, I)`` runs as one kernel call each way (kernels_small).

    Any tiny call does, and so does one up to ``hidden_size`` :data:`SMALL_CALL_MAX_HIDDEN`
    with few inputs whose buffers malloc recycles without page faults: the input product in
    numba then costs less than a BLAS call and the tensor plumbing around it, and threads
    would not pay yet. Measured, inference: (24, 1, 1, 32) 2.4x faster, (24, 4, 2, 16) 2.2x,
    (100, 1, 8, 128) 1.08x; training steps: (24, 1, 1, 32) 1.5x, (100, 1, 8, 64) 1.1x, but
    0.9x at 200 KB of input products, hence a lower bound. Inference (and the trace) of one
    sequence with one or two inputs below :data:`SMALL_LONG_CALL_MAX_HIDDEN` (one thread either way)
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
    one_thread = batch == 1 and hidden < SMALL_LONG_CALL_MAX_HIDDEN
    return one_thread and inputs <= SMALL_LONG_CALL_INPUTS
