"""Models in and out of other formats: ONNX (`onnx`: gate order i, o, f, c) and Keras
(`keras`: i, f, c, o, one bias), each conversion in its own module, never in the core. May
import `clearlstm.nn` and below.
"""

from clearlstm.interop._common import LSTMChain

__all__ = ["LSTMChain"]
