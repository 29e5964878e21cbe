"""Past-only and future-known covariates, as Darts distinguishes them.

A *past* covariate (``--covariates``) is known up to the forecast origin only: the model reads
it in the window, and past the end of the data it forecasts at most its horizon (its values
after the origin are unknown). A *future* covariate (``--future-covariates``: a calendar, a
planned price, holidays) is known for the forecast rows too: the model reads its values on
the ``H`` rows it forecasts (:class:`~clearlstm.tasks.models.Forecaster`), so a CSV file to
forecast from holds them on rows after the last target value, with empty target cells.

This module reads those rows, makes the model's inputs with them and says how far a model can
forecast past the end. It imports nothing of :mod:`clearlstm.tasks` at run time, so that
:mod:`clearlstm.tasks.series` can use it. Shapes: ``N`` rows, ``M`` rows after the last target,
``C`` columns (targets, past covariates, future covariates), ``K`` targets, ``F`` future
covariates, ``W`` window, ``H`` horizon, ``S`` origins.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from clearlstm.errors import SeriesError

if TYPE_CHECKING:
    from clearlstm.tasks.series import Series
    from clearlstm.tasks.settings import ForecasterSettings

DEFAULT_STEPS = 12  # forecast --steps for a model without covariates


@dataclass(frozen=True)
class Ahead:
    """A file's rows after its last target value: the future covariates' known values."""

    values: np.ndarray  # (M, F) in the data's units
    time: list[str] | None  # (M,) their time labels, if the file has a time column
    lines: list[int]  # (M,) their line numbers in the file


def split_ahead(
    path: Path,
    values: np.ndarray,
    lines: list[int],
    time: list[str] | None,
    targets: list[str],
    future: list[str],
) -> tuple[np.ndarray, list[int], list[str] | None, Ahead | None]:
    """``values (N + M, C)`` as parsed (NaN where a cell is empty), their lines and time
    labels -> those of the ``N`` rows with targets, and the ``M`` rows after them.

    With future covariates (the last ``len(future)`` columns) the rows at the end whose target
    cells are all empty are the future covariates' rows ahead, and each must hold every future
    covariate. Without, nothing is cut: an empty target cell anywhere is a missing value.
    """
    if not future:
        return values, lines, time, None
    empty = np.isnan(values[:, : len(targets)]).all(axis=1)  # (N + M,)
    if empty.all():
        raise SeriesError(f"{path}: the target column(s) {_names(targets)} hold no values")
    n = len(values) - int(np.argmin(empty[::-1]))  # rows up to the last target value
    later = values[n:, -len(future) :]  # (M, F)
    if np.isnan(later).any():
        i, j = np.argwhere(np.isnan(later))[0]
        raise SeriesError(
            f"{path}, line {lines[n + i]}, column {future[j]!r}: empty on a row after the last "
            f"value of {_names(targets)}; a future covariate needs its value on every row to "
            "forecast: fill it in, or end the file before that row"
        )
    cut = time[:n] if time is not None else None
    ahead = Ahead(later, time[n:] if time is not None else None, lines[n:]) if len(later) else None
    return values[:n], lines[:n], cut, ahead


def model_windows(
    scaled: np.ndarray, starts: np.ndarray, window: int, horizon: int, targets: int, future: int
) -> tuple[np.ndarray, np.ndarray]:
    """The model's inputs and truths ``(S, H, K)`` at the given origins of ``scaled (N, C)``.

    Without future covariates the inputs are the windows ``(S, W, C)``, rows ``[t - W, t)``
    (as :func:`clearlstm.tasks.series.windows`). With ``future`` covariates (the last ``F``
    columns) they are ``(S, W + H, C)``, rows ``[t - W, t + H)``, the targets and past
    covariates of the last ``H`` rows set to zero: a model never reads the targets' future.
    """
    reach = horizon if future else 0
    x = np.stack([scaled[t - window : t + reach] for t in starts])
    x[:, window:, : scaled.shape[1] - future] = 0.0
    y = np.stack([scaled[t : t + horizon, :targets] for t in starts])
    return x, y


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
            f"covariate(s) {_names(data.future_covariates)} on each, so the file needs their "
            f"values on at least {h} row(s) after the last value of {_names(data.targets)}, "
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
            f"{_names(data.covariates)}, known up to the forecast origin only, so past the end "
            f"of the data it forecasts at most its horizon of {h} step(s); a column whose "
            "future values are known belongs in --future-covariates"
        )
    if data.future_covariates and steps > m:
        assert ahead is not None  # m >= h >= 1
        raise SeriesError(
            f"--steps {steps}: this model reads the future covariate(s) "
            f"{_names(data.future_covariates)} on every row it forecasts; {series.source} has "
            f"{m} row(s) after the last target value (lines {ahead.lines[0]} to "
            f"{ahead.lines[-1]}): add {steps - m} more with their values and empty target "
            f"cells, or forecast at most --steps {m}"
        )
    return steps


def _names(names: list[str] | tuple[str, ...]) -> str:
    return ", ".join(map(repr, names))
