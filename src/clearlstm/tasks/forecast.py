"""Forecasting with a trained model: recursive multi-step forecasts, CSV output and a plot.

The model forecasts ``H`` steps from a window of ``W`` rows; for more steps its forecasts are
appended to the rows and read again (recursive forecasting). Past covariates are known up to
the forecast origin only, so past the end of the data a model reading them forecasts at most
its horizon; future covariates are read on the rows after the last target value
(:mod:`clearlstm.tasks.covariates`). Shapes: ``N`` rows, ``C`` columns, ``K`` targets.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from clearlstm.errors import SeriesError
from clearlstm.files import write_atomically
from clearlstm.tasks.covariates import names
from clearlstm.tasks.models import Forecaster
from clearlstm.tasks.series import Series, Split

if TYPE_CHECKING:
    from clearlstm.tasks.backtest import Backtest
    from clearlstm.tasks.settings import ForecasterSettings

DEFAULT_STEPS = 12  # forecast --steps for a model without covariates


@dataclass(frozen=True)
class Forecast:
    """Forecast rows in the data's units."""

    labels: list[str]  # (steps,) time labels
    columns: list[str]  # (K,) target names
    values: np.ndarray  # (steps, K)
    # nominal level in percent -> lower and upper ends (steps, K); NaN where not calibrated
    bands: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)


def recursive_forecast(
    model: Forecaster, scaled: np.ndarray, start: int, steps: int, window: int
) -> np.ndarray:
    """``(steps, K)`` scaled forecasts of rows ``[start, start + steps)`` from the rows before.

    ``scaled (N, C)``: covariates are taken from it for every forecast row, so with covariates
    ``start + steps`` must stay within ``N``. (The reference for models without future
    covariates; :func:`clearlstm.tasks.backtest.forecast_origins` makes every forecast.)
    """
    k, c = model.targets, model.columns
    if model.future:
        raise ValueError("recursive_forecast: reads no future covariates; use forecast_origins")
    if start < window:
        raise ValueError(f"forecast: needs {window} rows before the first forecast; got {start}")
    if c > k and start + steps > len(scaled):
        raise ValueError(
            f"forecast: this model reads covariates, whose values past the end of the data "
            f"are unknown; it can forecast at most {len(scaled) - start} step(s) from here. "
            "Add rows with the covariates' future values (and empty targets) to forecast further"
        )
    rows = [r for r in scaled[:start]]
    out = []
    with torch.no_grad():
        while len(out) < steps:
            x = torch.as_tensor(np.stack(rows[-window:]), dtype=torch.float32)[None]  # (1, W, C)
            prediction = model(x)[0].double().numpy()  # (H, K)
            for step in prediction[: steps - len(out)]:
                t = start + len(out)
                rows.append(np.concatenate([step, scaled[t, k:]]) if c > k else step)
                out.append(step)
    return np.array(out)


def steps_past_end(settings: ForecasterSettings, series: Series, steps: int | None) -> int:
    """How many rows to forecast past the end of ``series``: ``steps``, checked, or by
    default :data:`DEFAULT_STEPS` (a model with covariates: as many as it can).

    A model with future covariates reads them on every row it forecasts: it forecasts at most
    the rows after the last target value, and needs at least its horizon of them (it reads a
    whole horizon at once). One with past covariates forecasts at most its horizon: a longer
    forecast would read them on rows past the origin, where they are unknown.
    """
    data = settings.data
    h, ahead = data.horizon, series.ahead
    m = 0 if ahead is None else len(ahead.values)
    if data.future_covariates and m < h:
        where = f" (lines {ahead.lines[0]} to {ahead.lines[-1]})" if ahead else ""
        raise SeriesError(
            f"{series.source}: this model forecasts {h} row(s) at once and reads the future "
            f"covariate(s) {names(data.future_covariates)} on each, so the file needs their "
            f"values on at least {h} row(s) after the last value of {names(data.targets)}, "
            f"with empty target cells; it has {m}{where}"
        )
    most = [m] if data.future_covariates else []
    most += [h] if data.covariates else []
    if steps is None:
        return min(most) if most else DEFAULT_STEPS
    if steps < 1:
        raise ValueError(f"--steps must be at least 1; got {steps}")
    if data.covariates and steps > h:
        raise SeriesError(
            f"--steps {steps}: this model reads the past covariate(s) "
            f"{names(data.covariates)}, known up to the forecast origin only, so past the end "
            f"of the data it forecasts at most its horizon of {h} step(s); a column whose "
            "future values are known belongs in --future-covariates"
        )
    if data.future_covariates and steps > m:
        assert ahead is not None  # m >= h >= 1
        raise SeriesError(
            f"--steps {steps}: this model reads the future covariate(s) "
            f"{names(data.future_covariates)} on every row it forecasts; {series.source} has "
            f"{m} row(s) after the last target value (lines {ahead.lines[0]} to "
            f"{ahead.lines[-1]}): add {steps - m} more with their values and empty target "
            f"cells, or forecast at most --steps {m}"
        )
    return steps


def forecast_future(
    model: Forecaster, series: Series, settings: ForecasterSettings, steps: int | None
) -> Forecast:
    """``steps`` rows past the end of the data (None: as many as
    :func:`steps_past_end` allows), on the future covariates' rows
    after the last target value where the model reads them, with the conformal intervals the
    settings record for each step they were calibrated for
    (:func:`clearlstm.tasks.backtest.forecast_origins` makes the forecast)."""
    from clearlstm.tasks.backtest import forecast_origins

    steps = steps_past_end(settings, series, steps)
    window = settings.data.window
    if len(series) < window:
        raise ValueError(
            f"{series.source}: {len(series)} rows; the model reads windows of {window}, so it "
            f"needs at least {window}"
        )
    ahead = series.ahead if model.future else None
    later = ahead.values if ahead is not None else None
    origin = np.array([len(series)])
    values = forecast_origins(model, settings, series.values, origin, steps, later)[0]
    labels = series.time or [str(i) for i in range(len(series))]
    bands = {}
    for level, widths in (settings.intervals or {}).items():
        w = np.full_like(values, np.nan)
        known = min(steps, len(widths))
        w[:known] = np.array(widths)[:known]
        bands[int(level)] = (values - w, values + w)
    if ahead is not None and ahead.time is not None:
        return Forecast(ahead.time[:steps], series.targets, values, bands)  # the file's labels
    return Forecast(future_labels(labels, steps), series.targets, values, bands)


def test_start(series: Series, settings: ForecasterSettings) -> int:
    """Where the test part starts: the training split for the training data, else the same
    fraction of another series (never before the first full window)."""
    data = settings.data
    if len(series) == data.rows:
        return data.split.test_start
    return max(data.window, len(series) - round(len(series) * data.test_fraction))


def backtest_split(series: Series, settings: ForecasterSettings) -> Split:
    """The parts of ``series`` a backtest of the model uses: the test part from
    :func:`test_start`, the model's validation rows before it and the rest training; a clear
    error when the training part cannot hold a window and a horizon."""
    data = settings.data
    start = test_start(series, settings)
    if start - data.split.val < data.window + data.horizon:
        raise ValueError(
            f"{series.source}: {len(series)} rows are too few to backtest this model: it needs "
            f"{data.window + data.horizon} training rows and {data.split.val} validation rows "
            "before the test part"
        )
    return Split(start - data.split.val, data.split.val, len(series) - start)


def future_labels(labels: list[str], steps: int) -> list[str]:
    """Labels after the last one: years and ``YYYY-MM`` months continue, others count ``+n``."""
    last = labels[-1].strip()
    if re.fullmatch(r"-?\d+", last) and len(labels) > 1 and re.fullmatch(r"-?\d+", labels[-2]):
        step = int(last) - int(labels[-2].strip()) or 1
        return [str(int(last) + step * (i + 1)) for i in range(steps)]
    month = re.fullmatch(r"(\d{4})-(\d{2})", last)
    if month:
        year, m = int(month[1]), int(month[2]) - 1
        return [f"{year + (m + i + 1) // 12}-{(m + i + 1) % 12 + 1:02d}" for i in range(steps)]
    return [f"{last} +{i + 1}" for i in range(steps)]


def write_csv(path: Path, forecast: Forecast, time_column: str | None) -> None:
    """One row per forecast step: the time label, then per target its forecast and, where
    intervals are known, ``TARGET_lower_80``, ``TARGET_upper_80`` (empty past the steps
    they were calibrated for)."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(csv_rows(forecast, time_column))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, buffer.getvalue().encode())


def csv_rows(forecast: Forecast, time_column: str | None) -> list[list[str]]:
    """The header and rows :func:`write_csv` writes."""
    header = [time_column or "step"]
    for name in forecast.columns:
        header.append(name)
        for level in sorted(forecast.bands):
            header += [f"{name}_lower_{level}", f"{name}_upper_{level}"]
    rows = [header]
    for i, label in enumerate(forecast.labels):
        row = [label]
        for j in range(len(forecast.columns)):
            row.append(f"{forecast.values[i, j]:.6g}")
            for level in sorted(forecast.bands):
                row += [_cell(end[i, j]) for end in forecast.bands[level]]
        rows.append(row)
    return rows


def _cell(x: float) -> str:
    return "" if np.isnan(x) else f"{x:.6g}"


def plot(
    path: Path,
    series: Series,
    test_start: int,
    title: str,
    backtest: Backtest | None = None,
    future: Forecast | None = None,
) -> None:
    """A PNG of the history, the test part's truth, the backtest's forecasts as scored (from
    every ``H``-th origin, ``H`` steps each, with their 80% and 95% conformal bands) and the
    forecast past the end with its bands; one panel per target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = len(series.targets)
    fig, axes = plt.subplots(k, 1, figsize=(10, 3.6 * k), squeeze=False)
    n = len(series)
    steps = np.arange(n)
    for j, ax in enumerate(axes[:, 0]):
        y = series.values[:, j]
        ax.plot(steps[: test_start + 1], y[: test_start + 1], color="0.3", lw=1, label="history")
        ax.plot(steps[test_start:], y[test_start:], color="tab:green", lw=1.2, label="test truth")
        if backtest is not None:
            _draw_backtest(ax, backtest, j)
        if future is not None:
            ahead = np.arange(n, n + len(future.values))
            ax.plot(ahead, future.values[:, j], color="tab:red", lw=1.5, label="forecast")
            for level, alpha in ((95, 0.15), (80, 0.3)):
                if level in future.bands:
                    low, high = future.bands[level]
                    ax.fill_between(ahead, low[:, j], high[:, j], color="tab:red", alpha=alpha,
                                    lw=0, label=f"{level}% interval")  # fmt: skip
        ax.axvline(test_start, color="0.6", lw=0.8, ls=":")
        ax.set_ylabel(series.targets[j])
        ax.legend(loc="upper left", fontsize=8)
        if series.time:
            labels = series.time + (future.labels if future else [])
            ticks = np.linspace(0, len(labels) - 1, 8).astype(int)
            ax.set_xticks(ticks, [labels[i] for i in ticks], fontsize=8)
    axes[0, 0].set_title(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _draw_backtest(ax: Any, backtest: Backtest, j: int) -> None:
    """The LSTM's backtest forecasts from origins ``H`` apart, each over its ``H`` steps."""
    h = backtest.horizon
    what = "one-step forecasts" if h == 1 else f"{h}-step forecasts from origins {h} apart"
    bands = {round(100 * lv): backtest.bounds(lv) for lv in backtest.widths}
    for i, s in enumerate(range(0, len(backtest.starts), h)):
        x = backtest.starts[s] + np.arange(h)
        if h == 1:  # one line through all origins
            x, rows = backtest.starts, slice(None)
        else:
            rows = s
        first = i == 0
        centre = backtest.forecasts["LSTM"][rows, :, j].reshape(-1)
        for level, alpha in ((95, 0.15), (80, 0.3)):
            if level in bands:
                low, high = (b[rows, :, j].reshape(-1) for b in bands[level])
                label = f"{level}% conformal interval" if first else None
                ax.fill_between(x, low, high, color="tab:orange", alpha=alpha, lw=0, label=label)
        label = f"LSTM backtest: {what} (as scored)" if first else None
        ax.plot(x, centre, color="tab:orange", ls="--", lw=1.2, label=label)
        if h == 1:
            break
