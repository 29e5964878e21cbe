"""The ``"fused"`` backend: one layer-direction through :mod:`clearlstm.kernels`, with autograd.

Split of the work, per layer and direction (shapes as in :mod:`clearlstm.functional`,
``G = 4H``):

1. one torch GEMM for all steps: ``xw = x @ w_ih.T + (b_ih + b_hh)``  ``(T, B, G)``;
2. the kernels run the recurrence forward and store the activated gates and memories
   (which are also the trace), on the kernel :func:`clearlstm.fused.dispatch.plan` picks;
3. backward through time from the stored gates gives ``dz``, the gradient w.r.t. ``xw``;
   then ``dx = dz @ w_ih``, ``dw_ih = dz.T @ x``, ``dw_hh = dz.T @ h_prev`` are GEMMs.

:class:`_FusedLayer` wraps this as one autograd Function, so the threads of every GEMM are
chosen here (small GEMMs run on one thread); each kernel's time is reported back to the
dispatch. Small layers run as :class:`clearlstm.fused.small_layers.SmallLayer`: one kernel
forward, one backward (no torch operations). Large buffers come from
:mod:`clearlstm.pool`. Projection (``proj_size > 0``), other devices and other dtypes are
not handled; :func:`supports` says so and ``backend="auto"`` then takes the reference path.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import cache

import numba
import numpy as np
import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from clearlstm.core.records import LayerRecord, LayerResult, LayerWeights, step_mask
from clearlstm.fused import dispatch, kernels, kernels_split, pool
from clearlstm.fused.dispatch import KERNELS, Plan, gemm_threads, plan, set_numba_threads
from clearlstm.fused.dispatch import supports as supports  # what functional asks this backend
from clearlstm.fused.small_layers import (
    SmallLayer,
    all_steps,
    as_array,
    infer_small,
    output_grads,
    small_arrays,
    small_forward,
    zero_state,
)


@cache
def _has_onednn_linear() -> bool:
    """Whether this torch has oneDNN's dense linear operators (``torch.ops.mkldnn``)."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        return callable(torch.ops.mkldnn._linear_pointwise) and callable(
            torch.ops.mkldnn._reorder_linear_weight
        )
    except (AttributeError, RuntimeError):
        return False


def _step_product(weight: Tensor, batch: int) -> Callable[[Tensor], Tensor]:
    """``product(a (B, K))`` returns ``a @ weight.T (B, N)`` for ``weight (N, K)``.

    float32 goes through oneDNN with the weight reordered once into its blocked layout for
    this batch size (what torch's compiler does for a Linear): per-step GEMMs 1.4-1.7x
    faster than oneDNN on a plain weight and 1.9-3.6x than torch.mm's MKL on this class of
    CPU (AMD; measured at B * H = 8k-64k). float64, and a torch without those operators,
    stay on torch.mm.
    """
    if weight.dtype == torch.float32 and _has_onednn_linear():
        packed = torch.ops.mkldnn._reorder_linear_weight(weight.contiguous(), batch)
        linear = torch.ops.mkldnn._linear_pointwise
        return lambda a: linear(a, packed, None, "none", [], "")
    weight_t = weight.t().contiguous()
    return lambda a: torch.mm(a, weight_t)


ONEDNN_MIN_FLOPS = 2**22  # see _input_product


def _input_product(x2: Tensor, w_ih: Tensor, bias: Tensor | None) -> Tensor:
    """``x2 @ w_ih.T + bias`` ``(T * B, G)`` for every step at once, ``x2 (T * B, I)``.

    float32 from :data:`ONEDNN_MIN_FLOPS` on through oneDNN, 1.6-2.4x faster than
    ``torch.addmm``'s MKL on this class of CPU (measured from (1000, 8) x (8, 256) to
    (6400, 512) x (512, 4096)); below, and for float64, ``addmm`` into pooled memory.
    """
    flops = 2.0 * x2.shape[0] * x2.shape[1] * w_ih.shape[0]
    if x2.dtype == torch.float32 and flops >= ONEDNN_MIN_FLOPS and _has_onednn_linear():
        linear = torch.ops.mkldnn._linear_pointwise
        return linear(x2.contiguous(), w_ih.contiguous(), bias, "none", [], "")
    xw = _recycled(x2, x2.shape[0], w_ih.shape[0])  # scratch: back to the pool after the call
    if bias is None:
        return torch.mm(x2, w_ih.t(), out=xw)
    return torch.addmm(bias, x2, w_ih.t(), out=xw)


def _empty(like: Tensor, *shape: int) -> Tensor:
    return like.new_empty(shape)


def _recycled(like: Tensor, *shape: int) -> Tensor:
    """For records, saved gates and scratch: memory from :mod:`clearlstm.pool`."""
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


def _forward(x, w_ih, bias, h0, c0, w_hh, lengths, reverse, store, record, how):
    """The forward computation of :class:`_FusedLayer`, also run directly when no gradient is
    needed (``autograd.Function.apply`` costs ~10 µs per call). Returns ``out, h_n, c_n,
    gates, cs, pre, h0, c0`` and the split kernel's ``w_hh`` columns (else None), which the
    backward takes too."""
    steps, batch, inputs = x.shape
    width = w_ih.shape[0]
    hidden = width // 4
    x2 = x.detach().reshape(steps * batch, inputs)
    w_ih, bias = w_ih.detach(), None if bias is None else bias.detach()
    if how.kernel == "split":  # each thread's gate rows together (kernels_split.unit_order)
        order = torch.from_numpy(kernels_split.unit_order(hidden, how.threads))
        w_ih, bias = w_ih[order], None if bias is None else bias[order]
    # premul GEMM; like the gradient GEMMs it runs alone, so on torch's threads, not the plan's
    with gemm_threads(2.0 * x2.shape[0] * inputs * width, torch.get_num_threads()):
        xw = _input_product(x2, w_ih, bias).view(steps, batch, width)
    h0, c0 = h0.detach().contiguous(), c0.detach().contiguous()
    w_hh = w_hh.detach()
    out = _empty(xw, steps, batch, hidden)
    unused = _unused(xw.dtype)
    gates = _recycled(xw, steps, batch, width) if store else unused
    cs = _recycled(xw, steps, batch, hidden) if store else unused
    # Each step reads its input products before it writes its pre-activations at the same
    # place, so one buffer serves both: a trace writes a third less. (The split kernel's
    # threads read the input products in another order than they write.)
    in_place = record and how.kernel != "split"
    pre = xw if in_place else _recycled(xw, steps, batch, width) if record else unused
    lens = lengths if isinstance(lengths, np.ndarray) else lengths.numpy()
    parts = None
    if how.threads > 1:
        set_numba_threads(how.threads)
    if how.kernel == "split":
        h_n, c_n = _empty(xw, batch, hidden), _empty(xw, batch, hidden)
        outputs = (
            as_array(out),
            as_array(h_n),
            as_array(c_n),
            as_array(gates),
            as_array(cs),
            as_array(pre),
            store,
            record,
        )
        parts = kernels_split.split_columns(as_array(w_hh.contiguous()), how.threads)
        start = time.perf_counter()
        if not kernels_split.forward_split(
            as_array(xw), parts, as_array(h0), as_array(c0), lens, reverse, *outputs
        ):  # a thread lost its core: the same result on one thread
            back = torch.from_numpy(np.argsort(kernels_split.unit_order(hidden, how.threads)))
            xw = xw[:, :, back].contiguous()
            whh_t = _transposed(w_hh)
            kernels.forward_sequence(
                as_array(xw), whh_t, as_array(h0), as_array(c0), lens, reverse, *outputs
            )
        seconds = time.perf_counter() - start
        dispatch.split_chooser.record(batch, hidden, store, "split", seconds, steps)
    elif how.kernel == "sequence":
        h_n, c_n = _empty(xw, batch, hidden), _empty(xw, batch, hidden)
        whh_t = _transposed(w_hh)  # (H, G): rows vectorize over the gates
        start = time.perf_counter()
        outputs = (as_array(t) for t in (out, h_n, c_n, gates, cs, pre))
        kernels.forward_sequence(
            as_array(xw), whh_t, as_array(h0), as_array(c0), lens, reverse, *outputs, store,
            record, how.threads,
        )  # fmt: skip
        if hidden >= dispatch.SPLIT_MIN_HIDDEN:  # the alternative to "split"
            seconds = time.perf_counter() - start
            dispatch.split_chooser.record(batch, hidden, store, "sequence", seconds, steps)
    else:
        h_n, c_n = h0.clone(), c0.clone()  # advanced in place
        inputs = as_array(xw)
        rest = (
            as_array(h_n),
            as_array(c_n),
            lens,
            reverse,
            as_array(out),
            as_array(gates),
            as_array(cs),
            as_array(pre),
        )
        product = _step_product(w_hh, batch)
        with gemm_threads(2.0 * batch * hidden * width, how.threads):
            for s in range(steps):
                hw = as_array(product(h_n))
                kernels.forward_gates(s, inputs, hw, *rest, store, record, how.threads)
    return out, h_n, c_n, gates, cs, pre, h0, c0, parts


_FEW_INPUTS = 8  # see _FusedLayer.backward


class _FusedLayer(torch.autograd.Function):
    """``(x, w_ih, bias, h0, c0, w_hh) -> (out, h_n, c_n, gates, cs, pre)``.

    ``bias = b_ih + b_hh`` or None. ``gates, cs, pre`` are the records (not differentiable).
    """

    @staticmethod
    def forward(ctx, x, w_ih, bias, h0, c0, w_hh, lengths, reverse, store, record, how):
        out, h_n, c_n, gates, cs, pre, h0, c0, parts = _forward(
            x, w_ih, bias, h0, c0, w_hh, lengths, reverse, store, record, how
        )
        if store:
            ctx.save_for_backward(x, w_ih, h0, c0, w_hh, out, gates, cs, lengths)
            ctx.reverse, ctx.how, ctx.parts = reverse, how, parts  # w_hh's version is checked
        ctx.mark_non_differentiable(gates, cs, pre)
        ctx.set_materialize_grads(False)  # else autograd fills zero gradients for the records
        return out, h_n, c_n, gates, cs, pre

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out, grad_hn, grad_cn, *_):
        x, w_ih, h0, c0, w_hh, out, gates, cs, lengths = ctx.saved_tensors
        steps, batch, hidden = out.shape
        width = 4 * hidden
        w_hh = w_hh.contiguous()
        grad_out, grad_hn, grad_cn = output_grads(grad_out, grad_hn, grad_cn, out)
        dz = _recycled(out, steps, batch, width)  # gradient w.r.t. the pre-activations
        lens, how = lengths.numpy(), ctx.how
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
            parts = ctx.parts  # the forward's split of w_hh (None unless "split")
            start = time.perf_counter()
            if parts is None:
                kernels.backward_sequence(*args, as_array(w_hh), *results, how.threads)
            else:  # complete even if abandoned: then redone on one thread, same bits
                kernels_split.backward_split(*args, parts, *results)
            if hidden >= dispatch.SPLIT_MIN_HIDDEN:
                seconds = time.perf_counter() - start
                dispatch.split_chooser.record(batch, hidden, True, how.kernel, seconds, steps)
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
            product = _step_product(w_hh.t(), batch)
            with gemm_threads(2.0 * batch * hidden * width, how.threads):
                for s in range(steps - 1, -1, -1):
                    kernels.backward_gates(s, grads, as_array(dh0), *rest, *dz_steps, how.threads)
                    dh0 = product(dz_step)
            dc0 = dc  # every sequence has step 0, so dh0 is the last recurrent gradient
        need = ctx.needs_input_grad
        dx = dw_ih = db = dw_hh = None
        dz2 = dz.view(steps * batch, width)
        x2 = x.reshape(steps * batch, -1)
        flops = 2.0 * dz2.shape[0] * width * max(hidden, x2.shape[1])
        with gemm_threads(flops, torch.get_num_threads()):
            # Operands laid out so MKL takes its faster paths for few inputs (measured: dx
            # 2.3-3x faster with 8 inputs, slower from 16; dw_ih 1.0-3x, never slower).
            if need[0] and x2.shape[1] <= _FEW_INPUTS:
                dx = torch.mm(dz2, w_ih.t().contiguous().t()).view(x.shape)
            elif need[0]:
                dx = torch.mm(dz2, w_ih).view(x.shape)
            if need[1]:
                dw_ih = torch.mm(x2.t(), dz2).t()
            if need[2]:
                db = dz2.sum(0)
            if need[5]:
                h_prev = _previous_h(out, h0, lengths, ctx.reverse)  # (T, B, H)
                dw_hh = torch.mm(dz2.t(), h_prev.view(steps * batch, hidden))
        return dx, dw_ih, db, dh0, dc0, dw_hh, None, None, None, None, None


def _previous_h(out: Tensor, h0: Tensor, lengths: Tensor, reverse: bool) -> Tensor:
    """``(T, B, H)``: the short-term memory each valid step started from."""
    if not reverse:
        return torch.cat([h0[None], out[:-1]])
    h_prev = torch.cat([out[1:], h0[None]])
    h_prev[lengths - 1, torch.arange(out.shape[1])] = h0  # each sequence's first step read
    return h_prev


def _small_layer(x, h0, c0, weights, lengths, reverse, record, needs_grad) -> LayerResult:
    """:func:`fused_layer` for tiny calls: forward (and backward) one kernel call each."""
    steps, batch, _ = x.shape
    lens = all_steps(batch, steps) if lengths is None else as_array(lengths.long())
    w_ih, w_hh, b_ih, b_hh, _ = weights
    arrays = small_arrays(x, weights, (as_array(h0.contiguous()), as_array(c0.contiguous())))
    if not (needs_grad or record):  # plain inference: the fewest conversions
        results = infer_small(arrays, lens, reverse, check_finite=False)
        return LayerResult(*results, None)
    if needs_grad:
        args = (x, w_ih, w_hh, b_ih, b_hh, h0, c0, lens, reverse, record, arrays)
        out, h_n, c_n, gates, cs, pre = SmallLayer.apply(*args)
    else:
        out, h_n, c_n, gates, cs, pre = small_forward(arrays, lens, reverse, record, record)
    if record:
        lengths = None if lengths is None else lengths.to("cpu", torch.int64)
        return LayerResult(out, h_n, c_n, _layer_record(out, gates, cs, pre, lengths))
    return LayerResult(out, h_n, c_n, None)


def layer_forward(x, h0, c0, weights, lengths, record, check_finite) -> tuple | None:
    """:func:`clearlstm.nn.functional.one_layer_forward` once the backend is fused: one layer
    straight to the kernels, its NaN/Inf check one pass in numba (inside the kernel for a
    tiny call without gradient or record); ``(out, h_n, c_n, record or None)``, the states
    ``(1, B, H)``. None when the call is not one :func:`supports`, or when the check finds
    NaN/Inf."""
    w_ih, w_hh, b_ih, b_hh, _ = weights
    tensors = (x, w_ih, w_hh, b_ih, b_hh, h0, c0)
    needs_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
    if not supports(x, weights):
        return None
    small = dispatch.small_call(x, w_hh, needs_grad)
    steps, batch, _ = x.shape
    zeros = zero_state(batch, w_hh.shape[1], x.dtype)
    state = [zeros if h is None else as_array(h.contiguous()) for h in (h0, c0)]
    lens = all_steps(batch, steps) if lengths is None else as_array(lengths)
    arrays = small_arrays(x, weights, state)
    if small and not (record or needs_grad):
        result = infer_small(arrays, lens, False, check_finite, stacked=True)
        return None if result is None else (*result, None)
    if check_finite and kernels.count_nonfinite_layer(*arrays, lens):
        return None
    if needs_grad:  # zeros for a missing state: a gradient w.r.t. them is not wanted
        h0, c0 = (torch.from_numpy(zeros) if h is None else h for h in (h0, c0))
    else:
        h0, c0 = (torch.from_numpy(h) for h in state)
    if small and needs_grad:
        results = SmallLayer.apply(x, w_ih, w_hh, b_ih, b_hh, h0, c0, lens, False, record, arrays)
    elif small:
        results = small_forward(arrays, lens, False, True, True)
    else:
        bias = b_ih if b_hh is None else b_hh if b_ih is None else b_ih + b_hh
        how = plan(batch, w_hh.shape[1], needs_grad)
        store = needs_grad or record
        args = (x, w_ih, bias, h0, c0, w_hh, torch.from_numpy(lens), False, store, record, how)
        results = _FusedLayer.apply(*args) if needs_grad else _forward(*args)[:6]
    out, h_n, c_n, gates, cs, pre = results
    rec = _layer_record(out, gates, cs, pre, lengths) if record else None
    return out, h_n.unsqueeze(0), c_n.unsqueeze(0), rec


def _layer_record(out, gates, cs, pre, lengths) -> LayerRecord:
    """The record of one layer-direction from the kernels' buffers ``(T, B, G)``/``(T, B, H)``."""
    steps, batch, hidden = out.shape
    h = pool.empty(tuple(out.shape), out.dtype).copy_(out.detach())
    if lengths is not None:
        h.masked_fill_(~step_mask(lengths, steps)[..., None], float("nan"))
    g = gates.view(steps, batch, 4, hidden)
    return LayerRecord(pre.view(steps, batch, 4, hidden), *g.unbind(2), cs, h)


def fused_layer(
    x: Tensor,
    h0: Tensor,
    c0: Tensor,
    weights: LayerWeights,
    lengths: Tensor | None,
    reverse: bool,
    record: bool,
    kernel: str | None = None,
) -> LayerResult:
    """:func:`clearlstm.nn.functional.lstm_layer` on the fused kernels; same arguments and result.

    ``x (T, B, I)``, ``h0, c0 (B, H)``, ``lengths (B,)`` or None. Requires :func:`supports`.
    ``kernel``: one of :data:`KERNELS` to override :func:`plan` (for tests, benchmarks).
    """
    steps, batch, _ = x.shape
    w_ih, w_hh, b_ih, b_hh, _ = weights
    hidden = w_hh.shape[1]
    needs_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (x, w_ih, b_ih, b_hh, h0, c0, w_hh)
    )
    if not kernel and dispatch.small_call(x, w_hh, needs_grad):
        return _small_layer(x, h0, c0, weights, lengths, reverse, record, needs_grad)
    bias = b_ih if b_hh is None else b_hh if b_ih is None else b_ih + b_hh
    lens = (
        torch.full((batch,), steps, dtype=torch.int64)
        if lengths is None
        else lengths.to("cpu", torch.int64).contiguous()
    )
    how = plan(batch, hidden, needs_grad)
    if kernel is not None:
        if kernel not in KERNELS:
            raise ValueError(f"fused_layer: kernel must be one of {KERNELS}; got {kernel!r}")
        if kernel == "split" and (
            numba.config.NUMBA_NUM_THREADS < 2 or hidden % 2 or not dispatch.numba_threads_usable()
        ):
            raise ValueError(
                "fused_layer: kernel 'split' needs 2 numba threads (not in a process forked "
                "after they started) and an even hidden size; got "
                f"{numba.config.NUMBA_NUM_THREADS} thread(s) and hidden size {hidden}"
            )
        threads = 2 if kernel == "split" else how.threads
        how = Plan(kernel, threads)
    args = (x, w_ih, bias, h0, c0, w_hh, lens, reverse, needs_grad or record, record, how)
    if needs_grad:
        out, h_n, c_n, gates, cs, pre = _FusedLayer.apply(*args)
    else:
        out, h_n, c_n, gates, cs, pre = _forward(*args)[:6]
    rec = _layer_record(out, gates, cs, pre, None if lengths is None else lens) if record else None
    return LayerResult(out, h_n, c_n, rec)
