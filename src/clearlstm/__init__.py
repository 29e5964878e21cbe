"""clearlstm: an exact, observable, PyTorch-compatible LSTM.

Every gate at every step (``lstm(x, trace=True)``), and what the network remembers
(:meth:`Trace.retention`, :meth:`Trace.half_life`).

The names below load on first use (PEP 562), so ``import clearlstm`` and the ``clearlstm``
command's ``--help`` do not pay for importing torch and numba.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from clearlstm.core.cell import CellStep, cell_step, lstm_cell
    from clearlstm.core.records import LayerRecord, LayerWeights
    from clearlstm.core.trace import Trace, UnitMemory
    from clearlstm.nn.functional import lstm_layer
    from clearlstm.nn.lstm import LSTM
    from clearlstm.nn.lstm_cell import LSTMCell

__version__ = "0.1.0"

__all__ = [
    "LSTM",
    "CellStep",
    "LSTMCell",
    "LayerRecord",
    "LayerWeights",
    "Trace",
    "UnitMemory",
    "__version__",
    "cell_step",
    "lstm_cell",
    "lstm_layer",
]

# Exported name -> the module that defines it.
_EXPORTS: dict[str, str] = {
    "CellStep": "clearlstm.core.cell",
    "cell_step": "clearlstm.core.cell",
    "lstm_cell": "clearlstm.core.cell",
    "LayerRecord": "clearlstm.core.records",
    "LayerWeights": "clearlstm.core.records",
    "Trace": "clearlstm.core.trace",
    "UnitMemory": "clearlstm.core.trace",
    "lstm_layer": "clearlstm.nn.functional",
    "LSTM": "clearlstm.nn.lstm",
    "LSTMCell": "clearlstm.nn.lstm_cell",
}

# Subpackages reachable as attributes (``clearlstm.nn``) without importing them first.
_SUBPACKAGES = frozenset(
    {"analysis", "cli", "core", "errors", "files", "fused", "interop", "nn", "tasks", "teach"}
    | {"train", "viz", "web"}
)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    elif name in _SUBPACKAGES:
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    dunders = {name for name in globals() if name.startswith("__")}
    return sorted(dunders | set(__all__) | _SUBPACKAGES)
