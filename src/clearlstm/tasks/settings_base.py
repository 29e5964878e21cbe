"""The building blocks of :mod:`clearlstm.tasks.settings`: limits, field helpers, the LSTM's
weight shapes and the document class every ``settings.json`` kind derives from."""

from __future__ import annotations

import json
import re
from dataclasses import field
from pathlib import Path
from typing import Any

from clearlstm.errors import CheckpointError
from clearlstm.train import checkpoint, codec
from clearlstm.train.codec import JsonSettings, expected, invalid, limits, limits_of, to_json

MAX_UNITS = 65_536  # hidden and embedding sizes
MAX_LAYERS = 1_024
MAX_MEMBERS = 1_024  # networks in a forecaster's seed ensemble
MAX_COLUMNS = 100_000
MAX_HORIZON = 1_000_000
MAX_STEPS = 1_000_000_000  # rows, window, characters per piece
MAX_VOCABULARY = 1_000_000
MAX_EXAMPLE_NUMBERS = 100_000  # a longer last window is not recorded
EXAMPLE_CHARS = 80
Shapes = dict[str, tuple[int, ...]]


def size(high: int) -> Any:
    return field(metadata=limits(low=1, high=high))


def fraction() -> Any:
    return field(metadata=limits(above=0, below=1))


def names(fewest: int) -> Any:
    return field(metadata=limits(length=(fewest, MAX_COLUMNS)))


def optional(**kwargs: Any) -> Any:
    """A field that folders written before it lack: null there."""
    return field(default=None, metadata=limits(optional=True, **kwargs))


def join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def one_source(file: str, where: str, first: str, second: str, a: Any, b: Any) -> None:
    if (a is None) == (b is None):
        raise CheckpointError(
            f"{file}: {join(where, first)} and {join(where, second)}: exactly one must be "
            f"given (the other null); found {json.dumps(a)} and {json.dumps(b)}"
        )


def lstm_shapes(inputs: int, hidden: int, layers: int, prefix: str = "lstm.") -> Shapes:
    """The state-dict shapes of a :class:`clearlstm.LSTM` (one direction, biases)."""
    shapes: Shapes = {}
    for k in range(layers):
        shapes[f"{prefix}weight_ih_l{k}"] = (4 * hidden, inputs if k == 0 else hidden)
        shapes[f"{prefix}weight_hh_l{k}"] = (4 * hidden, hidden)
        shapes[f"{prefix}bias_ih_l{k}"] = (4 * hidden,)
        shapes[f"{prefix}bias_hh_l{k}"] = (4 * hidden,)
    return shapes


class Document(JsonSettings):
    """A whole ``settings.json``: its ``format`` and ``version`` keys are checked and written
    here, around the fields."""

    def to_json(self) -> dict[str, Any]:
        return {"format": checkpoint.FORMAT, "version": checkpoint.FORMAT_VERSION} | to_json(self)

    @classmethod
    def from_json(cls, document: Any, file: str | Path = "settings.json") -> Any:
        return codec.from_json(cls, checkpoint.settings_body(document, file), file)

    def weight_shapes(self) -> Shapes:
        raise NotImplementedError

    def _check_digest(self, file: str, where: str) -> None:
        digest = getattr(self, "weights_sha256", None)
        if digest is not None and not re.fullmatch("[0-9a-f]{64}", digest):
            need = "64 lowercase hexadecimal digits (a SHA-256)"
            raise invalid(file, join(where, "weights_sha256"), need, digest)


def check_option(flag: str, cls: type, name: str, value: int) -> None:
    """A ``ValueError`` naming ``flag`` when ``value`` lies outside what field ``name`` of
    ``cls`` may hold, so every model that trains can be loaded again."""
    lim = limits_of(cls, name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{flag} must be {expected(int, lim)}; got {value!r}")
    if (lim.low is not None and value < lim.low) or (lim.high is not None and value > lim.high):
        raise ValueError(f"{flag} must be {expected(int, lim)}; got {value}")
