"""Rolling-origin backtests: forecasts from every origin of a part, scored per horizon step
against the baselines on the same origins, with split-conformal prediction intervals.

From each origin ``t`` of the test part every method forecasts rows ``[t, t + H)`` from the
rows before ``t`` only. The LSTM's intervals are the forecast plus or minus a per-step
quantile of its absolute errors on the validation part (split conformal), so their coverage
on the test part is an honest check. Shapes: ``N`` rows, ``C`` columns, ``K`` targets, ``S``
origins, ``W`` window, ``H`` horizon; values in the data's units unless said otherwise.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from clearlstm.files import write_atomically
from clearlstm.tasks import baselines
from clearlstm.tasks.baselines import Scores
from clearlstm.tasks.models import Forecaster
from clearlstm.tasks.series import Scaler, Series, Split, origins

if TYPE_CHECKING:
    from clearlstm.tasks.settings import ForecasterSettings

LEVELS = (0.8, 0.95)  # nominal coverage of the intervals
BASELINES = ("naive", "seasonal naive", *baselines.CLASSICAL)
METHODS = ("LSTM", *BASELINES)
# (S, H) origins and horizon -> (S, H, K) forecasts
Forecaster_ = Callable[[np.ndarray, int], np.ndarray]


def forecast_origins(
    model: Forecaster,
    settings: ForecasterSettings,
    values: np.ndarray,
    starts: np.ndarray,
    horizon: int,
    ahead: np.ndarray | None = None,
) -> np.ndarray:
    """``(S, H, K)`` forecasts of rows ``[t, t + H)`` from each origin ``t`` in ``starts``.

    ``values (N, C)`` are rows in the data's units; only rows before each origin are read,
    except covariates: past ones on the forecast rows a recursive forecast reads back, future
    ones on every row a model call forecasts, from ``values`` and then from ``ahead (M, F)``,
    the future covariates' values on the rows after ``values``. A model forecasting fewer than
    ``H`` steps at once is run recursively: its forecasts are appended to the window and read
    again; with future covariates the last call starts early enough to end on row ``t + H``
    (it reads forecasts it made before), so no covariate row past the forecast is needed. This
    is the one place where a model's forecasts are made from data rows; transforms and direct
    outputs belong here.
    """
    scaler, window = settings.data.scaler.to_scaler(), settings.data.window
    k, c, f, h = model.targets, model.columns, model.future, model.horizon
    starts = np.asarray(starts, dtype=int)
    if starts.min() < window:
        raise ValueError(
            f"forecast: needs {window} rows before the first origin; got {starts.min()}"
        )
    calls = call_offsets(horizon, h, f > 0)
    known = len(values) + (len(ahead) if ahead is not None and f else 0)
    _check_reach(int(starts.max()), horizon, calls, len(values), known, c - k - f, f, h)
    scaled = scaler.transform(values[: starts.max()])  # (N', C): rows any window reads
    rows = np.stack([scaled[t - window : t] for t in starts])  # (S, W, C)
    if c > k:
        covariates = scaler.transform(values[:, :c])[:, k:]  # (N, C - K)
        if known > len(values):
            assert ahead is not None
            covariates = np.concatenate([covariates, _later(scaler, ahead, c - k)])
    out: list[np.ndarray] = []  # each (S, K)
    with torch.no_grad():
        for offset in calls:
            x = torch.as_tensor(rows[:, offset : offset + window], dtype=torch.float32)
            if f:  # the future covariates on the H rows this call forecasts
                later = covariates[starts[:, None] + offset + np.arange(h)]  # (S, H, C - K)
                later = np.concatenate([np.zeros((*later.shape[:2], k)), later], axis=2)
                x = model.join(x, torch.as_tensor(later, dtype=torch.float32))  # (S, W + H, C)
            prediction = model(x).double().numpy()  # (S, H_model, K)
            done = len(out)
            new = prediction[:, done - offset : horizon - offset]  # (S, J, K): not made yet
            out += list(new.transpose(1, 0, 2))
            if offset != calls[-1]:  # the next calls read them back
                if c > k:
                    read = covariates[starts[:, None] + np.arange(done, len(out))]
                    new = np.concatenate([new, read], axis=2)  # (S, J, C)
                rows = np.concatenate([rows, new], axis=1)
    return scaler.inverse(np.stack(out, axis=1))


def call_offsets(horizon: int, model_horizon: int, end_on_last: bool) -> list[int]:
    """Where a forecast of ``horizon`` steps calls a model of ``model_horizon``: steps after
    the origin, a model horizon apart; with ``end_on_last`` the last call moves back to end
    on the last step (a model with future covariates reads them on all its steps)."""
    calls = list(range(0, horizon, model_horizon))
    if end_on_last:
        calls = sorted({max(0, min(o, horizon - model_horizon)) for o in calls})
    return calls


def _check_reach(
    t: int, horizon: int, calls: list[int], n: int, known: int, past: int, future: int, h: int
) -> None:
    """A ``ValueError`` when a forecast of ``horizon`` steps from origin ``t`` would read past
    covariates beyond the ``n`` data rows or future covariates beyond the ``known`` rows."""
    if past and t + calls[-1] > n:
        most = n - t + h if future else h * ((n - t) // h + 1)
        raise ValueError(
            f"forecast: this model reads {past} past covariate column(s), known up to the "
            f"forecast origin only; beyond its horizon of {h} step(s) a forecast reads them on "
            f"the rows it forecasts, so from origin {t} of {n} rows it can forecast at most "
            f"{most} step(s); got {horizon}"
        )
    if future and t + calls[-1] + h > known:
        raise ValueError(
            f"forecast: this model reads {future} future covariate column(s) on each of the {h} "
            f"row(s) it forecasts at once, so {horizon} step(s) from origin {t} need their "
            f"values on {t + max(horizon, h)} rows; they are known on {known}: add rows with "
            "their values"
        )


def _later(scaler: Scaler, ahead: np.ndarray, covariates: int) -> np.ndarray:
    """``(M, F)`` future covariates after the data -> ``(M, C - K)`` scaled covariate rows,
    the past covariates' cells NaN (unknown there: never read)."""
    f = ahead.shape[1]
    own = Scaler(scaler.mean[-f:], scaler.std[-f:])  # the future covariates' own columns
    out = np.full((len(ahead), covariates), np.nan)
    out[:, covariates - f :] = own.transform(ahead)
    return out


def forecast_from(
    model: Forecaster,
    settings: ForecasterSettings,
    history: np.ndarray,
    horizon: int,
    future: np.ndarray | None = None,
) -> np.ndarray:
    """``(H, K)``: the forecast of the ``horizon`` rows after ``history (T, C)``; a model with
    covariates needs their values on those rows, ``future (H, C - K)``."""
    k = model.targets
    if future is not None:
        filler = np.repeat(history[-1:, :k], len(future), axis=0)  # targets never read
        history = np.concatenate([history, np.concatenate([filler, future], axis=1)])
        return forecast_origins(
            model, settings, history, np.array([len(history) - len(future)]), horizon
        )[0]
    return forecast_origins(model, settings, history, np.array([len(history)]), horizon)[0]


def conformal_widths(residuals: np.ndarray, level: float) -> tuple[np.ndarray, bool]:
    """``(H, K)`` half-widths from ``residuals (S, H, K)`` (forecast minus truth): the
    ``ceil((S + 1) level)``-th smallest absolute residual per step and target, which
    covers a new error with probability at least ``level`` when errors are exchangeable. The
    flag is False when ``S`` is too small for that (the largest residual is used then)."""
    n = residuals.shape[0]
    k = math.ceil((n + 1) * level)  # the k-th smallest absolute residual
    ordered = np.sort(np.abs(residuals), axis=0)
    return ordered[min(k, n) - 1], k <= n


@dataclass
class Backtest:
    """Every method's forecasts from the origins of the test part, and the LSTM's intervals."""

    targets: list[str]
    labels: list[str]  # (N,) time labels of all rows
    starts: np.ndarray  # (S,) origins
    horizon: int
    truth: np.ndarray  # (S, H, K)
    forecasts: dict[str, np.ndarray]  # method -> (S, H, K)
    scale: np.ndarray  # (K,) MASE's denominator
    season: int | None
    widths: dict[float, np.ndarray] = field(default_factory=dict)  # level -> (H, K)
    calibration: int = 0  # validation origins the widths come from
    guaranteed: dict[float, bool] = field(default_factory=dict)
    val_residuals: np.ndarray | None = None  # (S_val, H, K) the calibration errors
    skipped: dict[str, str] = field(default_factory=dict)  # baselines left out, and why

    def scores(self, method: str) -> list[Scores]:
        """Per target, over all origins and steps."""
        return baselines.score(self.forecasts[method], self.truth, self.scale)

    def step_scores(self, method: str) -> list[list[Scores]]:
        """``[step][target]``: each horizon step scored on its own."""
        f, y = self.forecasts[method], self.truth
        return [
            baselines.score(f[:, h], y[:, h], self.scale, axis=(0,)) for h in range(self.horizon)
        ]

    def bounds(self, level: float) -> tuple[np.ndarray, np.ndarray]:
        """``(S, H, K)`` lower and upper ends of the LSTM's interval at ``level``."""
        centre, width = self.forecasts["LSTM"], self.widths[level][None]
        return centre - width, centre + width

    def coverage(self, level: float) -> np.ndarray:
        """``(K,)``: the fraction of test truths inside the interval at ``level``."""
        low, high = self.bounds(level)
        return ((self.truth >= low) & (self.truth <= high)).mean(axis=(0, 1))


def run_backtest(
    lstm: Forecaster_,
    series: Series,
    split: Split,
    window: int,
    horizon: int,
    season: int | None,
    starts: np.ndarray | None = None,
) -> Backtest:
    """The LSTM (``lstm(starts, horizon) -> (S, H, K)``) and every baseline from each origin of
    the test part (or ``starts``), with intervals calibrated on the validation part's
    origins (when the validation part holds one)."""
    y = series.values[:, : len(series.targets)]  # (N, K)
    n = len(series)
    if starts is None:
        starts = origins(split, "test", n, window, horizon)
    truth = np.stack([y[t : t + horizon] for t in starts])
    classical, skipped = baselines.classical(y, split.test_start, starts, horizon, season)
    forecasts = {
        "LSTM": lstm(starts, horizon),
        "naive": baselines.naive(y, starts, horizon),
        "seasonal naive": baselines.seasonal_naive(y, starts, horizon, season or 1),
        **classical,
    }
    labels = series.time or [str(i) for i in range(n)]
    scale = baselines.mase_scale(y[: split.train], season)
    result = Backtest(
        list(series.targets), labels, starts, horizon, truth, forecasts, scale, season
    )
    result.skipped = skipped
    val = origins(split, "val", n, window, horizon)
    if len(val):
        val_truth = np.stack([y[t : t + horizon] for t in val])
        residuals = lstm(val, horizon) - val_truth
        for level in LEVELS:
            result.widths[level], result.guaranteed[level] = conformal_widths(residuals, level)
        result.calibration = len(val)
        result.val_residuals = residuals
    return result


FUTURE_STEPS = 24  # forecasts past the end get intervals for this many steps (or the horizon)


def future_intervals(
    model: Forecaster, settings: ForecasterSettings, series: Series, split: Split, steps: int
) -> dict[str, tuple[tuple[float, ...], ...]] | None:
    """``{"80": ((w_1k, ...), ...), "95": ...}``: conformal half-widths for each of the first
    ``steps`` steps past the end, as settings record them, from the errors of the
    validation-chosen ``model`` at every origin of the validation and test parts (step ``h``
    from the origins whose step ``h`` lies in the data). Steps no origin reaches are left out;
    a step with too few origins for the level gets its largest error."""
    y = series.values[:, : len(series.targets)]
    n, window = len(series), settings.data.window
    starts = np.arange(max(split.train, window), n)
    steps = min(steps, n - starts[0])  # the last step some origin reaches
    whole = model.horizon if model.future else 0  # future covariates: a model horizon read
    out: dict[str, list[tuple[float, ...]]] = {f"{lv:.0%}"[:-1]: [] for lv in LEVELS}
    for h in range(steps):
        reach = starts[starts + max(h + 1, whole) <= n]  # origins whose step h + 1 is known
        # (per step: a covariate model reads covariates up to that step only)
        if not len(reach):
            break
        errors = forecast_origins(model, settings, series.values, reach, h + 1)[:, h] - y[reach + h]
        for level in LEVELS:
            widths, _ = conformal_widths(errors[:, None], level)  # errors (S_h, K)
            out[f"{level:.0%}"[:-1]].append(tuple(widths[0].tolist()))
    if not all(np.isfinite(rows).all() for rows in out.values()):
        return None  # errors beyond float64 (values near 1e150): no intervals to record
    return {level: tuple(rows) for level, rows in out.items()}


@dataclass(frozen=True)
class Evaluation:
    """Test-part scores of every method on one target column."""

    target: str
    season: int | None
    origins: int
    scores: dict[str, Scores]  # method -> scores

    def verdict(self) -> str:
        """One plain sentence: does the LSTM win, lose or tie on MASE and RMSE, against what."""
        return baselines.verdict(self.target, self.scores)


def tested_evaluations(backtest: Backtest) -> list[Evaluation]:
    """One :class:`Evaluation` per target from a backtest's scores over all steps."""
    scores = {m: backtest.scores(m) for m in backtest.forecasts}
    return [
        Evaluation(
            name, backtest.season, len(backtest.starts), {m: s[j] for m, s in scores.items()}
        )
        for j, name in enumerate(backtest.targets)
    ]


def backtest_model(
    model: Forecaster,
    settings: ForecasterSettings,
    series: Series,
    split: Split,
    horizon: int,
    refit_every: int | None = None,
) -> Backtest:
    """:func:`run_backtest` of ``model`` on ``series``. With ``refit_every`` K, a fresh model
    is trained on all rows before every K-th origin (the validation-chosen number of epochs,
    :func:`clearlstm.tasks.refit.refit`) and forecasts from the next K origins."""
    window, n = settings.data.window, len(series)
    # A model with future covariates reads them on a whole model horizon from each origin.
    reach = max(horizon, model.horizon) if model.future else horizon
    test = origins(split, "test", n, window, reach) if horizon >= 1 else np.array([], int)
    if not len(test):
        raise ValueError(
            f"--backtest-horizon must be from 1 to the test part's {split.test} rows; got {horizon}"
        )

    def lstm(starts: np.ndarray, h: int) -> np.ndarray:
        return forecast_origins(model, settings, series.values, starts, h)

    def refitted(starts: np.ndarray, h: int) -> np.ndarray:
        from clearlstm.tasks import refit

        epochs = max(1, settings.result.best_epoch)
        out = []
        for first in range(0, len(starts), refit_every or 1):
            group = starts[first : first + (refit_every or 1)]
            again, again_settings = refit.refit(settings, series.values, int(group[0]), epochs)
            out.append(forecast_origins(again, again_settings, series.values, group, h))
        return np.concatenate(out)

    result = run_backtest(lstm, series, split, window, horizon, settings.data.season, test)
    if refit_every:
        result.forecasts["LSTM"] = refitted(test, horizon)
    return result


def write_csv(path: Path, backtest: Backtest) -> int:
    """One row per origin, step and target: ``origin`` (the last row read), ``time`` (the row
    forecast), the truth, the LSTM's forecast and intervals, and every baseline's forecast.
    Returns the number of data rows."""
    rows = csv_rows(backtest)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, csv_text(rows).encode())
    return len(rows) - 1


def csv_rows(backtest: Backtest) -> list[list[str]]:
    """The header and rows :func:`write_csv` writes."""
    levels = [level for level in LEVELS if level in backtest.widths]
    header = ["origin", "time", "step", "target", "truth", "LSTM"]
    for level in levels:
        header += [f"lower_{level:.0%}"[:-1], f"upper_{level:.0%}"[:-1]]
    methods = [m for m in BASELINES if m in backtest.forecasts]
    header += methods
    bounds = {level: backtest.bounds(level) for level in levels}
    rows = [header]
    for s, t in enumerate(backtest.starts):
        for h in range(backtest.horizon):
            for j, name in enumerate(backtest.targets):
                row = [backtest.labels[t - 1], backtest.labels[t + h], str(h + 1), name]
                row += [
                    _number(backtest.truth[s, h, j]),
                    _number(backtest.forecasts["LSTM"][s, h, j]),
                ]
                for level in levels:
                    row += [_number(b[s, h, j]) for b in bounds[level]]
                row += [_number(backtest.forecasts[m][s, h, j]) for m in methods]
                rows.append(row)
    return rows


def _number(x: float) -> str:
    return repr(float(x))  # round-trips: scores recomputed from the file are the same


def csv_text(rows: list[list[str]]) -> str:
    import io

    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()
