"""What one layer-direction takes and gives: weights, records, results, and the padding masks.

Shapes: ``T`` steps, ``B`` batch, ``I`` input size, ``H`` hidden size, ``P`` projected size
(``P = H`` without projection). Sequences are time-major, ``(T, B, ...)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor


@dataclass(frozen=True)
class Variant:
    """Which LSTM variant a layer runs; ``None`` in :class:`LayerWeights` means the plain
    torch.nn.LSTM cell (every default call checks only that).

    ``peephole`` (Gers & Schmidhuber 2000): the weights carry ``peephole (3, H)``;
    ``coupled_input_forget`` (ONNX ``input_forget=1``): ``i = 1 - f``;
    ``cell_clip`` (ONNX ``clip``): gate pre-activations clipped to ``[-clip, clip]``.
    The math: :func:`clearlstm.core.cell.cell_step`.
    """

    peephole: bool = False
    coupled_input_forget: bool = False
    cell_clip: float | None = None


class LayerWeights(NamedTuple):
    """One layer-direction's parameters in torch.nn.LSTM's layout (gate order i, f, g, o).

    ``peephole (3, H)``: rows ``p_i, p_f, p_o`` (note: ONNX's ``P`` is ordered i, o, f), only
    with ``variant.peephole``; ``variant`` None for the plain cell.
    """

    w_ih: Tensor  # (4H, I)
    w_hh: Tensor  # (4H, P)
    b_ih: Tensor | None  # (4H,)
    b_hh: Tensor | None  # (4H,)
    w_hr: Tensor | None  # (P, H), only with projection
    peephole: Tensor | None = None  # (3, H) p_i, p_f, p_o, only with variant.peephole
    variant: Variant | None = None


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
