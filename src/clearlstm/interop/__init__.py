"""Models in and out of other formats: ONNX (`onnx`: gate order i, o, f, c) and Keras
(`keras`: i, f, c, o, one bias), each conversion in its own module, never in the core. May
import `clearlstm.nn` and below.

``clearlstm.interop.onnx.export(model, path)``, ``clearlstm.interop.onnx.import_onnx(path)``,
``clearlstm.interop.keras.import_keras(path)``: the submodules load on first use.
"""

import importlib
from typing import Any

from clearlstm.interop._common import LSTMChain

__all__ = ["LSTMChain", "keras", "onnx"]


def __getattr__(name: str) -> Any:
    if name in ("onnx", "keras"):
        return importlib.import_module(f"clearlstm.interop.{name}")
    raise AttributeError(f"module 'clearlstm.interop' has no attribute {name!r}")
