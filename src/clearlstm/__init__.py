"""clearlstm: an exact, observable, PyTorch-compatible LSTM.

Every gate at every step (``lstm(x, trace=True)``), and what the network remembers
(:meth:`Trace.retention`, :meth:`Trace.half_life`).
"""

from clearlstm.core.cell import CellStep, cell_step, lstm_cell
from clearlstm.core.records import LayerRecord, LayerWeights
from clearlstm.core.trace import Trace, UnitMemory
from clearlstm.nn.functional import lstm_layer
from clearlstm.nn.modules import LSTM, LSTMCell

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
