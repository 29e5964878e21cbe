"""Fused CPU kernels for the LSTM recurrence (numba), float32 and float64.

The kernels run only the recurrence. The input-to-hidden product of every step,
``xw = x @ w_ih.T + b_ih + b_hh (T, B, 4H)``, is one BLAS GEMM done by torch beforehand
(the "premul" of fastrnns and haste). Gate order and equations are those of
:mod:`clearlstm.core.cell`; the tests hold every kernel to that file.

============  ==========================================================================
``T``         steps                       ``B``   batch
``H``         hidden size                 ``G``   ``4H``, gate blocks i, f, g, o
``s``         processing step: with ``reverse`` a sequence of length ``n`` is read at
              times ``n-1, ..., 0``; padded times ``t >= n`` never change the state
============  ==========================================================================

Two ways to compute the recurrent product ``h @ w_hh.T``:

- whole-sequence kernels (:func:`forward_sequence`, :func:`backward_sequence`) fuse it into
  the step loop as ``H`` vectorized axpys over rows of ``w_hh.T`` (the backward's narrow
  ``dz @ w_hh`` below ``H = 64``: ``H`` dot products); one call per layer, no Python per
  step. Right when ``w_hh`` fits in cache and the batch is small.
- step kernels (:func:`forward_gates`, :func:`backward_gates`) take the product from a BLAS
  GEMM torch runs per step and do the rest; right for large ``B * H``.


Activations and the per-step helpers live in :mod:`clearlstm.fused.kernel_math`; the
step kernels in :mod:`clearlstm.fused.step_kernels`.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from clearlstm.fused.kernel_math import (
    BLOCK_MIN_HIDDEN,
    JIT,
    ROWS,
    denormal_floor,
    gates_backward,
    gates_forward,
    matvec_dot,
    matvec_t,
    matvec_t4,
    previous_c,
    step_time,
)


@njit(**JIT)
def _forward_block(xw, whh_t, h0, c0, lengths, reverse, out, h_n, c_n, gates, cs, pre, store,
                   record, first):  # fmt: skip
    """Sequences ``first .. first + 3`` together, step by step."""
    hidden = c0.shape[1]
    z = np.empty((ROWS, 4 * hidden), xw.dtype)
    h = np.empty((ROWS, hidden), xw.dtype)
    c = np.empty((ROWS, hidden), xw.dtype)
    longest = 0
    for r in range(ROWS):
        for j in range(c.shape[1]):
            h[r, j] = h0[first + r, j]
            c[r, j] = c0[first + r, j]
        longest = max(longest, lengths[first + r])
    for s in range(longest):
        for r in range(ROWS):
            b, n = first + r, lengths[first + r]
            if s >= n:  # finished: its row of the product is computed, never used
                z[r, :] = 0.0
                continue
            t = step_time(s, n, reverse)
            for j in range(z.shape[1]):
                z[r, j] = xw[t, b, j]
        matvec_t4(h, whh_t, z)
        for r in range(ROWS):
            b, n = first + r, lengths[first + r]
            if s >= n:
                continue
            t = step_time(s, n, reverse)
            if record:
                for j in range(z.shape[1]):
                    pre[t, b, j] = z[r, j]
            gates_forward(z, r, c, h, r, out, t, b)
            if store:
                for j in range(z.shape[1]):
                    gates[t, b, j] = z[r, j]
                for j in range(hidden):
                    cs[t, b, j] = c[r, j]
    for r in range(ROWS):
        _finish_forward(h, c, r, lengths, out, h_n, c_n, gates, cs, pre, store, record, first + r)


@njit(**JIT)
def _finish_forward(h, c, r, lengths, out, h_n, c_n, gates, cs, pre, store, record, b):
    """Padding of sequence ``b`` (output zero, records NaN) and its final state, row ``r``."""
    nan = out.dtype.type(np.nan)
    for t in range(lengths[b], out.shape[0]):
        out[t, b, :] = 0.0
        if store:
            gates[t, b, :] = nan
            cs[t, b, :] = nan
        if record:
            pre[t, b, :] = nan
    for j in range(c.shape[1]):
        h_n[b, j] = h[r, j]
        c_n[b, j] = c[r, j]


@njit(cache=True, **JIT)
def forward_rows(
    xw, whh_t, h0, c0, lengths, reverse, out, h_n, c_n, gates, cs, pre, store, record, b0, b1
):
    """Sequences ``[b0, b1)``: :data:`ROWS` at a time from :data:`BLOCK_MIN_HIDDEN` on, the
    rest one at a time (same bits either way)."""
    hidden = c0.shape[1]
    blocks = (b1 - b0) // ROWS if hidden >= BLOCK_MIN_HIDDEN else 0
    for first in range(b0, b0 + blocks * ROWS, ROWS):
        _forward_block(
            xw, whh_t, h0, c0, lengths, reverse, out, h_n, c_n, gates, cs, pre, store, record,
            first,
        )  # fmt: skip
    width = 4 * hidden
    # Scratch allocated here, not passed in: LLVM then knows it aliases no argument (passed
    # in, or from a helper, this loop ran 1.4-1.9x slower); the loop is inline for the same
    # reason (as a helper function it ran 5-25% slower).
    z = np.empty((1, width), xw.dtype)
    h = np.empty((1, hidden), xw.dtype)
    c = np.empty((1, hidden), xw.dtype)
    for b in range(b0 + blocks * ROWS, b1):
        for j in range(hidden):
            h[0, j] = h0[b, j]
            c[0, j] = c0[b, j]
        n = lengths[b]
        for s in range(n):
            t = step_time(s, n, reverse)
            for j in range(width):
                z[0, j] = xw[t, b, j]
            matvec_t(h, 0, whh_t, z, 0)
            if record:
                for j in range(width):
                    pre[t, b, j] = z[0, j]
            gates_forward(z, 0, c, h, 0, out, t, b)
            if store:
                for j in range(width):
                    gates[t, b, j] = z[0, j]
                for j in range(hidden):
                    cs[t, b, j] = c[0, j]
        _finish_forward(h, c, 0, lengths, out, h_n, c_n, gates, cs, pre, store, record, b)


@njit(cache=True, parallel=True)
def _forward_rows_parallel(
    xw, whh_t, h0, c0, lengths, reverse, out, h_n, c_n, gates, cs, pre, store, record, chunks
):
    # Sequences are independent: each thread runs whole sequences, no barrier per step.
    batch = xw.shape[1]
    for p in prange(chunks):
        b0, b1 = p * batch // chunks, (p + 1) * batch // chunks
        forward_rows(
            xw, whh_t, h0, c0, lengths, reverse, out, h_n, c_n, gates, cs, pre, store, record,
            b0, b1,
        )  # fmt: skip


def forward_sequence(
    xw: np.ndarray,
    whh_t: np.ndarray,
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
    threads: int = 1,
) -> None:
    """Forward over a whole sequence, recurrent product fused; writes into the given arrays.

    ``xw (T, B, G)`` premultiplied input with both biases, ``whh_t (H, G)`` = ``w_hh.T``
    contiguous, ``h0, c0 (B, H)``, ``lengths (B,)`` int64 in ``[1, T]``. Outputs:
    ``out (T, B, H)`` (zero at padding), ``h_n, c_n (B, H)``. With ``store``: activated gates
    ``gates (T, B, G)`` and memories ``cs (T, B, H)``; with ``record`` also pre-activations
    ``pre (T, B, G)`` (NaN at padding). Unused buffers may be empty arrays.
    ``threads > 1`` splits the batch across numba threads.
    """
    args = (xw, whh_t, h0, c0, lengths, reverse, out, h_n, c_n, gates, cs, pre, store, record)
    batch = xw.shape[1]
    if threads > 1 and batch > 1:
        _forward_rows_parallel(*args, min(threads, batch))
    else:
        forward_rows(*args, 0, batch)


@njit(**JIT)
def _backward_block(grad_out, grad_hn, grad_cn, gates, cs, c0, w_hh, lengths, reverse, dz, dh0,
                    dc0, first):  # fmt: skip
    """Sequences ``first .. first + 3`` together; a shorter one joins when its own last step
    comes."""
    hidden = c0.shape[1]
    dh = np.empty((ROWS, hidden), dz.dtype)
    dc = np.empty((ROWS, hidden), dz.dtype)
    cp = np.empty((ROWS, hidden), dz.dtype)
    dh_next = np.empty((ROWS, hidden), dz.dtype)
    dz_rows = np.empty((ROWS, 4 * hidden), dz.dtype)
    tiny = denormal_floor(dh0[0, 0])
    zero = dz.dtype.type(0.0)
    longest = 0
    for r in range(ROWS):
        longest = max(longest, _start_backward(grad_hn, grad_cn, lengths, dz, dh, dc, r, first + r))
    for s in range(longest - 1, -1, -1):
        for r in range(ROWS):
            b, n = first + r, lengths[first + r]
            if s >= n:  # not started yet: its row of the product is never used
                dz_rows[r, :] = 0.0
                continue
            t = step_time(s, n, reverse)
            for j in range(hidden):
                dh[r, j] += grad_out[t, b, j]
            previous_c(cp, r, cs, c0, s, n, reverse, b)
            gates_backward(dh, dc, cp, r, gates, cs, t, b, dz)
            for j in range(4 * hidden):
                dz_rows[r, j] = dz[t, b, j]
        dh_next[:] = 0.0
        matvec_t4(dz_rows, w_hh, dh_next, True)  # dh = dz[t, b] @ w_hh, four at once
        for r in range(ROWS):
            if s < lengths[first + r]:
                for j in range(hidden):
                    v = dh_next[r, j]
                    dh[r, j] = zero if abs(v) < tiny else v
    for r in range(ROWS):
        for j in range(hidden):
            dh0[first + r, j] = dh[r, j]
            dc0[first + r, j] = dc[r, j]


@njit(**JIT)
def _start_backward(grad_hn, grad_cn, lengths, dz, dh, dc, r, b):
    """Carries of sequence ``b`` (row ``r``) from the final state's gradients, ``dz`` zero at
    its padding; returns its length."""
    for j in range(dh.shape[1]):
        dh[r, j] = grad_hn[b, j]
        dc[r, j] = grad_cn[b, j]
    n = lengths[b]
    for t in range(n, dz.shape[0]):
        dz[t, b, :] = 0.0
    return n


@njit(cache=True, **JIT)
def backward_rows(
    grad_out, grad_hn, grad_cn, gates, cs, c0, w_hh, lengths, reverse, dz, dh0, dc0, b0, b1
):
    """Sequences ``[b0, b1)``: :data:`ROWS` at a time from :data:`BLOCK_MIN_HIDDEN` on, the
    rest one at a time (same bits either way)."""
    steps, hidden = grad_out.shape[0], c0.shape[1]
    blocks = (b1 - b0) // ROWS if hidden >= BLOCK_MIN_HIDDEN else 0
    for first in range(b0, b0 + blocks * ROWS, ROWS):
        _backward_block(
            grad_out, grad_hn, grad_cn, gates, cs, c0, w_hh, lengths, reverse, dz, dh0, dc0, first
        )
    dtype = grad_out.dtype
    dh = np.empty((1, hidden), dtype)
    dc = np.empty((1, hidden), dtype)
    cp = np.empty((1, hidden), dtype)
    dz_row = np.empty((1, 4 * hidden), dtype)
    narrow = hidden < BLOCK_MIN_HIDDEN  # no blocks, whose bits the single path must match
    whh_t = np.empty((hidden if narrow else 0, 4 * hidden), dtype)
    if narrow:
        for k in range(hidden):
            for j in range(4 * hidden):
                whh_t[k, j] = w_hh[j, k]
    tiny = denormal_floor(dh0[0, 0])
    zero = dtype.type(0.0)
    for b in range(b0 + blocks * ROWS, b1):  # one at a time: inline, not a helper (~25% faster)
        for j in range(hidden):
            dh[0, j] = grad_hn[b, j]
            dc[0, j] = grad_cn[b, j]
        n = lengths[b]
        for t in range(n, steps):
            dz[t, b, :] = 0.0
        for s in range(n - 1, -1, -1):
            t = step_time(s, n, reverse)
            for j in range(hidden):
                dh[0, j] += grad_out[t, b, j]
            previous_c(cp, 0, cs, c0, s, n, reverse, b)
            gates_backward(dh, dc, cp, 0, gates, cs, t, b, dz)
            for j in range(4 * hidden):
                dz_row[0, j] = dz[t, b, j]
            if narrow:  # dh = dz[t, b] @ w_hh
                matvec_dot(dz_row, 0, whh_t, dh, 0)
            else:
                for j in range(hidden):
                    dh[0, j] = 0.0
                matvec_t(dz_row, 0, w_hh, dh, 0, True)
            for j in range(hidden):
                if abs(dh[0, j]) < tiny:
                    dh[0, j] = zero
        for j in range(hidden):
            dh0[b, j] = dh[0, j]
            dc0[b, j] = dc[0, j]


@njit(cache=True, parallel=True)
def _backward_rows_parallel(
    grad_out, grad_hn, grad_cn, gates, cs, c0, w_hh, lengths, reverse, dz, dh0, dc0, chunks
):
    batch = grad_out.shape[1]
    for p in prange(chunks):
        b0, b1 = p * batch // chunks, (p + 1) * batch // chunks
        backward_rows(
            grad_out, grad_hn, grad_cn, gates, cs, c0, w_hh, lengths, reverse, dz, dh0, dc0,
            b0, b1,
        )  # fmt: skip


def backward_sequence(
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
    threads: int = 1,
) -> None:
    """Backward through time over a whole sequence, reusing the stored gates.

    ``grad_out (T, B, H)``, ``grad_hn, grad_cn (B, H)``, ``gates (T, B, G)`` and
    ``cs (T, B, H)`` from the forward pass, ``c0 (B, H)``, ``w_hh (G, H)`` contiguous.
    Writes ``dz (T, B, G)`` (gradient w.r.t. the pre-activations, zero at padding) and
    ``dh0, dc0 (B, H)``. The weight gradients are GEMMs over ``dz`` done by the caller.
    """
    args = (grad_out, grad_hn, grad_cn, gates, cs, c0, w_hh, lengths, reverse, dz, dh0, dc0)
    batch = grad_out.shape[1]
    if threads > 1 and batch > 1:
        _backward_rows_parallel(*args, min(threads, batch))
    else:
        backward_rows(*args, 0, batch)


# Gate values per step (batch * 4H) from which the step kernels split the batch across
# threads (each parallel region costs µs to start): traces at (B, H) = (16, 512) and
# (64, 1024) 0.95x the time, (64, 512) 0.91x; at 16k values no gain.


@njit(cache=True, **JIT)
def count_nonfinite(values):
    """How many entries of ``values`` (any shape) are NaN or ±Inf: one vectorized pass."""
    flat = values.ravel()  # a view when contiguous, else a copy
    count = 0
    for i in range(flat.size):
        count += not np.isfinite(flat[i])
    return count


@njit(cache=True, **JIT)
def count_nonfinite_layer(x, w_ih, w_hh, h0, c0, b_ih, b_hh, lengths):
    """NaN/Inf entries among a layer's inputs, ``x (T, B, I)`` only at the steps each
    sequence reads (``lengths (B,)``): padding may hold anything."""
    bad = count_nonfinite(w_ih) + count_nonfinite(w_hh) + count_nonfinite(b_ih)
    bad += count_nonfinite(b_hh) + count_nonfinite(h0) + count_nonfinite(c0)
    for b in range(x.shape[1]):
        for t in range(lengths[b]):
            for k in range(x.shape[2]):
                bad += not np.isfinite(x[t, b, k])
    return bad
