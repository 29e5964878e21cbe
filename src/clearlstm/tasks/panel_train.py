"""One global forecaster trained on many series (a long-format CSV file with an id column),
scored per series and over all of them.

:func:`train_panel` reads the series (:func:`~clearlstm.tasks.panel.read_panel`), splits
each in time by the same rules as one series (:func:`~clearlstm.tasks.series.choose_split`),
chooses each one's transform and season on its own training and validation parts and scales
it by its own training part (a global model needs each series on one scale), then trains one
:class:`~clearlstm.tasks.models.Forecaster` on the training windows of all series pooled,
with early stopping on their pooled validation windows. Every window holds rows of one
series only (:func:`pooled_windows`). Each series is then backtested on its test part beside
its own baselines (:func:`~clearlstm.tasks.backtest.backtest_model` on its view of the
settings), the scores are aggregated (:func:`aggregate`: mean MASE over the series, MAE and
RMSE pooled over every test forecast), the model is refitted on all rows of all series (by
default) and saved. Shapes: ``S`` windows, ``W`` window, ``H`` horizon, ``C`` columns, ``K``
targets.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from clearlstm.core.trace import UnitMemory
from clearlstm.tasks import baselines, recipe, refit
from clearlstm.tasks.backtest import (
    Backtest,
    Evaluation,
    tested_evaluations,
)
from clearlstm.tasks.baselines import Scores
from clearlstm.tasks.fitting import evaluate, fit_forecaster, scores_of
from clearlstm.tasks.forecasting import SeriesOptions, check_shape, model_settings, new_model
from clearlstm.tasks.models import Forecaster
from clearlstm.tasks.panel import Panel, read_panel
from clearlstm.tasks.panel_settings import (
    PanelForecasterSettings,
    PanelSettings,
    SeriesSettings,
    series_view,
)
from clearlstm.tasks.series import Scaler, Series, Split, choose_split, origins, windows
from clearlstm.tasks.settings import (
    ForecasterSettings,
    ScalerSettings,
    SplitSettings,
)
from clearlstm.tasks.transforms import Transform
from clearlstm.train import checkpoint
from clearlstm.train.distributed import Distributed
from clearlstm.train.lock import training_lock
from clearlstm.train.loop import FitResult, Reporter, TrainConfig

ALL_SERIES = "all series"
TRACED_WINDOWS = 2048  # test windows the memory summary reads at most


@dataclass
class PanelRun:
    """What :func:`train_panel` did."""

    settings: PanelForecasterSettings
    backtests: list[Backtest]  # per series, in the order of settings.ids
    evaluations: list[list[Evaluation]]  # per series, per target
    overall: list[Evaluation]  # per target, over all series (target named "... (all series)")
    memory: list[UnitMemory]  # the last layer's units on the test windows, longest memory first
    fit: FitResult
    seconds: float
    refit_seconds: float = 0.0  # 0: the saved model is the validation-chosen one
    choices: str = ""


def _tensor(a: np.ndarray) -> Tensor:
    return torch.as_tensor(a, dtype=torch.float32)


def pooled_windows(
    scaled: list[np.ndarray], splits: list[Split], part: str, window: int, horizon: int, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inputs ``(S, W, C)``, truths ``(S, H, K)`` and each window's series ``(S,)`` from the
    origins of ``part`` (``train``, ``val``, ``test``) of every series: ``scaled[i] (N_i, C)``
    split by ``splits[i]``. A window and its truth lie within one series."""
    xs, ys, owner = [], [], []
    for i, (values, split) in enumerate(zip(scaled, splits, strict=True)):
        starts = origins(split, part, len(values), window, horizon)
        if len(starts):
            x, y = windows(values, starts, window, horizon, k)
            xs.append(x)
            ys.append(y)
            owner.append(np.full(len(starts), i))
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(owner)


def pooled_samples(
    scaled: list[np.ndarray], splits: list[Split], part: str, window: int, horizon: int, k: int
) -> tuple[Tensor, Tensor]:
    """:func:`pooled_windows`' inputs and truths as float32 tensors, for training."""
    x, y, _ = pooled_windows(scaled, splits, part, window, horizon, k)
    return _tensor(x), _tensor(y)


def _splits(panel: Panel, options: SeriesOptions, window: int) -> list[Split]:
    o = options
    sizes = (o.val_size, o.test_size, o.test_start, o.val_fraction, o.test_fraction)
    return [choose_split(s, window, o.horizon, *sizes) for s in panel.series]


def _seasons(panel: Panel, splits: list[Split], asked: int | None) -> list[int | None]:
    """Each series' season: ``--season`` (checked against its training part) or detected."""
    out = []
    for series, split in zip(panel.series, splits, strict=True):
        if asked is not None:
            baselines.check_season(asked, split.train)
        out.append(asked or baselines.detect_season(series.values[: split.train, 0]))
    return out


def _common(values: list, what: str) -> tuple[object, str]:
    """The most common value (ties: the first seen) and ``what`` per series, in words."""
    counts = Counter(values)
    said = ", ".join(f"{'none' if v is None else v} for {n}" for v, n in counts.most_common())
    found = [v for v in values if v is not None]
    return (Counter(found).most_common(1)[0][0] if found else None), f"{what}: {said}"


def load_panel(options: SeriesOptions, id_column: str) -> Panel:
    if options.csv is None:
        raise ValueError(
            "--id-column needs --csv FILE, a long-format file (one row per series and time "
            "step); the bundled datasets are single series"
        )
    if options.future_covariates:
        raise ValueError(
            "--future-covariates is not supported with --id-column yet: a model of many series "
            "reads past-only covariates (--covariates)"
        )
    return read_panel(
        options.csv, id_column, options.targets, options.covariates, options.time_column,
        options.fill,
    )  # fmt: skip


def train_panel(
    options: SeriesOptions,
    id_column: str,
    config: TrainConfig,
    out_dir: Path,
    resume: bool = False,
    reporter: Reporter | None = None,
    context: Distributed | None = None,
) -> PanelRun | None:
    """Train one forecaster on every series of ``options.csv``, save it to ``out_dir`` and
    score it per series and over all; None on processes other than rank 0."""
    context = context or Distributed()
    started = time.perf_counter()
    check_shape(options)
    panel = load_panel(options, id_column)
    h, k = options.horizon, len(panel.series[0].targets)
    first = _splits(panel, options, options.window or recipe.SHORT_WINDOW)
    w = recipe.window(options.window, min(s.train for s in first), h)
    splits = _splits(panel, options, w)
    seasons = _seasons(panel, splits, options.season)
    season, said_season = _common(seasons, "season per series")
    recipe.check_normalise(options.normalise, season, w)
    picked = [
        recipe.transform(options.transform, s.values[:, :k], split, m)[0]
        for s, split, m in zip(panel.series, splits, seasons, strict=True)
    ]
    _, said_transform = _common([t.describe() for t in picked], "transform per series")
    parts = zip(panel.series, splits, picked, strict=True)
    scalers = [Scaler.fit(s.values[: p.train], t) for s, p, t in parts]
    scaled = [sc.transform(s.values) for sc, s in zip(scalers, panel.series, strict=True)]
    data = {p: pooled_samples(scaled, splits, p, w, h, k) for p in ("train", "val", "test")}
    choices = [f"window {w}" + (" (as asked)" if options.window else ""), said_season]
    choices.append(said_transform + " (each chosen on its own validation part)")
    torch.manual_seed(config.seed)
    columns = len(panel.series[0].columns)
    model, said = new_model(options, columns, k, season, w, data["train"], data["val"])
    choices += said
    shape, described = _described(options, panel, splits, season, model, w)
    fingerprint = {"model": shape.to_json(), "data": described.to_json(), "ids": panel.ids}
    with training_lock(out_dir) if context.is_main else contextlib.nullcontext():
        fitted = fit_forecaster(
            model, data, config, out_dir, fingerprint, resume, reporter, context
        )
        if fitted is None:
            return None
        result, summary = fitted
        summary = dataclasses.replace(summary, choices="; ".join(choices))
        base = ForecasterSettings(
            model=shape, data=described, train=config, result=summary,
            fitted_rows=described.split.train,
        )  # fmt: skip
        bh = options.backtest_horizon or h
        entries, tests = _evaluate(model, base, panel, splits, scalers, seasons, bh)
        overall, targets = aggregate(tests), panel.series[0].targets
        memory = model.trace(data["test"][0][:TRACED_WINDOWS]).memory_summary()
        refit_started = time.perf_counter()
        refitted = options.refit and result.best_epoch >= 1
        if refitted:
            model, entries = _refit(base, panel, entries, picked, result.best_epoch)
        refit_seconds = time.perf_counter() - refit_started if refitted else 0.0
        weights = checkpoint.encode_weights(model.state_dict())
        shared = {f.name: getattr(base, f.name) for f in dataclasses.fields(ForecasterSettings)}
        del shared["kind"]
        settings = PanelForecasterSettings(
            **shared | {
                "result": dataclasses.replace(summary, test=scores_of(overall, targets)),
                "weights_sha256": checkpoint.sha256(weights),
                "fitted_rows": sum(e.fitted_rows for e in entries),
            },
            panel=PanelSettings(id_column, tuple(entries)),
        )  # fmt: skip
        document = settings.to_json()
        PanelForecasterSettings.from_json(document)  # what is written must load again
        checkpoint.save_model(out_dir, weights, document)
    evaluations = [tested_evaluations(t) for t in tests]
    seconds = time.perf_counter() - started
    return PanelRun(
        settings, tests, evaluations, overall, memory, result, seconds, refit_seconds,
        "; ".join(choices),
    )  # fmt: skip


def _evaluate(
    model: Forecaster,
    base: ForecasterSettings,
    panel: Panel,
    splits: list[Split],
    scalers: list[Scaler],
    seasons: list[int | None],
    horizon: int,
) -> tuple[list[SeriesSettings], list[Backtest]]:
    """Each series' settings (scores and intervals of the validation-chosen ``model``) and
    its backtest on its test part, ``horizon`` steps from each origin."""
    entries, tests = [], []
    for i, series in enumerate(panel.series):
        entry = SeriesSettings(
            panel.ids[i], len(series), SplitSettings.of(splits[i]),
            ScalerSettings.of(scalers[i]), seasons[i], splits[i].train, {},
        )  # fmt: skip
        view = series_view(base, entry)
        tested, intervals, evaluations = evaluate(model, view, series, splits[i], horizon)
        scores = scores_of(evaluations)
        entries.append(dataclasses.replace(entry, test=scores, intervals=intervals))
        tests.append(tested)
    return entries, tests


def _described(options, panel: Panel, splits, season, model, window):
    """The top-level ``model`` and ``data`` settings: all series together (row and split
    sums, the most common season, an identity scaler: each series has its own)."""
    total = Split(*(sum(getattr(s, p) for s in splits) for p in ("train", "val", "test")))
    first = panel.series[0]
    together = Series(
        panel.source, first.targets, first.covariates,
        np.concatenate([s.values for s in panel.series]), None, first.time_column,
    )  # fmt: skip
    c = len(first.columns)
    identity = Scaler([0.0] * c, [1.0] * c)
    return model_settings(options, together, total, identity, season, model, window)


def _refit(
    base: ForecasterSettings,
    panel: Panel,
    entries: list[SeriesSettings],
    transforms: list[Transform],
    epochs: int,
):
    """A fresh model trained for ``epochs`` on every window of every series' rows, each
    series scaled by a scaler fitted on all its rows; the entries with those scalers."""
    scalers = [Scaler.fit(s.values, t) for s, t in zip(panel.series, transforms, strict=True)]
    scaled = [sc.transform(s.values) for sc, s in zip(scalers, panel.series, strict=True)]
    every = [Split(len(s), 0, 0) for s in panel.series]  # all rows "train"
    d = base.data
    samples = pooled_samples(scaled, every, "train", d.window, d.horizon, len(d.targets))
    model = refit.fit_epochs(base, samples, epochs)
    again = [
        dataclasses.replace(e, scaler=ScalerSettings.of(sc), fitted_rows=e.rows)
        for e, sc in zip(entries, scalers, strict=True)
    ]
    return model, again


def aggregate(backtests: list[Backtest]) -> list[Evaluation]:
    """Per target, every method's scores over all series (the methods every series has): MAE,
    RMSE, sMAPE and MAPE pooled over every test forecast (in the data's units, so larger
    series weigh more in RMSE), MASE the mean of the series' MASEs (each scaled by its own
    series: every series counts the same; series without a MASE are left out)."""
    methods = [m for m in backtests[0].forecasts if all(m in b.forecasts for b in backtests)]
    out = []
    for j, target in enumerate(backtests[0].targets):
        scores = {}
        for m in methods:
            forecast = np.concatenate([b.forecasts[m][..., j].reshape(-1) for b in backtests])
            truth = np.concatenate([b.truth[..., j].reshape(-1) for b in backtests])
            forecast, truth = forecast[:, None, None], truth[:, None, None]  # (S, 1, 1)
            (pooled,) = baselines.score(forecast, truth, np.ones(1))
            mases = [b.scores(m)[j].mase for b in backtests]
            known = [x for x in mases if math.isfinite(x)]
            mase = float(np.mean(known)) if known else math.nan
            scores[m] = Scores(pooled.mae, pooled.rmse, mase, pooled.smape, pooled.mape)
        origins_ = sum(len(b.starts) for b in backtests)
        out.append(Evaluation(f"{target} ({ALL_SERIES})", None, origins_, scores))
    return out


def coverage(backtests: list[Backtest], level: float) -> np.ndarray | None:
    """``(K,)``: the fraction of every series' test truths inside its interval at ``level``
    (series without intervals left out); None when no series has them."""
    inside, count = 0, 0
    for b in backtests:
        if level in b.widths:
            low, high = b.bounds(level)
            inside = inside + ((b.truth >= low) & (b.truth <= high)).sum(axis=(0, 1))
            count += b.truth.shape[0] * b.truth.shape[1]
    return inside / count if count else None
