"""A layer-direction with an LSTM variant (``LayerWeights.variant``) on the fused kernels:
:func:`run_variant_layer`, called by :func:`clearlstm.fused.layer.run_layer`, and its autograd
Function :class:`VariantLayer`.

The split of the work is :class:`clearlstm.fused.autograd.FusedLayer`'s: one GEMM for the
input products, the recurrence in :mod:`clearlstm.fused.kernels_variant`, the weight gradients
as GEMMs over ``dz``; the peephole gradient is summed per sequence in the kernel, then over
the batch. Kept apart so the plain layer's code path stays as it was.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from clearlstm.core.records import LayerWeights, combined_bias
from clearlstm.fused import kernels, kernels_variant, pool
from clearlstm.fused.autograd import _transposed, _unused, previous_h
from clearlstm.fused.dispatch import Plan, report, set_numba_threads, variant_plan
from clearlstm.fused.gemm import gemm_threads, gradient_products, input_product
from clearlstm.fused.general_layer import run_general_layer
from clearlstm.fused.small_layers import all_steps, as_array, output_grads, small_arrays, zero_state


def _flags(weights: LayerWeights) -> tuple[bool, float]:
    """``(coupled, clip)`` as the kernels take them (clip 0 for none)."""
    v = weights.variant
    return v.coupled_input_forget, 0.0 if v.cell_clip is None else float(v.cell_clip)


def _peep_array(peep: Tensor | None, hidden: int, dtype: np.dtype) -> np.ndarray:
    """``(3, H)`` peepholes as an array, ``(0, H)`` for none."""
    if peep is None:
        return np.empty((0, hidden), dtype)
    return as_array(peep.detach().contiguous())


def variant_forward(x, w_ih, bias, h0, c0, w_hh, peep, lens, reverse, store, record, how, flags,
                    zoneout=(0.0, 0.0)):  # fmt: skip
    """Forward of :class:`VariantLayer`: ``out, h_n, c_n, gates, cs, pre`` (pre filled with
    ``record``, and with a clip whenever ``store``: the backward reads it). ``zoneout``: the
    rates ``(h, c)`` of an evaluation call without a gradient (its expectation)."""
    steps, batch, inputs = x.shape
    width = w_ih.shape[0]
    hidden = width // 4
    coupled, clip = flags
    x2 = x.detach().reshape(steps * batch, inputs)
    bias = None if bias is None else bias.detach()
    with gemm_threads(2.0 * x2.shape[0] * inputs * width, torch.get_num_threads()):
        xw = input_product(x2, w_ih.detach(), bias).view(steps, batch, width)
    out = xw.new_empty(steps, batch, hidden)
    h_n, c_n = xw.new_empty(batch, hidden), xw.new_empty(batch, hidden)
    unused = _unused(xw.dtype)
    gates = pool.empty((steps, batch, width), xw.dtype) if store else unused
    cs = pool.empty((steps, batch, hidden), xw.dtype) if store else unused
    write_pre = record or (store and clip > 0)
    pre = xw if write_pre else unused  # each step reads its xw before writing pre there
    if how.threads > 1:
        set_numba_threads(how.threads)
    arrays = [as_array(t) for t in (xw, h0, c0)]
    buffers = [as_array(t) for t in (out, h_n, c_n, gates, cs, pre)]
    peeps = _peep_array(peep, hidden, arrays[0].dtype)
    kernels_variant.forward_variant(
        arrays[0], _transposed(w_hh.detach()), *arrays[1:], lens, reverse, *buffers, store,
        write_pre, peeps, coupled, clip, *zoneout, threads=how.threads,
    )  # fmt: skip
    return out, h_n, c_n, gates, cs, pre


class VariantLayer(torch.autograd.Function):
    """``(x, w_ih, bias, h0, c0, w_hh, peep) -> (out, h_n, c_n, gates, cs, pre)``; ``bias``
    ``= b_ih + b_hh`` or None, ``peep (3, H)`` or None; the records are not differentiable."""

    @staticmethod
    def forward(ctx, x, w_ih, bias, h0, c0, w_hh, peep, lens, reverse, record, how, flags):
        h0, c0 = h0.detach().contiguous(), c0.detach().contiguous()
        results = variant_forward(
            x, w_ih, bias, h0, c0, w_hh, peep, lens, reverse, True, record, how, flags
        )
        out, _, _, gates, cs, pre = results
        ctx.save_for_backward(x, w_ih, h0, c0, w_hh, peep, out, gates, cs, pre)
        ctx.lens, ctx.reverse, ctx.how, ctx.flags = lens, reverse, how, flags
        ctx.mark_non_differentiable(gates, cs, pre)
        ctx.set_materialize_grads(False)
        return results

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out, grad_hn, grad_cn, *_):
        x, w_ih, h0, c0, w_hh, peep, out, gates, cs, pre = ctx.saved_tensors
        steps, batch, hidden = out.shape
        width = 4 * hidden
        grad_out, grad_hn, grad_cn = output_grads(grad_out, grad_hn, grad_cn, out)
        dz = pool.empty((steps, batch, width), out.dtype)
        dh0, dc0 = out.new_empty(batch, hidden), out.new_empty(batch, hidden)
        dpeep = out.new_zeros(batch, 3, hidden)
        if ctx.how.threads > 1:
            set_numba_threads(ctx.how.threads)
        arrays = [as_array(t) for t in (grad_out, grad_hn, grad_cn, gates, cs, pre, c0)]
        results = [as_array(t) for t in (dz, dh0, dc0)]
        peeps = _peep_array(peep, hidden, arrays[0].dtype)
        kernels_variant.backward_variant(
            *arrays, as_array(w_hh.detach().contiguous()), ctx.lens, ctx.reverse, *results,
            peeps, as_array(dpeep), *ctx.flags, threads=ctx.how.threads,
        )  # fmt: skip
        need = ctx.needs_input_grad
        dz2 = dz.view(steps * batch, width)
        x2 = x.detach().reshape(steps * batch, -1)
        dp = None
        flops = 2.0 * dz2.shape[0] * width * max(hidden, x2.shape[1])
        with gemm_threads(flops, torch.get_num_threads()):
            lens = torch.from_numpy(ctx.lens)
            h_prev = previous_h(out, h0, lens, ctx.reverse).view(-1, hidden) if need[5] else None
            dx, dw_ih, db, dw_hh = gradient_products(
                dz2, x2, w_ih.detach(), h_prev, need[:3] + need[5:6]
            )
        dx = None if dx is None else dx.view(x.shape)
        if need[6]:
            dp = dpeep.sum(0)
        return dx, dw_ih, db, dh0, dc0, dw_hh, dp, None, None, None, None, None


def run_variant_layer(
    x, h0, c0, weights: LayerWeights, lengths, reverse, record, kernel, check_finite, needs_grad,
    masks=None,
) -> tuple[Tensor, ...] | None:  # fmt: skip
    """:func:`clearlstm.fused.layer.run_layer` for a layer with ``weights.variant``: ``out, h_n,
    c_n, gates, cs, pre`` (records empty without ``record``), None when ``check_finite`` found
    NaN/Inf among the inputs. Layer norm, zoneout and dropout (``Variant.extended``, with a
    training call's ``masks``) run in :mod:`clearlstm.fused.general_layer`, except zoneout
    in an evaluation call without a gradient (no masks: its expectation, a blend the variant
    kernels do at the plain kernels' speed)."""
    how: Plan = variant_plan(x, weights.w_hh, needs_grad, kernel, record, weights.variant)
    steps, batch, _ = x.shape
    hidden = weights.w_hh.shape[1]
    lens = all_steps(batch, steps) if lengths is None else as_array(lengths)
    peep = weights.peephole
    if check_finite:
        zeros = zero_state(batch, hidden, x.dtype)
        state = (zeros, zeros) if h0 is None else (as_array(h0), as_array(c0))
        bad = kernels.count_nonfinite_layer(*small_arrays(x, weights, state), lens)
        if bad or (peep is not None and kernels.count_nonfinite(as_array(peep))):
            return None
        norm = weights.layer_norm  # one pass over all six (a numba call each cost 0.1 ms)
        if norm is not None and not torch.isfinite(torch.cat([p.detach() for p in norm])).all():
            return None
    v = weights.variant
    blend = masks is None and not needs_grad and not v.layer_norm  # dropout is off here
    if v.extended and not blend:
        began = time.perf_counter()
        results = run_general_layer(x, h0, c0, weights, reverse, record, how, lens, needs_grad,
                                    masks)  # fmt: skip
        report(how, time.perf_counter() - began, steps)  # a learnt plan's: forward-only
        return results
    if h0 is None:
        h0 = c0 = x.new_zeros(batch, hidden)
    bias = combined_bias(weights.b_ih, weights.b_hh)
    flags = _flags(weights)
    if needs_grad:
        args = (x, weights.w_ih, bias, h0, c0, weights.w_hh, peep, lens, reverse, record, how)
        return VariantLayer.apply(*args, flags)
    h0, c0 = h0.detach().contiguous(), c0.detach().contiguous()
    began = time.perf_counter()  # threads learnt from timings (dispatch.learnt_plan)
    results = variant_forward(x, weights.w_ih, bias, h0, c0, weights.w_hh, peep, lens, reverse,
                              record, record, how, flags, (v.zoneout_h, v.zoneout_c))  # fmt: skip
    report(how, time.perf_counter() - began, steps)
    return results
