"""Training a forecaster on a series and evaluating it honestly against the baselines.

:func:`train_series` reads the data, splits it in time (train / validation / test), fits the
scaler on the training part, trains a :class:`~clearlstm.tasks.models.Forecaster` with early
stopping on the validation part, backtests it on the test part beside the baselines from the
same origins (:mod:`clearlstm.tasks.backtest`), refits it on all rows (by default) and saves
it. Shapes: ``N`` rows, ``C`` columns, ``K`` targets, ``S`` origins, ``W`` window, ``H`` horizon.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from clearlstm.core.trace import UnitMemory
from clearlstm.tasks import baselines, recipe, refit
from clearlstm.tasks.backtest import (
    FUTURE_STEPS,
    Backtest,
    Evaluation,
    backtest_model,
    future_intervals,
    tested_evaluations,
)
from clearlstm.tasks.covariates import model_windows
from clearlstm.tasks.datasets import get_dataset
from clearlstm.tasks.models import Forecaster, forecast_loss
from clearlstm.tasks.series import (
    FillMethod,
    Scaler,
    Series,
    Split,
    choose_split,
    origins,
    read_series,
)
from clearlstm.tasks.settings import (
    MAX_EXAMPLE_NUMBERS,
    DataSettings,
    ForecasterResult,
    ForecasterSettings,
    ForecasterShape,
    MethodScores,
    ScalerSettings,
    SplitSettings,
    check_option,
    finite_or_none,
    read_settings,
)
from clearlstm.train import checkpoint
from clearlstm.train.distributed import Distributed
from clearlstm.train.lock import training_lock
from clearlstm.train.loop import FitResult, Reporter, TrainConfig, fit


@dataclass(frozen=True)
class SeriesOptions:
    """What to read and the model's shape (``clearlstm train`` flags)."""

    dataset: str | None = None
    csv: str | None = None
    targets: list[str] | None = None
    covariates: list[str] | None = None  # past-only: known up to the forecast origin
    future_covariates: list[str] | None = None  # known for the forecast rows too
    time_column: str | None = None
    fill: FillMethod | None = None
    window: int | None = None  # None: 36 where the training part allows, else 24
    horizon: int = 1
    hidden_size: int = 32
    num_layers: int = 1
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    season: int | None = None  # None: detected from the training part
    val_size: int | None = None  # rows; None: val_fraction
    test_size: int | None = None  # rows; None: test_fraction (or test_start)
    test_start: str | None = None  # the test part's first time label
    backtest_horizon: int | None = None  # steps forecast from each test origin; None: horizon
    refit: bool = True  # save a model refitted on all rows (validation-chosen epochs)
    transform: str = "auto"  # auto (chosen on validation), none, log or boxcox
    # auto: window mean or last value, chosen on validation (last without the linear part)
    normalise: str = "auto"
    members: int = 9  # networks in the seed ensemble (their median is the forecast)
    linear: bool = True  # a linear autoregression beside the LSTM, started at its ridge fit


@dataclass
class SeriesRun:
    """What :func:`train_series` did."""

    settings: ForecasterSettings
    evaluations: list[Evaluation]
    memory: list[UnitMemory]  # the last layer's units on the test part, longest memory first
    fit: FitResult
    seconds: float
    backtest: Backtest | None = None  # the test part's rolling-origin forecasts
    refit_seconds: float = 0.0  # 0: the saved model is the validation-chosen one
    choices: str = ""  # the automatic choices, in words


def load_data(options: SeriesOptions) -> Series:
    """The series named by ``--dataset`` or ``--csv`` with the chosen columns (and, with
    future covariates, their rows after the last target value)."""
    if (options.dataset is None) == (options.csv is None):
        raise ValueError("give exactly one of --dataset NAME or --csv FILE")
    future = options.future_covariates or []
    both = [c for c in options.covariates or [] if c in future]
    if both:
        raise ValueError(
            f"column {both[0]!r} is named in both --covariates and --future-covariates: a "
            "covariate is past-only (known up to the forecast origin) or known for the "
            "forecast rows too; name it once"
        )
    if options.dataset is not None:
        dataset = get_dataset(options.dataset)
        if dataset.kind != "series":
            raise ValueError(f"dataset {dataset.name!r} is a text; train on it with --text mode")
        return read_series(
            dataset.path,
            options.targets or [dataset.target],
            options.covariates,
            options.time_column or dataset.time_column,
            options.fill,
            future,
        )
    return read_series(
        options.csv, options.targets, options.covariates, options.time_column, options.fill, future
    )


def _tensor(a: np.ndarray) -> Tensor:
    return torch.as_tensor(a, dtype=torch.float32)


def train_series(
    options: SeriesOptions,
    config: TrainConfig,
    out_dir: Path,
    resume: bool = False,
    reporter: Reporter | None = None,
    context: Distributed | None = None,
) -> SeriesRun | None:
    """Train, save to ``out_dir`` and evaluate; None on processes other than rank 0."""
    context = context or Distributed()
    started = time.perf_counter()
    check_option("--hidden-size", ForecasterShape, "hidden_size", options.hidden_size)
    check_option("--layers", ForecasterShape, "num_layers", options.num_layers)
    check_option("--ensemble", ForecasterShape, "members", options.members)
    series = load_data(options)
    # The window may depend on the training part's length, and the split on the window.
    first = choose_split(
        series, options.window or recipe.SHORT_WINDOW, options.horizon, options.val_size,
        options.test_size, options.test_start, options.val_fraction, options.test_fraction,
    )  # fmt: skip
    n, h, k, f = len(series), options.horizon, len(series.targets), len(series.future_covariates)
    w = recipe.window(options.window, first.train, h)
    split = choose_split(
        series, w, h, options.val_size, options.test_size, options.test_start,
        options.val_fraction, options.test_fraction,
    )  # fmt: skip

    if options.season is not None:
        baselines.check_season(options.season, split.train)
    season = options.season or baselines.detect_season(series.values[: split.train, 0])
    recipe.check_normalise(options.normalise, season, w)
    transform, said = recipe.transform(options.transform, series.values[:, :k], split, season)
    choices = [f"window {w}" + (" (as asked)" if options.window else ""), said]
    scaler = Scaler.fit(series.values[: split.train], transform)
    scaled = scaler.transform(series.values)  # (N, C)
    parts = {p: origins(split, p, len(series), w, h) for p in ("train", "val", "test")}
    data = {p: tuple(map(_tensor, model_windows(scaled, o, w, h, k, f))) for p, o in parts.items()}

    torch.manual_seed(config.seed)
    normalise = options.normalise if options.normalise != "auto" else "last"
    model = Forecaster(
        len(series.columns), k, h, options.hidden_size, options.num_layers, normalise,
        options.members, season, w if options.linear else None, f,
    )  # fmt: skip
    if options.linear:
        choices.append(recipe.start_linear(model, data["train"], data["val"], options.normalise))
    else:
        choices.append(f"normalise {normalise}; no linear part")
    choices.append(f"{options.members} member(s) in the ensemble")
    shape, described = _settings(options, series, split, scaler, season, model, w)
    fingerprint = {"model": shape.to_json(), "data": described.to_json()}
    with training_lock(out_dir) if context.is_main else contextlib.nullcontext():
        result = fit(
            model, data["train"], data["val"], forecast_loss, config, out_dir, fingerprint, resume,
            reporter, context,
        )  # fmt: skip
        if not context.is_main:
            return None
        model.load_state_dict(result.weights)
        model.eval()
        summary = ForecasterResult(
            result.best_epoch, finite_or_none(result.best_val), result.epochs_run, {}
        )
        settings = ForecasterSettings(
            model=shape, data=described, train=config, result=summary,
            example=_example(series.values[-w:]), fitted_rows=split.train,
        )  # fmt: skip
        tested = backtest_model(model, settings, series, split, options.backtest_horizon or h)
        steps = max(tested.horizon, FUTURE_STEPS)
        intervals = future_intervals(model, settings, series, split, steps)
        evaluations = tested_evaluations(tested)
        memory = model.trace(model.split(data["test"][0])[0]).memory_summary()
        scores = {
            e.target: {m: MethodScores.of(s) for m, s in e.scores.items()} for e in evaluations
        }
        summary = dataclasses.replace(summary, test=scores, choices="; ".join(choices))
        refit_started = time.perf_counter()
        if options.refit and result.best_epoch >= 1:
            model, settings = refit.refit(settings, series.values, n, result.best_epoch)
            settings = dataclasses.replace(settings, fitted_rows=n)
        refit_seconds = time.perf_counter() - refit_started if settings.refitted else 0.0
        weights = checkpoint.encode_weights(model.state_dict())
        settings = dataclasses.replace(
            settings, result=summary, weights_sha256=checkpoint.sha256(weights),
            intervals=intervals,
        )  # fmt: skip
        document = settings.to_json()
        ForecasterSettings.from_json(document)  # what is written must load again
        checkpoint.save_model(out_dir, weights, document)
    seconds = time.perf_counter() - started
    return SeriesRun(
        settings, evaluations, memory, result, seconds, tested, refit_seconds, "; ".join(choices)
    )


def _example(rows: np.ndarray) -> tuple[tuple[float, ...], ...] | None:
    """The last window, recorded in the settings when it is small and finite."""
    if rows.size > MAX_EXAMPLE_NUMBERS or not np.isfinite(rows).all():
        return None
    return tuple(tuple(float(v) for v in row) for row in rows)


def _settings(
    options: SeriesOptions,
    series: Series,
    split: Split,
    scaler: Scaler,
    season: int | None,
    model: Forecaster,
    window: int,
) -> tuple[ForecasterShape, DataSettings]:
    shape = ForecasterShape(
        columns=model.columns,
        targets=model.targets,
        horizon=model.horizon,
        hidden_size=model.hidden_size,
        num_layers=model.lstm.num_layers,
        normalise=model.normalise,
        members=model.members,
        season=model.season,
        linear_window=model.linear_window,
        future=model.future,
    )
    data = DataSettings(
        dataset=options.dataset,
        csv=str(Path(options.csv).resolve()) if options.csv else None,
        targets=tuple(series.targets),
        covariates=tuple(series.covariates),
        time_column=series.time_column,
        fill=options.fill,
        window=window,
        horizon=options.horizon,
        val_fraction=options.val_fraction,
        test_fraction=options.test_fraction,
        season=season,
        rows=len(series),
        split=SplitSettings.of(split),
        scaler=ScalerSettings.of(scaler),
        future_covariates=tuple(series.future_covariates),
    )
    return shape, data


def load_forecaster(path: str | Path) -> tuple[Forecaster, ForecasterSettings, Path]:
    """A trained forecaster, its settings and its directory, checked on the way in."""
    settings, directory = read_settings(path)
    if not isinstance(settings, ForecasterSettings):
        raise checkpoint.CheckpointError(
            f"{directory} holds a {settings.kind} model, not a forecaster"
        )
    shapes = settings.weight_shapes()
    weights = checkpoint.load_weights(directory, shapes, settings.weights_sha256)
    model = Forecaster.from_settings(settings)
    model.load_state_dict(weights)
    model.check_blocks()
    return model.eval(), settings, directory


def series_for_model(
    settings: ForecasterSettings, csv: str | None = None, directory: Path | None = None
) -> Series:
    """The series a model was trained on, or the same columns from another CSV file ``csv``.

    A model folder may come from someone else, so the CSV path its settings record is only a
    hint: it is opened only when it lies inside the model's ``directory``; otherwise the
    error names it, for the user to pass again with ``--csv``.
    """
    data = settings.data
    if csv is None and data.csv is not None:
        if directory is None or checkpoint.inside(directory, data.csv) is None:
            raise ValueError(
                f"the model was trained on {data.csv}, outside its folder; a model folder "
                f"cannot make clearlstm open other files: pass --csv {data.csv} (or another "
                f"CSV file with the columns {', '.join(map(repr, data.columns))})"
            )
        csv = str(checkpoint.check_regular_file(directory, data.csv, checkpoint.MAX_DATA_BYTES))
    options = SeriesOptions(
        dataset=None if csv else data.dataset,
        csv=csv,
        targets=list(data.targets),
        covariates=list(data.covariates),
        future_covariates=list(data.future_covariates),
        time_column=data.time_column,
        fill=data.fill,
    )
    return load_data(options)


def last_window(settings: ForecasterSettings, directory: Path | None = None) -> np.ndarray:
    """``(W, C)``: the end of the training series, from the settings where they record it
    (else from the data, as :func:`series_for_model` allows)."""
    if settings.example is not None:
        return np.array(settings.example, dtype=float)
    return series_for_model(settings, None, directory).values[-settings.data.window :]
