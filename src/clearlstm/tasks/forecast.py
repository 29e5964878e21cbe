"""Forecasting with a trained model: recursive multi-step forecasts, CSV output and a plot.

The model forecasts ``H`` steps from a window of ``W`` rows; for more steps its forecasts are
appended to the rows and read again (recursive forecasting). Covariates are known inputs: a
forecast can only run where their values are in the data. Shapes: ``N`` rows, ``C`` columns,
``K`` targets.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from clearlstm.tasks.models import Forecaster
from clearlstm.tasks.series import Scaler, Series

if TYPE_CHECKING:
    from clearlstm.tasks.settings import ForecasterSettings


@dataclass(frozen=True)
class Forecast:
    """Forecast rows in the data's units."""

    labels: list[str]  # (steps,) time labels
    columns: list[str]  # (K,) target names
    values: np.ndarray  # (steps, K)


def recursive_forecast(
    model: Forecaster, scaled: np.ndarray, start: int, steps: int, window: int
) -> np.ndarray:
    """``(steps, K)`` scaled forecasts of rows ``[start, start + steps)`` from the rows before.

    ``scaled (N, C)``: covariates are taken from it for every forecast row, so with covariates
    ``start + steps`` must stay within ``N``.
    """
    k, c = model.targets, model.columns
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


def _prepare(series: Series, settings: ForecasterSettings) -> tuple[Scaler, np.ndarray, int]:
    scaler = settings.data.scaler.to_scaler()
    window = settings.data.window
    if len(series) <= window:
        raise ValueError(
            f"{series.source}: {len(series)} rows; the model reads windows of {window}, so it "
            f"needs at least {window + 1}"
        )
    return scaler, scaler.transform(series.values), window


def forecast_test_part(model: Forecaster, series: Series, settings: ForecasterSettings) -> Forecast:
    """The recursive forecast over the test part, from its start to the end of the data."""
    scaler, scaled, window = _prepare(series, settings)
    start = test_start(series, settings)
    values = scaler.inverse(recursive_forecast(model, scaled, start, len(series) - start, window))
    labels = series.time or [str(i) for i in range(len(series))]
    return Forecast(labels[start:], series.targets, values)


def forecast_future(
    model: Forecaster, series: Series, settings: ForecasterSettings, steps: int
) -> Forecast:
    """``steps`` rows past the end of the data."""
    if steps < 1:
        raise ValueError(f"--steps must be at least 1; got {steps}")
    scaler, scaled, window = _prepare(series, settings)
    values = scaler.inverse(recursive_forecast(model, scaled, len(series), steps, window))
    labels = series.time or [str(i) for i in range(len(series))]
    return Forecast(future_labels(labels, steps), series.targets, values)


def test_start(series: Series, settings: ForecasterSettings) -> int:
    """Where the test part starts: the training split for the training data, else the same
    fraction of another series (never before the first full window)."""
    data = settings.data
    if len(series) == data.rows:
        return data.split.test_start
    return max(data.window, len(series) - round(len(series) * data.test_fraction))


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
    """One row per forecast step: the time label, then one column per target."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([time_column or "step", *forecast.columns])
        for label, row in zip(forecast.labels, forecast.values, strict=True):
            writer.writerow([label, *(f"{v:.6g}" for v in row)])


def plot(
    path: Path,
    series: Series,
    test_start: int,
    on_test: Forecast,
    future: Forecast | None,
    title: str,
) -> None:
    """A PNG of the history, the test part's truth and the forecasts, one panel per target."""
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
        ax.plot(
            steps[test_start:], on_test.values[:, j], color="tab:orange", ls="--", lw=1.2,
            label="LSTM forecast from the test start",
        )  # fmt: skip
        if future is not None:
            ahead = np.arange(n, n + len(future.values))
            ax.plot(ahead, future.values[:, j], color="tab:red", lw=1.5, label="forecast")
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
