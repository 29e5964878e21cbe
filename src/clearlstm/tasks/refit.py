"""Training a forecaster again on more rows: on all rows before forecasting past the end, or
on the rows before an origin in a backtest.

Validation chooses the number of epochs (the best epoch of the run on the training part);
a refit trains a fresh model, seeded as that run, on the new rows for that many epochs on
the same learning-rate schedule and keeps the last weights: there is no validation part left
to choose by. The scaler is fitted on the new rows. Shapes: ``N`` rows, ``C`` columns.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from clearlstm.tasks import recipe
from clearlstm.tasks.covariates import model_windows
from clearlstm.tasks.models import Forecaster, forecast_loss
from clearlstm.tasks.series import Scaler, Split, origins
from clearlstm.tasks.settings import ForecasterSettings, ScalerSettings
from clearlstm.tasks.transforms import Transform
from clearlstm.train.loop import FitResult, fit


def _tensor(a: np.ndarray) -> Tensor:
    return torch.as_tensor(a, dtype=torch.float32)


def _transform(settings: ForecasterSettings) -> Transform:
    """The targets' transform the model was trained with (chosen on validation once)."""
    return settings.data.scaler.to_scaler().target_transform


def with_scaler(settings: ForecasterSettings, scaler: Scaler) -> ForecasterSettings:
    """The same settings with another scaler (a model refitted on other rows)."""
    data = dataclasses.replace(settings.data, scaler=ScalerSettings.of(scaler))
    return dataclasses.replace(settings, data=data)


def _samples(settings: ForecasterSettings, scaled: np.ndarray, starts: np.ndarray):
    d, f = settings.data, settings.model.future
    x_y = model_windows(scaled, starts, d.window, d.horizon, len(d.targets), f)
    return tuple(map(_tensor, x_y))


def refit(
    settings: ForecasterSettings, values: np.ndarray, rows: int, epochs: int
) -> tuple[Forecaster, ForecasterSettings]:
    """A fresh model trained for ``epochs`` on every window of rows ``[0, rows)`` of
    ``values (N, C)``, with its settings (scaler fitted on those rows)."""
    d = settings.data
    if epochs < 1:
        raise ValueError(f"refit: needs at least 1 epoch; got {epochs}")
    if rows < d.window + d.horizon:
        raise ValueError(
            f"refit: {rows} rows are fewer than window + horizon ({d.window + d.horizon})"
        )
    scaler = Scaler.fit(values[:rows], _transform(settings))
    scaled = scaler.transform(values[:rows])
    starts = np.arange(d.window, rows - d.horizon + 1)
    model = fit_epochs(settings, _samples(settings, scaled, starts), epochs)
    return model, with_scaler(settings, scaler)


def fit_epochs(
    settings: ForecasterSettings, samples: tuple[Tensor, Tensor], epochs: int
) -> Forecaster:
    """A fresh model of the settings' shape, seeded as ``clearlstm train`` seeds it, trained
    for ``epochs`` on ``samples`` (inputs ``(S, W, C)``, truths ``(S, H, K)``) with no
    validation part: the last weights."""
    torch.manual_seed(settings.train.seed)
    model = Forecaster.from_settings(settings)
    if model.linear is not None:  # no validation part left: validation's penalty, if saved
        m = settings.model
        recipe.start_linear(model, samples, samples, m.normalise, m.ridge_penalty)
    with tempfile.TemporaryDirectory(prefix="clearlstm-refit-") as state:
        result = fit(
            model, samples, None, forecast_loss, settings.train, Path(state),
            {}, stop_after=epochs,
        )  # fmt: skip
    model.load_state_dict(result.weights)
    return model.eval()


def validated(
    settings: ForecasterSettings, values: np.ndarray, split: Split
) -> tuple[Forecaster, ForecasterSettings, FitResult]:
    """The validation-chosen model again: trained on the training part with early stopping
    on the validation part, seeded as ``clearlstm train`` does (the same weights, bit for
    bit, on the same data), for backtesting a folder whose model was refitted on all rows."""
    d = settings.data
    n = split.train + split.val + split.test
    scaler = Scaler.fit(values[: split.train], _transform(settings))
    scaled = scaler.transform(values[:n])
    parts = {p: origins(split, p, n, d.window, d.horizon) for p in ("train", "val")}
    train, val = (
        _samples(settings, scaled, parts["train"]),
        _samples(settings, scaled, parts["val"]),
    )
    model, result = fit_validated(settings, train, val)
    return model, with_scaler(settings, scaler), result


def fit_validated(
    settings: ForecasterSettings, train: tuple[Tensor, Tensor], val: tuple[Tensor, Tensor]
) -> tuple[Forecaster, FitResult]:
    """A fresh model trained as ``clearlstm train`` trains it (seeded, its linear part
    started, early stopping on ``val``): the same weights, bit for bit, on the same samples."""
    torch.manual_seed(settings.train.seed)
    model = Forecaster.from_settings(settings)
    if model.linear is not None:  # as clearlstm train starts it
        recipe.start_linear(model, train, val, settings.model.normalise)
    with tempfile.TemporaryDirectory(prefix="clearlstm-validated-") as state:
        result = fit(model, train, val, forecast_loss, settings.train, Path(state), {})
    model.load_state_dict(result.weights)
    return model.eval(), result
