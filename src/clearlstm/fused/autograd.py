"""The fused backend's autograd Function: one layer-direction through the kernels.

Split of the work, per layer and direction (shapes as in :mod:`clearlstm.fused.kernels`,
``G = 4H``):

1. one torch GEMM for all steps: ``xw = x @ w_ih.T + (b_ih + b_hh)``  ``(T, B, G)``;
2. the kernels run the recurrence forward and store the activated gates and memories
   (which are also the trace), on the kernel :func:`clearlstm.fused.dispatch.plan` picked;
3. backward through time from the stored gates gives ``dz``, the gradient w.r.t. ``xw``;
   then ``dx = dz @ w_ih``, ``dw_ih = dz.T @ x``, ``dw_hh = dz.T @ h_prev`` are GEMMs.

:class:`FusedLayer` wraps this as one autograd Function, so the threads of every GEMM are
chosen here (small GEMMs run on one thread). Tiny layers run as
:class:`clearlstm.fused.small_layers.SmallLayer` instead; :mod:`clearlstm.fused.layer`
chooses. Large buffers come from :mod:`clearlstm.fused.pool`.
"""

from __future__ import annotations

import time
from functools import cache

import numpy as np
import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from clearlstm.fused import kernels, kernels_split, pool, step_kernels
from clearlstm.fused.dispatch import Plan, report, set_numba_threads
from clearlstm.fused.gemm import (
    gemm_threads,
    gradient_products,
    input_product,
    learnt_gemm_threads,
    step_product,
)
from clearlstm.fused.small_layers import as_array, output_grads


def _empty(like: Tensor, *shape: int) -> Tensor:
    return like.new_empty(shape)


def _recycled(like: Tensor, *shape: int) -> Tensor:
    """For records, saved gates and scratch: memory from :mod:`clearlstm.fused.pool`."""
    return pool.empty(shape, like.dtype)


@cache
def _unused(dtype: torch.dtype) -> Tensor:
    """An empty ``(0, 0, 0)`` tensor for a record buffer a call does not fill (never written)."""
    return torch.empty((0, 0, 0), dtype=dtype)


def _transposed(w: Tensor) -> np.ndarray:
    """``w.T`` as a C-contiguous array, 64-byte aligned like torch's (rows are vector loads);
    NumPy's copy costs a quarter of torch's ``.t().contiguous()`` here."""
    out = torch.empty(w.shape[::-1], dtype=w.dtype).numpy()
    np.copyto(out, as_array(w).T)
    return out


def forward_layer(
    x, w_ih, bias, h0, c0, w_hh, lengths, reverse, store, record, how: Plan
) -> tuple[Tensor, ...]:
    """The forward computation of :class:`FusedLayer`, also run directly when no gradient is
    needed (``autograd.Function.apply`` costs ~10 µs per call). Returns ``out, h_n, c_n,
    gates, cs, pre, h0, c0`` and the split kernel's ``w_hh`` columns (else None), which the
    backward takes too."""
    steps, batch, inputs = x.shape
    width = w_ih.shape[0]
    hidden = width // 4
    x2 = x.detach().reshape(steps * batch, inputs)
    w_ih, bias = w_ih.detach(), None if bias is None else bias.detach()
    # premul GEMM; like the gradient GEMMs it runs alone, so on torch's threads, not the plan's
    # (a learnt plan's own, where that cannot change the bits: gemm.learnt_gemm_threads)
    learnt = how.learn is not None
    count = learnt_gemm_threads(learnt, how.threads, "input", steps * batch, inputs, width,
                                x.dtype, torch.get_num_threads())  # fmt: skip
    with gemm_threads(2.0 * x2.shape[0] * inputs * width, *count):
        xw = input_product(x2, w_ih, bias).view(steps, batch, width)
    h0, c0 = h0.detach().contiguous(), c0.detach().contiguous()
    w_hh = w_hh.detach()
    out = _empty(xw, steps, batch, hidden)
    unused = _unused(xw.dtype)
    gates = _recycled(xw, steps, batch, width) if store else unused
    cs = _recycled(xw, steps, batch, hidden) if store else unused
    # Each step reads its input products before it writes its pre-activations at the same
    # place, so one buffer serves both: a trace writes a third less. (Not the split kernel's:
    # abandoned, it is rerun on one thread from the input products.)
    in_place = record and how.kernel != "split"
    pre = xw if in_place else _recycled(xw, steps, batch, width) if record else unused
    lens = lengths if isinstance(lengths, np.ndarray) else lengths.numpy()
    parts = None
    if how.threads > 1:
        set_numba_threads(how.threads)
    if how.kernel == "blas":  # a GEMM per step, the states advanced in place
        h_n, c_n = h0.clone(), c0.clone()
        arrays = [as_array(t) for t in (xw, h_n, c_n, out, gates, cs, pre)]
        product = step_product(w_hh, batch)
        default = torch.get_num_threads() if learnt else how.threads
        count = learnt_gemm_threads(learnt, how.threads, "step", batch, hidden, width,
                                    x.dtype, default)  # fmt: skip
        with gemm_threads(2.0 * batch * hidden * width, *count):
            for s in range(steps):
                hw = as_array(product(h_n))
                step_kernels.forward_gates(s, arrays[0], hw, *arrays[1:3], lens, reverse,
                                           *arrays[3:], store, record, how.threads)  # fmt: skip
        return out, h_n, c_n, gates, cs, pre, h0, c0, parts
    h_n, c_n = _empty(xw, batch, hidden), _empty(xw, batch, hidden)
    # the whole-sequence kernels' arguments after the weights (kernels.forward_sequence)
    state = (as_array(h0), as_array(c0), lens, reverse)
    outputs = (*(as_array(t) for t in (out, h_n, c_n, gates, cs, pre)), store, record)
    if how.kernel == "split":
        parts = kernels_split.split_columns(as_array(w_hh.contiguous()), how.threads)
        if kernels_split.forward_split(as_array(xw), parts, *state, *outputs):
            return out, h_n, c_n, gates, cs, pre, h0, c0, parts
        # a thread lost its core: the same bits on one thread
    whh_t = _transposed(w_hh)  # (H, G): rows vectorize over the gates
    threads = 1 if how.kernel == "split" else how.threads
    kernels.forward_sequence(as_array(xw), whh_t, *state, *outputs, threads)
    return out, h_n, c_n, gates, cs, pre, h0, c0, parts


class FusedLayer(torch.autograd.Function):
    """``(x, w_ih, bias, h0, c0, w_hh) -> (out, h_n, c_n, gates, cs, pre)``.

    ``bias = b_ih + b_hh`` or None. ``gates, cs, pre`` are the records (not differentiable).
    """

    @staticmethod
    def forward(ctx, x, w_ih, bias, h0, c0, w_hh, lengths, reverse, store, record, how):
        began = time.perf_counter()  # a learnt plan is timed by its forward and backward
        out, h_n, c_n, gates, cs, pre, h0, c0, parts = forward_layer(
            x, w_ih, bias, h0, c0, w_hh, lengths, reverse, store, record, how
        )
        ctx.seconds = time.perf_counter() - began
        if store:
            ctx.save_for_backward(x, w_ih, h0, c0, w_hh, out, gates, cs, lengths)
            ctx.reverse, ctx.how, ctx.parts = reverse, how, parts  # w_hh's version is checked
        ctx.mark_non_differentiable(gates, cs, pre)
        ctx.set_materialize_grads(False)  # else autograd fills zero gradients for the records
        return out, h_n, c_n, gates, cs, pre

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out, grad_hn, grad_cn, *_):
        began = time.perf_counter()  # a learnt plan is timed with its gradient GEMMs
        x, w_ih, h0, c0, w_hh, out, gates, cs, lengths = ctx.saved_tensors
        steps, batch, hidden = out.shape
        width = 4 * hidden
        w_hh = w_hh.contiguous()
        lens, how = lengths.numpy(), ctx.how
        flops = 2.0 * steps * batch * width * max(hidden, x.shape[2])
        # a plan that timings put on several threads found the cores free: its gradient
        # GEMMs use them too where that keeps the bits (gemm.learnt_gemm_threads)
        count = learnt_gemm_threads(how.learn is not None, how.threads, "gradient",
                                    steps * batch, x.shape[2], width, x.dtype,
                                    torch.get_num_threads())  # fmt: skip
        grad_out, grad_hn, grad_cn = output_grads(grad_out, grad_hn, grad_cn, out)
        dz = _recycled(out, steps, batch, width)  # gradient w.r.t. the pre-activations
        if how.threads > 1:
            set_numba_threads(how.threads)
        if how.kernel != "blas":
            dh0, dc0 = _empty(out, batch, hidden), _empty(out, batch, hidden)
            args = (
                as_array(grad_out),
                as_array(grad_hn),
                as_array(grad_cn),
                as_array(gates),
                as_array(cs),
                as_array(c0),
            )
            results = (lens, ctx.reverse, as_array(dz), as_array(dh0), as_array(dc0))
            if ctx.parts is None:  # the forward's split of w_hh: None unless "split"
                kernels.backward_sequence(*args, as_array(w_hh), *results, how.threads)
            else:  # complete even if abandoned: then redone on one thread, same bits
                kernels_split.backward_split(*args, as_array(w_hh), *results, how.threads)
        else:
            dh, dc = grad_hn.clone(), grad_cn.clone()  # carries, updated in place
            dh0 = out.new_zeros(batch, hidden)  # dz_step @ w_hh of the step just done
            dz_step = _empty(out, batch, width)
            rest = (
                as_array(dh),
                as_array(dc),
                as_array(gates),
                as_array(cs),
                as_array(c0),
                lens,
                ctx.reverse,
            )
            grads, dz_steps = as_array(grad_out), (as_array(dz), as_array(dz_step))
            product = step_product(w_hh.t(), batch)
            with gemm_threads(2.0 * batch * hidden * width, how.threads):
                for s in range(steps - 1, -1, -1):
                    step_kernels.backward_gates(
                        s, grads, as_array(dh0), *rest, *dz_steps, how.threads
                    )
                    dh0 = product(dz_step)
            dc0 = dc  # every sequence has step 0, so dh0 is the last recurrent gradient
        need = ctx.needs_input_grad
        dz2 = dz.view(steps * batch, width)
        x2 = x.reshape(steps * batch, -1)
        with gemm_threads(flops, *count):
            h_prev = previous_h(out, h0, lengths, ctx.reverse).view(-1, hidden) if need[5] else None
            dx, dw_ih, db, dw_hh = gradient_products(dz2, x2, w_ih, h_prev, need[:3] + need[5:6])
        dx = None if dx is None else dx.view(x.shape)
        report(how, ctx.seconds + time.perf_counter() - began, steps)
        return dx, dw_ih, db, dh0, dc0, dw_hh, None, None, None, None, None


def previous_h(out: Tensor, h0: Tensor, lengths: Tensor, reverse: bool) -> Tensor:
    """``(T, B, H)``: the short-term memory each valid step started from."""
    if not reverse:
        return torch.cat([h0[None], out[:-1]])
    h_prev = torch.cat([out[1:], h0[None]])
    h_prev[lengths - 1, torch.arange(out.shape[1])] = h0  # each sequence's first step read
    return h_prev
