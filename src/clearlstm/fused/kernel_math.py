"""The numba building blocks every LSTM kernel shares: gate activations, the recurrent product
as axpys or dot products, one step's gates forward and backward, and the variants' peephole
and clip terms (:func:`peep_clip_ifg`, :func:`peep_clip_o`).

Nonlinearities: float64 uses libm's exact ``tanh``/``exp`` (parity ~1e-12 with the
reference); float32 uses a rational tanh (Eigen's ``ptanh_float`` coefficients) evaluated in
float64 and clamped at ±9, which vectorizes and stays within 6e-8 of the exact value
(``sigmoid(x) = tanh(x/2)/2 + 1/2``). States smaller than ``tiny`` are flushed to zero so a
decaying memory never reaches denormal numbers (which are 10-100x slower on x86). Shapes as in
:mod:`clearlstm.fused.kernels`.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, types
from numba.extending import overload

_FASTMATH = {"contract"}  # FMAs only: no reassociation, NaN and Inf still propagate
# error_model="numpy": no ZeroDivisionError check, which would stop loops from vectorizing.
JIT = {"fastmath": _FASTMATH, "error_model": "numpy"}
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


def denormal_floor(x):  # pragma: no cover - replaced by the overload inside kernels
    return 0.0


@njit(**JIT)
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


@overload(_tanh, **JIT)
def _tanh_impl(x):
    if isinstance(x, types.Float) and x.bitwidth == 32:
        return lambda x: _rational_tanh32(x)
    return lambda x: math.tanh(x)


@overload(_sigmoid, **JIT)
def _sigmoid_impl(x):
    if isinstance(x, types.Float) and x.bitwidth == 32:
        return lambda x: np.float32(0.5) * _rational_tanh32(np.float32(0.5) * x) + np.float32(0.5)
    return lambda x: 1.0 / (1.0 + math.exp(-x))


@overload(denormal_floor)
def _tiny_impl(x):
    if isinstance(x, types.Float) and x.bitwidth == 32:
        return lambda x: np.float32(1e-30)
    return lambda x: 1e-290


@njit
def step_time(s: int, n: int, reverse: bool) -> int:
    """Time index of processing step ``s`` of a sequence of ``n`` valid steps."""
    return n - 1 - s if reverse else s


# The helpers below index whole arrays (``a[t, b, j]``) instead of taking row views: a view
# costs two atomic reference-count updates, which at H = 32 would outweigh the arithmetic.


@njit(**JIT)
def matvec_t(h, r, w_t, z, zr, paired=False):
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
def matvec_dot(v, r, w, z, zr):
    """``z[zr] = w @ v[r]``: ``v (., N)``, ``w (K, N)``, ``z (., K)``; a dot product per row.

    For a narrow result (``K`` a few vectors) from a wide ``v``: the sums are reassociated
    (LLVM splits each into vector partial sums), which takes them off one FMA chain; the
    axpys of :func:`matvec_t` would each wait on the last. Deterministic, but its own order.
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


@njit(**JIT)
def matvec_t4(h, w_t, z, paired=False):
    """:func:`matvec_t` for rows 0-3 of ``h (4, K)`` into rows 0-3 of ``z (4, N)`` at once.

    Each element is summed in exactly the order of :func:`matvec_t` (same bits), but every
    load of ``w_t`` serves four sequences instead of one: ``w_t`` beyond L1 (``H >= 64``)
    then costs a quarter of the memory traffic per sequence.
    """
    rows, width = w_t.shape
    zero = z.dtype.type(0.0)
    k = 0
    while paired and k + 8 <= rows:
        # The pass of matvec_t, repeated rather than shared: as one helper both called, the
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


@njit(**JIT)
def gates_forward(z, zr, c, h, sr, out, t, b, u0=0):
    """Activate ``z[zr] (G,)`` in place and advance ``c[sr], h[sr] (H,)``;
    ``out[t, b, u0:u0 + H] = h``."""
    hidden = c.shape[1]
    tiny = denormal_floor(z[zr, 0])
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


@njit(**JIT)
def gates_backward(dh, dc, cp, r, gates, cs, t, b, dz, u0=0):
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
    tiny = denormal_floor(dz[0, 0, 0])
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


@njit(**JIT)
def previous_c(cp, r, cs, c0, s, n, reverse, b, u0=0):
    """``cp[r] =`` the memory step ``s`` of sequence ``b`` started from (units from ``u0``)."""
    u0 = max(u0, 0)
    if s == 0:
        for j in range(cp.shape[1]):
            cp[r, j] = c0[b, u0 + j]
    else:
        tp = step_time(s - 1, n, reverse)
        for j in range(cp.shape[1]):
            cp[r, j] = cs[tp, b, u0 + j]


@njit(inline="always", **JIT)  # inlined: no aliasing doubt
def _clip_span(z, r, j0, j1, bound):
    """``z[r, j0:j1]`` clipped to ``[-bound, bound]`` in place, as selects (NaN passes: its
    comparisons are False), so the loop vectorizes."""
    for j in range(j0, j1):
        a = z[r, j]
        a = bound if a >= bound else a
        z[r, j] = -bound if a <= -bound else a


@njit(inline="always", **JIT)  # inlined: no aliasing doubt
def peep_clip_ifg(z, r, c, peep, clip):
    """What the input, forget and cell gates' activations receive, in ``z[r, :3H]`` in
    place: the peephole terms on the old memory ``c[r] (H,)`` (``peep (3, H)``, or ``(0, H)``
    for none) added, then the clip (``clip > 0``)."""
    hidden = c.shape[1]
    if peep.shape[0] > 0:
        for j in range(hidden):
            z[r, j] = z[r, j] + peep[0, j] * c[r, j]
            z[r, hidden + j] = z[r, hidden + j] + peep[1, j] * c[r, j]
    if clip > 0:
        _clip_span(z, r, 0, 3 * hidden, z.dtype.type(clip))


@njit(inline="always", **JIT)  # inlined: no aliasing doubt
def peep_clip_o(z, r, c_new, peep, clip):
    """:func:`peep_clip_ifg` for the output gate, ``z[r, 3H:]``, on the new memory."""
    hidden = c_new.shape[1]
    if peep.shape[0] > 0:
        for j in range(hidden):
            z[r, 3 * hidden + j] = z[r, 3 * hidden + j] + peep[2, j] * c_new[r, j]
    if clip > 0:
        _clip_span(z, r, 3 * hidden, 4 * hidden, z.dtype.type(clip))
