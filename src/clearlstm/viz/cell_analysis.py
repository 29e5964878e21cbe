"""What ``clearlstm report --model`` analyses: the cells, the gates and the attributions of a
saved model, computed once with :mod:`clearlstm.analysis` and then drawn and tabled.

The data read (:func:`analyse_model`):

- a text model reads the text in its training pieces (``seq_len`` characters, each from a
  zero state, as in training; the characters after the last whole piece are left out; a
  text shorter than one piece is one piece). Its cells are ranked against
  :func:`~clearlstm.analysis.text_features`; "why did it forget?" explains the longest-memory
  unit's lowest forget gate in the first pieces, over the characters of its piece.
- a forecaster reads every window of the rows (scaled with the training scaler), as it does
  when it forecasts; the state it forecasts from (after each window's last step) is ranked
  against :func:`~clearlstm.analysis.series_features` of the first target at the window's
  last row. The forecast from the last window is attributed to its steps by integrated
  gradients (baseline: the window flat at its last row, so the attributions say what the
  path to the last value added), and the longest-memory unit's lowest forget gate in that
  window is explained.

Everything is deterministic: the chance levels use a fixed seed.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch

from clearlstm.analysis import (
    Attribution,
    ForgetAttribution,
    GateStatistics,
    ProbeScore,
    UnitScore,
    beats_chance,
    explain_forgetting,
    gate_statistics,
    integrated_gradients,
    probe_all_units,
    rank_units,
    series_features,
    states_from_trace,
    text_features,
)
from clearlstm.tasks.settings import CharModelSettings
from clearlstm.viz.saved_models import SavedModel
from clearlstm.viz.subject import Subject

MAX_TEXT_CHARS = 4000  # characters ranked: enough for the chance level to mean something
FORGET_PIECES = 20  # "why did it forget?" looks for the lowest forget gate in these pieces
FOLDS = 5
SHIFTS = 200  # circular shifts of each feature for the chance level
TOLERANCE = 0.01  # completeness: within 1% of the output difference
MAX_INTERVALS = 2048


@dataclass(frozen=True)
class CellAnalysis:
    """The report's analysis of one saved model on one data set."""

    kind: str  # "text" or "series"
    source: str  # where the data came from, in words
    steps: int  # states ranked (characters, or forecast origins)
    states: dict[str, np.ndarray]  # "c" (N, H), "h" (N, P): what was ranked
    features: dict[str, np.ndarray]  # name -> (N,)
    scores: list[UnitScore]  # rank_units(states, features), each feature's units by |r|
    probes: list[ProbeScore]
    gates: GateStatistics  # of the last layer, forward direction, over every step read
    text: str | None  # the characters ranked (text models)
    values: np.ndarray | None  # (N,) the first target at each origin's last row (series)
    labels: list[str] | None  # time labels of the origins, when the data has them
    forgetting: ForgetAttribution | None
    forgetting_context: str  # where the forgetting was explained, in words
    forgetting_labels: list[str] | None  # what each step of the explained sequence read
    forgetting_gates: np.ndarray | None  # (L,) that unit's forget gate over that sequence
    forecast: Attribution | None  # integrated gradients of the last window's forecast
    forecast_window: np.ndarray | None  # (W,) the first target over that window, data units
    target_std: float  # scaled units -> the target's units (1 for text)
    target_mean: float
    note: str | None = None  # why something could not be analysed

    @property
    def top_units(self) -> dict[str, list[UnitScore]]:
        """Each feature's units by falling |r| (any quantity)."""
        out: dict[str, list[UnitScore]] = {}
        for s in self.scores:
            out.setdefault(s.feature, []).append(s)
        return out

    def verdicts(self) -> dict[str, str]:
        """Per feature: ``"beats chance"``, ``"no better than chance"`` or ``"constant"``."""
        out = {}
        for feature, units in self.top_units.items():
            best = units[0]
            if np.isnan(best.all_units_r2):
                out[feature] = "constant"
            else:
                out[feature] = "beats chance" if beats_chance(best) else "no better than chance"
        return out


def _rank(states, features) -> tuple[list[UnitScore], list[ProbeScore], str | None]:
    """Features defined on too few steps (fewer than two per fold) are left out, and said."""
    usable, undefined, constant = {}, [], []
    for name, values in features.items():
        finite = values[np.isfinite(values)]
        if len(finite) < 2 * FOLDS:
            undefined.append(name)
        elif finite.min() == finite.max():
            constant.append(name)
        else:
            usable[name] = values
    notes = [
        f"{what} on this data, not ranked: {', '.join(names)}"
        for what, names in (("undefined on too many steps", undefined), ("constant", constant))
        if names
    ]
    note = "; ".join(notes) or None
    if not usable:
        return [], [], note
    scores = rank_units(states, usable, folds=FOLDS, shifts=SHIFTS)
    probes = probe_all_units(states, usable, folds=FOLDS, shifts=SHIFTS)
    return scores, probes, note


def text_pieces(text: str, piece: int) -> tuple[str, int]:
    """The characters analysed and the piece length: whole pieces of ``piece`` characters
    of the first :data:`MAX_TEXT_CHARS` (one shorter piece for a shorter text)."""
    text = text[:MAX_TEXT_CHARS]
    if len(text) <= piece:
        return text, len(text)
    return text[: len(text) // piece * piece], piece


def analyse_text(model: SavedModel, text: str, source: str) -> CellAnalysis:
    """Cells, gates and one forgetting of a text model on ``text``."""
    from clearlstm.tasks.text import encode

    settings = model.settings
    assert isinstance(settings, CharModelSettings)
    text, piece = text_pieces(text, settings.data.seq_len)
    ids = encode(text, settings.vocabulary).view(-1, piece)  # (S, L)
    trace = model.module.trace(ids)
    states = states_from_trace(trace)
    features = text_features(text)
    gates = gate_statistics(trace)
    note = None
    if len(text) < 20:
        scores, probes, note = [], [], f"{len(text)} characters are too few to rank cells"
    else:
        scores, probes, note = _rank(states, features)
    # The longest-memory unit's sharpest forgetting in the first pieces.
    unit = int(gates.half_life_median.argmax())
    layer = model.lstm.num_layers - 1
    f = trace[layer, 0].forget_gate[:, :FORGET_PIECES, unit]  # (L, pieces)
    step, k = divmod(int(f.argmin()), f.shape[1])
    module = copy.deepcopy(model.module).double().eval()
    with torch.no_grad():
        embedded = module.embedding(ids[k])  # (L, E)
    forgetting = explain_forgetting(
        module.lstm, embedded, step, unit, layer=layer, tolerance=TOLERANCE, max_steps=MAX_INTERVALS
    )
    chars = text[k * piece : (k + 1) * piece]
    return CellAnalysis(
        "text",
        source,
        len(text),
        states,
        features,
        scores,
        probes,
        gates,
        text,
        None,
        None,
        forgetting,
        f"piece {k + 1} (characters {k * piece + 1} to {(k + 1) * piece})",
        list(chars),
        f[:, k].double().numpy(),
        None,
        None,
        1.0,
        0.0,
        note,
    )


def forecast_windows(model: SavedModel, rows: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
    """``(S, W, C)`` scaled windows, in the module's dtype, and their origins ``(S,)``: the
    window of origin ``t`` holds rows ``[t - W, t)``. Fewer rows than the model's window
    are one shorter window."""
    window = min(model.settings.data.window, len(rows))
    scaled = model.settings.data.scaler.to_scaler().transform(rows)
    origins = np.arange(window, len(rows) + 1)
    x = np.stack([scaled[t - window : t] for t in origins])
    return torch.as_tensor(x, dtype=model.lstm.weight_ih_l0.dtype), origins


def analyse_series(
    model: SavedModel, rows: np.ndarray, source: str, labels: list[str] | None = None
) -> CellAnalysis:
    """Cells, gates, the last forecast's attribution and one forgetting of a forecaster on
    ``rows (T, C)`` in the data's units (fewer than the window: read as one window)."""
    settings = model.settings
    window, season = min(settings.data.window, len(rows)), settings.data.season
    x, origins = forecast_windows(model, rows)
    trace = model.module.trace(x)
    last = trace[-1, 0]
    states = {k: getattr(last, k)[-1].double().numpy() for k in ("c", "h")}  # (S, H)
    values = rows[:, 0]
    gates = gate_statistics(trace)
    note, features, scores, probes = None, {}, [], []
    try:
        features = {k: v[origins - 1] for k, v in series_features(values, season).items()}
        scores, probes, note = _rank(states, features)
    except ValueError as error:  # too few rows or windows to rank anything
        note = f"cells not ranked: {error}"
    if len(rows) < settings.data.window:
        short = f"{len(rows)} rows, fewer than the model's window of {settings.data.window}: "
        note = short + "read as one shorter window; " + (note or "")
    module = copy.deepcopy(model.module).double().eval()
    # A model with future covariates reads them on the H rows after its window: the last
    # window it can forecast from ends H rows before the end.
    h = settings.model.horizon if settings.model.future else 0
    if h and len(x) <= h:
        raise ValueError(
            f"{source}: {len(rows)} rows; this model reads its future covariates on the {h} "
            f"rows after a window, so it needs at least window + {h} ({window + h}) rows"
        )
    xw = x[-1 - h].double()  # (W, C) the last window
    later = torch.as_tensor(settings.data.scaler.to_scaler().transform(rows[len(rows) - h :]))

    def forecast(windows: torch.Tensor) -> torch.Tensor:
        return module(module.join(windows, later) if h else windows)[:, 0, 0]

    attribution = None
    if len(rows) >= settings.data.window or module.linear is None:
        flat = xw[-1:].expand_as(xw).clone()
        attribution = integrated_gradients(
            forecast, xw, flat, tolerance=TOLERANCE, max_steps=MAX_INTERVALS
        )
    else:  # its linear part reads exactly one window: no forecast from fewer rows
        note = (note or "") + (
            f" no forecast attribution: the model's linear part reads exactly "
            f"{settings.data.window} rows"
        )
    unit = int(gates.half_life_median.argmax())
    step = int(last.forget_gate[:, -1, unit].argmin())
    forgetting = explain_forgetting(
        module.lstm,
        xw,
        step,
        unit,
        layer=model.lstm.num_layers - 1,
        prepare=module.features,
        tolerance=TOLERANCE,
        max_steps=MAX_INTERVALS,
    )
    scaler = settings.data.scaler
    first, end = len(rows) - window - h, len(rows) - h
    window_labels = labels[first:end] if labels else [str(t + 1) for t in range(first, end)]
    return CellAnalysis(
        "series",
        source,
        len(origins),
        states,
        features,
        scores,
        probes,
        gates,
        None,
        values[origins - 1],
        [labels[t - 1] for t in origins] if labels else None,
        forgetting,
        f"the last window (rows {first + 1} to {end})",
        window_labels,
        last.forget_gate[:, -1, unit].double().numpy(),
        attribution,
        values[first:end],
        float(scaler.std[0]),
        float(scaler.mean[0]),
        note,
    )


def analysis_data(model: SavedModel, subject: Subject, given: bool):
    """What to analyse: ``(data, source, labels)``. The sequence the user gave (``given``);
    else a text model's bundled dataset's validation part, a forecaster's whole series
    where its settings allow reading it; else the subject's own sequence."""
    settings = model.settings
    if isinstance(settings, CharModelSettings):
        if not given and settings.data.dataset:
            from clearlstm.tasks.datasets import get_dataset
            from clearlstm.tasks.text import read_text

            text = read_text(get_dataset(settings.data.dataset).path)
            start = int(len(text) * (1 - settings.data.val_fraction))
            return text[start:], f"the validation part of {settings.data.dataset}", None
        return subject.text, "the text given" if given else "the start of its training text", None
    if not given:
        from clearlstm.tasks.forecasting import series_for_model

        try:
            series = series_for_model(settings, None, model.directory)
            return series.values, "its whole series", series.time
        except (ValueError, LookupError, OSError):
            pass
    labels = subject.step_labels
    return subject.shown, "the rows given" if given else "the end of its series", labels


def analyse(model: SavedModel, subject: Subject, given: bool) -> CellAnalysis:
    """:func:`analysis_data`, then :func:`analyse_text` or :func:`analyse_series`."""
    data, source, labels = analysis_data(model, subject, given)
    if model.reads_text:
        return analyse_text(model, data, source)
    return analyse_series(model, np.asarray(data, dtype=np.float64), source, labels)
