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
from clearlstm.tasks import baselines, lstm_settings, recipe, refit
from clearlstm.tasks.backtest import (
    Backtest,
    Evaluation,
)
from clearlstm.tasks.covariates import model_windows
from clearlstm.tasks.datasets import get_dataset
from clearlstm.tasks.fitting import evaluate, fit_forecaster, scores_of
from clearlstm.tasks.models import Forecaster
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
    ForecasterSettings,
    ForecasterShape,
    ScalerSettings,
    SplitSettings,
    read_settings,
)
from clearlstm.tasks.settings_base import check_option
from clearlstm.train import checkpoint
from clearlstm.train.distributed import Distributed
from clearlstm.train.lock import training_lock
from clearlstm.train.loop import FitResult, Reporter, TrainConfig


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
    lstm: dict | None = None  # the LSTM's variant arguments (clearlstm.nn.variants.DEFAULTS)


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


def window_and_split(series: Series, options: SeriesOptions) -> tuple[int, Split]:
    """The window (``options.window``, else the recipe's choice for the training part's
    length) and the split it gives; the window may depend on the training part's length,
    and the split on the window."""
    first = choose_split(
        series, options.window or recipe.SHORT_WINDOW, options.horizon, options.val_size,
        options.test_size, options.test_start, options.val_fraction, options.test_fraction,
    )  # fmt: skip
    w = recipe.window(options.window, first.train, options.horizon)
    split = choose_split(
        series, w, options.horizon, options.val_size, options.test_size, options.test_start,
        options.val_fraction, options.test_fraction,
    )  # fmt: skip
    return w, split


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
    check_shape(options)
    series = load_data(options)
    w, split = window_and_split(series, options)
    n, h, k, f = len(series), options.horizon, len(series.targets), len(series.future_covariates)

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
    model, said = new_model(
        options, len(series.columns), k, season, w, data["train"], data["val"], f
    )
    choices += said
    shape, described = model_settings(options, series, split, scaler, season, model, w)
    fingerprint = {"model": shape.to_json(), "data": described.to_json()}
    with training_lock(out_dir) if context.is_main else contextlib.nullcontext():
        fitted = fit_forecaster(
            model, data, config, out_dir, fingerprint, resume, reporter, context
        )
        if fitted is None:
            return None
        result, summary = fitted
        settings = ForecasterSettings(
            model=shape, data=described, train=config, result=summary,
            example=_example(series.values[-w:]), fitted_rows=split.train,
        )  # fmt: skip
        bh = options.backtest_horizon or h
        tested, intervals, evaluations = evaluate(model, settings, series, split, bh)
        memory = model.trace(model.split(data["test"][0])[0]).memory_summary()
        scores = scores_of(evaluations)
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


def check_shape(options: SeriesOptions) -> None:
    """A clear error for a model size that ``settings.json`` could not hold."""
    check_option("--hidden-size", ForecasterShape, "hidden_size", options.hidden_size)
    check_option("--layers", ForecasterShape, "num_layers", options.num_layers)
    check_option("--ensemble", ForecasterShape, "members", options.members)


def new_model(
    options: SeriesOptions,
    columns: int,
    targets: int,
    season: int | None,
    window: int,
    train: tuple[Tensor, Tensor],
    val: tuple[Tensor, Tensor],
    future: int = 0,
) -> tuple[Forecaster, list[str]]:
    """A fresh forecaster of the options' shape (seed torch first) reading ``future`` of its
    ``columns`` on the forecast rows too, its linear part started on the inputs and
    ``(S, H, K)`` truths of ``train`` (penalty chosen on ``val``), and those choices in words."""
    variant = lstm_settings.for_training(options.lstm, window, options.members)
    normalise = options.normalise if options.normalise != "auto" else "last"
    model = Forecaster(
        columns, targets, options.horizon, options.hidden_size, options.num_layers, normalise,
        options.members, season, window if options.linear else None, variant.kwargs(), future,
    )  # fmt: skip
    if options.linear:
        said = recipe.start_linear(model, train, val, options.normalise)
    else:
        said = f"normalise {normalise}; no linear part"
    said = [said, f"{options.members} member(s) in the ensemble"]
    return model, said + ([] if variant.plain else [variant.describe()])


def _example(rows: np.ndarray) -> tuple[tuple[float, ...], ...] | None:
    """The last window, recorded in the settings when it is small and finite."""
    if rows.size > MAX_EXAMPLE_NUMBERS or not np.isfinite(rows).all():
        return None
    return tuple(tuple(float(v) for v in row) for row in rows)


def model_settings(
    options: SeriesOptions,
    series: Series,
    split: Split,
    scaler: Scaler,
    season: int | None,
    model: Forecaster,
    window: int,
) -> tuple[ForecasterShape, DataSettings]:
    """The ``model`` and ``data`` parts of ``settings.json`` for ``model`` on ``series``."""
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
        lstm=lstm_settings.LstmSettings.of(model.lstm),
        future=model.future,
        ridge_penalty=model.ridge_penalty,
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
    csv = data_file(settings, csv, directory)
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


def data_file(settings: ForecasterSettings, csv: str | None, directory: Path | None) -> str | None:
    """``csv`` when given, else the CSV file the settings record if it lies inside the model's
    ``directory`` (a clear error naming it otherwise), else None (a bundled dataset)."""
    data = settings.data
    if csv is None and data.csv is not None:
        if directory is None or checkpoint.inside(directory, data.csv) is None:
            raise ValueError(
                f"the model was trained on {data.csv}, outside its folder; a model folder "
                f"cannot make clearlstm open other files: pass --csv {data.csv} (or another "
                f"CSV file with the columns {', '.join(map(repr, data.columns))})"
            )
        csv = str(checkpoint.check_regular_file(directory, data.csv, checkpoint.MAX_DATA_BYTES))
    return csv


def last_window(settings: ForecasterSettings, directory: Path | None = None) -> np.ndarray:
    """``(W, C)``: the end of the training series, from the settings where they record it
    (else from the data, as :func:`series_for_model` allows)."""
    if settings.example is not None:
        return np.array(settings.example, dtype=float)
    return series_for_model(settings, None, directory).values[-settings.data.window :]
