"""What one layer-direction takes and gives: weights, records, results, and the padding masks.

Shapes: ``T`` steps, ``B`` batch, ``I`` input size, ``H`` hidden size, ``P`` projected size
(``P = H`` without projection). Sequences are time-major, ``(T, B, ...)``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import NamedTuple

import torch
from torch import Tensor


@dataclass(frozen=True)
class Variant:
    """Which LSTM variant a layer runs; ``None`` in :class:`LayerWeights` means the plain
    torch.nn.LSTM cell (every default call checks only that).

    ``peephole`` (Gers & Schmidhuber 2000): the weights carry ``peephole (3, H)``;
    ``coupled_input_forget`` (ONNX ``input_forget=1``): ``i = 1 - f``;
    ``cell_clip`` (ONNX ``clip``): gate pre-activations clipped to ``[-clip, clip]``;
    ``layer_norm`` (Ba, Kiros & Hinton 2016): the weights carry ``layer_norm``
    (:class:`LayerNormWeights`); ``zoneout_h``, ``zoneout_c`` (Krueger et al. 2016): the rate
    at which a unit keeps its previous value; ``recurrent_dropout``, ``input_dropout`` (Gal &
    Ghahramani 2016): the rate of the one mask per sequence on ``h`` before the recurrent
    product, and on the layer's input. The math: :func:`clearlstm.core.cell.cell_step`.
    """

    peephole: bool = False
    coupled_input_forget: bool = False
    cell_clip: float | None = None
    layer_norm: bool = False
    zoneout_h: float = 0.0
    zoneout_c: float = 0.0
    recurrent_dropout: float = 0.0
    input_dropout: float = 0.0

    @property
    def random(self) -> bool:
        """Whether training draws masks (zoneout or dropout)."""
        return bool(self.zoneout_h or self.zoneout_c or self.recurrent_dropout
                    or self.input_dropout)  # fmt: skip

    def evaluation(self) -> Variant | None:
        """The variant an evaluation call runs: dropout off (None when nothing is left)."""
        if not (self.recurrent_dropout or self.input_dropout):
            return self
        kept = replace(self, recurrent_dropout=0.0, input_dropout=0.0)
        return None if kept == Variant() else kept

    @property
    def extended(self) -> bool:
        """Whether it needs more than the peephole/coupled/clip kernels."""
        return self.layer_norm or self.random


LN_EPS = 1e-5  # torch.nn.LayerNorm's default


class LayerNormWeights(NamedTuple):
    """The gains and biases of the layer-normalised LSTM (Ba et al. 2016; haste's placement):
    one LayerNorm on ``W_ih x`` and one on ``W_hh h`` (each over the ``4H`` gate
    pre-activations), one on the new ``c`` before ``tanh`` (over ``H``)."""

    weight_ih: Tensor  # (4H,) gain of LN(W_ih x)
    bias_ih: Tensor  # (4H,)
    weight_hh: Tensor  # (4H,) gain of LN(W_hh h)
    bias_hh: Tensor  # (4H,)
    weight_c: Tensor  # (H,) gain of LN(c)
    bias_c: Tensor  # (H,)


class LayerMasks(NamedTuple):
    """The random masks of one layer-direction's training call, each None when unused. Both
    dropout masks are inverted-dropout masks (``0`` or ``1 / (1 - rate)``), one per sequence,
    the same at every step; the zoneout masks are 1 where a unit keeps its previous value,
    indexed by time (as the input). Without masks (``None``, evaluation), dropout is off
    and zoneout uses its expectation."""

    input: Tensor | None = None  # (B, I)
    recurrent: Tensor | None = None  # (B, P)
    zoneout_h: Tensor | None = None  # (T, B, P)
    zoneout_c: Tensor | None = None  # (T, B, H)


def draw_masks(variant: Variant, steps: int, batch: int, inputs: int, hidden: int,
               out_size: int, like: Tensor) -> LayerMasks:  # fmt: skip
    """Masks for one training call of a layer-direction, drawn with torch's default generator
    (so ``torch.manual_seed`` reproduces them), in a fixed order: input, recurrent, zoneout
    of h, of c."""

    def keep(shape: tuple[int, ...], rate: float) -> Tensor | None:
        if not rate:
            return None
        return torch.bernoulli(torch.full(shape, 1.0 - rate, dtype=like.dtype, device=like.device))

    drop_in, drop_h = keep((batch, inputs), variant.input_dropout), None
    if drop_in is not None:
        drop_in = drop_in / (1.0 - variant.input_dropout)
    drop_h = keep((batch, out_size), variant.recurrent_dropout)
    if drop_h is not None:
        drop_h = drop_h / (1.0 - variant.recurrent_dropout)
    zone_h = keep((steps, batch, out_size), 1.0 - variant.zoneout_h if variant.zoneout_h else 0)
    zone_c = keep((steps, batch, hidden), 1.0 - variant.zoneout_c if variant.zoneout_c else 0)
    return LayerMasks(drop_in, drop_h, zone_h, zone_c)


class LayerWeights(NamedTuple):
    """One layer-direction's parameters in torch.nn.LSTM's layout (gate order i, f, g, o).

    ``peephole (3, H)``: rows ``p_i, p_f, p_o`` (note: ONNX's ``P`` is ordered i, o, f), only
    with ``variant.peephole``; ``variant`` None for the plain cell; ``layer_norm`` only with
    ``variant.layer_norm``.
    """

    w_ih: Tensor  # (4H, I)
    w_hh: Tensor  # (4H, P)
    b_ih: Tensor | None  # (4H,)
    b_hh: Tensor | None  # (4H,)
    w_hr: Tensor | None  # (P, H), only with projection
    peephole: Tensor | None = None  # (3, H) p_i, p_f, p_o, only with variant.peephole
    variant: Variant | None = None
    layer_norm: LayerNormWeights | None = None

    def cell_kwargs(self) -> dict:
        """The variant keywords of :func:`clearlstm.core.cell.cell_step` for these weights,
        in evaluation (no masks: zoneout at its expectation)."""
        v = self.variant
        if v is None:
            return {}
        zoneout = (v.zoneout_h, v.zoneout_c) if v.zoneout_h or v.zoneout_c else None
        return {"peephole": self.peephole, "coupled_input_forget": v.coupled_input_forget,
                "cell_clip": v.cell_clip, "layer_norm": self.layer_norm,
                "zoneout": zoneout}  # fmt: skip


class LayerRecord(NamedTuple):
    """Every value one layer-direction computed, in the original time order.

    Detached from autograd; padded steps hold NaN.
    """

    pre_activation: Tensor  # (T, B, 4, H) x-axis values of gates i, f, g, o
    input_gate: Tensor  # (T, B, H)
    forget_gate: Tensor  # (T, B, H)
    potential_memory: Tensor  # (T, B, H)
    output_gate: Tensor  # (T, B, H)
    c: Tensor  # (T, B, H) long-term memory after each step
    h: Tensor  # (T, B, P) short-term memory after each step


class LayerResult(NamedTuple):
    output: Tensor  # (T, B, P), zero at padded steps
    h_n: Tensor  # (B, P) short-term memory after each sequence's last valid step
    c_n: Tensor  # (B, H) long-term memory after each sequence's last valid step
    record: LayerRecord | None


def step_mask(lengths: Tensor, steps: int) -> Tensor:
    """``(T, B)`` bool: True where step ``t`` lies inside sequence ``b``."""
    return torch.arange(steps, device=lengths.device)[:, None] < lengths[None, :]


def reverse_within_lengths(x: Tensor, lengths: Tensor | None) -> Tensor:
    """Reverse each sequence of ``x (T, B, ...)`` within its own length; padding stays put.

    Its own inverse, so it maps a reverse direction's outputs back to the original order.
    """
    if lengths is None:
        return x.flip(0)
    steps = x.shape[0]
    t = torch.arange(steps, device=x.device)[:, None]  # (T, 1)
    last = lengths.to(x.device)[None, :] - 1  # (1, B)
    index = torch.where(t <= last, last - t, t)  # (T, B)
    index = index.reshape(steps, -1, *([1] * (x.dim() - 2))).expand_as(x)
    return x.gather(0, index)


def combined_bias(b_ih: Tensor | None, b_hh: Tensor | None) -> Tensor | None:
    """``b_ih + b_hh (4H,)``, the one bias every step adds, or None when the layer has none."""
    if b_ih is None:
        return b_hh
    return b_ih if b_hh is None else b_ih + b_hh
