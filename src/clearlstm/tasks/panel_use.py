"""Using a model trained on many series: loading it, forecasting every series (or one) past
its end, and backtesting each series on its test part.

Every series runs through the single-series code on its own view of the settings
(:meth:`~clearlstm.tasks.panel_settings.PanelForecasterSettings.for_series`: its scaler,
split and intervals), so a series of a panel model is forecast exactly as a model trained on
it alone would forecast it. Output files are long-format: an id column, then the columns the
single-series files have.
"""

from __future__ import annotations

from pathlib import Path

from clearlstm.files import write_atomically
from clearlstm.tasks import forecast, refit
from clearlstm.tasks.backtest import Backtest, backtest_model, csv_text
from clearlstm.tasks.backtest import csv_rows as backtest_rows
from clearlstm.tasks.forecast import Forecast, forecast_future
from clearlstm.tasks.forecasting import data_file
from clearlstm.tasks.models import Forecaster
from clearlstm.tasks.panel import Panel, read_panel
from clearlstm.tasks.panel_settings import PanelForecasterSettings, read_panel_settings
from clearlstm.tasks.panel_train import pooled_samples
from clearlstm.tasks.series import Scaler, Split
from clearlstm.train import checkpoint


def load_panel_model(path: str | Path) -> tuple[Forecaster, PanelForecasterSettings, Path]:
    """A trained panel forecaster, its settings and its directory, checked on the way in."""
    settings, directory = read_panel_settings(path)
    weights = checkpoint.load_weights(directory, settings.weight_shapes(), settings.weights_sha256)
    model = Forecaster.from_settings(settings)
    model.load_state_dict(weights)
    model.check_blocks()
    return model.eval(), settings, directory


def panel_for_model(
    settings: PanelForecasterSettings,
    csv: str | None = None,
    directory: Path | None = None,
    only: str | None = None,
) -> tuple[Panel, list[int]]:
    """The series of the file a model was trained on (opened only inside its folder) or of
    ``csv``, with each one's position in the model; just series ``only`` when given. A series
    the model does not know is an error (it has no scaler for it)."""
    data = settings.data
    panel = read_panel(
        data_file(settings, csv, directory) or "", settings.panel.id_column,
        list(data.targets), list(data.covariates), data.time_column, data.fill,
    )  # fmt: skip
    known = {name: i for i, name in enumerate(settings.ids)}
    unknown = [name for name in panel.ids if name not in known]
    if unknown:
        raise ValueError(
            f"{panel.source}: the model knows no series {unknown[0]!r} ({len(unknown)} unknown "
            f"id(s) in column {panel.id_column!r}); it forecasts the series it was trained on"
        )
    if only is not None:
        keep = _position(settings, panel, only)
        panel = Panel(panel.source, panel.id_column, [only], [panel.series[keep]])
    return panel, [known[name] for name in panel.ids]


def _position(settings: PanelForecasterSettings, panel: Panel, only: str) -> int:
    """Where series ``only`` (``--id``) is in ``panel``; an error when the model or the file
    lacks it."""
    settings.panel.index(only)  # an error naming the model's ids
    if only not in panel.ids:
        raise ValueError(f"--id {only!r}: {panel.source} holds no rows of that series")
    return panel.ids.index(only)


def forecast_panel(
    model: Forecaster, settings: PanelForecasterSettings, panel: Panel, where: list[int], steps: int
) -> list[Forecast]:
    """Each series' ``steps`` rows past its end, with its intervals where calibrated."""
    return [
        forecast_future(model, s, settings.for_series(i), steps)
        for s, i in zip(panel.series, where, strict=True)
    ]


def write_forecasts(
    path: Path, id_column: str, ids: list[str], forecasts: list[Forecast], time_column: str | None
) -> int:
    """A long-format CSV file: the id column, then :func:`clearlstm.tasks.forecast.csv_rows`'
    columns, one row per series ``ids[i]`` and step. Returns the number of data rows."""
    rows = _long(id_column, ids, [forecast.csv_rows(f, time_column) for f in forecasts])
    _write(path, rows)
    return len(rows) - 1


def backtest_panel(
    model: Forecaster,
    settings: PanelForecasterSettings,
    panel: Panel,
    where: list[int],
    horizon: int | None,
    only: str | None = None,
) -> tuple[list[Backtest], bool]:
    """Each series' (or just series ``only``'s) rolling-origin backtest on its test part
    beside its baselines, and whether the validation-chosen model was trained again first,
    on all series (for a model refitted on all rows, which has seen the test parts: same
    seed and settings, so the same weights)."""
    keep = None if only is None else _position(settings, panel, only)
    splits, views = [], []
    for series, i in zip(panel.series, where, strict=True):
        view = settings.for_series(i)
        splits.append(forecast.backtest_split(series, view))
        views.append(view)
    again = settings.refitted
    scalers = [v.data.scaler.to_scaler() for v in views]
    if again:
        model, scalers = _validated(settings, panel, splits, views)
    out = []
    for series, split, view, scaler in zip(panel.series, splits, views, scalers, strict=True):
        if keep is not None and series is not panel.series[keep]:
            continue
        view = refit.with_scaler(view, scaler)
        out.append(backtest_model(model, view, series, split, horizon or view.data.horizon))
    return out, again


def _validated(settings, panel: Panel, splits: list[Split], views):
    """The validation-chosen model again (as ``clearlstm train`` trained it) and each
    series' training-part scaler."""
    transforms = [v.data.scaler.to_scaler().target_transform for v in views]
    scalers = [
        Scaler.fit(s.values[: p.train], t)
        for s, p, t in zip(panel.series, splits, transforms, strict=True)
    ]
    scaled = [sc.transform(s.values) for sc, s in zip(scalers, panel.series, strict=True)]
    d = settings.data
    train, val = (
        pooled_samples(scaled, splits, p, d.window, d.horizon, len(d.targets))
        for p in ("train", "val")
    )
    model, _ = refit.fit_validated(settings, train, val)
    return model, scalers


def write_backtests(path: Path, id_column: str, ids: list[str], backtests: list[Backtest]) -> int:
    """A long-format CSV file of every series' backtest forecasts (the id column, then the
    single-series file's columns). Returns the number of data rows."""
    rows = _long(id_column, ids, [backtest_rows(b) for b in backtests])
    _write(path, rows)
    return len(rows) - 1


def _long(id_column: str, ids: list[str], tables: list[list[list[str]]]) -> list[list[str]]:
    """One table of per-series tables (each a header and rows), the id column first."""
    rows = [[id_column, *tables[0][0]]]
    for name, table in zip(ids, tables, strict=True):
        rows += [[name, *row] for row in table[1:]]
    return rows


def _write(path: Path, rows: list[list[str]]) -> None:
    if path.exists() and path.is_dir():
        raise ValueError(f"--out {path} is a directory; give a CSV file name")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, csv_text(rows).encode())
