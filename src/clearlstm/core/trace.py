"""The Trace: every gate at every step, and what the network remembers.

``lstm(x, trace=True)`` returns a :class:`Trace` beside the usual outputs. For each layer and
direction it holds a :class:`~clearlstm.nn.functional.LayerRecord`: pre-activations (the seed's
x-axis values), forget / input / output gates, potential memory, long-term memory ``c`` and
short-term memory ``h`` after every step, time-major ``(T, B, ...)`` in the input's time
order, NaN at padded steps (see :attr:`Trace.mask`).

Retention is the seed's forget gate compounded over time: the fraction of the long-term
memory held after step ``s`` that is still there after step ``t`` is ``f[s+1] * ... * f[t]``
(what the input gate adds in between is new memory, not the old one surviving). A unit's
memory half-life is the number of steps after which its typical retention falls to one half:
``log(1/2) / mean(log f)`` over all valid steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from clearlstm.core.records import LayerRecord, reverse_within_lengths, step_mask


@dataclass(frozen=True)
class UnitMemory:
    """How long one unit keeps its long-term memory."""

    layer: int
    direction: int
    unit: int
    mean_forget_gate: float  # geometric mean of f over valid steps: typical retention per step
    half_life: float  # steps until half of the memory is left; inf if f == 1


@dataclass(frozen=True)
class Trace:
    """Recorded values of one forward call, indexed ``trace[layer, direction]``.

    ``lengths (B,)`` are the valid steps per sequence (all ``T`` without padding).
    """

    records: tuple[tuple[LayerRecord, ...], ...]
    lengths: Tensor

    @property
    def num_layers(self) -> int:
        return len(self.records)

    @property
    def num_directions(self) -> int:
        return len(self.records[0])

    @property
    def steps(self) -> int:
        return self.records[0][0].forget_gate.shape[0]

    @property
    def mask(self) -> Tensor:
        """``(T, B)`` bool, True at valid (non-padded) steps."""
        return step_mask(self.lengths, self.steps)

    def __getitem__(self, key: int | tuple[int, int]) -> LayerRecord:
        layer, direction = (key, 0) if isinstance(key, int) else key
        layers, directions = self.num_layers, self.num_directions
        if not (-layers <= layer < layers and -directions <= direction < directions):
            raise IndexError(
                f"Trace: no record [{layer}, {direction}]; this trace has {layers} layer(s) "
                f"and {directions} direction(s), indexed trace[layer, direction]"
            )
        return self.records[layer][direction]

    def __repr__(self) -> str:
        rec = self.records[0][0]
        steps, batch, hidden = rec.forget_gate.shape
        return (
            f"Trace(layers={self.num_layers}, directions={self.num_directions}, "
            f"steps={steps}, batch={batch}, hidden={hidden})"
        )

    def _forget_in_processing_order(self, layer: int, direction: int) -> Tensor:
        f = self[layer, direction].forget_gate.double()  # (T, B, H)
        return reverse_within_lengths(f, self.lengths) if direction == 1 else f

    def retention(self, start: int = 0, layer: int = -1, direction: int = 0) -> Tensor:
        """``(T, B, H)`` float64: fraction of the long-term memory held after step ``start``
        that is left after each step ``t >= start`` (1 at ``t = start``, NaN before it and at
        padded steps).

        Steps count in the order the direction reads them: the time index for the forward
        direction; for the reverse direction, step 0 is each sequence's last element.
        """
        f = self._forget_in_processing_order(layer, direction)
        if not 0 <= start < f.shape[0]:
            raise ValueError(
                f"Trace.retention: start must be in [0, {f.shape[0] - 1}]; got {start}"
            )
        kept = torch.full_like(f, float("nan"))
        kept[start] = torch.where(self.mask[start, :, None], 1.0, float("nan"))
        kept[start + 1 :] = torch.cumprod(f[start + 1 :], dim=0)
        return kept

    def half_life(self, layer: int = -1, direction: int = 0) -> Tensor:
        """``(H,)`` float64: steps until a unit's typical retention leaves half its memory."""
        log_f = torch.log(self[layer, direction].forget_gate.double())  # (T, B, H), NaN padded
        mean_log_f = torch.nanmean(log_f.flatten(0, 1), dim=0)  # (H,)
        return torch.where(mean_log_f < 0, math.log(0.5) / mean_log_f, math.inf)

    def memory_summary(self, layer: int = -1, direction: int = 0) -> list[UnitMemory]:
        """Every unit of one layer-direction, longest memory first."""
        log_f = torch.log(self[layer, direction].forget_gate.double())
        mean_f = torch.exp(torch.nanmean(log_f.flatten(0, 1), dim=0))
        layer_index = layer % self.num_layers
        units = [
            UnitMemory(layer_index, direction, u, float(mean_f[u]), float(hl))
            for u, hl in enumerate(self.half_life(layer, direction))
        ]
        return sorted(units, key=lambda m: -m.half_life)
