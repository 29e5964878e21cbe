"""clearlstm: an exact, observable, PyTorch-compatible LSTM.

Every gate at every step (``lstm(x, trace=True)``), and what the network remembers
(:meth:`Trace.retention`, :meth:`Trace.half_life`).
"""

from clearlstm.cell import CellStep, cell_step, lstm_cell
from clearlstm.functional import LayerRecord, LayerWeights, lstm_layer
from clearlstm.modules import LSTM, LSTMCell
from clearlstm.trace import Trace, UnitMemory

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
