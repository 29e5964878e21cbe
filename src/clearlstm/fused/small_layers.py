"""Small calls as one kernel call each way (:mod:`clearlstm.fused.kernels_small`), with autograd.

Below the sizes :func:`clearlstm.fused.dispatch.small_call` names, the fixed costs are the call: a
whole layer runs forward as one kernel call, input product included, and backward as one
more, gradient GEMMs included, with no torch operation around them (:class:`SmallLayer`).
The tensors become arrays once per call (:func:`small_arrays`; small layers' weights once
for many calls) and the backward reuses the forward's. Also the helpers both fused paths
share: :func:`as_array`, :func:`output_grads`.
"""

from __future__ import annotations

import threading
from functools import cache, lru_cache

import numpy as np
import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from clearlstm.core.records import LayerWeights
from clearlstm.fused import kernels_small, pool
from clearlstm.fused.gemm import gemm_threads


def as_array(t: Tensor) -> np.ndarray:
    """The NumPy view of a CPU tensor (no copy) that the numba kernels take."""
    return t.detach().numpy()


@cache
def unused_array(dtype: np.dtype) -> np.ndarray:
    """An empty ``(0, 0, 0)`` array: no buffer given (never written)."""
    return np.empty((0, 0, 0), dtype)


# Gradient copies below this many elements run on one torch thread: a parallel region waits
# a time slice for a busy core (measured 2026-12, (1000, 1, 8, 64), the other core busy: a
# training step's backward 10.5 ms on 2 threads against 2.6 ms on one), more than a copy
# this size takes. Copies split their elements, so the bits never depend on it.
ONE_THREAD_COPY = 1 << 22


def output_grads(grad_out, grad_hn, grad_cn, out: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The gradients w.r.t. ``out (T, B, H)``, ``h_n`` and ``c_n (B, H)``, contiguous, zeros
    for those autograd left out (``set_materialize_grads(False)``: it would otherwise also
    fill zeros as large as the records, which have no gradient)."""
    with gemm_threads(out.numel(), torch.get_num_threads(), ONE_THREAD_COPY):
        grad_out = torch.zeros_like(out) if grad_out is None else grad_out.contiguous()
    batch, hidden = out.shape[1:]
    grad_hn, grad_cn = (
        out.new_zeros(batch, hidden) if g is None else g.contiguous() for g in (grad_hn, grad_cn)
    )
    return grad_out, grad_hn, grad_cn


def infer_small(arrays, lens, reverse, check_finite, stacked=False) -> tuple[Tensor, ...] | None:
    """``(out, h_n, c_n)`` from :mod:`clearlstm.fused.kernels_small` on :func:`small_arrays`, with
    ``stacked`` the states ``(1, B, H)``; None when ``check_finite`` found NaN/Inf."""
    scratch = _pooled(arrays[0], arrays[2].shape[0])  # held until the kernel returns
    args = (
        *arrays,
        lens,
        reverse,
        unused_array(arrays[0].dtype) if scratch is None else as_array(scratch),
    )
    if not check_finite:
        results = kernels_small.infer_small(*args)
    else:
        bad, *results = kernels_small.infer_small_checked(*args)
        if bad:
            return None
    out, h_n, c_n = results
    if stacked:  # a NumPy view costs a tenth of torch's unsqueeze
        h_n, c_n = h_n[None], c_n[None]
    return torch.from_numpy(out), torch.from_numpy(h_n), torch.from_numpy(c_n)


def _pooled(x: np.ndarray, size: int) -> Tensor | None:
    """A ``(T, B, size)`` buffer like ``x (T, B, I)`` from the pool when it is large enough to
    be pooled; None when the kernel had better allocate it itself (malloc reuses it)."""
    steps, batch, _ = x.shape
    if steps * batch * size * x.itemsize < pool.MIN_BYTES:
        return None
    return pool.empty(
        (steps, batch, size), torch.float32 if x.dtype == np.float32 else torch.float64
    )


@lru_cache(maxsize=64)
def zero_state(batch: int, hidden: int, dtype: torch.dtype) -> np.ndarray:
    """``(B, H)`` zeros for the default state; shared between calls, never written."""
    return np.zeros((batch, hidden), np.float32 if dtype == torch.float32 else np.float64)


@lru_cache(maxsize=64)
def all_steps(batch: int, steps: int) -> np.ndarray:
    """``(B,)`` lengths of an unpadded batch; shared between calls, never written."""
    return np.full(batch, steps, np.int64)


def _bias_arrays(b_ih: Tensor | None, b_hh: Tensor | None, w_hh: np.ndarray):
    """Both biases as arrays ``(G,)``, zeros for a missing one."""
    if b_ih is not None and b_hh is not None:
        return as_array(b_ih), as_array(b_hh)
    zero = np.zeros(len(w_hh), w_hh.dtype)
    return tuple(zero if b is None else as_array(b) for b in (b_ih, b_hh))


def small_arrays(x, weights, state) -> tuple[np.ndarray, ...]:
    """The arrays :mod:`clearlstm.fused.kernels_small` takes, ``x, w_ih, w_hh, h0, c0, b_ih, b_hh``,
    for ``state = (h0, c0)`` arrays."""
    w_ih, w_hh, b_ih, b_hh = _weight_arrays(weights)
    x = x.numpy() if not x.requires_grad and x.is_contiguous() else as_array(x.contiguous())
    return x, w_ih, w_hh, *state, b_ih, b_hh


_WEIGHT_VIEWS: dict[tuple, tuple[np.ndarray, ...]] = {}  # see _weight_arrays
_WEIGHT_VIEWS_KEPT = 8
_WEIGHT_VIEWS_MAX_NUMEL = 1 << 18  # per weight matrix
_WEIGHT_VIEWS_LOCK = threading.Lock()


def _weight_arrays(weights: LayerWeights) -> tuple[np.ndarray, ...]:
    """``w_ih, w_hh, b_ih, b_hh`` as arrays, zeros for a missing bias.

    Making a NumPy view of a tensor costs ~0.8 µs, a quarter of a tiny call, so the views of
    the last few small, contiguous layers are kept, keyed on the tensors' addresses (and the
    matrices' shapes and strides). A kept view keeps its memory alive, so no other tensor can
    take that address while it is kept; writes in place (an optimizer step) show through it.
    """
    w_ih, w_hh, b_ih, b_hh = weights[:4]
    key = (
        w_ih.data_ptr(), w_ih.shape, w_ih.stride(), w_hh.data_ptr(), w_hh.shape, w_hh.stride(),
        b_ih is not None and b_ih.data_ptr(), b_hh is not None and b_hh.data_ptr(),
    )  # fmt: skip
    views = _WEIGHT_VIEWS.get(key)
    if views is not None:
        return views
    w_ih_a, w_hh_a = as_array(w_ih.contiguous()), as_array(w_hh.contiguous())
    views = (w_ih_a, w_hh_a, *_bias_arrays(b_ih, b_hh, w_hh_a))
    present = [t for t in (w_ih, w_hh, b_ih, b_hh) if t is not None]
    if all(t.is_contiguous() and t.numel() <= _WEIGHT_VIEWS_MAX_NUMEL for t in present):
        with _WEIGHT_VIEWS_LOCK:  # models may be called from several threads (the explorer)
            if len(_WEIGHT_VIEWS) >= _WEIGHT_VIEWS_KEPT:
                _WEIGHT_VIEWS.pop(next(iter(_WEIGHT_VIEWS)))  # the oldest
            _WEIGHT_VIEWS[key] = views
    return views


def small_forward(arrays, lens, reverse, record, store) -> tuple[Tensor, ...]:
    """``forward_small`` on :func:`small_arrays`: ``(out, h_n, c_n, gates, cs, pre)``.
    Large buffers (input products, records) come from the pool, small ones from the kernel."""
    x, width = arrays[0], arrays[2].shape[0]
    scratch = not record  # with a record the kernel writes its input products to pre
    used = ((scratch, width), (store, width), (store, width // 4), (record, width))
    pooled = [_pooled(x, size) if wanted else None for wanted, size in used]  # xw, gates, cs, pre
    none = unused_array(x.dtype)
    buffers = [none if t is None else as_array(t) for t in pooled]
    results = kernels_small.forward_small(*arrays, lens, reverse, store, record, *buffers)
    out, h_n, c_n, *records = (torch.from_numpy(a) for a in results)
    records = [r if t is None else t for r, t in zip(records, pooled[1:], strict=True)]
    return (out, h_n, c_n, *records)


class SmallLayer(torch.autograd.Function):
    """``(x, w_ih, w_hh, b_ih, b_hh, h0, c0) -> (out, h_n, c_n, gates, cs, pre)`` for small
    layers (biases may be None); forward and backward are one kernel call each. ``arrays``:
    the inputs as :func:`small_arrays`."""

    @staticmethod
    def forward(ctx, x, w_ih, w_hh, b_ih, b_hh, h0, c0, lens, reverse, record, arrays):
        results = small_forward(arrays, lens, reverse, record, True)
        out, _, _, gates, cs, pre = results
        ctx.save_for_backward(x, w_ih, w_hh, h0, c0, out, gates, cs)  # for the version check
        ctx.arrays = (*arrays[:5], *(as_array(t) for t in (out, gates, cs)))  # the same, as arrays
        ctx.lens, ctx.reverse, ctx.biases = lens, reverse, (b_ih is not None, b_hh is not None)
        ctx.mark_non_differentiable(gates, cs, pre)
        ctx.set_materialize_grads(False)
        return results

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out, grad_hn, grad_cn, *_):
        out = ctx.saved_tensors[5]  # reading them raises if one was modified in place
        grads = (as_array(g) for g in output_grads(grad_out, grad_hn, grad_cn, out))
        dx, dw_ih, dw_hh, db, dh0, dc0 = (
            torch.from_numpy(a)
            for a in kernels_small.backward_small(*grads, *ctx.arrays, ctx.lens, ctx.reverse)
        )
        db_ih, db_hh = (db if present else None for present in ctx.biases)
        return dx, dw_ih, dw_hh, db_ih, db_hh, dh0, dc0, None, None, None, None
