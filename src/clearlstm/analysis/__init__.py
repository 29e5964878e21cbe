"""What a trained model learned: units that track a feature (`cells`), spans where units
switch on together (`spans`), gate statistics (`gates`) and attributions of an output to
past inputs (`attribution`). Computed from `Trace`s on our kernels. May import `clearlstm.nn`
and below.
"""

from clearlstm.analysis.attribution import (
    Attribution,
    ForgetAttribution,
    explain_forgetting,
    forget_gate_pre_activation,
    gradient_times_input,
    integrated_gradients,
    readout,
)
from clearlstm.analysis.cells import (
    ProbeScore,
    UnitScore,
    beats_chance,
    best_units,
    probe_all_units,
    rank_units,
    states_from_trace,
)
from clearlstm.analysis.features import series_features, text_features, user_features
from clearlstm.analysis.gates import GateStatistics, Saturation, gate_statistics
from clearlstm.analysis.spans import SpanMatch, SpanSearch, find_spans

__all__ = [
    "Attribution",
    "ForgetAttribution",
    "GateStatistics",
    "ProbeScore",
    "Saturation",
    "SpanMatch",
    "SpanSearch",
    "UnitScore",
    "beats_chance",
    "best_units",
    "explain_forgetting",
    "find_spans",
    "forget_gate_pre_activation",
    "gate_statistics",
    "gradient_times_input",
    "integrated_gradients",
    "probe_all_units",
    "rank_units",
    "readout",
    "series_features",
    "states_from_trace",
    "text_features",
    "user_features",
]
