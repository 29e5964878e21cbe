"""The reference path: :func:`clearlstm.core.cell.cell_step` stepped in a Python loop over one
layer-direction, differentiated by torch's autograd. Every other path is tested against it;
it runs on any device and dtype, projection and every variant (``weights.variant``) included.
"""

from __future__ import annotations

import torch
from torch import Tensor

from clearlstm.core.cell import cell_step, input_projection
from clearlstm.core.records import (
    LayerMasks,
    LayerRecord,
    LayerResult,
    LayerWeights,
    reverse_within_lengths,
    step_mask,
)


def reference_layer(
    x: Tensor,
    h0: Tensor,
    c0: Tensor,
    weights: LayerWeights,
    lengths: Tensor | None = None,
    reverse: bool = False,
    record: bool = False,
    masks: LayerMasks | None = None,
) -> LayerResult:
    """One layer in one direction: ``x (T, B, I)``, ``h0 (B, P)``, ``c0 (B, H)``,
    ``lengths (B,)`` or None. With ``reverse`` each sequence is read from its own last valid
    step to its first. Outputs ``(T, B, P)`` in the original time order, zero at padding.
    ``masks``: a training call's dropout and zoneout masks (None: evaluation)."""
    mask = None if lengths is None else step_mask(lengths.to(x.device), x.shape[0])
    if masks is not None and masks.input is not None:
        x = x * masks.input  # the same mask at every step
    if reverse:
        x = reverse_within_lengths(x, lengths)
        if masks is not None:  # the zoneout masks are indexed by time, as the input
            masks = masks._replace(**{
                name: reverse_within_lengths(getattr(masks, name), lengths)
                for name in ("zoneout_h", "zoneout_c") if getattr(masks, name) is not None
            })  # fmt: skip
    output, h_n, c_n, steps = _loop(x, h0, c0, weights, mask, record, masks)
    rec = None if steps is None else _stack_record(steps, mask)
    if reverse:
        output = reverse_within_lengths(output, lengths)
        if rec is not None:
            rec = LayerRecord(*(reverse_within_lengths(v, lengths) for v in rec))
    return LayerResult(output, h_n, c_n, rec)


def _loop(
    x: Tensor,
    h0: Tensor,
    c0: Tensor,
    weights: LayerWeights,
    mask: Tensor | None,
    record: bool,
    masks: LayerMasks | None = None,
) -> tuple[Tensor, Tensor, Tensor, list | None]:
    """Forward-in-time loop over :func:`cell_step`; ``mask (T, B)`` freezes padded steps."""
    ln = weights.layer_norm
    xw = input_projection(x, weights.w_ih, weights.b_ih, ln)  # (T, B, 4H), all steps at once
    h, c = h0, c0
    outputs, steps = [], [] if record else None
    variant = weights.cell_kwargs()
    if masks is not None:
        variant["recurrent_mask"] = masks.recurrent
    for t in range(x.shape[0]):
        if masks is not None and variant.get("zoneout") is not None:
            rates = variant["zoneout"]
            given = (masks.zoneout_h, masks.zoneout_c)
            variant["zoneout"] = tuple(
                r if m is None else m[t] for r, m in zip(rates, given, strict=True)
            )
            step = cell_step(xw[t], h, c, weights.w_hh, weights.b_hh, weights.w_hr, **variant)
            variant["zoneout"] = rates
        else:
            step = cell_step(xw[t], h, c, weights.w_hh, weights.b_hh, weights.w_hr, **variant)
        if mask is None:
            h, c = step.h, step.c
            outputs.append(h)
        else:
            valid = mask[t, :, None]  # (B, 1)
            h = torch.where(valid, step.h, h)
            c = torch.where(valid, step.c, c)
            outputs.append(torch.where(valid, step.h, torch.zeros_like(step.h)))
        if steps is not None:
            steps.append(step)
    return torch.stack(outputs), h, c, steps


def _stack_record(steps: list, mask: Tensor | None) -> LayerRecord:
    """Stack per-step values into ``(T, B, ...)`` tensors, NaN at padded steps."""
    fields = []
    for name in LayerRecord._fields:
        values = torch.stack([getattr(s, name).detach() for s in steps])  # (T, B, X)
        if name == "pre_activation":
            values = values.unflatten(-1, (4, -1))  # (T, B, 4, H)
        if mask is not None:
            shape = mask.shape + (1,) * (values.dim() - 2)
            values = values.masked_fill(~mask.reshape(shape), float("nan"))
        fields.append(values)
    return LayerRecord(*fields)
