"""The one forward entry, :func:`lstm`: every ``LSTM`` call passes here, whatever runs it.

It applies, once for every route, the rules all of them need, then runs the layers:

- **padding**: steps past a sequence's length are zeroed in the input (whatever they held,
  NaN too, never reaches a value or a gradient through the all-steps input product);
- **NaN/Inf policy**: with ``check_finite``, NaN or Inf among the steps the LSTM reads, the
  initial state or the weights raise :func:`clearlstm.nn.checks.check_call_finite`'s error
  (the fused kernels detect it in one numba pass, then the same function names it);
- **initial state**: None means zeros.

Two deciders, each in one place: the backend here (:func:`choose_backend`), the fused
kernel in :func:`clearlstm.fused.dispatch.plan`. Both are public choices:
``LSTM(..., backend=..., kernel=...)``.

Backends:

- ``"reference"``: :func:`clearlstm.core.reference.reference_layer`; any device and dtype.
- ``"fused"``: the numba kernels (:func:`clearlstm.fused.layer.run_layer`); CPU,
  float32/float64, no projection; the fast path that records the trace.
- ``"torch"``: torch's own fused CPU op (:mod:`clearlstm.nn.torch_op`); no trace.
- ``"auto"`` (default), on CPU with float32/float64: with ``record`` -> ``"fused"``
  (``"reference"`` with projection); otherwise ``"fused"`` while ``B * H <=
  FUSED_MAX_UNITS`` and ``H <= FUSED_MAX_HIDDEN`` (where the kernels beat torch.nn.LSTM,
  measured by ``benchmarks/bench_lstm.py``), else ``"torch"`` (also with projection).
  Other devices and dtypes: ``"reference"`` (correct, not tuned). A ``kernel`` other than
  ``"auto"`` means ``"fused"``. A layer with a variant (``LayerWeights.variant``: peepholes,
  coupled input-forget gate, cell clip, layer norm, zoneout, dropout; an evaluation call's
  dropout is off, so a model with only dropout runs as the plain LSTM) never goes to
  ``"torch"``: ``"fused"`` on CPU
  float32/float64 without projection, else ``"reference"``; ``backend="torch"`` refuses it.

Shapes: ``T`` steps, ``B`` batch, ``I`` input size, ``H`` hidden size, ``P`` projected size
(``P = H`` without projection), ``L`` layers, ``D`` directions (1 or 2). Sequences are
time-major, ``(T, B, ...)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Literal, NoReturn

import torch
import torch.nn.functional as F
from torch import Tensor

from clearlstm.core.records import (
    LayerMasks,
    LayerRecord,
    LayerResult,
    LayerWeights,
    draw_masks,
    reverse_within_lengths,
)
from clearlstm.core.reference import reference_layer
from clearlstm.fused import KERNELS
from clearlstm.nn import checks
from clearlstm.nn.torch_op import torch_layer

# "auto" runs the fused kernels up to this size (batch * hidden, and hidden); above it torch's
# own op is faster (crossover measured side by side on 2 cores, float32 and float64).
FUSED_MAX_UNITS = 256
FUSED_MAX_HIDDEN = 128
_FAST_DTYPES = (torch.float32, torch.float64)

Backend = Literal["reference", "fused", "torch", "auto"]
BACKENDS: tuple[str, ...] = ("auto", "reference", "fused", "torch")
Kernel = Literal["auto", "small", "sequence", "split", "blas"]
KERNEL_CHOICES: tuple[str, ...] = ("auto", *KERNELS)


def check_choice(owner: str, backend: str, kernel: str) -> None:
    """Raise unless ``backend`` and ``kernel`` name a path that exists."""
    if backend not in BACKENDS:
        raise ValueError(f"{owner}: backend must be one of {BACKENDS}; got {backend!r}")
    if kernel not in KERNEL_CHOICES:
        raise ValueError(f"{owner}: kernel must be one of {KERNEL_CHOICES}; got {kernel!r}")
    if kernel != "auto" and backend not in ("auto", "fused"):
        raise ValueError(
            f"{owner}: kernel={kernel!r} selects a fused kernel, so backend must be 'fused' or "
            f"'auto'; got backend={backend!r}"
        )


def fused_supports(x: Tensor, weights: LayerWeights) -> bool:
    """True when the fused kernels handle this call: CPU, float32/64, no projection."""
    return x.device.type == "cpu" and x.dtype in _FAST_DTYPES and weights.w_hr is None


def fused_size(batch: int, hidden: int) -> bool:
    """Whether ``"auto"`` runs a layer of this size on the fused kernels (without a trace)."""
    return hidden <= FUSED_MAX_HIDDEN and batch * hidden <= FUSED_MAX_UNITS


def choose_backend(
    x: Tensor,
    weights: LayerWeights,
    record: bool,
    backend: Backend,
    kernel: Kernel = "auto",
    owner: str = "lstm",
) -> str:
    """The path a call takes: ``"reference"``, ``"fused"`` or ``"torch"``.

    Explicit choices are returned as they are (``"fused"`` and ``"torch"`` raise
    ``NotImplementedError`` where they cannot run); ``"auto"`` follows the rule in this
    module's docstring. ``x (T, B, I)``; ``weights``: the first layer's.
    """
    if backend == "auto" and kernel == "auto":  # every default call: kept cheap
        if not x.is_cpu or x.dtype not in _FAST_DTYPES:
            return "reference"
        projection = weights.w_hr is not None
        if record or weights.variant is not None:  # torch's op has no trace, no variants
            return "reference" if projection else "fused"
        fused = not projection and fused_size(x.shape[1], weights.w_hh.shape[1])
        return "fused" if fused else "torch"
    check_choice(owner, backend, kernel)
    if kernel != "auto":
        backend = "fused"
    if backend == "fused" and not fused_supports(x, weights):
        raise NotImplementedError(
            f"{owner}: backend='fused' needs a CPU tensor of float32/float64 and no "
            f"projection; got {x.dtype} on {x.device}, projection={weights.w_hr is not None}. "
            "Use backend='auto' (falls back to the reference) or 'reference'"
        )
    if backend == "torch" and weights.variant is not None:
        raise NotImplementedError(
            f"{owner}: backend='torch' runs only the plain LSTM (torch's op has no peephole, "
            "coupled_input_forget, cell_clip, layer_norm, zoneout or recurrent dropout); got "
            f"{weights.variant}. Use backend='auto', 'fused' or 'reference'"
        )
    if backend == "torch" and record:
        raise NotImplementedError(
            f"{owner}: backend='torch' cannot record the trace (torch's op keeps no gates); "
            "use backend='auto', 'fused' or 'reference' with trace=True"
        )
    return backend


@cache
def _run_fused():
    """:func:`clearlstm.fused.layer.run_layer`, imported on first use (numba loads slowly)."""
    from clearlstm.fused.layer import run_layer

    return run_layer


def lstm(
    x: Tensor,
    h0: Tensor | None,
    c0: Tensor | None,
    weights: Sequence[LayerWeights],
    *,
    bidirectional: bool = False,
    dropout: float = 0.0,
    training: bool = False,
    lengths: Tensor | None = None,
    record: bool = False,
    backend: Backend = "auto",
    kernel: Kernel = "auto",
    check_finite: bool = False,
    owner: str = "lstm",
    masks: Sequence[LayerMasks | None] | None = None,
) -> tuple[Tensor, Tensor, Tensor, list[list[LayerRecord]] | None]:
    """A stack of LSTM layers with torch.nn.LSTM's semantics, on shape-checked inputs.

    ``x (T, B, I)``; ``h0 (L*D, B, P)`` and ``c0 (L*D, B, H)``, or both None for zeros;
    ``weights`` holds ``L*D`` entries ordered layer by layer, forward direction first;
    ``lengths (B,)`` int64 CPU with entries in ``[1, T]``, or None. Dropout applies to every
    layer's output but the last, in training mode only. Returns ``output (T, B, D*P)``
    (zero at padded steps), ``h_n (L*D, B, P)``, ``c_n (L*D, B, H)`` and, with
    ``record=True``, the records indexed ``[layer][direction]``. ``owner`` names the caller
    in error messages. ``masks``: one :class:`~clearlstm.core.records.LayerMasks` (or None)
    per layer-direction for the zoneout and variational dropout variants; without them a
    training call draws them (:func:`~clearlstm.core.records.draw_masks`, torch's default
    generator, layer by layer), an evaluation call uses none.
    """
    variant = weights[0].variant
    evaluation = variant is not None and not training and masks is None
    if evaluation and variant.evaluation() is not variant:  # dropout off: a plainer path
        weights = [w._replace(variant=w.variant.evaluation()) for w in weights]
        variant = weights[0].variant
    path = choose_backend(x, weights[0], record, backend, kernel, owner)
    directions = 2 if bidirectional else 1
    if lengths is not None and torch.is_grad_enabled():
        # Without a gradient no route reads a padded step; with one, its input would reach
        # the input-weight gradient through the all-steps input product (0 * NaN = NaN).
        padded = torch.arange(x.shape[0], device=x.device)[:, None] >= lengths.to(x.device)
        x = x.masked_fill(padded[..., None], 0.0)  # (T, B, I)
    if check_finite and path != "fused":  # the fused kernels check in their own pass
        checks.check_call_finite(owner, x, lengths, h0, c0, weights, directions)
    if h0 is None and path != "fused":  # the fused kernels share one zero state
        out_size, hidden = weights[0].w_hh.shape[1], weights[0].w_hh.shape[0] // 4
        h0 = x.new_zeros(len(weights), x.shape[1], out_size)
        c0 = x.new_zeros(len(weights), x.shape[1], hidden)
    drawing = masks is None and training and variant is not None and variant.random
    stacked = len(weights) == 1  # the states come back (1, B, .): no stack needed
    if stacked and path == "fused":  # the thinnest route: one layer-direction, no plumbing
        state = (None, None) if h0 is None else (h0[0], c0[0])
        m = _masks(masks, drawing, 0, x, weights[0])
        result = _run_fused()(x, *state, weights[0], lengths, False, record, kernel,
                              check_finite, True, m)  # fmt: skip
        if result is None:
            _raise_nonfinite(owner, x, lengths, h0, c0, weights, directions)
        return result.output, result.h_n, result.c_n, [[result.record]] if record else None
    layer_input = x
    h_n, c_n, records = [], [], [] if record else None
    for layer in range(len(weights) // directions):
        outputs, layer_records = [], []
        for direction in range(directions):
            k = layer * directions + direction
            args = (weights[k], lengths, direction == 1, record)
            state = (None, None) if h0 is None else (h0[k], c0[k])
            m = _masks(masks, drawing, k, layer_input, weights[k])
            if path == "fused":
                result = _run_fused()(layer_input, *state, *args, kernel, check_finite, stacked,
                                      m)  # fmt: skip
                if result is None:
                    _raise_nonfinite(owner, x, lengths, h0, c0, weights, directions)
            elif path == "torch":
                result = torch_layer(layer_input, *state, *args[:3])
            else:
                result = reference_layer(layer_input, *state, *args, masks=m)
            outputs.append(result.output)
            h_n.append(result.h_n)
            c_n.append(result.c_n)
            layer_records.append(result.record)
        layer_input = outputs[0] if directions == 1 else torch.cat(outputs, dim=-1)
        if dropout > 0 and training and layer < len(weights) // directions - 1:
            layer_input = F.dropout(layer_input, dropout, training=True)
        if records is not None:
            records.append(layer_records)
    if stacked:
        hn, cn = h_n[0], c_n[0]
        if hn.dim() == 2:
            hn, cn = hn.unsqueeze(0), cn.unsqueeze(0)
        return layer_input, hn, cn, records
    return layer_input, torch.stack(h_n), torch.stack(c_n), records


def _masks(masks, drawing: bool, k: int, x: Tensor, w: LayerWeights) -> LayerMasks | None:
    """Layer-direction ``k``'s masks: given, drawn now (a training call), or None."""
    if not drawing:
        return None if masks is None else masks[k]
    hidden, out_size = w.w_hh.shape[0] // 4, w.w_hh.shape[1]
    return draw_masks(w.variant, x.shape[0], x.shape[1], x.shape[2], hidden, out_size, x)


def _raise_nonfinite(owner, x, lengths, h0, c0, weights, directions) -> NoReturn:
    """The fused kernels found NaN/Inf: name it (the NaN/Inf policy's own message)."""
    checks.check_call_finite(owner, x, lengths, h0, c0, weights, directions)
    raise ValueError(f"{owner}: the fused kernels found NaN or Inf among the inputs")


def lstm_layer(
    x: Tensor,
    h0: Tensor | None,
    c0: Tensor | None,
    weights: LayerWeights,
    lengths: Tensor | None = None,
    reverse: bool = False,
    record: bool = False,
    backend: Backend = "auto",
    kernel: Kernel = "auto",
) -> LayerResult:
    """One layer in one direction over a whole sequence: :func:`lstm` of one layer.

    ``x (T, B, I)``, ``h0 (B, P)``, ``c0 (B, H)`` (or None for zeros), ``lengths (B,)``
    int64 or None (all ``T``). With ``reverse=True`` each sequence is read from its own
    last valid step to its first (the forward pass over each sequence reversed within its
    length). Returns outputs ``(T, B, P)`` in the original time order, the final memories
    ``(B, P)``, ``(B, H)`` and with ``record=True`` a :class:`LayerRecord`.
    """
    if reverse:
        x = reverse_within_lengths(x, lengths)
    state = (None, None) if h0 is None else (h0[None], c0[None])
    output, h_n, c_n, records = lstm(
        x, *state, [weights], lengths=lengths, record=record, backend=backend, kernel=kernel
    )
    record_ = None if records is None else records[0][0]
    if reverse:
        output = reverse_within_lengths(output, lengths)
        if record_ is not None:
            record_ = LayerRecord(*(reverse_within_lengths(v, lengths) for v in record_))
    return LayerResult(output, h_n[0], c_n[0], record_)
