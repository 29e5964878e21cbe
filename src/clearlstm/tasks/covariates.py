"""Past-only and future-known covariates, as Darts distinguishes them.

A *past* covariate (``--covariates``) is known up to the forecast origin only: the model reads
it in the window, and past the end of the data it forecasts at most its horizon (its values
after the origin are unknown). A *future* covariate (``--future-covariates``: a calendar, a
planned price, holidays) is known for the forecast rows too: the model reads its values on
the ``H`` rows it forecasts (:class:`~clearlstm.tasks.models.Forecaster`), so a CSV file to
forecast from holds them on rows after the last target value, with empty target cells.

This module reads those rows and makes the model's inputs with them
(:func:`clearlstm.tasks.forecast.steps_past_end` says how far a model can forecast past the
end). It imports nothing of :mod:`clearlstm.tasks`, so that :mod:`clearlstm.tasks.series` can
use it. Shapes: ``N`` rows, ``M`` rows after the last target,
``C`` columns (targets, past covariates, future covariates), ``K`` targets, ``F`` future
covariates, ``W`` window, ``H`` horizon, ``S`` origins.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clearlstm.errors import SeriesError


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
        raise SeriesError(f"{path}: the target column(s) {names(targets)} hold no values")
    n = len(values) - int(np.argmin(empty[::-1]))  # rows up to the last target value
    later = values[n:, -len(future) :]  # (M, F)
    if np.isnan(later).any():
        i, j = np.argwhere(np.isnan(later))[0]
        raise SeriesError(
            f"{path}, line {lines[n + i]}, column {future[j]!r}: empty on a row after the last "
            f"value of {names(targets)}; a future covariate needs its value on every row to "
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


def names(columns: list[str] | tuple[str, ...]) -> str:
    """``'a', 'b'``: column names for a message."""
    return ", ".join(map(repr, columns))
