"""Whole-sequence kernels for every LSTM variant at once: those of
:mod:`clearlstm.fused.kernels_variant` (peepholes, coupled gates, cell clip) and the layer
norm inside the recurrence, zoneout and variational recurrent dropout, with the gate math of
:func:`clearlstm.core.cell.cell_step`. Separate jitted functions, so neither the plain nor the
peephole/clip kernels pay for what they do not run.

Arguments beyond :mod:`clearlstm.fused.kernels_variant`'s (a feature is off where its array
has a zero first axis):

- ``xw (T, B, G)``: the input side, done by torch ops before: ``LN_ih(W_ih x) + b_ih +
  b_hh + ln_bias_hh`` (or ``W_ih x + b``), the input dropout applied to ``x`` first;
- ``rmask (B, H)``: the recurrent dropout mask, ``h * rmask`` enters ``W_hh``;
- ``gain_h (G,)``: the gain of ``LN(W_hh h)`` (its bias is in ``xw``); ``zr_hat (T, B, G)``
  stores ``LN``'s normalised values and ``stats (T, B, 4)`` the means and reciprocal
  standard deviations of ``W_hh h`` and of ``c`` (for the backward);
- ``ln_c (2, H)``: gain and bias of ``LN(c)`` before ``tanh``;
- ``zone_h, zone_c (T, B, H)``: zoneout masks (1: keep the previous value), else the rates
  ``rate_h``, ``rate_c`` (evaluation: the expectation; 0: off).

``cs`` stores the state ``c`` (after zoneout), which the next step reads; the backward
recomputes the new memory before zoneout, ``f c_prev + i g``, from the stored gates.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from clearlstm.fused.kernel_math import (
    BLOCK_MIN_HIDDEN,
    JIT,
    _sigmoid,
    _tanh,
    denormal_floor,
    matvec_dot,
    matvec_t,
    peep_clip_ifg,
    peep_clip_o,
    previous_c,
    step_time,
)
from clearlstm.fused.kernels import _finish_forward

LN_EPS = 1e-5  # clearlstm.core.records.LN_EPS (torch.nn.LayerNorm's)


# Sums reassociated (LLVM splits them into vector partial sums): in the order of a plain loop
# they were one dependent add per element, 2-3x the whole plain step at H = 64. Deterministic
# (the same code every call), within rounding of the reference.
_SUMS = {"fastmath": {"contract", "reassoc"}, "error_model": "numpy"}


@njit(**_SUMS)
def _moments(v, width):
    """Mean and reciprocal standard deviation (biased variance + eps) of ``v[0, :width]``."""
    mean = v.dtype.type(0.0)
    for j in range(width):
        mean += v[0, j]
    mean = mean / width
    var = v.dtype.type(0.0)
    for j in range(width):
        d = v[0, j] - mean
        var += d * d
    var = var / width
    return mean, v.dtype.type(1.0) / math.sqrt(var + v.dtype.type(LN_EPS))


@njit(**_SUMS)
def _gained_sums(dz, zr_hat, gain_h, dz_row, t, b):
    """``dz_row[0] = dz[t, b] * gain_h``; returns its sum and its dot with ``zr_hat[t, b]``."""
    m1 = m2 = dz.dtype.type(0.0)
    for j in range(dz.shape[2]):
        v = dz[t, b, j] * gain_h[j]
        dz_row[0, j] = v
        m1 += v
        m2 += v * zr_hat[t, b, j]
    return m1, m2


@njit(cache=True, **JIT)
def forward_rows_general(xw, whh_t, h0, c0, lengths, reverse, out, h_n, c_n, gates, cs, pre,
                         store, record, peep, coupled, clip, rmask, gain_h, zr_hat, stats, ln_c,
                         zone_h, zone_c, rate_h, rate_c, b0, b1):  # fmt: skip
    """Sequences ``[b0, b1)`` one at a time (arguments: module docstring)."""
    steps, hidden = xw.shape[0], c0.shape[1]
    width = 4 * hidden
    dt = xw.dtype
    z, zr = np.empty((1, width), dt), np.empty((1, width), dt)
    h, c = np.empty((1, hidden), dt), np.empty((1, hidden), dt)
    hm, ct = np.empty((1, hidden), dt), np.empty((1, hidden), dt)
    hn = np.empty((1, hidden), dt)
    tiny, zero, one = denormal_floor(z[0, 0]), dt.type(0.0), dt.type(1.0)
    masked, ln_h, ln_cell = rmask.shape[0] > 0, gain_h.shape[0] > 0, ln_c.shape[0] > 0
    zh_masks, zc_masks = zone_h.shape[0] > 0, zone_c.shape[0] > 0
    r_h, r_c = dt.type(rate_h), dt.type(rate_c)
    mean_c, rstd_c = zero, one
    # Passes over the units with no branch inside (a branch per unit keeps a loop scalar),
    # each value computed with the same operations as in one pass.
    for b in range(b0, b1):
        for j in range(hidden):
            h[0, j] = h0[b, j]
            c[0, j] = c0[b, j]
        n = lengths[b]
        for s in range(n):
            t = step_time(s, n, reverse)
            if masked:
                for j in range(hidden):
                    hm[0, j] = h[0, j] * rmask[b, j]
            else:
                for j in range(hidden):
                    hm[0, j] = h[0, j]
            if ln_h:  # z = xw + gain * LN(W_hh h) (the LN's bias is in xw)
                for j in range(width):
                    zr[0, j] = zero
                matvec_t(hm, 0, whh_t, zr, 0)
                mean, rstd = _moments(zr, width)
                for j in range(width):
                    zr[0, j] = (zr[0, j] - mean) * rstd
                    z[0, j] = xw[t, b, j] + gain_h[j] * zr[0, j]
                if store:
                    for j in range(width):
                        zr_hat[t, b, j] = zr[0, j]
                    stats[t, b, 0], stats[t, b, 1] = mean, rstd
            else:
                for j in range(width):
                    z[0, j] = xw[t, b, j]
                matvec_t(hm, 0, whh_t, z, 0)
            peep_clip_ifg(z, 0, c, peep, clip)
            if record:
                for j in range(3 * hidden):
                    pre[t, b, j] = z[0, j]
            for j in range(hidden):
                f = _sigmoid(z[0, hidden + j])
                i = _sigmoid(z[0, j])
                i = one - f if coupled else i
                g = _tanh(z[0, 2 * hidden + j])
                c_new = f * c[0, j] + i * g
                ct[0, j] = zero if abs(c_new) < tiny else c_new
                z[0, j], z[0, hidden + j], z[0, 2 * hidden + j] = i, f, g
            if ln_cell:
                mean_c, rstd_c = _moments(ct, hidden)
                if store:
                    stats[t, b, 2], stats[t, b, 3] = mean_c, rstd_c
            peep_clip_o(z, 0, ct, peep, clip)
            if record:
                for j in range(3 * hidden, width):
                    pre[t, b, j] = z[0, j]
            if ln_cell:
                for j in range(hidden):
                    hn[0, j] = (ct[0, j] - mean_c) * rstd_c * ln_c[0, j] + ln_c[1, j]
            else:
                for j in range(hidden):
                    hn[0, j] = ct[0, j]
            for j in range(hidden):
                o = _sigmoid(z[0, 3 * hidden + j])
                h_new = o * _tanh(hn[0, j])
                hn[0, j] = zero if abs(h_new) < tiny else h_new
                z[0, 3 * hidden + j] = o
            # zoneout: keep the previous value where the mask is 1 (the rate in evaluation)
            if zc_masks:
                for j in range(hidden):
                    d = zone_c[t, b, j]
                    ct[0, j] = d * c[0, j] + (one - d) * ct[0, j]
            elif rate_c > 0:
                for j in range(hidden):
                    ct[0, j] = r_c * c[0, j] + (one - r_c) * ct[0, j]
            if zh_masks:
                for j in range(hidden):
                    d = zone_h[t, b, j]
                    hn[0, j] = d * h[0, j] + (one - d) * hn[0, j]
            elif rate_h > 0:
                for j in range(hidden):
                    hn[0, j] = r_h * h[0, j] + (one - r_h) * hn[0, j]
            for j in range(hidden):
                c[0, j] = ct[0, j]
                h[0, j] = hn[0, j]
                out[t, b, j] = hn[0, j]
            if store:
                for j in range(width):
                    gates[t, b, j] = z[0, j]
                for j in range(hidden):
                    cs[t, b, j] = c[0, j]
        if store and ln_h:  # the gain's gradient sums dz * zr_hat over every step
            for t in range(n, steps):
                zr_hat[t, b, :] = 0.0
        _finish_forward(h, c, 0, lengths, out, h_n, c_n, gates, cs, pre, store, record, b)


@njit(cache=True, parallel=True)
def _forward_parallel(*args):
    chunks = args[-1]
    batch = args[0].shape[1]
    for p in prange(chunks):
        forward_rows_general(*args[:-1], p * batch // chunks, (p + 1) * batch // chunks)


def forward_general(*args, threads: int = 1) -> None:
    """:func:`forward_rows_general` over the whole batch, split across ``threads``."""
    batch = args[0].shape[1]
    if threads > 1 and batch > 1:
        _forward_parallel(*args, min(threads, batch))
    else:
        forward_rows_general(*args, 0, batch)


@njit(cache=True, **JIT)
def backward_rows_general(grad_out, grad_hn, grad_cn, gates, cs, pre, c0, w_hh, lengths, reverse,
                          dz, dzr, dh0, dc0, peep, dpeep, coupled, clip, rmask, gain_h, zr_hat,
                          stats, ln_c, dln_c, zone_h, zone_c, rate_h, rate_c, b0, b1):  # fmt: skip
    """Sequences ``[b0, b1)`` back through time. ``dz (T, B, G)``: the gradient w.r.t. ``xw``;
    ``dzr``: w.r.t. ``W_hh (h * rmask)`` (the same array without the LN on it); ``dpeep
    (B, 3, H)``, ``dln_c (B, 2, H)`` zeros in, per-sequence gradients out."""
    steps, hidden = grad_out.shape[0], c0.shape[1]
    width = 4 * hidden
    dt = grad_out.dtype
    dh, dc, cp = np.empty((1, hidden), dt), np.empty((1, hidden), dt), np.empty((1, hidden), dt)
    keep_h, keep_c = np.zeros((1, hidden), dt), np.zeros((1, hidden), dt)
    ct, dhat = np.empty((1, hidden), dt), np.empty((1, hidden), dt)
    dz_row = np.empty((1, width), dt)
    narrow = hidden < BLOCK_MIN_HIDDEN
    whh_t = np.empty((hidden if narrow else 0, width), dt)
    if narrow:
        for k in range(hidden):
            for j in range(width):
                whh_t[k, j] = w_hh[j, k]
    tiny, zero, one = denormal_floor(dh0[0, 0]), dt.type(0.0), dt.type(1.0)
    bound, use, peeps = dt.type(clip), clip > 0, peep.shape[0] > 0
    masked, ln_h, ln_cell = rmask.shape[0] > 0, gain_h.shape[0] > 0, ln_c.shape[0] > 0
    zh_masks, zc_masks = zone_h.shape[0] > 0, zone_c.shape[0] > 0
    zoning_h, zoning_c = zh_masks or rate_h > 0, zc_masks or rate_c > 0
    r_h, r_c = dt.type(rate_h), dt.type(rate_c)
    mean_c, rstd_c = zero, one
    for b in range(b0, b1):
        for j in range(hidden):
            dh[0, j] = grad_hn[b, j]
            dc[0, j] = grad_cn[b, j]
        n = lengths[b]
        for t in range(n, steps):
            dz[t, b, :] = 0.0
            dzr[t, b, :] = 0.0
        for s in range(n - 1, -1, -1):
            t = step_time(s, n, reverse)
            previous_c(cp, 0, cs, c0, s, n, reverse, b)
            for j in range(hidden):  # zoneout: the kept share goes straight to the last state
                dh[0, j] += grad_out[t, b, j]
                if zoning_h:
                    d = zone_h[t, b, j] if zh_masks else r_h
                    keep_h[0, j] = d * dh[0, j]
                    dh[0, j] = (one - d) * dh[0, j]
                if zoning_c:
                    d = zone_c[t, b, j] if zc_masks else r_c
                    keep_c[0, j] = d * dc[0, j]
                    dc[0, j] = (one - d) * dc[0, j]
            if ln_cell:
                mean_c, rstd_c = stats[t, b, 2], stats[t, b, 3]
            m1, m2 = zero, zero
            for u in range(hidden):  # through h = o * tanh(LN(c)): d_o and d LN(c)
                i, f = gates[t, b, u], gates[t, b, hidden + u]
                g, o = gates[t, b, 2 * hidden + u], gates[t, b, 3 * hidden + u]
                c_new = f * cp[0, u] + i * g
                if abs(c_new) < tiny:
                    c_new = zero
                ct[0, u] = c_new
                x_hat = (c_new - mean_c) * rstd_c
                tc = _tanh(x_hat * ln_c[0, u] + ln_c[1, u] if ln_cell else c_new)
                d_o = dh[0, u] * tc * o * (one - o)
                if use and not abs(pre[t, b, 3 * hidden + u]) < bound:
                    d_o = zero
                dz[t, b, 3 * hidden + u] = d_o
                d_out = dh[0, u] * o * (one - tc * tc)
                if ln_cell:
                    dln_c[b, 0, u] += d_out * x_hat
                    dln_c[b, 1, u] += d_out
                    d_out = d_out * ln_c[0, u]
                    m1 += d_out
                    m2 += d_out * x_hat
                dhat[0, u] = d_out
            m1, m2 = m1 / hidden, m2 / hidden
            for u in range(hidden):
                i, f = gates[t, b, u], gates[t, b, hidden + u]
                g = gates[t, b, 2 * hidden + u]
                d_c = dhat[0, u]
                if ln_cell:
                    d_c = rstd_c * (d_c - m1 - (ct[0, u] - mean_c) * rstd_c * m2)
                dc_j = dc[0, u] + d_c
                d_o = dz[t, b, 3 * hidden + u]
                if peeps:
                    dc_j = dc_j + d_o * peep[2, u]
                c_old = cp[0, u]
                if coupled:  # c' = f c + (1 - f) g
                    d_i = zero
                    d_f = dc_j * (c_old - g) * f * (one - f)
                else:
                    d_i = dc_j * g * i * (one - i)
                    d_f = dc_j * c_old * f * (one - f)
                d_g = dc_j * i * (one - g * g)
                if use:
                    if not abs(pre[t, b, u]) < bound:
                        d_i = zero
                    if not abs(pre[t, b, hidden + u]) < bound:
                        d_f = zero
                    if not abs(pre[t, b, 2 * hidden + u]) < bound:
                        d_g = zero
                dz[t, b, u], dz[t, b, hidden + u], dz[t, b, 2 * hidden + u] = d_i, d_f, d_g
                dc_new = dc_j * f
                if peeps:
                    dc_new = dc_new + d_i * peep[0, u] + d_f * peep[1, u]
                    dpeep[b, 0, u] += d_i * c_old
                    dpeep[b, 1, u] += d_f * c_old
                    dpeep[b, 2, u] += d_o * ct[0, u]
                dc_new = dc_new + keep_c[0, u]
                if abs(dc_new) < tiny:
                    dc_new = zero
                dc[0, u] = dc_new
            if ln_h:  # back through gain * LN(W_hh h)
                m1, m2 = _gained_sums(dz, zr_hat, gain_h, dz_row, t, b)
                m1, m2 = m1 / width, m2 / width
                rstd = stats[t, b, 1]
                for j in range(width):
                    v = rstd * (dz_row[0, j] - m1 - zr_hat[t, b, j] * m2)
                    dz_row[0, j] = v
                    dzr[t, b, j] = v
            else:
                for j in range(width):
                    dz_row[0, j] = dz[t, b, j]
            if narrow:  # dh = dzr[t, b] @ w_hh
                matvec_dot(dz_row, 0, whh_t, dh, 0)
            else:
                for j in range(hidden):
                    dh[0, j] = 0.0
                matvec_t(dz_row, 0, w_hh, dh, 0, True)
            for j in range(hidden):
                v = dh[0, j] * rmask[b, j] if masked else dh[0, j]
                v = v + keep_h[0, j]
                if abs(v) < tiny:
                    v = zero
                dh[0, j] = v
        for j in range(hidden):
            dh0[b, j] = dh[0, j]
            dc0[b, j] = dc[0, j]


@njit(cache=True, parallel=True)
def _backward_parallel(*args):
    chunks = args[-1]
    batch = args[0].shape[1]
    for p in prange(chunks):
        backward_rows_general(*args[:-1], p * batch // chunks, (p + 1) * batch // chunks)


def backward_general(*args, threads: int = 1) -> None:
    """:func:`backward_rows_general` over the whole batch, split across ``threads``."""
    batch = args[0].shape[1]
    if threads > 1 and batch > 1:
        _backward_parallel(*args, min(threads, batch))
    else:
        backward_rows_general(*args, 0, batch)
