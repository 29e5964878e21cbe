"""Fused CPU kernels for the LSTM recurrence (numba), float32 and float64.

The kernels run only the recurrence. The input-to-hidden product of every step,
``xw = x @ w_ih.T + b_ih + b_hh (T, B, 4H)``, is one BLAS GEMM done by torch beforehand
(the "premul" of fastrnns and haste). Gate order and equations are those of
:mod:`clearlstm.cell`; the tests hold every kernel to that file.

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

Nonlinearities: float64 uses libm's exact ``tanh``/``exp`` (parity ~1e-12 with the
reference); float32 uses a rational tanh (Eigen's ``ptanh_float`` coefficients) evaluated in
float64 and clamped at ±9, which vectorizes and stays within 6e-8 of the exact value
(``sigmoid(x) = tanh(x/2)/2 + 1/2``). States smaller than ``tiny`` are flushed to zero so a
decaying memory never reaches denormal numbers (which are 10-100x slower on x86).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange, types
from numba.extending import overload

_FASTMATH = {"contract"}  # FMAs only: no reassociation, NaN and Inf still propagate
# error_model="numpy": no ZeroDivisionError check, which would stop loops from vectorizing.
_JIT = {"fastmath": _FASTMATH, "error_model": "numpy"}
_TANH_CLAMP = 9.0  # float32 tanh is exactly ±1 beyond this
_A = (
    4.89352455891786e-03,
    6.37261928875436e-04,
    1.48572235717979e-05,
    5.12229709037114e-08,
    -8.60467152213735e-11,
    2.00018790482477e-13,
    -2.76076847742355e-16,
)
_B = (4.89352518554385e-03, 2.26843463243900e-03, 1.18534705686654e-04, 1.19825839466702e-06)


def _tanh(x):  # pragma: no cover - replaced by the overload inside kernels
    return math.tanh(x)


def _sigmoid(x):  # pragma: no cover - replaced by the overload inside kernels
    return 1.0 / (1.0 + math.exp(-x))


def _tiny(x):  # pragma: no cover - replaced by the overload inside kernels
    return 0.0


@njit(**_JIT)
def _rational_tanh32(x):
    """Branch-free (vectorizable) tanh of a float32, computed in float64, error < 6e-8."""
    y = np.float64(x)
    if y > _TANH_CLAMP:  # comparisons are False for NaN, so NaN passes through
        y = _TANH_CLAMP
    elif y < -_TANH_CLAMP:
        y = -_TANH_CLAMP
    y2 = y * y
    p = _A[6]
    p = p * y2 + _A[5]
    p = p * y2 + _A[4]
    p = p * y2 + _A[3]
    p = p * y2 + _A[2]
    p = p * y2 + _A[1]
    p = p * y2 + _A[0]
    q = _B[3]
    q = q * y2 + _B[2]
    q = q * y2 + _B[1]
    q = q * y2 + _B[0]
    r = y * p / q
    if y >= _TANH_CLAMP:
        r = 1.0
    elif y <= -_TANH_CLAMP:
        r = -1.0
    return np.float32(r)


@overload(_tanh, **_JIT)
def _tanh_impl(x):
    if isinstance(x, types.Float) and x.bitwidth == 32:
        return lambda x: _rational_tanh32(x)
    return lambda x: math.tanh(x)


@overload(_sigmoid, **_JIT)
def _sigmoid_impl(x):
    if isinstance(x, types.Float) and x.bitwidth == 32:
        return lambda x: np.float32(0.5) * _rational_tanh32(np.float32(0.5) * x) + np.float32(0.5)
    return lambda x: 1.0 / (1.0 + math.exp(-x))


@overload(_tiny)
def _tiny_impl(x):
    if isinstance(x, types.Float) and x.bitwidth == 32:
        return lambda x: np.float32(1e-30)
    return lambda x: 1e-290


@njit
def _time(s: int, n: int, reverse: bool) -> int:
    """Time index of processing step ``s`` of a sequence of ``n`` valid steps."""
    return n - 1 - s if reverse else s


# The helpers below index whole arrays (``a[t, b, j]``) instead of taking row views: a view
# costs two atomic reference-count updates, which at H = 32 would outweigh the arithmetic.


@njit(**_JIT)
def _matvec_t(h, r, w_t, z, zr, paired=False):
    """``z[zr] += h[r] @ w_t``: ``h (., K)``, ``w_t (K, N)``, ``z (., N)``.

    An axpy per row of ``w_t`` (contiguous, so it vectorizes), eight rows per pass so ``z``
    is loaded and stored an eighth as often; the sum order is that of a plain loop. With
    ``paired`` each pass sums its eight rows as two chains of four, then adds them: half the
    dependency chain, for narrow ``w_t`` (few vectors per row) where the chain and not the
    arithmetic sets the pace; another sum order, so not bit-equal, but deterministic.
    """
    rows, width = w_t.shape
    zero = z.dtype.type(0.0)
    k = 0
    while k + 8 <= rows:
        h0, h1, h2, h3 = h[r, k], h[r, k + 1], h[r, k + 2], h[r, k + 3]
        h4, h5, h6, h7 = h[r, k + 4], h[r, k + 5], h[r, k + 6], h[r, k + 7]
        if paired:
            for j in range(width):
                even = z[zr, j] + h0 * w_t[k, j]
                odd = zero + h1 * w_t[k + 1, j]  # "zero +": one FMA whatever LLVM does
                even = even + h2 * w_t[k + 2, j]
                odd = odd + h3 * w_t[k + 3, j]
                even = even + h4 * w_t[k + 4, j]
                odd = odd + h5 * w_t[k + 5, j]
                even = even + h6 * w_t[k + 6, j]
                z[zr, j] = even + (odd + h7 * w_t[k + 7, j])
        else:
            for j in range(width):
                acc = z[zr, j] + h0 * w_t[k, j]
                acc = acc + h1 * w_t[k + 1, j]
                acc = acc + h2 * w_t[k + 2, j]
                acc = acc + h3 * w_t[k + 3, j]
                acc = acc + h4 * w_t[k + 4, j]
                acc = acc + h5 * w_t[k + 5, j]
                acc = acc + h6 * w_t[k + 6, j]
                z[zr, j] = acc + h7 * w_t[k + 7, j]
        k += 8
    while not paired and k + 4 <= rows:
        h0, h1, h2, h3 = h[r, k], h[r, k + 1], h[r, k + 2], h[r, k + 3]
        for j in range(width):
            acc = z[zr, j] + h0 * w_t[k, j]
            acc = acc + h1 * w_t[k + 1, j]
            acc = acc + h2 * w_t[k + 2, j]
            z[zr, j] = acc + h3 * w_t[k + 3, j]
        k += 4
    while k < rows:
        hk = h[r, k]
        for j in range(width):
            z[zr, j] += hk * w_t[k, j]
        k += 1


@njit(fastmath={"contract", "reassoc"}, error_model="numpy")
def _matvec_dot(v, r, w, z, zr):
    """``z[zr] = w @ v[r]``: ``v (., N)``, ``w (K, N)``, ``z (., K)``; a dot product per row.

    For a narrow result (``K`` a few vectors) from a wide ``v``: the sums are reassociated
    (LLVM splits each into vector partial sums), which takes them off one FMA chain; the
    axpys of :func:`_matvec_t` would each wait on the last. Deterministic, but its own order.
    """
    rows, width = w.shape
    for k in range(rows):
        acc = z.dtype.type(0.0)
        for j in range(width):
            acc += v[r, j] * w[k, j]
        z[zr, k] = acc


# From hidden_size BLOCK_MIN_HIDDEN on, ROWS sequences advance together, so each row of
# w_hh loaded serves four: forward 1.5-1.9x, backward 1.35-1.65x faster at H = 64-128. Below,
# w_hh fits in L1 and the block only adds work (forward 1.3x slower at H = 32).
ROWS = 4
BLOCK_MIN_HIDDEN = 64


@njit(**_JIT)
def _matvec_t4(h, w_t, z, paired=False):
    """:func:`_matvec_t` for rows 0-3 of ``h (4, K)`` into rows 0-3 of ``z (4, N)`` at once.

    Each element is summed in exactly the order of :func:`_matvec_t` (same bits), but every
    load of ``w_t`` serves four sequences instead of one: ``w_t`` beyond L1 (``H >= 64``)
    then costs a quarter of the memory traffic per sequence.
    """
    rows, width = w_t.shape
    zero = z.dtype.type(0.0)
    k = 0
    while paired and k + 8 <= rows:
        # The pass of _matvec_t, repeated rather than shared: as one helper both called, the
        # backward ran 1.3-1.5x slower (measured). The eight rows of w_t stay in L1 across
        # the four sequences.
        for r in range(4):
            h0, h1, h2, h3 = h[r, k], h[r, k + 1], h[r, k + 2], h[r, k + 3]
            h4, h5, h6, h7 = h[r, k + 4], h[r, k + 5], h[r, k + 6], h[r, k + 7]
            for j in range(width):
                even = z[r, j] + h0 * w_t[k, j]
                odd = zero + h1 * w_t[k + 1, j]
                even = even + h2 * w_t[k + 2, j]
                odd = odd + h3 * w_t[k + 3, j]
                even = even + h4 * w_t[k + 4, j]
                odd = odd + h5 * w_t[k + 5, j]
                even = even + h6 * w_t[k + 6, j]
                z[r, j] = even + (odd + h7 * w_t[k + 7, j])
        k += 8
    while not paired and k + 4 <= rows:
        a0, a1, a2, a3 = h[0, k], h[0, k + 1], h[0, k + 2], h[0, k + 3]
        b0, b1, b2, b3 = h[1, k], h[1, k + 1], h[1, k + 2], h[1, k + 3]
        c0, c1, c2, c3 = h[2, k], h[2, k + 1], h[2, k + 2], h[2, k + 3]
        d0, d1, d2, d3 = h[3, k], h[3, k + 1], h[3, k + 2], h[3, k + 3]
        for j in range(width):
            w0, w1, w2, w3 = w_t[k, j], w_t[k + 1, j], w_t[k + 2, j], w_t[k + 3, j]
            z[0, j] = z[0, j] + a0 * w0 + a1 * w1 + a2 * w2 + a3 * w3
            z[1, j] = z[1, j] + b0 * w0 + b1 * w1 + b2 * w2 + b3 * w3
            z[2, j] = z[2, j] + c0 * w0 + c1 * w1 + c2 * w2 + c3 * w3
            z[3, j] = z[3, j] + d0 * w0 + d1 * w1 + d2 * w2 + d3 * w3
        k += 4
    while k < rows:
        for r in range(4):
            hk = h[r, k]
            for j in range(width):
                z[r, j] += hk * w_t[k, j]
        k += 1


@njit(**_JIT)
def _gates_forward(z, zr, c, h, sr, out, t, b, u0=0):
    """Activate ``z[zr] (G,)`` in place and advance ``c[sr], h[sr] (H,)``;
    ``out[t, b, u0:u0 + H] = h``."""
    hidden = c.shape[1]
    tiny = _tiny(z[zr, 0])
    zero = z.dtype.type(0.0)
    for j in range(hidden):
        i = _sigmoid(z[zr, j])
        f = _sigmoid(z[zr, hidden + j])
        g = _tanh(z[zr, 2 * hidden + j])
        o = _sigmoid(z[zr, 3 * hidden + j])
        c_new = f * c[sr, j] + i * g
        if abs(c_new) < tiny:  # flush to zero before the memory decays into denormals
            c_new = zero
        h_new = o * _tanh(c_new)
        if abs(h_new) < tiny:
            h_new = zero
        z[zr, j] = i
        z[zr, hidden + j] = f
        z[zr, 2 * hidden + j] = g
        z[zr, 3 * hidden + j] = o
        c[sr, j] = c_new
        h[sr, j] = h_new
        out[t, b, u0 + j] = h_new


@njit(**_JIT)
def _gates_backward(dh, dc, cp, r, gates, cs, t, b, dz, u0=0):
    """One step back through the gates of sequence ``b`` at time ``t``, units
    ``[u0, u0 + H')`` where ``H' = dh.shape[1]`` (all units unless the units are split).

    ``dh[r] (H',)`` is the total gradient w.r.t. this step's ``h``; ``dc[r]`` the gradient
    w.r.t. its ``c`` from later steps, replaced by the gradient w.r.t. the previous ``c``,
    ``cp[r]``. Reads ``gates (T, B, G)``, ``cs (T, B, H)``; writes ``dz[t, b] (G,)``.
    """
    # max(., 0): proves the offsets below non-negative, so numba's negative-index wraparound
    # folds away and the loop vectorizes (5.1 ns a unit at H = 64 before, 1.8 after).
    units, hidden, u0 = max(dh.shape[1], 0), max(cs.shape[2], 0), max(u0, 0)
    one = dz.dtype.type(1.0)
    zero = dz.dtype.type(0.0)
    tiny = _tiny(dz[0, 0, 0])
    for j in range(units):
        u = u0 + j
        i = gates[t, b, u]
        f = gates[t, b, hidden + u]
        g = gates[t, b, 2 * hidden + u]
        o = gates[t, b, 3 * hidden + u]
        tc = _tanh(cs[t, b, u])
        dc_j = dc[r, j] + dh[r, j] * o * (one - tc * tc)
        dz[t, b, u] = dc_j * g * i * (one - i)
        dz[t, b, hidden + u] = dc_j * cp[r, j] * f * (one - f)
        dz[t, b, 2 * hidden + u] = dc_j * i * (one - g * g)
        dz[t, b, 3 * hidden + u] = dh[r, j] * tc * o * (one - o)
        dc_new = dc_j * f
        if abs(dc_new) < tiny:
            dc_new = zero
        dc[r, j] = dc_new


@njit(**_JIT)
def _previous_c(cp, r, cs, c0, s, n, reverse, b, u0=0):
    """``cp[r] =`` the memory step ``s`` of sequence ``b`` started from (units from ``u0``)."""
    u0 = max(u0, 0)
    if s == 0:
        for j in range(cp.shape[1]):
            cp[r, j] = c0[b, u0 + j]
    else:
        tp = _time(s - 1, n, reverse)
        for j in range(cp.shape[1]):
            cp[r, j] = cs[tp, b, u0 + j]


@njit(**_JIT)
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
            t = _time(s, n, reverse)
            for j in range(z.shape[1]):
                z[r, j] = xw[t, b, j]
        _matvec_t4(h, whh_t, z)
        for r in range(ROWS):
            b, n = first + r, lengths[first + r]
            if s >= n:
                continue
            t = _time(s, n, reverse)
            if record:
                for j in range(z.shape[1]):
                    pre[t, b, j] = z[r, j]
            _gates_forward(z, r, c, h, r, out, t, b)
            if store:
                for j in range(z.shape[1]):
                    gates[t, b, j] = z[r, j]
                for j in range(hidden):
                    cs[t, b, j] = c[r, j]
    for r in range(ROWS):
        _finish_forward(h, c, r, lengths, out, h_n, c_n, gates, cs, pre, store, record, first + r)


@njit(**_JIT)
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


@njit(cache=True, **_JIT)
def _forward_rows(
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
            t = _time(s, n, reverse)
            for j in range(width):
                z[0, j] = xw[t, b, j]
            _matvec_t(h, 0, whh_t, z, 0)
            if record:
                for j in range(width):
                    pre[t, b, j] = z[0, j]
            _gates_forward(z, 0, c, h, 0, out, t, b)
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
        _forward_rows(
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
        _forward_rows(*args, 0, batch)


@njit(**_JIT)
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
    tiny = _tiny(dh0[0, 0])
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
            t = _time(s, n, reverse)
            for j in range(hidden):
                dh[r, j] += grad_out[t, b, j]
            _previous_c(cp, r, cs, c0, s, n, reverse, b)
            _gates_backward(dh, dc, cp, r, gates, cs, t, b, dz)
            for j in range(4 * hidden):
                dz_rows[r, j] = dz[t, b, j]
        dh_next[:] = 0.0
        _matvec_t4(dz_rows, w_hh, dh_next, True)  # dh = dz[t, b] @ w_hh, four at once
        for r in range(ROWS):
            if s < lengths[first + r]:
                for j in range(hidden):
                    v = dh_next[r, j]
                    dh[r, j] = zero if abs(v) < tiny else v
    for r in range(ROWS):
        for j in range(hidden):
            dh0[first + r, j] = dh[r, j]
            dc0[first + r, j] = dc[r, j]


@njit(**_JIT)
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


@njit(cache=True, **_JIT)
def _backward_rows(
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
    tiny = _tiny(dh0[0, 0])
    zero = dtype.type(0.0)
    for b in range(b0 + blocks * ROWS, b1):  # one at a time: inline, not a helper (~25% faster)
        for j in range(hidden):
            dh[0, j] = grad_hn[b, j]
            dc[0, j] = grad_cn[b, j]
        n = lengths[b]
        for t in range(n, steps):
            dz[t, b, :] = 0.0
        for s in range(n - 1, -1, -1):
            t = _time(s, n, reverse)
            for j in range(hidden):
                dh[0, j] += grad_out[t, b, j]
            _previous_c(cp, 0, cs, c0, s, n, reverse, b)
            _gates_backward(dh, dc, cp, 0, gates, cs, t, b, dz)
            for j in range(4 * hidden):
                dz_row[0, j] = dz[t, b, j]
            if narrow:  # dh = dz[t, b] @ w_hh
                _matvec_dot(dz_row, 0, whh_t, dh, 0)
            else:
                for j in range(hidden):
                    dh[0, j] = 0.0
                _matvec_t(dz_row, 0, w_hh, dh, 0, True)
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
        _backward_rows(
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
        _backward_rows(*args, 0, batch)


# Gate values per step (batch * 4H) from which the step kernels split the batch across
# threads (each parallel region costs µs to start): traces at (B, H) = (16, 512) and
# (64, 1024) 0.95x the time, (64, 512) 0.91x; at 16k values no gain.
PARALLEL_GATES_MIN = 1 << 15


@njit(cache=True, **_JIT)
def _forward_gates_rows(
    s, xw, hw, h, c, lengths, reverse, out, gates, cs, pre, store, record, b0, b1
):
    """:func:`forward_gates` for sequences ``[b0, b1)``."""
    hidden = c.shape[1]
    width = 4 * hidden
    nan = xw.dtype.type(np.nan)
    for b in range(b0, b1):
        n = lengths[b]
        if s >= n:  # padded: the state stays, the output is zero
            out[s, b, :] = 0.0
            if store:
                gates[s, b, :] = nan
                cs[s, b, :] = nan
            if record:
                pre[s, b, :] = nan
            continue
        t = _time(s, n, reverse)
        for j in range(width):
            hw[b, j] += xw[t, b, j]
        if record:
            for j in range(width):
                pre[t, b, j] = hw[b, j]
        _gates_forward(hw, b, c, h, b, out, t, b)
        if store:
            for j in range(width):
                gates[t, b, j] = hw[b, j]
            for j in range(hidden):
                cs[t, b, j] = c[b, j]


@njit(cache=True, parallel=True)
def _forward_gates_parallel(
    s, xw, hw, h, c, lengths, reverse, out, gates, cs, pre, store, record, chunks
):
    batch = xw.shape[1]
    for p in prange(chunks):
        b0, b1 = p * batch // chunks, (p + 1) * batch // chunks
        _forward_gates_rows(
            s, xw, hw, h, c, lengths, reverse, out, gates, cs, pre, store, record, b0, b1
        )


def forward_gates(
    s: int,
    xw: np.ndarray,
    hw: np.ndarray,
    h: np.ndarray,
    c: np.ndarray,
    lengths: np.ndarray,
    reverse: bool,
    out: np.ndarray,
    gates: np.ndarray,
    cs: np.ndarray,
    pre: np.ndarray,
    store: bool,
    record: bool,
    threads: int = 1,
) -> None:
    """Processing step ``s`` for the whole batch, after BLAS computed ``hw = h @ w_hh.T``.

    ``xw (T, B, G)``, ``hw (B, G)`` (overwritten), ``h, c (B, H)`` advanced in place; other
    arguments as in :func:`forward_sequence`. With ``threads > 1`` and at least
    :data:`PARALLEL_GATES_MIN` gate values the batch is split across numba threads.
    """
    args = (s, xw, hw, h, c, lengths, reverse, out, gates, cs, pre, store, record)
    _over_batch(_forward_gates_rows, _forward_gates_parallel, args, xw.shape[2], threads)


def _over_batch(rows, parallel, args, width: int, threads: int) -> None:
    """``rows(*args, 0, B)`` for the batch ``B = args[1].shape[1]``, or ``parallel(*args,
    chunks)`` splitting it across threads when a step has enough gate values (``B * width``).
    """
    batch = args[1].shape[1]
    if threads > 1 and batch > 1 and batch * width >= PARALLEL_GATES_MIN:
        parallel(*args, min(threads, batch))
    else:
        rows(*args, 0, batch)


@njit(cache=True, **_JIT)
def _backward_gates_rows(
    s, grad_out, dh_rec, dh, dc, gates, cs, c0, lengths, reverse, dz, dz_step, b0, b1
):
    """:func:`backward_gates` for sequences ``[b0, b1)``."""
    hidden = dh.shape[1]
    width = 4 * hidden
    cp = np.empty(dh.shape, dh.dtype)
    for b in range(b0, b1):
        n = lengths[b]
        if s + 1 < n:  # step s + 1 ran, so its recurrent gradient replaces the carry
            for j in range(hidden):
                dh[b, j] = dh_rec[b, j]
        if s >= n:
            dz[s, b, :] = 0.0
            dz_step[b, :] = 0.0
            continue
        t = _time(s, n, reverse)
        for j in range(hidden):
            dh[b, j] += grad_out[t, b, j]
        _previous_c(cp, b, cs, c0, s, n, reverse, b)
        _gates_backward(dh, dc, cp, b, gates, cs, t, b, dz)
        for j in range(width):
            dz_step[b, j] = dz[t, b, j]


@njit(cache=True, parallel=True)
def _backward_gates_parallel(
    s, grad_out, dh_rec, dh, dc, gates, cs, c0, lengths, reverse, dz, dz_step, chunks
):
    batch = grad_out.shape[1]
    for p in prange(chunks):
        b0, b1 = p * batch // chunks, (p + 1) * batch // chunks
        _backward_gates_rows(
            s, grad_out, dh_rec, dh, dc, gates, cs, c0, lengths, reverse, dz, dz_step, b0, b1
        )


def backward_gates(
    s: int,
    grad_out: np.ndarray,
    dh_rec: np.ndarray,
    dh: np.ndarray,
    dc: np.ndarray,
    gates: np.ndarray,
    cs: np.ndarray,
    c0: np.ndarray,
    lengths: np.ndarray,
    reverse: bool,
    dz: np.ndarray,
    dz_step: np.ndarray,
    threads: int = 1,
) -> None:
    """Processing step ``s`` backwards for the whole batch; BLAS then does ``dz_step @ w_hh``.

    ``dh_rec (B, H)`` is ``dz_step @ w_hh`` of step ``s + 1`` (ignored at ``s = T - 1``);
    ``dh, dc (B, H)`` carry the gradients w.r.t. the state after step ``s``. Writes
    ``dz (T, B, G)`` at this step's times and ``dz_step (B, G)`` (zero for padded rows).
    Threads as in :func:`forward_gates`.
    """
    args = (s, grad_out, dh_rec, dh, dc, gates, cs, c0, lengths, reverse, dz, dz_step)
    _over_batch(_backward_gates_rows, _backward_gates_parallel, args, dz.shape[2], threads)


@njit(cache=True, **_JIT)
def stream_step(x, w_ih_t, whh_t, bias, h, c, z, out):
    """One step for streaming: ``x (B, I)``, ``w_ih_t (I, G)``, ``whh_t (H, G)``, ``bias (G,)``.

    Advances ``h, c (B, H)`` in place; ``z (B, G)`` is scratch; ``out (1, B, H)`` gets ``h``.
    """
    for b in range(x.shape[0]):
        for j in range(z.shape[1]):
            z[b, j] = bias[j]
        _matvec_t(x, b, w_ih_t, z, b)
        _matvec_t(h, b, whh_t, z, b)
        _gates_forward(z, b, c, h, b, out, 0, b)


@njit(cache=True, **_JIT)
def count_nonfinite(values):
    """How many entries of ``values`` (any shape) are NaN or ±Inf: one vectorized pass."""
    flat = values.ravel()  # a view when contiguous, else a copy
    count = 0
    for i in range(flat.size):
        count += not np.isfinite(flat[i])
    return count


@njit(cache=True, **_JIT)
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
