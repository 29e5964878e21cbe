"""Whole-sequence kernels with the hidden units split across threads (small batch, ``H >= 64``).

At batch 1 the recurrent product is a matrix-vector product that streams all of ``w_hh``
(``16 H^2`` bytes in float32) every step: from ``H = 64`` it no longer fits a core's L1 and one
core is bound by its L2 bandwidth. Here thread ``p`` owns a slice of the units, keeps only
its columns of ``w_hh.T`` (all four gates of its units, so the gates and memories stay
private), and the threads meet once per step to exchange the new short-term memory ``h``.
The meeting is a spin barrier (:mod:`clearlstm.fused.barrier`); ``h`` is double
buffered so one barrier per step is enough. The backward splits the units the same way: each
thread's gates, one barrier, then each thread's units of ``dz @ w_hh`` from the whole ``dz``.
Arithmetic is that of :mod:`clearlstm.fused.kernels`, term for term and every sum in the same
order, so results are bit-identical to :func:`clearlstm.fused.kernels.forward_sequence` and
``backward_sequence``: a choice between them on timings cannot change a result.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from clearlstm.fused.barrier import PAD, PATIENCE, barrier, new_counters
from clearlstm.fused.kernel_math import (
    BLOCK_MIN_HIDDEN,
    JIT,
    denormal_floor,
    gates_backward,
    gates_forward,
    matvec_dot,
    matvec_t,
    previous_c,
    step_time,
)
from clearlstm.fused.kernels import backward_rows


@njit(**JIT)
def _forward_slice(
    xw, whh_p, c0, lengths, reverse, out, h_n, c_n, gates, cs, pre, store, record,
    hbuf, counters, me, threads, u0, u1,
):  # fmt: skip
    """Thread ``me``'s share of :func:`forward_split`: units ``[u0, u1)``."""
    steps, batch, hidden = xw.shape[0], c0.shape[0], c0.shape[1]
    units = u1 - u0
    width = 4 * units
    z = np.empty((batch, width), xw.dtype)
    c = np.empty((batch, units), xw.dtype)
    h = np.empty((batch, units), xw.dtype)
    nan = xw.dtype.type(np.nan)
    longest = 0
    for b in range(batch):
        longest = max(longest, lengths[b])
        for j in range(units):
            c[b, j] = c0[b, u0 + j]
    for s in range(longest):
        # hbuf (2 * B, H): rows [0, B) and [B, 2B) alternate as the memory read and written.
        # Indexed directly: a view per step would bump a reference count both threads share.
        read, write = (s % 2) * batch, ((s + 1) % 2) * batch
        for b in range(batch):
            n = lengths[b]
            if s >= n:  # finished: its memory stays as it was
                for j in range(u0, u1):
                    hbuf[write + b, j] = hbuf[read + b, j]
                continue
            t = step_time(s, n, reverse)
            for q in range(4):  # this slice's units of each gate, as the GEMM left them
                for j in range(units):
                    z[b, q * units + j] = xw[t, b, q * hidden + u0 + j]
            matvec_t(hbuf, read + b, whh_p, z, b)
            if record:
                for q in range(4):
                    for j in range(units):
                        pre[t, b, q * hidden + u0 + j] = z[b, q * units + j]
            gates_forward(z, b, c, h, b, out, t, b, u0)
            for j in range(units):
                hbuf[write + b, u0 + j] = h[b, j]
            if store:
                for q in range(4):
                    for j in range(units):
                        gates[t, b, q * hidden + u0 + j] = z[b, q * units + j]
                for j in range(units):
                    cs[t, b, u0 + j] = c[b, j]
        if not barrier(counters, me, threads, s + 1):
            return
    final = (longest % 2) * batch
    for b in range(batch):
        for j in range(units):
            h_n[b, u0 + j] = hbuf[final + b, u0 + j]
            c_n[b, u0 + j] = c[b, j]
        for t in range(lengths[b], steps):  # padding: output zero, records NaN
            for j in range(u0, u1):
                out[t, b, j] = 0.0
                if store:
                    cs[t, b, j] = nan
                    for q in range(4):
                        gates[t, b, q * hidden + j] = nan
                if record:
                    for q in range(4):
                        pre[t, b, q * hidden + j] = nan


@njit(cache=True, parallel=True)
def _forward_split(
    xw, whh_parts, c0, lengths, reverse, out, h_n, c_n, gates, cs, pre, store, record,
    hbuf, counters,
):  # fmt: skip
    threads, units = whh_parts.shape[0], whh_parts.shape[2] // 4
    for p in prange(threads):
        _forward_slice(
            xw, whh_parts[p], c0, lengths, reverse, out, h_n, c_n, gates, cs, pre, store,
            record, hbuf, counters, p, threads, p * units, (p + 1) * units,
        )  # fmt: skip


def forward_split(
    xw: np.ndarray,
    whh_parts: np.ndarray,
    h0: np.ndarray,
    c0: np.ndarray,
    lengths: np.ndarray,
    reverse: bool,
    out: np.ndarray,
    h_n: np.ndarray,
    c_n: np.ndarray,
    gates: np.ndarray,
    cs: np.ndarray,
    pre: np.ndarray,
    store: bool,
    record: bool,
    patience: int = PATIENCE,
) -> bool:
    """:func:`clearlstm.fused.kernels.forward_sequence` with the units split across threads.

    ``whh_parts`` from :func:`split_columns`; every other argument (``xw`` too, so the input
    product is the sequence kernel's) and every output as in ``forward_sequence``.
    Runs ``whh_parts.shape[0]`` numba threads, which must be available. Returns False, with
    the outputs incomplete, if a thread was later than ``patience`` polls at a step (then
    run the one-thread kernel).
    """
    threads = whh_parts.shape[0]
    batch, hidden = h0.shape
    hbuf = np.empty((2 * batch, hidden), h0.dtype)
    hbuf[:batch] = h0
    counters = new_counters(threads, patience)
    _forward_split(
        xw, whh_parts, c0, lengths, reverse, out, h_n, c_n, gates, cs, pre, store, record,
        hbuf, counters,
    )  # fmt: skip
    return bool(counters[threads * PAD] == 0)


@njit(**JIT)
def _backward_begin(grad_hn, grad_cn, lengths, dz, dh, dc, u0):
    """Carries ``dh, dc (B, units)`` from the final-state gradients; zero ``dz`` at padding."""
    steps, batch, units = dz.shape[0], dh.shape[0], dh.shape[1]
    hidden = grad_hn.shape[1]
    for b in range(batch):
        for j in range(units):
            dh[b, j] = grad_hn[b, u0 + j]
            dc[b, j] = grad_cn[b, u0 + j]
        for t in range(lengths[b], steps):
            for q in range(4):
                for j in range(units):
                    dz[t, b, q * hidden + u0 + j] = 0.0


@njit(**JIT)
def _backward_gates(s, grad_out, gates, cs, c0, lengths, reverse, dz, dh, dc, cp, u0):
    """Step ``s`` back through this slice's gates: ``dz[t, b]`` of its units, for every
    sequence still running."""
    batch, units = dh.shape
    for b in range(batch):
        n = lengths[b]
        if s >= n:
            continue
        t = step_time(s, n, reverse)
        for j in range(units):
            dh[b, j] += grad_out[t, b, u0 + j]
        previous_c(cp, b, cs, c0, s, n, reverse, b, u0)
        gates_backward(dh, dc, cp, b, gates, cs, t, b, dz, u0)


@njit(**JIT)
def _backward_product(s, lengths, reverse, dz, w_p, narrow, dh, dz_row):
    """This slice's units of ``dh = dz[t, b] @ w_hh`` from every slice's ``dz``, each unit
    summed over all ``4H`` gate rows in the order of :func:`clearlstm.fused.kernels
    .backward_rows` (the same operations on the same values: the same bits).

    ``w_p``: with ``narrow`` (``H`` below :data:`BLOCK_MIN_HIDDEN`) this slice's rows of
    ``w_hh.T`` ``(units, 4H)``, else its columns of ``w_hh`` ``(4H, units)``."""
    batch, units = dh.shape
    tiny = denormal_floor(dz[0, 0, 0])
    zero = dz.dtype.type(0.0)
    for b in range(batch):
        n = lengths[b]
        if s >= n:
            continue
        t = step_time(s, n, reverse)
        for j in range(dz.shape[2]):
            dz_row[0, j] = dz[t, b, j]
        if narrow:
            matvec_dot(dz_row, 0, w_p, dh, b)
        else:
            for j in range(units):
                dh[b, j] = 0.0
            matvec_t(dz_row, 0, w_p, dh, b, True)
        for j in range(units):
            if abs(dh[b, j]) < tiny:
                dh[b, j] = zero


@njit(**JIT)
def _backward_slice(
    grad_out, grad_hn, grad_cn, gates, cs, c0, w_p, narrow, lengths, reverse, dz, dh0, dc0,
    counters, me, threads, u0, u1,
):  # fmt: skip
    """Thread ``me``'s share of :func:`backward_split`: units ``[u0, u1)``. One barrier per
    step, between the gates (each slice writes its units of ``dz[t]``) and the product (each
    reads all of ``dz[t]``); the next step writes another time's ``dz``."""
    batch, units, dtype = c0.shape[0], u1 - u0, grad_out.dtype
    dh = np.empty((batch, units), dtype)
    dc = np.empty((batch, units), dtype)
    cp = np.empty((batch, units), dtype)
    dz_row = np.empty((1, dz.shape[2]), dtype)
    _backward_begin(grad_hn, grad_cn, lengths, dz, dh, dc, u0)
    longest = lengths.max()
    for s in range(longest - 1, -1, -1):
        _backward_gates(s, grad_out, gates, cs, c0, lengths, reverse, dz, dh, dc, cp, u0)
        if not barrier(counters, me, threads, longest - s):
            return
        _backward_product(s, lengths, reverse, dz, w_p, narrow, dh, dz_row)
    dh0[:, u0:u1] = dh
    dc0[:, u0:u1] = dc


@njit(cache=True, parallel=True)
def _backward_split(
    grad_out, grad_hn, grad_cn, gates, cs, c0, w_parts, narrow, lengths, reverse, dz, dh0, dc0,
    counters,
):  # fmt: skip
    threads, units = w_parts.shape[0], c0.shape[1] // w_parts.shape[0]
    for p in prange(threads):
        _backward_slice(
            grad_out, grad_hn, grad_cn, gates, cs, c0, w_parts[p], narrow, lengths, reverse,
            dz, dh0, dc0, counters, p, threads, p * units, (p + 1) * units,
        )  # fmt: skip


def backward_parts(w_hh: np.ndarray, threads: int) -> tuple[np.ndarray, bool]:
    """Each thread's share of ``w_hh (4H, H)`` for :func:`backward_split`, and ``narrow``:
    ``(threads, units, 4H)`` rows of ``w_hh.T`` below :data:`BLOCK_MIN_HIDDEN` (dot
    products, as the sequence kernel), else ``(threads, 4H, units)`` columns of ``w_hh``."""
    width, hidden = w_hh.shape
    units = hidden // threads
    narrow = hidden < BLOCK_MIN_HIDDEN
    if narrow:
        return np.ascontiguousarray(w_hh.T.reshape(threads, units, width)), True
    cols = w_hh.reshape(width, threads, units).transpose(1, 0, 2)
    return np.ascontiguousarray(cols), False


def backward_split(
    grad_out: np.ndarray,
    grad_hn: np.ndarray,
    grad_cn: np.ndarray,
    gates: np.ndarray,
    cs: np.ndarray,
    c0: np.ndarray,
    w_hh: np.ndarray,
    lengths: np.ndarray,
    reverse: bool,
    dz: np.ndarray,
    dh0: np.ndarray,
    dc0: np.ndarray,
    threads: int = 2,
    patience: int = PATIENCE,
) -> bool:
    """:func:`clearlstm.fused.kernels.backward_sequence` with the units split across
    ``threads`` (``H`` divisible by it); arguments as there, ``w_hh (4H, H)``.

    Each thread back-propagates through the gates of its units, then computes its units of
    ``dz @ w_hh`` from every thread's ``dz``, each summed as the one-thread kernel sums it:
    the same bits as :func:`clearlstm.fused.kernels.backward_rows`. If a thread lost its core
    (then False is returned) the one-thread kernel runs instead, so the outputs are always
    complete and the bits the same either way.
    """
    parts, narrow = backward_parts(w_hh, threads)
    counters = new_counters(threads, patience)
    args = (grad_out, grad_hn, grad_cn, gates, cs, c0)
    rest = (lengths, reverse, dz, dh0, dc0)
    _backward_split(*args, parts, narrow, *rest, counters)
    if counters[threads * PAD] == 0:
        return True
    backward_rows(*args, w_hh, *rest, 0, c0.shape[0])
    return False


def unit_order(hidden: int, threads: int) -> np.ndarray:
    """``(4H,)`` gate rows reordered thread-major: ``w[unit_order(...)]`` puts thread ``p``'s
    rows (gates i, f, g, o of units ``[p*H/threads, (p+1)*H/threads)``) together."""
    units = hidden // threads
    rows = np.arange(4 * hidden).reshape(4, threads, units)  # row q*H + p*units + j
    return rows.transpose(1, 0, 2).reshape(-1)


def split_columns(w_hh: np.ndarray, threads: int) -> np.ndarray:
    """``(threads, H, 4H / threads)``: thread ``p``'s columns of ``w_hh.T``, from
    ``w_hh (4H, H)`` (gathering whole rows first: a column gather is 3x slower)."""
    rows = split_rows(w_hh, threads)  # (threads, 4H / threads, H)
    return np.ascontiguousarray(rows.transpose(0, 2, 1))


def split_rows(w_hh: np.ndarray, threads: int) -> np.ndarray:
    """``(threads, 4H / threads, H)``: thread ``p``'s rows of ``w_hh (4H, H)``, gate-major."""
    hidden = w_hh.shape[1]
    return np.ascontiguousarray(w_hh[unit_order(hidden, threads)]).reshape(threads, -1, hidden)
