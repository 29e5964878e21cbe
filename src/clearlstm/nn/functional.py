"""Whole-sequence LSTM functions: one call per layer and direction, stacked into layers.

:func:`lstm_layer` is the boundary the fast kernels plug into: it runs one layer in one
direction over a whole sequence and optionally records every gate. The ``"reference"``
backend steps :func:`clearlstm.core.cell.cell_step` in a loop and is differentiated by torch's
autograd; it is the path every other backend is tested against.

Backends (one ``if`` in :func:`choose_backend`, public so tests select each path):

- ``"reference"``: :func:`clearlstm.core.cell.cell_step` in a Python loop; any device and dtype.
- ``"fused"``: the numba kernels (:mod:`clearlstm.autograd`); CPU, float32/float64, no
  projection; the only fast path that records the trace.
- ``"torch"``: torch's own fused CPU op (``torch.lstm``, oneDNN/MKL), one layer-direction per
  call, lengths through its packed variant; no trace.
- ``"auto"`` (default), on CPU with float32/float64:
  with ``record`` -> ``"fused"`` (``"reference"`` with projection); otherwise ``"fused"``
  while ``B * H <= FUSED_MAX_UNITS`` and ``H <= FUSED_MAX_HIDDEN`` (where the kernels beat
  torch.nn.LSTM, measured by ``benchmarks/bench_lstm.py``), else ``"torch"`` (also with
  projection). Other devices and dtypes: ``"reference"`` (correct, not tuned).

Shapes: ``T`` steps, ``B`` batch, ``I`` input size, ``H`` hidden size, ``P`` projected size
(``P = H`` without projection), ``L`` layers, ``D`` directions (1 or 2). Sequences are
time-major, ``(T, B, ...)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from clearlstm.core.cell import cell_step, input_projection
from clearlstm.core.records import (
    LayerRecord,
    LayerResult,
    LayerWeights,
    reverse_within_lengths,
    step_mask,
)

# "auto" runs the fused kernels up to this size (batch * hidden, and hidden); above it torch's
# own op is faster (crossover measured side by side on 2 cores, float32 and float64).
FUSED_MAX_UNITS = 256
FUSED_MAX_HIDDEN = 128
_FAST_DTYPES = (torch.float32, torch.float64)

Backend = Literal["reference", "fused", "torch", "auto"]
BACKENDS: tuple[str, ...] = ("auto", "reference", "fused", "torch")


def _reference_layer(
    x: Tensor,
    h0: Tensor,
    c0: Tensor,
    weights: LayerWeights,
    mask: Tensor | None,
    record: bool,
) -> tuple[Tensor, Tensor, Tensor, list | None]:
    """Forward-in-time loop over :func:`cell_step`; ``mask (T, B)`` freezes padded steps."""
    xw = input_projection(x, weights.w_ih, weights.b_ih)  # (T, B, 4H) for all steps at once
    h, c = h0, c0
    outputs, steps = [], [] if record else None
    for t in range(x.shape[0]):
        step = cell_step(xw[t], h, c, weights.w_hh, weights.b_hh, weights.w_hr)
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


def choose_backend(x: Tensor, weights: LayerWeights, record: bool, backend: Backend) -> str:
    """The path :func:`lstm_layer` takes: ``"reference"``, ``"fused"`` or ``"torch"``.

    Explicit choices are returned as they are; ``"auto"`` follows the rule in this module's
    docstring. ``x (T, B, I)``.
    """
    if backend not in BACKENDS:
        raise ValueError(f"lstm_layer: backend must be one of {BACKENDS}; got {backend!r}")
    if backend != "auto":
        return backend
    if x.device.type != "cpu" or x.dtype not in _FAST_DTYPES:
        return "reference"
    projection = weights.w_hr is not None
    if record:
        return "reference" if projection or _fused() is None else "fused"
    batch, hidden = x.shape[1], weights.w_hh.shape[0] // 4
    fused = fused_size(batch, hidden) and not projection and _fused() is not None
    return "fused" if fused else "torch"


def fused_size(batch: int, hidden: int) -> bool:
    """Whether ``"auto"`` runs a layer of this size on the fused kernels (without a trace)."""
    return hidden <= FUSED_MAX_HIDDEN and batch * hidden <= FUSED_MAX_UNITS


_FUSED: list = []  # the imported module (or None), once known


def _fused():
    """:mod:`clearlstm.autograd` (the numba kernels), or None without numba."""
    if not _FUSED:
        try:  # imported on first use: numba loads slowly, and may be missing
            from clearlstm.fused import autograd
        except ImportError:
            autograd = None
        _FUSED.append(autograd)
    return _FUSED[0]


def one_layer_forward(
    x: Tensor,
    h0: Tensor | None,
    c0: Tensor | None,
    weights: LayerWeights,
    lengths: Tensor | None,
    record: bool,
    backend: Backend,
    check_finite: bool,
) -> tuple[Tensor, Tensor, Tensor, LayerRecord | None] | None:
    """:func:`lstm` of one layer, one direction, on the fused kernels when ``backend`` runs it
    there, with none of the general path's tensor operations around them: ``(output (T, B,
    H), h_n (1, B, H), c_n (1, B, H), record or None)``, with or without a gradient.

    ``h0, c0 (B, H)`` or None for zeros. With ``check_finite`` the inputs are checked for
    NaN/Inf in one pass. Returns None for any other call, and for one with NaN/Inf: the
    general path then runs (and raises). Validated inputs only.
    """
    batch, hidden = x.shape[1], weights.w_hh.shape[1]
    fast = record or fused_size(batch, hidden)  # "auto" records on the fused kernels
    wanted = backend == "fused" or (backend == "auto" and fast)
    if not wanted or weights.w_hr is not None or (fused := _fused()) is None:
        return None
    return fused.layer_forward(x, h0, c0, weights, lengths, record, check_finite)


def lstm_layer(
    x: Tensor,
    h0: Tensor,
    c0: Tensor,
    weights: LayerWeights,
    lengths: Tensor | None = None,
    reverse: bool = False,
    record: bool = False,
    backend: Backend = "auto",
) -> LayerResult:
    """One layer in one direction over a whole sequence, in one call.

    ``x (T, B, I)``, ``h0 (B, P)``, ``c0 (B, H)``, ``lengths (B,)`` int64 or None (all ``T``).
    With ``reverse=True`` each sequence is read from its own last valid step to its first.
    Returns outputs ``(T, B, P)`` in the original time order, the final memories, and with
    ``record=True`` a :class:`LayerRecord`.

    ``backend``: ``"reference"``, ``"fused"``, ``"torch"`` or ``"auto"``; see
    :func:`choose_backend` and this module's docstring.
    """
    path = choose_backend(x, weights, record, backend)
    if path == "fused":
        fused = _fused()
        if fused is None or not fused.supports(x, weights):
            raise NotImplementedError(
                "lstm_layer: backend='fused' needs numba, a CPU tensor of float32/float64 and "
                f"no projection; got {x.dtype} on {x.device}, projection="
                f"{weights.w_hr is not None}. Use backend='auto' (falls back to the reference) "
                "or 'reference'"
            )
        return fused.fused_layer(x, h0, c0, weights, lengths, reverse, record)
    if path == "torch":
        if record:
            raise NotImplementedError(
                "lstm_layer: backend='torch' cannot record the trace (torch's op keeps no "
                "gates); use backend='auto', 'fused' or 'reference' with trace=True"
            )
        return _torch_layer(x, h0, c0, weights, lengths, reverse)
    mask = None if lengths is None else step_mask(lengths.to(x.device), x.shape[0])
    if reverse:
        x = reverse_within_lengths(x, lengths)
    output, h_n, c_n, steps = _reference_layer(x, h0, c0, weights, mask, record)
    rec = None if steps is None else _stack_record(steps, mask)
    if reverse:
        output = reverse_within_lengths(output, lengths)
        if rec is not None:
            rec = LayerRecord(*(reverse_within_lengths(v, lengths) for v in rec))
    return LayerResult(output, h_n, c_n, rec)


def _torch_layer(
    x: Tensor,
    h0: Tensor,
    c0: Tensor,
    weights: LayerWeights,
    lengths: Tensor | None,
    reverse: bool,
) -> LayerResult:
    """:func:`lstm_layer` on torch's fused op (``torch.lstm``), one layer, one direction.

    Padded batches go through the op's packed variant, so padded steps neither change the
    state nor appear in the output; a reverse direction reads each sequence reversed within
    its length.
    """
    w_ih, w_hh, b_ih, b_hh, w_hr = weights
    has_biases = b_ih is not None or b_hh is not None
    params = [w_ih, w_hh]
    if has_biases:
        zeros = w_ih.new_zeros(w_ih.shape[0])
        params += [zeros if b_ih is None else b_ih, zeros if b_hh is None else b_hh]
    if w_hr is not None:
        params.append(w_hr)
    steps = x.shape[0]
    if lengths is not None and bool((lengths == steps).all()):
        lengths = None  # nothing padded: the plain op is faster than the packed one
    hx = (h0[None], c0[None])
    if reverse:
        x = reverse_within_lengths(x, lengths)
    if lengths is None:
        output, h_n, c_n = torch.lstm(x, hx, params, has_biases, 1, 0.0, False, False, False)
    else:
        packed = pack_padded_sequence(x, lengths.cpu(), enforce_sorted=False)
        order = packed.sorted_indices
        hx = (hx[0].index_select(1, order), hx[1].index_select(1, order))
        data, h_n, c_n = torch.lstm(
            packed.data, packed.batch_sizes, hx, params, has_biases, 1, 0.0, False, False
        )
        back = packed.unsorted_indices
        packed_out = PackedSequence(data, packed.batch_sizes, order, back)
        output = pad_packed_sequence(packed_out, total_length=steps)[0]
        h_n, c_n = h_n.index_select(1, back), c_n.index_select(1, back)
    if reverse:
        output = reverse_within_lengths(output, lengths)
    return LayerResult(output, h_n[0], c_n[0], None)


def lstm(
    x: Tensor,
    h0: Tensor,
    c0: Tensor,
    weights: Sequence[LayerWeights],
    *,
    bidirectional: bool = False,
    dropout: float = 0.0,
    training: bool = False,
    lengths: Tensor | None = None,
    record: bool = False,
    backend: Backend = "auto",
) -> tuple[Tensor, Tensor, Tensor, list[list[LayerRecord]] | None]:
    """A stack of LSTM layers, torch.nn.LSTM's semantics, on validated inputs.

    ``x (T, B, I)``, ``h0 (L*D, B, P)``, ``c0 (L*D, B, H)``; ``weights`` holds ``L*D``
    entries ordered layer by layer, forward direction first. Dropout applies to every
    layer's output but the last, in training mode only. Returns ``output (T, B, D*P)``,
    ``h_n (L*D, B, P)``, ``c_n (L*D, B, H)`` and, with ``record=True``, the records
    indexed ``[layer][direction]``.
    """
    directions = 2 if bidirectional else 1
    num_layers = len(weights) // directions
    if lengths is not None:
        # Padded steps are never read, but whatever they hold (NaN too) would still reach the
        # input-weight gradient through the all-steps input product: zero them once here.
        valid = step_mask(lengths.to(x.device), x.shape[0])[..., None]  # (T, B, 1)
        x = x.masked_fill(~valid, 0.0)
    layer_input = x
    h_n, c_n, records = [], [], [] if record else None
    for layer in range(num_layers):
        outputs, layer_records = [], []
        for direction in range(directions):
            k = layer * directions + direction
            result = lstm_layer(
                layer_input, h0[k], c0[k], weights[k], lengths, direction == 1, record, backend
            )
            outputs.append(result.output)
            h_n.append(result.h_n)
            c_n.append(result.c_n)
            layer_records.append(result.record)
        layer_input = outputs[0] if directions == 1 else torch.cat(outputs, dim=-1)
        if dropout > 0 and training and layer < num_layers - 1:
            layer_input = F.dropout(layer_input, dropout, training=True)
        if records is not None:
            records.append(layer_records)
    if len(h_n) == 1:  # a view: stacking one tensor costs a copy and ~1 µs per call
        return layer_input, h_n[0].unsqueeze(0), c_n[0].unsqueeze(0), records
    return layer_input, torch.stack(h_n), torch.stack(c_n), records
