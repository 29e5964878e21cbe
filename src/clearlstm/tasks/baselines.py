"""What a forecaster compares against: naive, seasonal naive and Holt-Winters, with MAE,
RMSE and MASE.

Every forecast here is made from each origin ``t`` of the test part for the ``H`` steps
``[t, t + H)``, from the data before ``t`` only. Shapes: ``N`` rows, ``K`` targets, ``S``
origins, ``H`` horizon; values are in the data's own units.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Scores:
    """Errors of one method on one target column."""

    mae: float
    rmse: float
    mase: float  # MAE over the training part's in-sample seasonal-naive MAE


def detect_season(y: np.ndarray, max_lag: int | None = None) -> int | None:
    """The season length of ``y (N,)``, or None.

    Looks for peaks of the autocorrelation of the differenced series (differencing removes a
    trend) and takes the shortest lag whose peak is at least 0.9 times the highest and above
    0.3: 12 for monthly CO2, 11 for yearly sunspots, None for the Nile.
    """
    d = np.diff(np.asarray(y, dtype=float))
    d = d - d.mean()
    denom = float(d @ d)
    max_lag = min(max_lag or len(d) // 3, len(d) // 3)
    if denom == 0 or max_lag < 3:
        return None
    acf = np.array([float(d[: len(d) - k] @ d[k:]) / denom for k in range(max_lag + 1)])
    peaks = [k for k in range(2, max_lag) if acf[k] > acf[k - 1] and acf[k] >= acf[k + 1]]
    if not peaks:
        return None
    best = max(acf[k] for k in peaks)
    if best < 0.3:
        return None
    return min(k for k in peaks if acf[k] >= 0.9 * best)


def naive(y: np.ndarray, starts: np.ndarray, horizon: int) -> np.ndarray:
    """``(S, H, K)``: the last value before each origin, repeated."""
    return np.repeat(y[starts - 1][:, None, :], horizon, axis=1)


def seasonal_naive(y: np.ndarray, starts: np.ndarray, horizon: int, season: int) -> np.ndarray:
    """``(S, H, K)``: the value one season before each forecast step (from before the origin)."""
    h = np.arange(horizon)
    back = season * (h // season + 1)  # (H,) steps back, always reaching before the origin
    return y[starts[:, None] + h[None, :] - back[None, :]]


def holt_winters(
    y: np.ndarray, fit_rows: int, starts: np.ndarray, horizon: int, season: int | None
) -> np.ndarray:
    """``(S, H, K)``: additive Holt-Winters (damped trend, seasonal when ``season`` is given
    and the fitting part holds two seasons), fitted once on rows ``[0, fit_rows)`` and then run
    with those parameters up to each origin."""
    from statsmodels.tsa.holtwinters import ExponentialSmoothing

    seasonal = "add" if season and fit_rows >= 2 * season + 2 else None
    options = {
        "trend": "add",
        "damped_trend": True,
        "seasonal": seasonal,
        "seasonal_periods": season if seasonal else None,
    }
    out = np.empty((len(starts), horizon, y.shape[1]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # statsmodels' convergence and frequency warnings
        for k in range(y.shape[1]):
            fitted = ExponentialSmoothing(
                y[:fit_rows, k], initialization_method="estimated", **options
            ).fit()
            p = fitted.params
            known = {
                "initial_level": p["initial_level"],
                "initial_trend": p["initial_trend"],
                **({"initial_seasonal": p["initial_seasons"]} if seasonal else {}),
            }
            smoothing = {
                "smoothing_level": p["smoothing_level"],
                "smoothing_trend": p["smoothing_trend"],
                "damping_trend": p["damping_trend"],
                **({"smoothing_seasonal": p["smoothing_seasonal"]} if seasonal else {}),
            }
            for s, t in enumerate(starts):
                model = ExponentialSmoothing(
                    y[:t, k], initialization_method="known", **known, **options
                )
                out[s, :, k] = model.fit(optimized=False, **smoothing).forecast(horizon)
    return out


def mase_scale(y_train: np.ndarray, season: int | None) -> np.ndarray:
    """``(K,)``: in-sample MAE of the seasonal-naive (or naive) one-step forecast on the
    training part, the denominator of MASE."""
    m = season or 1
    scale = np.abs(y_train[m:] - y_train[:-m]).mean(axis=0)
    return np.where(scale > 0, scale, math.nan)


def score(forecast: np.ndarray, truth: np.ndarray, scale: np.ndarray) -> list[Scores]:
    """One :class:`Scores` per target from ``(S, H, K)`` forecasts and truths."""
    error = forecast - truth
    mae = np.abs(error).mean(axis=(0, 1))
    rmse = np.sqrt((error**2).mean(axis=(0, 1)))
    return [
        Scores(float(a), float(r), float(a / s)) for a, r, s in zip(mae, rmse, scale, strict=True)
    ]
