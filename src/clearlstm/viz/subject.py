"""What the pictures, the report and the explorer look inside: an LSTM and a sequence it reads.

A :class:`Subject` pairs a :class:`~clearlstm.LSTM` with one input sequence, already encoded
the way the LSTM reads it (scaled numbers, one-hot characters, ...), and keeps the sequence as
the user gave it for plots and tables. :func:`statquest_subject` makes one for the seed's unit;
:mod:`clearlstm.saved_models` makes one for a saved model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from clearlstm.core.trace import Trace
from clearlstm.nn.lstm import LSTM
from clearlstm.teach.explain import cell_explained
from clearlstm.teach.seed import COMPANIES, statquest_lstm
from clearlstm.teach.unit import UnitWeights

MAX_STEPS = 100_000  # longer sequences make pictures no one can read and traces of GBs


@dataclass(frozen=True)
class Subject:
    """An LSTM and one sequence: ``inputs (T, 1, I)`` is what the LSTM reads."""

    name: str
    lstm: LSTM
    inputs: Tensor  # (T, 1, I) in the LSTM's dtype
    shown: np.ndarray  # (T, C) the sequence as the user gave it
    columns: list[str]  # names of shown's columns
    step_labels: list[str] | None = None  # e.g. the characters of a text, or time labels
    text: str | None = None  # the sequence as the user wrote it, when it is text
    c0: float = 0.0  # initial long-term memory of every unit
    h0: float = 0.0  # initial short-term memory of every unit
    notes: list[str] = field(default_factory=list)  # what the reader should know

    @property
    def steps(self) -> int:
        return self.inputs.shape[0]

    @property
    def one_unit(self) -> bool:
        """The seed's case: one layer, one unit, one input, the plain cell or one with
        peepholes; the walkthrough applies."""
        lstm = self.lstm
        shape = (lstm.num_layers, lstm.hidden_size, lstm.input_size, lstm.proj_size)
        return shape == (1, 1, 1, 0) and cell_explained(lstm)

    @property
    def weights(self) -> UnitWeights | None:
        return UnitWeights.from_lstm(self.lstm) if self.one_unit else None

    def run(self) -> Trace:
        """The LSTM's trace on the sequence (no gradients)."""
        lstm = self.lstm
        layers = lstm.num_layers * (2 if lstm.bidirectional else 1)
        dtype = lstm.weight_ih_l0.dtype
        out_size = lstm.proj_size or lstm.hidden_size
        h = torch.full((layers, 1, out_size), self.h0, dtype=dtype)
        c = torch.full((layers, 1, lstm.hidden_size), self.c0, dtype=dtype)
        x = self.inputs.to(dtype)  # (T, 1, I)
        with torch.no_grad():
            _, _, trace = lstm(x.transpose(0, 1) if lstm.batch_first else x, (h, c), trace=True)
        return trace


def check_numbers(values: list[float] | np.ndarray, source: str) -> np.ndarray:
    """``(T,)`` or ``(T, C)`` finite float64 with ``1 <= T <= MAX_STEPS``, as ``(T, C)``."""
    array = np.asarray(values, dtype=np.float64)
    array = array[:, None] if array.ndim == 1 else array
    if array.ndim != 2 or array.shape[0] == 0:
        raise ValueError(f"{source}: expected at least one step of numbers; got none")
    if array.shape[0] > MAX_STEPS:
        raise ValueError(f"{source}: {array.shape[0]} steps; at most {MAX_STEPS} are shown")
    if not np.isfinite(array).all():
        raise ValueError(f"{source}: every value must be a finite number")
    return array


def statquest_subject(
    inputs: list[float] | None = None,
    c0: float = 0.0,
    h0: float = 0.0,
    *,
    weights: UnitWeights | None = None,
    source: str = "sequence",
) -> Subject:
    """The seed's one-unit LSTM (or the same unit with other ``weights``) on ``inputs``.

    Default: Company A's four days from Part 7, starting from ``C = h = 0``.
    """
    values = check_numbers(COMPANIES["A"] if inputs is None else inputs, source)
    if values.shape[1] != 1:
        raise ValueError(
            f"{source}: the seed's unit reads one number per step; got {values.shape[1]} columns"
        )
    lstm = statquest_lstm() if weights is None else weights.to_lstm()
    name = "StatQuest's LSTM unit" if weights is None else "a one-unit LSTM"
    x = torch.from_numpy(values).reshape(-1, 1, 1)  # (T, B=1, I=1)
    return Subject(name, lstm, x, values, ["x"], c0=c0, h0=h0)


def read_numbers_csv(path: str | Path, column: str | None = None) -> np.ndarray:
    """``(T,)``: one numeric column of a CSV file (a first time column is skipped)."""
    from clearlstm.tasks.series import read_series

    series = read_series(path, targets=[column] if column else None)
    return check_numbers(series.values[:, 0], str(path))[:, 0]
