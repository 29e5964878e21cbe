"""A layer-direction with layer norm, zoneout or variational dropout (``Variant.extended``) on
the fused kernels: :func:`run_general_layer`, called by
:func:`clearlstm.fused.variant_layer.run_variant_layer`, and its autograd Function
:class:`GeneralLayer`.

The input side needs no recurrence, so it is torch ops over all steps at once, differentiated
by torch's autograd: the input dropout mask on ``x``, one GEMM, ``LN_ih`` and the biases
(``ln_bias_hh`` folded in). :class:`GeneralLayer` takes the result ``xw (T, B, 4H)`` and runs
the recurrence in :mod:`clearlstm.fused.kernels_general`; its backward gives ``dxw`` to
torch's autograd and the recurrent weight's gradient as one GEMM over the kernel's ``dzr``
with the masked previous ``h``, the recurrent LN gain's as one sum.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from clearlstm.core.records import LN_EPS, LayerMasks, LayerWeights, combined_bias
from clearlstm.fused import kernels_general, pool
from clearlstm.fused.autograd import _transposed, _unused, previous_h
from clearlstm.fused.dispatch import Plan, set_numba_threads
from clearlstm.fused.gemm import gemm_threads
from clearlstm.fused.small_layers import as_array, output_grads

_NONE = {}  # dtype -> the (0, ...) arrays that switch a feature off


def _off(dtype: np.dtype, dims: int) -> np.ndarray:
    key = (np.dtype(dtype), dims)
    if key not in _NONE:
        _NONE[key] = np.empty((0,) * dims, dtype)
    return _NONE[key]


def _array(t: Tensor | None, dtype: np.dtype, dims: int) -> np.ndarray:
    return _off(dtype, dims) if t is None else as_array(t.detach().contiguous())


def input_side(x: Tensor, weights: LayerWeights, masks: LayerMasks | None) -> Tensor:
    """``xw (T, B, 4H)``: the input's share of every gate, the recurrent LN's bias included."""
    if masks is not None and masks.input is not None:
        x = x * masks.input
    ln = weights.layer_norm
    bias = combined_bias(weights.b_ih, weights.b_hh)
    flops = 2.0 * x.shape[0] * x.shape[1] * x.shape[2] * weights.w_ih.shape[0]
    with gemm_threads(flops, torch.get_num_threads()):
        if ln is None:
            return F.linear(x, weights.w_ih, bias)
        xw = F.layer_norm(F.linear(x, weights.w_ih), (weights.w_ih.shape[0],), ln.weight_ih,
                          ln.bias_ih, LN_EPS)  # fmt: skip
    bias = ln.bias_hh if bias is None else bias + ln.bias_hh
    return xw + bias


def general_forward(xw, h0, c0, w_hh, peep, gain_h, ln_c, lens, reverse, store, record, how,
                    flags, masks):  # fmt: skip
    """Forward of :class:`GeneralLayer`: ``out, h_n, c_n, gates, cs, pre, zr_hat, stats``."""
    steps, batch, width = xw.shape
    hidden = width // 4
    coupled, clip, rate_h, rate_c = flags
    xw = xw.detach().contiguous()
    dtype = xw.dtype
    out = xw.new_empty(steps, batch, hidden)
    h_n, c_n = xw.new_empty(batch, hidden), xw.new_empty(batch, hidden)
    unused = _unused(dtype)
    gates = pool.empty((steps, batch, width), dtype) if store else unused
    cs = pool.empty((steps, batch, hidden), dtype) if store else unused
    write_pre = record or (store and clip > 0)
    pre = pool.empty((steps, batch, width), dtype) if write_pre else unused
    ln_h = gain_h is not None
    zr_hat = pool.empty((steps, batch, width), dtype) if store and ln_h else unused
    stats = pool.empty((steps, batch, 4), dtype) if store else unused
    if how.threads > 1:
        set_numba_threads(how.threads)
    np_dtype = as_array(xw).dtype
    arrays = [as_array(t) for t in (xw, h0, c0)]
    buffers = [as_array(t) for t in (out, h_n, c_n, gates, cs, pre)]
    rmask, zone_h, zone_c = masks
    kernels_general.forward_general(
        arrays[0], _transposed(w_hh.detach()), *arrays[1:], lens, reverse, *buffers, store,
        write_pre, _array(peep, np_dtype, 2), coupled, clip, _array(rmask, np_dtype, 2),
        _array(gain_h, np_dtype, 1), as_array(zr_hat), as_array(stats), _array(ln_c, np_dtype, 2),
        _array(zone_h, np_dtype, 3), _array(zone_c, np_dtype, 3), rate_h, rate_c,
        threads=how.threads,
    )  # fmt: skip
    return out, h_n, c_n, gates, cs, pre, zr_hat, stats


class GeneralLayer(torch.autograd.Function):
    """``(xw, h0, c0, w_hh, peep, gain_h, ln_c) -> (out, h_n, c_n, gates, cs, pre)``;
    ``peep (3, H)``, ``gain_h (4H,)``, ``ln_c (2, H)`` or None; the records are not
    differentiable."""

    @staticmethod
    def forward(ctx, xw, h0, c0, w_hh, peep, gain_h, ln_c, lens, reverse, record, how, flags,
                masks):  # fmt: skip
        h0, c0 = h0.detach().contiguous(), c0.detach().contiguous()
        results = general_forward(xw, h0, c0, w_hh, peep, gain_h, ln_c, lens, reverse, True,
                                  record, how, flags, masks)  # fmt: skip
        out, _, _, gates, cs, pre, zr_hat, stats = results
        ctx.save_for_backward(h0, c0, w_hh, peep, gain_h, ln_c, out, gates, cs, pre, zr_hat,
                              stats)  # fmt: skip
        ctx.lens, ctx.reverse, ctx.how, ctx.flags, ctx.masks = lens, reverse, how, flags, masks
        ctx.mark_non_differentiable(gates, cs, pre)
        ctx.set_materialize_grads(False)
        return results[:6]

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out, grad_hn, grad_cn, *_):
        h0, c0, w_hh, peep, gain_h, ln_c, out, gates, cs, pre, zr_hat, stats = ctx.saved_tensors
        steps, batch, hidden = out.shape
        width = 4 * hidden
        grad_out, grad_hn, grad_cn = output_grads(grad_out, grad_hn, grad_cn, out)
        dz = out.new_empty(steps, batch, width)  # returned as the gradient of xw
        dzr = pool.empty((steps, batch, width), out.dtype) if gain_h is not None else dz
        dh0, dc0 = out.new_empty(batch, hidden), out.new_empty(batch, hidden)
        dpeep, dln_c = out.new_zeros(batch, 3, hidden), out.new_zeros(batch, 2, hidden)
        if ctx.how.threads > 1:
            set_numba_threads(ctx.how.threads)
        np_dtype = as_array(out).dtype
        arrays = [as_array(t) for t in (grad_out, grad_hn, grad_cn, gates, cs, pre, c0)]
        coupled, clip, rate_h, rate_c = ctx.flags
        rmask, zone_h, zone_c = ctx.masks
        kernels_general.backward_general(
            *arrays, as_array(w_hh.detach().contiguous()), ctx.lens, ctx.reverse, as_array(dz),
            as_array(dzr), as_array(dh0), as_array(dc0), _array(peep, np_dtype, 2),
            as_array(dpeep), coupled, clip, _array(rmask, np_dtype, 2),
            _array(gain_h, np_dtype, 1), as_array(zr_hat), as_array(stats),
            _array(ln_c, np_dtype, 2), as_array(dln_c), _array(zone_h, np_dtype, 3),
            _array(zone_c, np_dtype, 3), rate_h, rate_c, threads=ctx.how.threads,
        )  # fmt: skip
        need = ctx.needs_input_grad
        dw_hh = dp = dgain = dlnc = None
        if need[3]:
            h_prev = previous_h(out, h0, torch.from_numpy(ctx.lens), ctx.reverse)
            if rmask is not None:
                h_prev = h_prev * rmask
            with gemm_threads(2.0 * steps * batch * width * hidden, torch.get_num_threads()):
                dw_hh = torch.mm(dzr.view(-1, width).t(), h_prev.reshape(-1, hidden))
        if need[4]:
            dp = dpeep.sum(0)
        if need[5]:
            dgain = (dz * zr_hat).sum((0, 1))
        if need[6]:
            dlnc = dln_c.sum(0)
        return (
            dz if need[0] else None,
            dh0,
            dc0,
            dw_hh,
            dp,
            dgain,
            dlnc,
            None,
            None,
            None,
            None,
            None,
            None,
        )


def run_general_layer(x, h0, c0, weights: LayerWeights, reverse, record, how: Plan, lens,
                      needs_grad, masks) -> tuple[Tensor, ...]:  # fmt: skip
    """:func:`clearlstm.fused.variant_layer.run_variant_layer` for ``Variant.extended``
    (inputs already checked): ``out, h_n, c_n, gates, cs, pre``."""
    batch, hidden = x.shape[1], weights.w_hh.shape[1]
    v, ln = weights.variant, weights.layer_norm
    if h0 is None:
        h0 = c0 = x.new_zeros(batch, hidden)
    xw = input_side(x, weights, masks)
    clip = 0.0 if v.cell_clip is None else float(v.cell_clip)
    flags = (v.coupled_input_forget, clip, v.zoneout_h, v.zoneout_c)  # rates without masks
    m = (None, None, None) if masks is None else (masks.recurrent, masks.zoneout_h,
                                                  masks.zoneout_c)  # fmt: skip
    gain_h = None if ln is None else ln.weight_hh
    ln_c = None if ln is None else torch.stack([ln.weight_c, ln.bias_c])
    params = (weights.w_hh, weights.peephole, gain_h, ln_c)
    if needs_grad:
        return GeneralLayer.apply(xw, h0, c0, *params, lens, reverse, record, how, flags, m)
    h0, c0 = h0.detach().contiguous(), c0.detach().contiguous()
    params = tuple(None if p is None else p.detach() for p in params)
    return general_forward(xw.detach(), h0, c0, *params, lens, reverse, record, record, how,
                           flags, m)[:6]  # fmt: skip
