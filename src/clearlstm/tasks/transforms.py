"""Variance-stabilising transforms of a series' targets (none, log, Box-Cox), chosen on the
validation part.

A series whose swings grow with its level (multiplicative seasonality, counts) is easier to
model after a log or Box-Cox transform; one whose swings do not is better left alone. With
``"auto"``, :func:`choose` fits a cheap linear autoregression in each candidate's units on
the training part and keeps the candidate whose one-step forecasts, back in the data's
units, err least on the validation part. Box-Cox's ``lambda`` is the training part's
maximum-likelihood value (Box & Cox, 1964). Shapes: ``N`` rows, ``K`` targets.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np

from clearlstm.errors import SeriesError

TransformName = Literal["none", "log", "boxcox"]
TRANSFORMS: tuple[str, ...] = ("auto", "none", "log", "boxcox")
LAMBDA_RANGE = (-1.0, 2.0)  # Box-Cox lambdas outside this are rarely meant and often unstable
BETTER_BY = 0.01  # a transform must beat "none" on validation by 1% to be chosen


def check_positive(y: np.ndarray, name: str, what: str = "the series") -> None:
    """A clear error when ``y`` holds values at or below 0, where log and Box-Cox are
    undefined."""
    flat = np.asarray(y, dtype=float).reshape(-1)
    bad = np.flatnonzero(~(flat > 0))
    if bad.size:
        raise SeriesError(
            f"--transform {name} needs values above 0, but {what} holds {bad.size} value(s) at "
            f"or below 0 (the smallest: {flat[bad].min():g}); use --transform none, or shift "
            "the column to positive values"
        )


def boxcox(y: np.ndarray, lam: float) -> np.ndarray:
    """Box-Cox of positive ``y`` (any shape): ``log y`` at ``lam = 0``, else
    ``(y**lam - 1) / lam``."""
    if lam == 0:
        return np.log(y)
    return (np.power(y, lam) - 1) / lam


def inverse_boxcox(z: np.ndarray, lam: float) -> np.ndarray:
    """The inverse of :func:`boxcox`. A forecast beyond the transform's range (``lam * z <=
    -1``, where no positive value maps) becomes the smallest positive value."""
    if lam == 0:
        return np.exp(np.minimum(z, 700.0))  # exp(700) is still finite in float64
    inside = np.maximum(lam * z + 1, np.finfo(float).tiny)
    return np.power(inside, 1 / lam)


def mle_lambda(y: np.ndarray) -> float:
    """The maximum-likelihood Box-Cox lambda of positive ``y (N,)`` within
    :data:`LAMBDA_RANGE` (a bounded search, so short or flat series get an answer too)."""
    from scipy import optimize, stats

    y = np.asarray(y, dtype=float)
    if np.ptp(y) == 0:
        return 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # overflow warnings at extreme lambdas
        found = optimize.minimize_scalar(
            lambda lam: -stats.boxcox_llf(lam, y), bounds=LAMBDA_RANGE, method="bounded",
            options={"xatol": 1e-4},
        )  # fmt: skip
    return float(found.x) if math.isfinite(found.x) else 1.0


@dataclass(frozen=True)
class Transform:
    """One transform of ``K`` target columns: ``lambdas`` is ``None`` for none, else one
    Box-Cox lambda per target (0 for log)."""

    name: TransformName
    lambdas: tuple[float, ...] | None = None

    def forward(self, y: np.ndarray) -> np.ndarray:
        """``(..., K') -> (..., K')`` for the first ``K'`` targets; values at or below 0
        are an error naming the transform."""
        if self.lambdas is None:
            return y
        check_positive(y, self.name)
        out = np.array(y, dtype=float, copy=True)
        for j in range(out.shape[-1]):
            out[..., j] = boxcox(out[..., j], self.lambdas[j])
        return out

    def inverse(self, z: np.ndarray) -> np.ndarray:
        """``(..., K') -> (..., K')``: back in the data's units."""
        if self.lambdas is None:
            return z
        out = np.array(z, dtype=float, copy=True)
        for j in range(out.shape[-1]):
            out[..., j] = inverse_boxcox(out[..., j], self.lambdas[j])
        return out

    def describe(self) -> str:
        if self.name == "boxcox" and self.lambdas:
            return "Box-Cox (lambda " + ", ".join(f"{v:.2f}" for v in self.lambdas) + ")"
        return self.name


def make(name: TransformName, y_train: np.ndarray) -> Transform:
    """The transform ``name`` fitted on the training part's targets ``(N, K)``."""
    if name == "none":
        return Transform("none")
    check_positive(y_train, name, "the training part")
    if name == "log":
        return Transform("log", (0.0,) * y_train.shape[1])
    if name == "boxcox":
        return Transform(
            "boxcox", tuple(mle_lambda(y_train[:, j]) for j in range(y_train.shape[1]))
        )
    raise ValueError(f"--transform must be one of {', '.join(TRANSFORMS)}; got {name!r}")


def _ar_error(z: np.ndarray, transform: Transform, train: int, stop: int, lags: int) -> float:
    """Validation MAE (data units, summed over targets) of one-step forecasts of a least-
    squares AR(``lags``) with intercept, fitted on rows ``[0, train)`` of ``z (N, K)``."""
    total = 0.0
    for j in range(z.shape[1]):
        col = z[:, j]
        rows = np.arange(lags, stop)
        design = np.stack([col[t - lags : t] for t in rows])  # (R, lags)
        design = np.hstack([design, np.ones((len(rows), 1))])
        fit = rows < train
        coef, *_ = np.linalg.lstsq(design[fit], col[rows[fit]], rcond=None)
        guess = design[~fit] @ coef
        lam = transform.lambdas[j] if transform.lambdas else None
        back = guess if lam is None else inverse_boxcox(guess, lam)
        truth = col[rows[~fit]] if lam is None else inverse_boxcox(col[rows[~fit]], lam)
        scale = np.abs(truth).mean() or 1.0
        total += float(np.abs(back - truth).mean() / scale)
    return total


def choose(
    y: np.ndarray, train: int, val: int, season: int | None
) -> tuple[Transform, dict[str, float]]:
    """The transform for ``--transform auto``: targets ``y (N, K)``, rows ``[0, train)``
    train and ``[train, train + val)`` validate. Log and Box-Cox are candidates only when the
    training and validation parts are positive; one replaces none only when it is at least
    :data:`BETTER_BY` better. Returns the transform and each candidate's validation error."""
    stop = train + val
    lags = max(2, min((season or 0) + 1, train // 4, 25))
    candidates = [Transform("none")]
    if np.all(y[:stop] > 0):
        candidates += [make("log", y[:train]), make("boxcox", y[:train])]
    errors = {}
    for t in candidates:
        errors[t.name] = _ar_error(t.forward(y[:stop]), t, train, stop, lags)
    best = min(candidates, key=lambda t: errors[t.name])
    if errors[best.name] > (1 - BETTER_BY) * errors["none"]:
        best = candidates[0]
    return best, errors
