"""The fused backend's one entry, :func:`run_layer`: a layer-direction on the kernel that
:func:`clearlstm.fused.dispatch.plan` picks, with or without a gradient and a record.

Tiny calls run as one kernel call each way (:mod:`clearlstm.fused.small_layers`), others
through :class:`clearlstm.fused.autograd.FusedLayer`. The NaN/Inf check the caller asks for
is one numba pass over the layer's inputs (inside the kernel for tiny inference); finding
any, nothing is computed and the caller raises (:func:`clearlstm.nn.checks`).
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import Tensor

from clearlstm.core.records import (
    LayerMasks,
    LayerRecord,
    LayerResult,
    LayerWeights,
    combined_bias,
    step_mask,
)
from clearlstm.fused import kernels, pool
from clearlstm.fused.autograd import FusedLayer, forward_layer
from clearlstm.fused.dispatch import plan, report
from clearlstm.fused.small_layers import (
    SmallLayer,
    all_steps,
    as_array,
    infer_small,
    small_arrays,
    small_forward,
    zero_state,
)
from clearlstm.fused.variant_layer import run_variant_layer


def run_layer(
    x: Tensor,
    h0: Tensor | None,
    c0: Tensor | None,
    weights: LayerWeights,
    lengths: Tensor | None,
    reverse: bool = False,
    record: bool = False,
    kernel: str = "auto",
    check_finite: bool = False,
    stacked: bool = False,
    masks: LayerMasks | None = None,
) -> LayerResult | None:
    """One layer-direction on the fused kernels.

    ``x (T, B, I)`` CPU float32/float64 (padded steps already zeroed by the caller),
    ``h0, c0 (B, H)`` or None for zeros, ``lengths (B,)`` int64 CPU or None (all ``T``),
    ``weights`` without projection (with a variant: :mod:`clearlstm.fused.variant_layer`).
    Returns outputs ``(T, B, H)`` in the original time order
    and the final states ``(B, H)`` (``(1, B, H)`` with ``stacked``), the record with
    ``record``; None when ``check_finite`` found NaN/Inf among the inputs. ``masks``: a
    training call's zoneout and dropout masks (:func:`clearlstm.core.reference.reference_layer`).
    """
    w_ih, w_hh, b_ih, b_hh, _, peep, variant, _ = weights
    needs_grad = torch.is_grad_enabled() and (  # spelt out: this runs on every call
        w_ih.requires_grad
        or w_hh.requires_grad
        or x.requires_grad
        or (b_ih is not None and b_ih.requires_grad)
        or (b_hh is not None and b_hh.requires_grad)
        or (h0 is not None and (h0.requires_grad or c0.requires_grad))
        or (peep is not None and peep.requires_grad)
        or (weights.layer_norm is not None and weights.layer_norm[0].requires_grad)
    )
    if variant is not None:  # peepholes, coupled gates, cell clip: their own kernels
        results = run_variant_layer(x, h0, c0, weights, lengths, reverse, record, kernel,
                                    check_finite, needs_grad, masks)  # fmt: skip
        if results is None:
            return None
        out, h_n, c_n, gates, cs, pre = results
        rec = layer_record(out, gates, cs, pre, lengths) if record else None
        if stacked:
            h_n, c_n = h_n.unsqueeze(0), c_n.unsqueeze(0)
        return LayerResult(out, h_n, c_n, rec)
    how = plan(x, w_hh, needs_grad, kernel, record)
    steps, batch, _ = x.shape
    zeros = zero_state(batch, w_hh.shape[1], x.dtype)  # shared, never written
    given = h0 is not None
    state = (as_array(h0.contiguous()), as_array(c0.contiguous())) if given else (zeros, zeros)
    lens = all_steps(batch, steps) if lengths is None else as_array(lengths)
    arrays = small_arrays(x, weights, state)
    small = how.kernel == "small"
    if small and not (record or needs_grad):  # plain inference: the check inside the kernel
        result = infer_small(arrays, lens, reverse, check_finite, stacked)
        return None if result is None else LayerResult(*result, None)
    if check_finite and kernels.count_nonfinite_layer(*arrays, lens):
        return None
    if needs_grad:  # zeros for a missing state: a gradient w.r.t. them is not wanted
        h0, c0 = (torch.from_numpy(zeros) if h is None else h for h in (h0, c0))
    else:
        h0, c0 = (torch.from_numpy(h) for h in state)
    if small and needs_grad:
        args = (x, w_ih, w_hh, b_ih, b_hh, h0, c0, lens, reverse, record, arrays)
        results = SmallLayer.apply(*args)
    elif small:
        results = small_forward(arrays, lens, reverse, record, record)
    else:
        bias = combined_bias(b_ih, b_hh)
        store = needs_grad or record
        args = (x, w_ih, bias, h0, c0, w_hh, torch.from_numpy(lens), reverse, store, record, how)
        if needs_grad:
            results = FusedLayer.apply(*args)
        else:  # threads learnt from timings (dispatch.learnt_plan): the call is timed
            began = time.perf_counter()
            results = forward_layer(*args)[:6]
            report(how, time.perf_counter() - began, steps)
    out, h_n, c_n, gates, cs, pre = results
    rec = layer_record(out, gates, cs, pre, lengths) if record else None
    if stacked:
        h_n, c_n = h_n.unsqueeze(0), c_n.unsqueeze(0)
    return LayerResult(out, h_n, c_n, rec)


def layer_record(out, gates, cs, pre, lengths: Tensor | None) -> LayerRecord:
    """The record of one layer-direction from the kernels' buffers ``(T, B, G)``/``(T, B, H)``;
    NaN at padded steps."""
    steps, batch, hidden = out.shape
    h = pool.empty(tuple(out.shape), out.dtype)
    # In NumPy, on this thread: torch would copy a trace this size on its thread pool, and a
    # parallel region waits milliseconds for a second thread on a busy machine.
    h_a = as_array(h)
    np.copyto(h_a, as_array(out))
    if lengths is not None:
        h_a[~as_array(step_mask(lengths, steps))] = np.nan
    g = gates.view(steps, batch, 4, hidden)
    return LayerRecord(pre.view(steps, batch, 4, hidden), *g.unbind(2), cs, h)
