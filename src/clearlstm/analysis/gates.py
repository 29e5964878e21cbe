"""Gate statistics per unit: saturation, memory half-life over steps, dead units.

Saturation follows Karpathy, Johnson & Fei-Fei (2015, "Visualizing and understanding
recurrent networks"): the fraction of steps a gate is left-saturated (below ``low``, 0.1:
shut) or right-saturated (above ``high``, 0.9: wide open). A forget gate right-saturated
most of the time marks a unit that remembers; one that is rarely either is a unit whose
gate is driven by the input.

The half-life of step ``t`` is ``-ln 2 / ln f_t``: how many steps the memory would last if
every step forgot like this one. Its median and quartiles over steps describe a unit better
than one mean when the gate switches between remembering and forgetting.
(:meth:`clearlstm.Trace.half_life` gives the single number from the mean of ``ln f``.)

Padded steps (NaN in the trace) are left out everywhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from clearlstm.core.records import LayerRecord
from clearlstm.core.trace import Trace

GATES = ("input_gate", "forget_gate", "output_gate")


@dataclass(frozen=True)
class Saturation:
    """One gate's ``(H,)`` fractions of valid steps below ``low`` and above ``high``."""

    gate: str
    left: Tensor  # (H,) float64
    right: Tensor  # (H,) float64


@dataclass(frozen=True)
class GateStatistics:
    """Per-unit statistics of one layer-direction over every valid step."""

    steps: int  # valid steps counted (all sequences)
    low: float
    high: float
    saturation: dict[str, Saturation]  # keyed by "input_gate", "forget_gate", "output_gate"
    half_life_median: Tensor  # (H,) steps; inf for a unit whose f is 1 to float precision
    half_life_q1: Tensor  # (H,) first quartile
    half_life_q3: Tensor  # (H,) third quartile
    c_range: Tensor  # (H,) max - min of c
    h_range: Tensor  # (P,) max - min of h
    dead_c: tuple[int, ...]  # units whose c range is below the tolerance
    dead_h: tuple[int, ...]  # units whose h range is below the tolerance

    @property
    def dead(self) -> tuple[int, ...]:
        """Units dead in both ``c`` and ``h`` (every unit when there is projection)."""
        return tuple(sorted(set(self.dead_c) & set(self.dead_h)))


def _valid_rows(record: LayerRecord) -> Tensor:
    """``(N,)`` rows of the flattened ``(T*B)`` steps that are not padding."""
    f = record.forget_gate.flatten(0, 1)
    return ~torch.isnan(f).any(dim=-1)


def _quantile(values: Tensor, q: float) -> Tensor:
    """Linear-interpolated quantile over dim 0 that keeps ``inf`` (torch's gives NaN between
    two infinities) and has no size limit."""
    ordered = torch.sort(values, dim=0).values
    position = q * (len(ordered) - 1)
    lo, hi = math.floor(position), math.ceil(position)
    a, b, w = ordered[lo], ordered[hi], position - lo
    return torch.where((a == b) | (w == 0), a, a + (b - a) * w)


def gate_statistics(
    source: Trace | LayerRecord,
    layer: int = -1,
    direction: int = 0,
    *,
    low: float = 0.1,
    high: float = 0.9,
    tolerance: float = 1e-6,
) -> GateStatistics:
    """Saturation, half-life quartiles and dead units of ``source[layer, direction]`` (or of
    a bare :class:`LayerRecord`, whose padded steps are NaN)."""
    if not 0 < low < high < 1:
        raise ValueError(f"gate_statistics: need 0 < low < high < 1; got low={low}, high={high}")
    if not tolerance >= 0:
        raise ValueError(f"gate_statistics: tolerance must be >= 0; got {tolerance}")
    if isinstance(source, Trace):
        record = source[layer, direction]
    elif isinstance(source, LayerRecord):
        record = source
    else:
        raise TypeError(
            f"gate_statistics: source must be a Trace or LayerRecord; got {type(source).__name__}"
        )
    rows = _valid_rows(record)
    steps = int(rows.sum())
    if steps == 0:
        raise ValueError("gate_statistics: the record holds no valid (non-padded) step")

    def flat(name: str) -> Tensor:
        return getattr(record, name).double().flatten(0, 1)[rows]  # (N, H)

    saturation = {}
    for gate in GATES:
        g = flat(gate)
        saturation[gate] = Saturation(gate, (g < low).double().mean(0), (g > high).double().mean(0))
    f = flat("forget_gate")
    with torch.no_grad():
        life = torch.where(f < 1, -math.log(2) / torch.log(f), math.inf)  # f = 0 gives 0
    quartiles = [_quantile(life, q) for q in (0.25, 0.5, 0.75)]
    c, h = flat("c"), flat("h")
    c_range = c.max(0).values - c.min(0).values
    h_range = h.max(0).values - h.min(0).values

    def dead(span: Tensor) -> tuple[int, ...]:
        return tuple(torch.nonzero(span <= tolerance).flatten().tolist())

    return GateStatistics(
        steps, low, high, saturation, quartiles[1], quartiles[0], quartiles[2],
        c_range, h_range, dead(c_range), dead(h_range),
    )  # fmt: skip
