"""What a forecaster compares against: naive, seasonal naive, Holt-Winters and statsforecast's
AutoETS, AutoARIMA and AutoTheta, with MAE, RMSE, MASE, sMAPE and MAPE.

Every forecast here is made from each origin ``t`` of the test part for the ``H`` steps
``[t, t + H)``, from the data before ``t`` only. Shapes: ``N`` rows, ``K`` targets, ``S``
origins, ``H`` horizon; values are in the data's own units.
"""

from __future__ import annotations

import math
import operator
import warnings
from dataclasses import dataclass

import numpy as np

from clearlstm.errors import SeriesError


@dataclass(frozen=True)
class Scores:
    """Errors of one method on one target column."""

    mae: float
    rmse: float
    mase: float  # MAE over the training part's in-sample seasonal-naive MAE
    smape: float = math.nan  # percent: mean of 2|error| / (|truth| + |forecast|)
    mape: float = math.nan  # percent; NaN where a truth is 0 (undefined there)


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


def score(
    forecast: np.ndarray, truth: np.ndarray, scale: np.ndarray, axis: tuple[int, ...] = (0, 1)
) -> list[Scores]:
    """One :class:`Scores` per target from ``(S, H, K)`` forecasts and truths, averaged over
    ``axis`` (origins and steps; ``(0,)`` with one step's ``(S, K)`` slice)."""
    error = forecast - truth
    mae = np.abs(error).mean(axis=axis)
    rmse = np.sqrt((error**2).mean(axis=axis))
    size = np.abs(truth) + np.abs(forecast)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(size > 0, 2 * np.abs(error) / size, 0.0)  # both 0: no error
        smape = 100 * ratio.mean(axis=axis)
        defined = (truth != 0).all(axis=axis)
        mape = np.where(
            defined, 100 * np.abs(error / np.where(truth != 0, truth, 1)).mean(axis=axis), math.nan
        )
    return [
        Scores(float(a), float(r), float(a / s), float(sm), float(mp))
        for a, r, s, sm, mp in zip(mae, rmse, scale, smape, mape, strict=True)
    ]


CLASSICAL = ("AutoETS", "AutoARIMA", "AutoTheta")


def classical(
    y: np.ndarray, fit_rows: int, starts: np.ndarray, horizon: int, season: int | None
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """``{name: (S, H, K)}`` from statsforecast's AutoETS, AutoARIMA and AutoTheta: each
    chosen and fitted once on rows ``[0, fit_rows)``, then run with those parameters on the
    data up to each origin (``forward``), as :func:`holt_winters` does. A constant fitting
    part has nothing to fit: those methods then forecast its value (the naive forecast).
    The second dict names the methods left out and why (statsforecast refused the data, or
    forecast a non-finite number)."""
    from statsforecast.models import AutoARIMA, AutoETS, AutoTheta

    m = season or 1
    makers = {"AutoETS": AutoETS, "AutoARIMA": AutoARIMA, "AutoTheta": AutoTheta}
    out = {name: np.empty((len(starts), horizon, y.shape[1])) for name in makers}
    skipped: dict[str, str] = {}
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        for name, make in makers.items():
            for k in range(y.shape[1]):
                part = y[:fit_rows, k]
                if np.ptp(part) == 0:
                    out[name][:, :, k] = y[starts - 1, k][:, None]
                    continue
                try:
                    fitted = make(season_length=m).fit(part)
                    for s, t in enumerate(starts):
                        out[name][s, :, k] = fitted.forward(y=y[:t, k], h=horizon)["mean"]
                except Exception as error:  # statsforecast's own checks, e.g. "tiny datasets"
                    skipped[name] = f"statsforecast: {error}".strip()
                    break
                if not np.isfinite(out[name][:, :, k]).all():
                    skipped[name] = "statsforecast forecast a non-finite number"
                    break
    return {n: f for n, f in out.items() if n not in skipped}, skipped


def check_season(season: int, train_rows: int) -> None:
    """A clear error for a ``--season`` the training part cannot hold: the seasonal-naive
    forecast and MASE's scale look one season back from inside it."""
    if not 1 <= season < train_rows:
        raise SeriesError(
            f"--season must be from 1 to {train_rows - 1} (shorter than the training part's "
            f"{train_rows} rows); got {season}"
        )


TIE_BAND = 0.02  # scores within 2% of each other (relative) are a tie


def compare(lstm: float, other: float, band: float = TIE_BAND) -> int:
    """-1 when ``lstm`` is lower (better) than ``other`` beyond ``band``, 1 when higher, 0 a
    tie."""
    if abs(lstm - other) <= band * max(abs(lstm), abs(other)):
        return 0
    return -1 if lstm < other else 1


def verdict(target: str, scores: dict[str, Scores]) -> str:
    """One plain sentence: does the LSTM (``scores["LSTM"]``) win, lose or tie, and against
    what. Judged on MASE and RMSE both (MAE and RMSE where MASE has no scale): it wins against
    a baseline only when better on both beyond :data:`TIE_BAND`, loses when worse on both."""
    lstm = scores["LSTM"]
    others = {m: s for m, s in scores.items() if m != "LSTM"}
    first = "MASE"
    note = ""
    if not math.isfinite(lstm.mase):
        first = "MAE"
        note = (
            f" MASE is undefined: the training part of {target} is constant, so the naive "
            "forecast's in-sample error (MASE's scale) is 0."
        )
    pick = operator.attrgetter(first.lower())
    best = min(others, key=lambda m: pick(others[m]))
    shown = f"{first} {pick(lstm):.3f}; the best baseline, {best}, {pick(others[best]):.3f}"
    outcome = {
        m: (compare(pick(lstm), pick(s)), compare(lstm.rmse, s.rmse)) for m, s in others.items()
    }
    won = [m for m, o in outcome.items() if o == (-1, -1)]
    lost = [m for m, o in outcome.items() if o == (1, 1)]
    if len(won) == len(others):
        return f"{target}: the LSTM beats every baseline on {first} and RMSE ({shown}).{note}"
    if lost:
        return (
            f"{target}: the LSTM LOSES to {', '.join(lost)} on {first} and RMSE ({shown}; "
            f"lower is better).{note}"
        )
    words = {-1: "better", 0: "a tie", 1: "worse"}
    mixed = [
        f"against {m} {first} {words[o[0]]} ({pick(lstm):.3f} vs {pick(others[m]):.3f}) and "
        f"RMSE {words[o[1]]} ({lstm.rmse:.4g} vs {others[m].rmse:.4g})"
        for m, o in outcome.items()
        if m not in won
    ]
    beaten = f"; it beats {', '.join(won)} on both" if won else ""
    return (
        f"{target}: the LSTM ties / is mixed: {'; '.join(mixed)}{beaten} (within "
        f"{TIE_BAND:.0%} counts as a tie; lower is better).{note}"
    )
