"""A one-unit LSTM described by its twelve numbers: each gate's two weights and its bias.

The seed's unit has one input ``x``, one short-term memory ``h`` and one long-term memory
``C``; each stage reads ``z = w_h * h + w_x * x + b`` (its x-axis value). :class:`UnitWeights`
names those numbers the way the series does and converts to and from ``clearlstm.LSTM(1, 1)``
(torch's layout: gate rows i, f, g, o; the two biases add up to ``b``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch

from clearlstm.nn.lstm import LSTM

# Row of each stage in torch.nn.LSTM's gate blocks (i, f, g, o).
STAGE_ROWS: dict[str, int] = {"input": 0, "forget": 1, "potential": 2, "output": 3}


@dataclass(frozen=True)
class GateWeights:
    """One stage's numbers: ``z = w_h * h + w_x * x + b``."""

    w_h: float  # weight on the short-term memory
    w_x: float  # weight on the input
    b: float  # bias


@dataclass(frozen=True)
class UnitWeights:
    """The four stages of a one-unit LSTM (the seed's diagram, left to right)."""

    forget: GateWeights
    input: GateWeights
    potential: GateWeights
    output: GateWeights

    @classmethod
    def from_lstm(cls, lstm: LSTM) -> UnitWeights:
        """Read the numbers of an ``LSTM(1, 1)`` (biases summed)."""
        if lstm.input_size != 1 or lstm.hidden_size != 1 or lstm.num_layers != 1:
            raise ValueError(
                f"UnitWeights: expected a one-unit LSTM(1, 1) with one layer; got {lstm}"
            )
        w_ih = lstm.weight_ih_l0.detach().double().flatten()  # (4,)
        w_hh = lstm.weight_hh_l0.detach().double().flatten()  # (4,)
        bias = torch.zeros(4, dtype=torch.float64)
        if lstm.bias:
            bias = (lstm.bias_ih_l0 + lstm.bias_hh_l0).detach().double()
        stages = {
            name: GateWeights(float(w_hh[row]), float(w_ih[row]), float(bias[row]))
            for name, row in STAGE_ROWS.items()
        }
        return cls(**stages)

    @classmethod
    def from_dict(cls, numbers: dict[str, dict[str, float]]) -> UnitWeights:
        """``{"forget": {"w_h": .., "w_x": .., "b": ..}, ...}`` (as :meth:`to_dict` writes)."""
        return cls(**{f.name: GateWeights(**numbers[f.name]) for f in fields(cls)})

    def to_dict(self) -> dict[str, dict[str, float]]:
        return asdict(self)

    def to_lstm(self, dtype: torch.dtype = torch.float64) -> LSTM:
        """An ``LSTM(1, 1)`` computing exactly this unit (the bias sits in ``bias_ih``)."""
        w_ih = torch.zeros(4, 1, dtype=dtype)
        w_hh = torch.zeros(4, 1, dtype=dtype)
        b_ih = torch.zeros(4, dtype=dtype)
        for name, row in STAGE_ROWS.items():
            gate: GateWeights = getattr(self, name)
            w_ih[row, 0], w_hh[row, 0], b_ih[row] = gate.w_x, gate.w_h, gate.b
        lstm = LSTM(1, 1, dtype=dtype)
        state = {
            "weight_ih_l0": w_ih,
            "weight_hh_l0": w_hh,
            "bias_ih_l0": b_ih,
            "bias_hh_l0": torch.zeros(4, dtype=dtype),
        }
        lstm.load_state_dict(state)
        return lstm


def statquest_weights() -> UnitWeights:
    """StatQuest's unit (``clearlstm.teach.seed.STATQUEST_WEIGHTS``) as twelve named numbers."""
    from clearlstm.teach.seed import statquest_lstm

    return UnitWeights.from_lstm(statquest_lstm())
