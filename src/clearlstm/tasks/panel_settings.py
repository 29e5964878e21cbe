"""What ``settings.json`` holds for a model trained on many series (``kind``
``"panel_forecaster"``): a forecaster's settings plus, per series, its id, rows, split,
scaler, season, intervals and test scores.

One :class:`~clearlstm.tasks.models.Forecaster` (one set of weights) serves every series;
each series is scaled by its own scaler (fitted on its own training part, or on all its rows
after a refit). The top-level ``data`` describes all series together: ``rows`` and ``split``
are the sums over the series, ``season`` the most common one, and ``scaler`` is the identity
(each series' scaler is in ``panel.series``). ``result.test`` holds the scores over all
series: mean MASE over the series, MAE and RMSE pooled over every test forecast.
:meth:`PanelForecasterSettings.for_series` gives one series' view as a plain forecaster's
settings, so everything written for one series (backtests, intervals, forecasts) runs on it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from clearlstm.errors import CheckpointError
from clearlstm.tasks.panel import MAX_ID_CHARS, MAX_SERIES
from clearlstm.tasks.settings import (
    ForecasterSettings,
    MethodScores,
    ScalerSettings,
    SplitSettings,
)
from clearlstm.tasks.settings_base import MAX_HORIZON, MAX_STEPS, join, size
from clearlstm.train import checkpoint
from clearlstm.train.codec import JsonSettings, invalid, limits

KIND = "panel_forecaster"


@dataclass(frozen=True)
class SeriesSettings(JsonSettings):
    """One series of a panel model (an item of ``panel.series``)."""

    id: str = field(metadata=limits(length=(1, MAX_ID_CHARS)))
    rows: int = size(MAX_STEPS)
    split: SplitSettings
    scaler: ScalerSettings  # fitted on this series' first ``fitted_rows`` rows
    season: int | None = size(MAX_STEPS)  # None: no season found
    fitted_rows: int = size(MAX_STEPS)  # split.train, or rows after a refit
    test: dict[str, dict[str, MethodScores]]  # target -> method -> scores
    # Conformal half-widths past the end, as ForecasterSettings.intervals.
    intervals: dict[str, tuple[tuple[float, ...], ...]] | None = field(
        default=None, metadata=limits(optional=True, length=(1, MAX_HORIZON))
    )

    def check_json(self, file: str, where: str) -> None:
        if self.id != self.id.strip() or not self.id.isprintable():
            need = "an id without surrounding spaces, of printable characters"
            raise invalid(file, join(where, "id"), need, self.id)
        s = self.split
        if s.train + s.val + s.test != self.rows:
            need = f"parts adding up to {join(where, 'rows')} ({self.rows})"
            raise invalid(file, join(where, "split"), need, dataclasses.asdict(s))
        if self.fitted_rows not in (s.train, self.rows):
            need = f"split.train ({s.train}) or rows ({self.rows})"
            raise invalid(file, join(where, "fitted_rows"), need, self.fitted_rows)


@dataclass(frozen=True)
class PanelSettings(JsonSettings):
    """Which column names the series, and each series (``panel`` in the file)."""

    id_column: str = field(metadata=limits(length=(1, 10_000)))
    series: tuple[SeriesSettings, ...] = field(metadata=limits(length=(1, MAX_SERIES)))

    def check_json(self, file: str, where: str) -> None:
        seen: set[str] = set()
        for i, s in enumerate(self.series):
            if s.id in seen:
                path = join(where, f"series[{i}].id")
                raise CheckpointError(f"{file}: {path}: the id {s.id!r} appears twice")
            seen.add(s.id)

    def index(self, name: str) -> int:
        """The position of series ``name``; a ``ValueError`` naming some ids when none has it."""
        for i, s in enumerate(self.series):
            if s.id == name:
                return i
        shown = ", ".join(repr(s.id) for s in self.series[:10])
        more = f" and {len(self.series) - 10} more" if len(self.series) > 10 else ""
        raise ValueError(f"--id {name!r}: the model has no such series; its ids: {shown}{more}")


@dataclass(frozen=True, kw_only=True)
class PanelForecasterSettings(ForecasterSettings):
    """Everything saved with a forecaster trained on many series."""

    kind: Literal["panel_forecaster"] = "panel_forecaster"  # type: ignore[assignment]
    panel: PanelSettings

    def check_json(self, file: str, where: str) -> None:
        super().check_json(file, where)
        data, series = self.data, self.panel.series
        sums = {
            "data.rows": (data.rows, sum(s.rows for s in series)),
            "data.split.train": (data.split.train, sum(s.split.train for s in series)),
            "data.split.val": (data.split.val, sum(s.split.val for s in series)),
            "data.split.test": (data.split.test, sum(s.split.test for s in series)),
            "fitted_rows": (self.fitted_rows, sum(s.fitted_rows for s in series)),
        }
        for path, (found, want) in sums.items():
            if found != want:
                raise invalid(file, join(where, path), f"{want} (the sum over the series)", found)
        k, c = len(data.targets), len(data.columns)
        for i, s in enumerate(series):
            at = join(where, f"panel.series[{i}]")
            if s.split.train < data.window + data.horizon:
                need = f"at least window + horizon ({data.window + data.horizon}) rows"
                raise invalid(file, join(at, "split.train"), need, s.split.train)
            if len(s.scaler.mean) != c:
                need = f"{c} numbers (one per target and covariate)"
                raise invalid(file, join(at, "scaler.mean"), need, list(s.scaler.mean))
            if s.scaler.lambdas is not None and len(s.scaler.lambdas) != k:
                need = f"{k} numbers (one per target)"
                raise invalid(file, join(at, "scaler.lambdas"), need, list(s.scaler.lambdas))
            for level, steps in (s.intervals or {}).items():
                if level not in ("80", "95"):
                    raise invalid(file, join(at, "intervals"), 'keys "80" and "95"', level)
                for j, row in enumerate(steps):
                    if len(row) != k or min(row) < 0:
                        need = f"a list of {k} numbers of at least 0 (one per target)"
                        raise invalid(file, join(at, f"intervals.{level}[{j}]"), need, list(row))

    @property
    def ids(self) -> list[str]:
        return [s.id for s in self.panel.series]

    def for_series(self, i: int) -> ForecasterSettings:
        """Series ``i``'s view (:func:`series_view`)."""
        return series_view(self, self.panel.series[i])


def series_view(settings: ForecasterSettings, series: SeriesSettings) -> ForecasterSettings:
    """One series' view of a panel model's ``settings``: a single-series forecaster's settings
    with its rows, split, scaler, season and intervals (the same model, shape and training
    settings), so the single-series code forecasts and backtests it."""
    data = dataclasses.replace(
        settings.data, rows=series.rows, split=series.split, scaler=series.scaler,
        season=series.season,
    )  # fmt: skip
    shared = {
        f.name: getattr(settings, f.name)
        for f in dataclasses.fields(ForecasterSettings)
        if f.name != "kind"
    }
    view = {"data": data, "intervals": series.intervals, "fitted_rows": series.fitted_rows}
    return ForecasterSettings(**shared | view)


def is_panel(path: str | Path) -> bool:
    """Whether the model directory ``path`` holds a model trained on many series."""
    directory = checkpoint.model_dir(path)
    file = directory / checkpoint.SETTINGS_FILE
    body = checkpoint.settings_body(checkpoint.load_settings(directory), file)
    return body.get("kind") == KIND


def read_panel_settings(path: str | Path) -> tuple[PanelForecasterSettings, Path]:
    """The checked settings of a panel model directory and the directory; the weights
    file's shapes are checked against them too."""
    directory = checkpoint.model_dir(path)
    file = directory / checkpoint.SETTINGS_FILE
    settings = PanelForecasterSettings.from_json(checkpoint.load_settings(directory), file)
    weights = directory / checkpoint.MODEL_FILE
    checkpoint.check_shapes(weights, checkpoint.read_shapes(weights), settings.weight_shapes())
    return settings, directory
