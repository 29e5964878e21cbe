"""Whole-sequence kernels with the hidden units split across threads (small batch, ``H >= 64``).

At batch 1 the recurrent product is a matrix-vector product that streams all of ``w_hh``
(``16 H^2`` bytes in float32) every step: from ``H = 64`` it no longer fits a core's L1 and one
core is bound by its L2 bandwidth. Here thread ``p`` owns a slice of the units, keeps only
its columns of ``w_hh.T`` (all four gates of its units, so the gates and memories stay
private), and the threads meet once per step to exchange the new short-term memory ``h``.
The meeting is a spin barrier (:mod:`clearlstm.fused.barrier`); ``h`` is double
buffered so one barrier per step is enough. Arithmetic is that of :mod:`clearlstm.fused.kernels`,
term for term, so results are bit-identical to :func:`clearlstm.fused.kernels.forward_sequence`.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from clearlstm.fused.barrier import PAD, PATIENCE, barrier, new_counters
from clearlstm.fused.kernel_math import (
    JIT,
    denormal_floor,
    gates_backward,
    gates_forward,
    matvec_dot,
    matvec_t,
    previous_c,
    step_time,
)


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
def _backward_share(
    s, grad_out, gates, cs, c0, w_p, lengths, reverse, dz, dh, dc, cp, dz_p, pbuf, row, u0
):  # fmt: skip
    """Step ``s`` through this slice's gates; its share of ``dz @ w_hh`` into ``pbuf[row + b]``.

    pbuf (2 * threads * B, H): slice p's share for sequence b is row (parity * threads + p) *
    B + b; the parity of ``s`` alternates, so the threads need one barrier per step.
    """
    batch, units, hidden = dh.shape[0], dh.shape[1], c0.shape[1]
    for b in range(batch):
        n = lengths[b]
        if s >= n:
            continue
        t = step_time(s, n, reverse)
        for j in range(units):
            dh[b, j] += grad_out[t, b, u0 + j]
        previous_c(cp, b, cs, c0, s, n, reverse, b, u0)
        gates_backward(dh, dc, cp, b, gates, cs, t, b, dz, u0)
        for q in range(4):
            for j in range(units):
                dz_p[0, q * units + j] = dz[t, b, q * hidden + u0 + j]
        matvec_dot(dz_p, 0, w_p, pbuf, row + b)  # narrow: H dot products, not 4 H' axpys


@njit(**JIT)
def _backward_gather(s, lengths, pbuf, base, threads, dh, u0):
    """``dh`` of this slice's units = the slices' shares summed in slice order."""
    batch, units = dh.shape
    tiny = denormal_floor(pbuf[0, 0])
    zero = pbuf.dtype.type(0.0)
    for b in range(batch):
        if s >= lengths[b]:
            continue
        for j in range(units):
            total = pbuf[base + b, u0 + j]
            for p in range(1, threads):
                total += pbuf[base + p * batch + b, u0 + j]
            if abs(total) < tiny:
                total = zero
            dh[b, j] = total


@njit(**JIT)
def _backward_slice(
    grad_out, grad_hn, grad_cn, gates, cs, c0, w_p, lengths, reverse, dz, dh0, dc0,
    pbuf, counters, me, threads, u0, u1,
):  # fmt: skip
    """Thread ``me``'s share of :func:`backward_split`: units ``[u0, u1)``."""
    batch, units, dtype = c0.shape[0], u1 - u0, grad_out.dtype
    dh = np.empty((batch, units), dtype)
    dc = np.empty((batch, units), dtype)
    cp = np.empty((batch, units), dtype)
    dz_p = np.empty((1, 4 * units), dtype)  # this slice's rows of dz[t, b], gate-major
    _backward_begin(grad_hn, grad_cn, lengths, dz, dh, dc, u0)
    longest = lengths.max()
    for s in range(longest - 1, -1, -1):
        base = (s % 2) * threads * batch
        args = (grad_out, gates, cs, c0, w_p, lengths, reverse, dz, dh, dc, cp, dz_p, pbuf)
        _backward_share(s, *args, base + me * batch, u0)
        if not barrier(counters, me, threads, longest - s):
            return
        _backward_gather(s, lengths, pbuf, base, threads, dh, u0)
    dh0[:, u0:u1] = dh
    dc0[:, u0:u1] = dc


@njit(cache=True, parallel=True)
def _backward_split(
    grad_out, grad_hn, grad_cn, gates, cs, c0, w_parts, lengths, reverse, dz, dh0, dc0,
    pbuf, counters,
):  # fmt: skip
    threads, units = w_parts.shape[0], w_parts.shape[2] // 4
    for p in prange(threads):
        _backward_slice(
            grad_out, grad_hn, grad_cn, gates, cs, c0, w_parts[p], lengths, reverse, dz, dh0,
            dc0, pbuf, counters, p, threads, p * units, (p + 1) * units,
        )  # fmt: skip


@njit(cache=True, **JIT)
def _backward_split_serial(
    grad_out, grad_hn, grad_cn, gates, cs, c0, w_parts, lengths, reverse, dz, dh0, dc0, pbuf
):  # fmt: skip
    """:func:`_backward_split` on one thread, slice after slice at every step: the same
    operations in the same order, so the same bits (the fallback of an abandoned call)."""
    threads, units = w_parts.shape[0], w_parts.shape[2] // 4
    batch, dtype = c0.shape[0], grad_out.dtype
    dh = np.empty((threads, batch, units), dtype)
    dc = np.empty((threads, batch, units), dtype)
    cp = np.empty((batch, units), dtype)
    dz_p = np.empty((1, 4 * units), dtype)
    for p in range(threads):
        _backward_begin(grad_hn, grad_cn, lengths, dz, dh[p], dc[p], p * units)
    longest = lengths.max()
    for s in range(longest - 1, -1, -1):
        base = (s % 2) * threads * batch
        for p in range(threads):
            _backward_share(
                s, grad_out, gates, cs, c0, w_parts[p], lengths, reverse, dz, dh[p], dc[p],
                cp, dz_p, pbuf, base + p * batch, p * units,
            )  # fmt: skip
        for p in range(threads):
            _backward_gather(s, lengths, pbuf, base, threads, dh[p], p * units)
    for p in range(threads):
        dh0[:, p * units : (p + 1) * units] = dh[p]
        dc0[:, p * units : (p + 1) * units] = dc[p]


def backward_split(
    grad_out: np.ndarray,
    grad_hn: np.ndarray,
    grad_cn: np.ndarray,
    gates: np.ndarray,
    cs: np.ndarray,
    c0: np.ndarray,
    w_parts: np.ndarray,
    lengths: np.ndarray,
    reverse: bool,
    dz: np.ndarray,
    dh0: np.ndarray,
    dc0: np.ndarray,
    patience: int = PATIENCE,
) -> bool:
    """:func:`clearlstm.fused.kernels.backward_sequence` with the units split across threads.

    ``w_parts`` from :func:`split_columns`; every other argument as in ``backward_sequence``.
    Each thread back-propagates through the gates of its units and multiplies its rows of
    ``dz`` by its rows of ``w_hh``; the threads' shares of ``dz @ w_hh`` are summed in thread
    order. It may differ from the one-thread kernel in the last bit (the sum runs in another
    order) but never from itself: if a thread lost its core (then False is returned) the same
    operations run again on one thread, so the outputs are always complete.
    """
    threads = w_parts.shape[0]
    batch, hidden = c0.shape
    pbuf = np.empty((2 * threads * batch, hidden), c0.dtype)
    counters = new_counters(threads, patience)
    args = (grad_out, grad_hn, grad_cn, gates, cs, c0, w_parts, lengths, reverse, dz, dh0, dc0)
    _backward_split(*args, pbuf, counters)
    if counters[threads * PAD] == 0:
        return True
    _backward_split_serial(*args, pbuf)
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
