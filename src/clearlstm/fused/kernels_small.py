"""Whole-layer kernels for tiny calls: forward and backward each in one numba call.

Below a few thousand multiply-adds the fixed costs dominate: a BLAS call, each tensor
operation (~2-5 µs) and the autograd plumbing around them. Here the input product, the
recurrence (the loops of :mod:`clearlstm.fused.kernels`) and, backwards, every gradient GEMM run
inside one compiled function each. Shapes as in :mod:`clearlstm.fused.kernels`; ``I`` inputs.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from clearlstm.fused.kernel_math import JIT, step_time
from clearlstm.fused.kernels import backward_rows, count_nonfinite_layer, forward_rows


@njit(cache=True, **JIT)
def forward_small(x, w_ih, w_hh, h0, c0, b_ih, b_hh, lengths, reverse, store, record, xw, gates,
                  cs, pre):  # fmt: skip
    """A whole layer-direction, input product included.

    ``x (T, B, I)``, ``w_ih (G, I)``, ``w_hh (G, H)``, ``h0, c0 (B, H)``, ``b_ih, b_hh (G,)``,
    ``lengths (B,)``. Returns ``out (T, B, H), h_n, c_n (B, H)``, and the activated gates
    ``(T, B, G)`` and memories ``(T, B, H)`` with ``store``, the pre-activations ``(T, B, G)``
    with ``record`` (empty arrays without); padding as in ``kernels.forward_sequence``.
    ``xw (T, B, G)`` (scratch for the input products), ``gates``, ``cs``, ``pre``: buffers
    to fill, or empty arrays to allocate them here (with ``record`` and no ``xw``, ``pre``
    holds the input products until each step overwrites them).
    """
    steps, batch, inputs = x.shape
    width, hidden = w_hh.shape
    dtype = x.dtype
    none = (0, 0, 0)
    if gates.shape[0] != steps:  # not given
        gates = np.empty((steps, batch, width) if store else none, dtype)
    if cs.shape[0] != steps:
        cs = np.empty((steps, batch, hidden) if store else none, dtype)
    if pre.shape[0] != steps:
        pre = np.empty((steps, batch, width) if record else none, dtype)
    if xw.shape[0] != steps:  # each step reads its xw before writing pre at the same place
        xw = pre if record else np.empty((steps, batch, width), dtype)
    bias = b_ih + b_hh
    w_ih_t = np.ascontiguousarray(w_ih.T)  # (I, G): rows vectorize over the gates
    for t in range(steps):
        for b in range(batch):
            for r in range(width):
                xw[t, b, r] = bias[r]
            for k in range(inputs):  # an axpy per input, summed in input order
                xk = x[t, b, k]
                for r in range(width):
                    xw[t, b, r] += xk * w_ih_t[k, r]
    out = np.empty((steps, batch, hidden), dtype)
    h_n = np.empty((batch, hidden), dtype)
    c_n = np.empty((batch, hidden), dtype)
    forward_rows(
        xw, np.ascontiguousarray(w_hh.T), h0, c0, lengths, reverse, out, h_n, c_n, gates, cs,
        pre, store, record, 0, batch,
    )  # fmt: skip
    return out, h_n, c_n, gates, cs, pre


@njit(cache=True, **JIT)
def infer_small(x, w_ih, w_hh, h0, c0, b_ih, b_hh, lengths, reverse, xw):
    """:func:`forward_small` with no records: ``out (T, B, H), h_n, c_n (B, H)``."""
    none = np.empty((0, 0, 0), x.dtype)
    out, h_n, c_n, _, _, _ = forward_small(
        x, w_ih, w_hh, h0, c0, b_ih, b_hh, lengths, reverse, False, False, xw, none, none, none
    )
    return out, h_n, c_n


@njit(cache=True, **JIT)
def infer_small_checked(x, w_ih, w_hh, h0, c0, b_ih, b_hh, lengths, reverse, xw):
    """:func:`infer_small` after counting the NaN/Inf entries of its inputs (``x`` only at
    the steps each sequence reads): ``(count, out, h_n, c_n)``. With a count above zero
    nothing is computed and the outputs are empty."""
    bad = count_nonfinite_layer(x, w_ih, w_hh, h0, c0, b_ih, b_hh, lengths)
    if bad:
        empty = np.empty((0, 0), x.dtype)
        return bad, np.empty((0, 0, 0), x.dtype), empty, empty
    out, h_n, c_n = infer_small(x, w_ih, w_hh, h0, c0, b_ih, b_hh, lengths, reverse, xw)
    return bad, out, h_n, c_n


@njit(cache=True, **JIT)
def backward_small(grad_out, grad_hn, grad_cn, x, w_ih, w_hh, h0, c0, out, gates, cs, lengths,
                   reverse):  # fmt: skip
    """Every gradient of :func:`forward_small` (run with ``store``).

    ``grad_out (T, B, H)``, ``grad_hn, grad_cn (B, H)``; the rest as given to and returned by
    the forward. Returns ``dx (T, B, I)``, ``dw_ih (G, I)``, ``dw_hh (G, H)``, ``db (G,)``
    (for each bias), ``dh0, dc0 (B, H)``.
    """
    steps, batch, inputs = x.shape
    width, hidden = w_hh.shape
    dtype = x.dtype
    dz = np.empty((steps, batch, width), dtype)
    dh0 = np.empty((batch, hidden), dtype)
    dc0 = np.empty((batch, hidden), dtype)
    backward_rows(
        grad_out, grad_hn, grad_cn, gates, cs, c0, np.ascontiguousarray(w_hh), lengths, reverse,
        dz, dh0, dc0, 0, batch,
    )  # fmt: skip
    dx = np.zeros((steps, batch, inputs), dtype)
    dw_ih = np.zeros((width, inputs), dtype)
    dw_hh = np.zeros((width, hidden), dtype)
    db = np.zeros(width, dtype)
    for b in range(batch):
        n = lengths[b]
        for s in range(n):
            t = step_time(s, n, reverse)
            for r in range(width):
                g = dz[t, b, r]
                db[r] += g
                for k in range(inputs):
                    dx[t, b, k] += g * w_ih[r, k]
                    dw_ih[r, k] += g * x[t, b, k]
                if s == 0:  # the step read h0; later ones the output of the step before
                    for j in range(hidden):
                        dw_hh[r, j] += g * h0[b, j]
                else:
                    tp = step_time(s - 1, n, reverse)
                    for j in range(hidden):
                        dw_hh[r, j] += g * out[tp, b, j]
    return dx, dw_ih, dw_hh, db, dh0, dc0
