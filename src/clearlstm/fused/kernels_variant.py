"""Whole-sequence kernels for the LSTM variants: peepholes, coupled input-forget gate, cell clip.

The same loops as :func:`clearlstm.fused.kernels.forward_rows` and ``backward_rows`` (four
sequences per pass over ``w_hh`` from :data:`BLOCK_MIN_HIDDEN` on, the rest one at a time,
recurrent product fused; same bits either way), with the gate math of
:func:`clearlstm.core.cell.cell_step`'s variant terms. Separate jitted functions, so the
plain LSTM's kernels compile to the code they always did.

Arguments beyond those of :mod:`clearlstm.fused.kernels`: ``peep (3, H)`` rows ``p_i, p_f,
p_o`` or ``(0, H)`` for none; ``coupled`` (``i = 1 - f``); ``clip > 0`` the cell clip or 0
for none; in the forward ``rate_h, rate_c`` the zoneout rates of an evaluation call (its
expectation, no masks; 0 for none: a call with a gradient, or masks, runs in
:mod:`clearlstm.fused.kernels_general`). The pre-activations ``pre (T, B, G)`` are what each
activation received (peephole terms added, clipped); with a clip the backward reads them, to
know which were clipped (gradient zero on and beyond the bound, as in the reference).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from clearlstm.fused.kernel_math import (
    BLOCK_MIN_HIDDEN,
    JIT,
    ROWS,
    _sigmoid,
    _tanh,
    denormal_floor,
    matvec_dot,
    matvec_t,
    matvec_t4,
    peep_clip_ifg,
    peep_clip_o,
    previous_c,
    step_time,
)
from clearlstm.fused.kernels import _finish_forward, _start_backward


@njit(**JIT)
def gates_forward_variant(z, r, c, h, out, t, b, pre, record, peep, coupled, clip, rate_h,
                          rate_c, kept):  # fmt: skip
    """:func:`clearlstm.fused.kernel_math.gates_forward` of row 0 with the variant terms;
    writes the pre-activations to ``pre[t, b]`` with ``record``.

    In passes over the units, each without a branch inside (a branch per unit kept the loop
    scalar: 4.5x the plain kernel's time at H = 32): the peephole terms and clips of the
    input, forget and cell gates; the new memory; the output gate's peephole on it and clip;
    the new ``h``. Each value is computed with the same operations as in one pass.

    Zoneout in evaluation (``rate_h``, ``rate_c`` > 0; Krueger et al. 2016): the new ``h``
    and ``c`` blended with the old as ``rate * old + (1 - rate) * new``, its expectation, as
    :mod:`clearlstm.fused.kernels_general` does; ``h`` is computed from the memory before the
    blend. ``kept (., H)``: scratch for the old memory.
    """
    hidden = c.shape[1]
    tiny = denormal_floor(z[r, 0])
    zero = z.dtype.type(0.0)
    one = z.dtype.type(1.0)
    if rate_c > 0:
        for j in range(hidden):
            kept[r, j] = c[r, j]
    peep_clip_ifg(z, r, c, peep, clip)  # the input and forget gates look at the old memory
    if record:
        for j in range(3 * hidden):
            pre[t, b, j] = z[r, j]
    if coupled:
        for j in range(hidden):
            f = _sigmoid(z[r, hidden + j])
            i = one - f
            g = _tanh(z[r, 2 * hidden + j])
            c_new = f * c[r, j] + i * g
            c[r, j] = zero if abs(c_new) < tiny else c_new
            z[r, j], z[r, hidden + j], z[r, 2 * hidden + j] = i, f, g
    else:
        for j in range(hidden):
            i = _sigmoid(z[r, j])
            f = _sigmoid(z[r, hidden + j])
            g = _tanh(z[r, 2 * hidden + j])
            c_new = f * c[r, j] + i * g
            c[r, j] = zero if abs(c_new) < tiny else c_new
            z[r, j], z[r, hidden + j], z[r, 2 * hidden + j] = i, f, g
    peep_clip_o(z, r, c, peep, clip)  # the output gate looks at the new memory
    if record:
        for j in range(hidden):
            pre[t, b, 3 * hidden + j] = z[r, 3 * hidden + j]
    keep_h, keep_c = z.dtype.type(rate_h), z.dtype.type(rate_c)
    if rate_h > 0:
        for j in range(hidden):
            o = _sigmoid(z[r, 3 * hidden + j])
            h_new = o * _tanh(c[r, j])
            h_new = zero if abs(h_new) < tiny else h_new
            h_new = keep_h * h[r, j] + (one - keep_h) * h_new
            z[r, 3 * hidden + j] = o
            h[r, j] = h_new
            out[t, b, j] = h_new
    else:
        for j in range(hidden):
            o = _sigmoid(z[r, 3 * hidden + j])
            h_new = o * _tanh(c[r, j])
            h_new = zero if abs(h_new) < tiny else h_new
            z[r, 3 * hidden + j] = o
            h[r, j] = h_new
            out[t, b, j] = h_new
    if rate_c > 0:
        for j in range(hidden):
            c[r, j] = keep_c * kept[r, j] + (one - keep_c) * c[r, j]


@njit(**JIT)
def _forward_block_variant(xw, whh_t, h0, c0, lengths, reverse, out, h_n, c_n, gates, cs, pre,
                           store, record, peep, coupled, clip, rate_h, rate_c,
                           first):  # fmt: skip
    """Sequences ``first .. first + 3`` together, step by step (one pass over ``w_hh`` for
    four: :func:`clearlstm.fused.kernels._forward_block`)."""
    hidden = c0.shape[1]
    width = 4 * hidden
    z = np.empty((ROWS, width), xw.dtype)
    h = np.empty((ROWS, hidden), xw.dtype)
    c = np.empty((ROWS, hidden), xw.dtype)
    kept = np.empty((ROWS, hidden), xw.dtype)
    longest = 0
    for r in range(ROWS):
        for j in range(hidden):
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
            for j in range(width):
                z[r, j] = xw[t, b, j]  # read before pre[t, b] (maybe the same place) is written
        matvec_t4(h, whh_t, z)
        for r in range(ROWS):
            b, n = first + r, lengths[first + r]
            if s >= n:
                continue
            t = step_time(s, n, reverse)
            gates_forward_variant(z, r, c, h, out, t, b, pre, record, peep, coupled, clip,
                                  rate_h, rate_c, kept)  # fmt: skip
            if store:
                for j in range(width):
                    gates[t, b, j] = z[r, j]
                for j in range(hidden):
                    cs[t, b, j] = c[r, j]
    for r in range(ROWS):
        _finish_forward(h, c, r, lengths, out, h_n, c_n, gates, cs, pre, store, record, first + r)


@njit(cache=True, **JIT)
def forward_rows_variant(xw, whh_t, h0, c0, lengths, reverse, out, h_n, c_n, gates, cs, pre,
                         store, record, peep, coupled, clip, rate_h, rate_c, b0, b1):  # fmt: skip
    """Sequences ``[b0, b1)``: :data:`ROWS` at a time from :data:`BLOCK_MIN_HIDDEN` on, the
    rest one at a time, inline (same bits either way; arguments: module docstring)."""
    hidden = c0.shape[1]
    blocks = (b1 - b0) // ROWS if hidden >= BLOCK_MIN_HIDDEN else 0
    for first in range(b0, b0 + blocks * ROWS, ROWS):
        _forward_block_variant(xw, whh_t, h0, c0, lengths, reverse, out, h_n, c_n, gates, cs,
                               pre, store, record, peep, coupled, clip, rate_h, rate_c,
                               first)  # fmt: skip
    width = 4 * hidden
    z = np.empty((1, width), xw.dtype)
    h = np.empty((1, hidden), xw.dtype)
    c = np.empty((1, hidden), xw.dtype)
    kept = np.empty((1, hidden), xw.dtype)
    for b in range(b0 + blocks * ROWS, b1):
        for j in range(hidden):
            h[0, j] = h0[b, j]
            c[0, j] = c0[b, j]
        n = lengths[b]
        for s in range(n):
            t = step_time(s, n, reverse)
            for j in range(width):
                z[0, j] = xw[t, b, j]  # read before pre[t, b] (maybe the same place) is written
            matvec_t(h, 0, whh_t, z, 0)
            gates_forward_variant(z, 0, c, h, out, t, b, pre, record, peep, coupled, clip,
                                  rate_h, rate_c, kept)  # fmt: skip
            if store:
                for j in range(width):
                    gates[t, b, j] = z[0, j]
                for j in range(hidden):
                    cs[t, b, j] = c[0, j]
        _finish_forward(h, c, 0, lengths, out, h_n, c_n, gates, cs, pre, store, record, b)


@njit(cache=True, parallel=True)
def _forward_parallel(xw, whh_t, h0, c0, lengths, reverse, out, h_n, c_n, gates, cs, pre, store,
                      record, peep, coupled, clip, rate_h, rate_c, chunks):  # fmt: skip
    batch = xw.shape[1]
    for p in prange(chunks):
        b0, b1 = p * batch // chunks, (p + 1) * batch // chunks
        forward_rows_variant(xw, whh_t, h0, c0, lengths, reverse, out, h_n, c_n, gates, cs,
                             pre, store, record, peep, coupled, clip, rate_h, rate_c, b0,
                             b1)  # fmt: skip


def forward_variant(*args, threads: int = 1) -> None:
    """:func:`forward_rows_variant` over the whole batch, split across ``threads``."""
    batch = args[0].shape[1]
    if threads > 1 and batch > 1:
        _forward_parallel(*args, min(threads, batch))
    else:
        forward_rows_variant(*args, 0, batch)


@njit(**JIT)
def gates_backward_variant(dh, dc, cp, r, gates, cs, pre, t, b, dz, peep, dpeep, peeps, coupled,
                           bound):  # fmt: skip
    """:func:`clearlstm.fused.kernel_math.gates_backward` of row ``r`` with the variant terms;
    with ``peeps`` adds the peephole gradients of this step to ``dpeep[b] (3, H)``.

    The unit loop is branch-free, so it vectorizes (with a branch per variant, or the
    ``dpeep`` sums inside, it ran 1.3-1.6x the plain kernel's time): ``peep (3, H)`` zeros
    for none (adds ``0 * d``), ``bound`` ``inf`` for no clip (``pre`` then any finite array
    of its shape), ``coupled`` a select (:func:`_backward_terms`)."""
    hidden = max(cs.shape[2], 0)  # max: see kernel_math.gates_backward
    one = dz.dtype.type(1.0)
    zero = dz.dtype.type(0.0)
    tiny = denormal_floor(dz[0, 0, 0])
    for u in range(hidden):
        i = gates[t, b, u]
        f = gates[t, b, hidden + u]
        g = gates[t, b, 2 * hidden + u]
        o = gates[t, b, 3 * hidden + u]
        c_new = cs[t, b, u]
        c_old = cp[r, u]
        tc = _tanh(c_new)
        d_o = dh[r, u] * tc * o * (one - o)
        d_o = d_o if abs(pre[t, b, 3 * hidden + u]) < bound else zero
        dc_j = dc[r, u] + dh[r, u] * o * (one - tc * tc) + d_o * peep[2, u]
        c_in = c_old - g if coupled else c_old  # coupled: c' = f c + (1 - f) g
        d_f = dc_j * c_in * f * (one - f)
        d_i = zero if coupled else dc_j * g * i * (one - i)
        d_g = dc_j * i * (one - g * g)
        d_i = d_i if abs(pre[t, b, u]) < bound else zero
        d_f = d_f if abs(pre[t, b, hidden + u]) < bound else zero
        d_g = d_g if abs(pre[t, b, 2 * hidden + u]) < bound else zero
        dz[t, b, u] = d_i
        dz[t, b, hidden + u] = d_f
        dz[t, b, 2 * hidden + u] = d_g
        dz[t, b, 3 * hidden + u] = d_o
        dc_new = dc_j * f + d_i * peep[0, u] + d_f * peep[1, u]
        dc[r, u] = zero if abs(dc_new) < tiny else dc_new
    if peeps:  # a pass of its own: one more array written kept the loop above scalar
        for u in range(hidden):
            dpeep[b, 0, u] += dz[t, b, u] * cp[r, u]
            dpeep[b, 1, u] += dz[t, b, hidden + u] * cp[r, u]
            dpeep[b, 2, u] += dz[t, b, 3 * hidden + u] * cs[t, b, u]


@njit(**JIT)
def _backward_terms(gates, pre, peep, clip):
    """What :func:`gates_backward_variant` reads for ``pre``, ``peep`` and ``bound``."""
    hidden = gates.shape[2] // 4
    peeps = peep if peep.shape[0] > 0 else np.zeros((3, hidden), gates.dtype)
    if clip > 0:
        return pre, peeps, gates.dtype.type(clip)
    return gates, peeps, gates.dtype.type(np.inf)


@njit(**JIT)
def _backward_block_variant(grad_out, grad_hn, grad_cn, gates, cs, pre, c0, w_hh, lengths,
                            reverse, dz, dh0, dc0, peep, dpeep, peeps, coupled, bound,
                            first):  # fmt: skip
    """Sequences ``first .. first + 3`` together; a shorter one joins when its own last step
    comes (:func:`clearlstm.fused.kernels._backward_block`)."""
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
            gates_backward_variant(dh, dc, cp, r, gates, cs, pre, t, b, dz, peep, dpeep,
                                   peeps, coupled, bound)  # fmt: skip
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


@njit(cache=True, **JIT)
def backward_rows_variant(grad_out, grad_hn, grad_cn, gates, cs, pre, c0, w_hh, lengths, reverse,
                          dz, dh0, dc0, peep, dpeep, coupled, clip, b0, b1):  # fmt: skip
    """Sequences ``[b0, b1)`` back through time, one at a time; ``dpeep (B, 3, H)`` zeros in,
    per-sequence peephole gradients out; blocks of :data:`ROWS` as the forward."""
    steps, hidden = grad_out.shape[0], c0.shape[1]
    peeps = peep.shape[0] > 0
    pre, peep, bound = _backward_terms(gates, pre, peep, clip)
    blocks = (b1 - b0) // ROWS if hidden >= BLOCK_MIN_HIDDEN else 0
    for first in range(b0, b0 + blocks * ROWS, ROWS):
        _backward_block_variant(
            grad_out, grad_hn, grad_cn, gates, cs, pre, c0, w_hh, lengths, reverse, dz, dh0,
            dc0, peep, dpeep, peeps, coupled, bound, first,
        )  # fmt: skip
    dtype = grad_out.dtype
    dh = np.empty((1, hidden), dtype)
    dc = np.empty((1, hidden), dtype)
    cp = np.empty((1, hidden), dtype)
    dz_row = np.empty((1, 4 * hidden), dtype)
    narrow = hidden < BLOCK_MIN_HIDDEN
    whh_t = np.empty((hidden if narrow else 0, 4 * hidden), dtype)
    if narrow:
        for k in range(hidden):
            for j in range(4 * hidden):
                whh_t[k, j] = w_hh[j, k]
    tiny = denormal_floor(dh0[0, 0])
    zero = dtype.type(0.0)
    for b in range(b0 + blocks * ROWS, b1):
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
            gates_backward_variant(dh, dc, cp, 0, gates, cs, pre, t, b, dz, peep, dpeep,
                                   peeps, coupled, bound)  # fmt: skip
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
def _backward_parallel(grad_out, grad_hn, grad_cn, gates, cs, pre, c0, w_hh, lengths, reverse,
                       dz, dh0, dc0, peep, dpeep, coupled, clip, chunks):  # fmt: skip
    batch = grad_out.shape[1]
    for p in prange(chunks):
        b0, b1 = p * batch // chunks, (p + 1) * batch // chunks
        backward_rows_variant(
            grad_out, grad_hn, grad_cn, gates, cs, pre, c0, w_hh, lengths, reverse, dz, dh0,
            dc0, peep, dpeep, coupled, clip, b0, b1,
        )  # fmt: skip


def backward_variant(*args, threads: int = 1) -> None:
    """:func:`backward_rows_variant` over the whole batch, split across ``threads``."""
    batch = args[0].shape[1]
    if threads > 1 and batch > 1:
        _backward_parallel(*args, min(threads, batch))
    else:
        backward_rows_variant(*args, 0, batch)
