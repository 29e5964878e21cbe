"""What ``settings.json`` beside a trained model holds, as frozen dataclasses.

A model directory (``clearlstm train --out DIR``) keeps its weights in ``model.safetensors``
and everything needed to rebuild and use them here: the model's shape, the data it was
trained on (columns, scaler, window, split, or the text and vocabulary), how it was trained
(:class:`~clearlstm.train.loop.TrainConfig`) and a summary of the result. Loading checks every
field (:mod:`clearlstm.train.codec`: types, ranges, lengths, missing and unknown keys), then
fields against each other, then the weights file's tensor shapes (from its header) against
:meth:`ForecasterSettings.weight_shapes`, all before a model is allocated. The JSON layout is
format version 1, the same since the first release.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from clearlstm import __version__
from clearlstm.errors import CheckpointError
from clearlstm.tasks.baselines import Scores
from clearlstm.tasks.lstm_settings import LstmSettings
from clearlstm.tasks.series import FillMethod, Scaler, Split
from clearlstm.tasks.settings_base import (
    EXAMPLE_CHARS,
    MAX_COLUMNS,
    MAX_EXAMPLE_NUMBERS,
    MAX_HORIZON,
    MAX_LAYERS,
    MAX_MEMBERS,
    MAX_STEPS,
    MAX_UNITS,
    MAX_VOCABULARY,
    Document,
    Shapes,
    fraction,
    join,
    lstm_shapes,
    names,
    one_source,
    optional,
    size,
)
from clearlstm.tasks.transforms import LAMBDA_RANGE, Transform
from clearlstm.train import checkpoint
from clearlstm.train.codec import JsonSettings, invalid, limits, to_json
from clearlstm.train.loop import TrainConfig


@dataclass(frozen=True)
class ForecasterShape(JsonSettings):
    """The sizes of a :class:`~clearlstm.tasks.models.Forecaster` (``model`` in the file)."""

    columns: int = size(MAX_COLUMNS)
    targets: int = size(MAX_COLUMNS)
    horizon: int = size(MAX_HORIZON)
    hidden_size: int = size(MAX_UNITS)  # per member
    num_layers: int = size(MAX_LAYERS)
    # Added after format version 1's first release: folders without them hold the old model
    # (last-value normalisation, one member).
    normalise: Literal["last", "mean", "seasonal", "none"] = field(
        default="last", metadata=limits(optional=True)
    )
    members: int = field(default=1, metadata=limits(optional=True, low=1, high=MAX_MEMBERS))
    season: int | None = optional(low=2, high=MAX_STEPS)  # for normalise "seasonal" only
    linear_window: int | None = optional(low=1, high=MAX_STEPS)  # the linear part's lags
    lstm: LstmSettings = field(default=LstmSettings(), metadata=limits(optional=True))  # variant
    # The last columns, known for the forecast rows too (absent in older folders: none).
    future: int = field(default=0, metadata=limits(optional=True, low=0, high=MAX_COLUMNS))
    # The linear part's ridge penalty, chosen on validation; a refit on all rows keeps it
    # (absent in older folders: a refit chooses it on the rows it learns from).
    ridge_penalty: float | None = optional(low=0.0, high=1e6)

    def check_json(self, file: str, where: str) -> None:
        if (self.normalise == "seasonal") != (self.season is not None):
            need = "a season of at least 2 with normalise 'seasonal', else null"
            raise invalid(file, join(where, "season"), need, self.season)


@dataclass(frozen=True)
class SplitSettings(JsonSettings):
    """Rows ``[0, train)`` train, ``[train, train + val)`` validate, the rest test."""

    train: int = size(MAX_STEPS)
    val: int = size(MAX_STEPS)
    test: int = size(MAX_STEPS)

    @property
    def test_start(self) -> int:
        return self.train + self.val

    @classmethod
    def of(cls, split: Split) -> SplitSettings:
        return cls(split.train, split.val, split.test)


@dataclass(frozen=True)
class ScalerSettings(JsonSettings):
    """Per-column mean and standard deviation of the rows the model was fitted on (the
    training part, or all rows after a refit), targets first."""

    mean: tuple[float, ...] = names(1)
    std: tuple[float, ...] = field(metadata=limits(above=0, length=(1, MAX_COLUMNS)))
    # The targets' transform before scaling (absent in older folders: none), with one Box-Cox
    # lambda per target (0 for log).
    transform: Literal["none", "log", "boxcox"] = field(
        default="none", metadata=limits(optional=True)
    )
    lambdas: tuple[float, ...] | None = optional(
        low=LAMBDA_RANGE[0], high=LAMBDA_RANGE[1], length=(1, MAX_COLUMNS)
    )

    @classmethod
    def of(cls, scaler: Scaler) -> ScalerSettings:
        t = scaler.target_transform
        return cls(tuple(scaler.mean), tuple(scaler.std), t.name, t.lambdas)

    def to_scaler(self) -> Scaler:
        return Scaler(list(self.mean), list(self.std), Transform(self.transform, self.lambdas))

    def check_json(self, file: str, where: str) -> None:
        if len(self.std) != len(self.mean):
            need = f"a list of {len(self.mean)} numbers (one per item of {join(where, 'mean')})"
            raise invalid(file, join(where, "std"), need, list(self.std))
        if (self.transform == "none") != (self.lambdas is None):
            need = "null for transform none, else one lambda per target"
            raise invalid(file, join(where, "lambdas"), need, self.lambdas)
        if self.transform == "log" and any(v != 0 for v in self.lambdas or ()):
            raise invalid(file, join(where, "lambdas"), "zeros for log", list(self.lambdas))
        if self.lambdas is not None and len(self.lambdas) > len(self.mean):
            need = f"at most {len(self.mean)} lambdas (one per target)"
            raise invalid(file, join(where, "lambdas"), need, list(self.lambdas))


@dataclass(frozen=True)
class DataSettings(JsonSettings):
    """The series a forecaster was trained on and how it was cut (``data`` in the file)."""

    dataset: str | None  # a bundled dataset, or None for a CSV file
    csv: str | None  # the CSV file's absolute path: a hint, opened only inside the folder
    targets: tuple[str, ...] = names(1)
    covariates: tuple[str, ...] = names(0)
    time_column: str | None
    fill: FillMethod | None
    window: int = size(MAX_STEPS)
    horizon: int = size(MAX_HORIZON)
    val_fraction: float = fraction()
    test_fraction: float = fraction()
    season: int | None = size(MAX_STEPS)  # None: no season found
    rows: int = size(MAX_STEPS)
    split: SplitSettings
    scaler: ScalerSettings
    # Known for the forecast rows too, read after the past-only ones (older folders: none).
    future_covariates: tuple[str, ...] = field(
        default=(), metadata=limits(optional=True, length=(0, MAX_COLUMNS))
    )

    @property
    def columns(self) -> tuple[str, ...]:
        """What the model reads per step: targets, past covariates, future covariates."""
        return self.targets + self.covariates + self.future_covariates

    def check_json(self, file: str, where: str) -> None:
        one_source(file, where, "dataset", "csv", self.dataset, self.csv)
        total = self.split.train + self.split.val + self.split.test
        if total != self.rows:
            need = f"parts adding up to {join(where, 'rows')} ({self.rows})"
            raise invalid(file, join(where, "split"), need, to_json(self.split))
        if self.split.train < self.window + self.horizon:
            need = f"at least window + horizon ({self.window + self.horizon}) rows"
            raise invalid(file, join(where, "split.train"), need, self.split.train)
        names = self.columns
        for i, name in enumerate(names):
            if name in names[:i]:
                k, p = len(self.targets), len(self.targets + self.covariates)
                part = "targets" if i < k else "covariates" if i < p else "future_covariates"
                path = join(where, part)
                raise CheckpointError(f"{file}: {path} names the column {name!r} twice")
        if len(self.scaler.mean) != len(names):
            need = f"{len(names)} numbers (one per target and covariate)"
            raise invalid(file, join(where, "scaler.mean"), need, list(self.scaler.mean))
        lambdas = self.scaler.lambdas
        if lambdas is not None and len(lambdas) != len(self.targets):
            need = f"{len(self.targets)} numbers (one per target)"
            raise invalid(file, join(where, "scaler.lambdas"), need, list(lambdas))


def finite_or_none(value: float) -> float | None:
    """``value``, or None where it is NaN or infinite: ``settings.json`` is strict JSON (no
    ``NaN`` or ``Infinity``), so a number that does not exist is written as null."""
    return value if math.isfinite(value) else None


def _measure() -> Any:
    # null: the measure does not exist (written so since null replaced NaN and Infinity);
    # NaN and Infinity are still read from folders written before.
    return field(metadata=limits(finite=False))


@dataclass(frozen=True)
class MethodScores(JsonSettings):
    """One method's test errors; null where one does not exist (MASE has no scale on a
    constant series)."""

    mae: float | None = _measure()
    rmse: float | None = _measure()
    mase: float | None = _measure()

    @classmethod
    def of(cls, scores: Scores) -> MethodScores:
        return cls(*(finite_or_none(v) for v in (scores.mae, scores.rmse, scores.mase)))


@dataclass(frozen=True)
class ForecasterResult(JsonSettings):
    """What training reached (``result`` in the file)."""

    best_epoch: int = field(metadata=limits(low=0))  # 0: no epoch improved on the start
    best_val_loss: float | None = _measure()  # null when no epoch improved
    epochs_run: int = field(metadata=limits(low=0))
    test: dict[str, dict[str, MethodScores]]  # target -> method -> scores
    # The automatic choices in words (window, transform, normalisation, linear part, ensemble);
    # absent in older folders.
    choices: str | None = optional(length=(1, 10_000))


@dataclass(frozen=True)
class CharModelShape(JsonSettings):
    """The sizes of a :class:`~clearlstm.tasks.models.CharModel` (``model`` in the file)."""

    embedding_size: int = size(MAX_UNITS)
    hidden_size: int = size(MAX_UNITS)
    num_layers: int = size(MAX_LAYERS)
    lstm: LstmSettings = field(default=LstmSettings(), metadata=limits(optional=True))  # variant


@dataclass(frozen=True)
class TextDataSettings(JsonSettings):
    """The text a character model was trained on (``data`` in the file)."""

    dataset: str | None  # a bundled text, or None for a file
    text: str | None  # the file's absolute path: a hint, opened only inside the folder
    seq_len: int = size(MAX_STEPS)
    val_fraction: float = fraction()

    def check_json(self, file: str, where: str) -> None:
        one_source(file, where, "dataset", "text", self.dataset, self.text)


@dataclass(frozen=True)
class CharModelResult(JsonSettings):
    best_epoch: int = field(metadata=limits(low=0))
    epochs_run: int = field(metadata=limits(low=0))
    val_bits_per_char: float | None = _measure()  # null when no epoch improved


@dataclass(frozen=True, kw_only=True)
class ForecasterSettings(Document):
    """Everything saved with a trained forecaster."""

    kind: Literal["forecaster"] = "forecaster"
    clearlstm_version: str = __version__
    model: ForecasterShape
    data: DataSettings
    train: TrainConfig
    result: ForecasterResult
    weights_sha256: str | None = optional(length=(64, 64))  # of model.safetensors
    # The last window of the training series (data units), so a model can be shown without
    # opening its data file again.
    example: tuple[tuple[float, ...], ...] | None = optional(length=(1, MAX_EXAMPLE_NUMBERS))
    # The rows model.safetensors was trained on: data.split.train for the validation-chosen
    # model, data.rows after a refit on all rows (null in folders written before refits).
    fitted_rows: int | None = optional(low=1, high=MAX_STEPS)
    # Conformal half-widths for forecasts past the end, in the data's units: nominal level
    # ("80", "95") -> one row per horizon step of one number per target.
    intervals: dict[str, tuple[tuple[float, ...], ...]] | None = field(
        default=None, metadata=limits(optional=True, length=(1, MAX_HORIZON))
    )

    @property
    def refitted(self) -> bool:
        """Whether the model was trained on all rows (so it has seen the test part)."""
        return self.fitted_rows is not None and self.fitted_rows > self.data.split.train

    def weight_shapes(self) -> Shapes:
        m = self.model
        out, units = m.members * m.horizon * m.targets, m.members * m.hidden_size
        ahead = m.horizon * m.future  # the future covariates on the forecast rows
        shapes = lstm_shapes(m.columns, units, m.num_layers)
        shapes |= m.lstm.weight_shapes(units, m.num_layers)  # a variant's tensors
        shapes |= {"head.weight": (out, units + ahead), "head.bias": (out,)}
        if m.linear_window is not None:
            one, lags = m.horizon * m.targets, m.linear_window * m.targets
            shapes |= {"linear.weight": (one, lags + ahead), "linear.bias": (one,)}
        return shapes

    def check_json(self, file: str, where: str) -> None:
        data, model = self.data, self.model
        agree = [
            ("model.columns", len(data.columns), "the number of data.targets and data.covariates"),
            ("model.targets", len(data.targets), "the number of data.targets"),
            ("model.horizon", data.horizon, "data.horizon"),
            ("model.future", len(data.future_covariates), "the number of data.future_covariates"),
        ]
        if model.normalise == "seasonal" and data.window <= (model.season or 0):
            need = f"a season shorter than data.window ({data.window})"
            raise invalid(file, join(where, "model.season"), need, model.season)
        for path, want, what in agree:
            found = getattr(model, path.split(".")[1])
            if found != want:
                raise invalid(file, join(where, path), f"{want} ({what})", found)
        self._check_digest(file, where)
        if self.fitted_rows is not None and self.fitted_rows not in (data.split.train, data.rows):
            need = f"data.split.train ({data.split.train}) or data.rows ({data.rows})"
            raise invalid(file, join(where, "fitted_rows"), need, self.fitted_rows)
        for level, steps in (self.intervals or {}).items():
            if level not in ("80", "95"):
                raise invalid(file, join(where, "intervals"), 'keys "80" and "95"', level)
            for i, row in enumerate(steps):
                if len(row) != model.targets or min(row) < 0:
                    need = f"a list of {model.targets} numbers of at least 0 (model.targets)"
                    raise invalid(file, join(where, f"intervals.{level}[{i}]"), need, list(row))
        example = self.example or ()
        if example and len(example) != data.window:
            need = f"a list of {data.window} rows (data.window)"
            raise invalid(file, join(where, "example"), need, list(example))
        for i, row in enumerate(example):
            if len(row) != model.columns:
                need = f"a list of {model.columns} numbers (model.columns)"
                raise invalid(file, join(where, f"example[{i}]"), need, list(row))


@dataclass(frozen=True, kw_only=True)
class CharModelSettings(Document):
    """Everything saved with a trained character model."""

    kind: Literal["char_lm"] = "char_lm"
    clearlstm_version: str = __version__
    model: CharModelShape
    data: TextDataSettings
    vocabulary: str = field(metadata=limits(length=(1, MAX_VOCABULARY)))  # sorted characters
    train: TrainConfig
    result: CharModelResult
    weights_sha256: str | None = optional(length=(64, 64))  # of model.safetensors
    example: str | None = optional(length=(1, EXAMPLE_CHARS))  # the training text's start

    def weight_shapes(self) -> Shapes:
        m, v = self.model, len(self.vocabulary)
        shapes = {"embedding.weight": (v, m.embedding_size)}
        shapes |= lstm_shapes(m.embedding_size, m.hidden_size, m.num_layers)
        shapes |= m.lstm.weight_shapes(m.hidden_size, m.num_layers)
        return shapes | {"head.weight": (v, m.hidden_size), "head.bias": (v,)}

    def check_json(self, file: str, where: str) -> None:
        if len(set(self.vocabulary)) != len(self.vocabulary):
            twice = next(ch for ch in self.vocabulary if self.vocabulary.count(ch) > 1)
            raise CheckpointError(
                f"{file}: {join(where, 'vocabulary')} must hold each character once; "
                f"{twice!r} appears {self.vocabulary.count(twice)} times"
            )
        self._check_digest(file, where)
        unknown = sorted(set(self.example or "") - set(self.vocabulary))
        if unknown:
            need = "characters of the vocabulary"
            raise invalid(file, join(where, "example"), need, "".join(unknown))


ModelSettings = ForecasterSettings | CharModelSettings
KINDS: dict[str, type[ForecasterSettings] | type[CharModelSettings]] = {
    "forecaster": ForecasterSettings,
    "char_lm": CharModelSettings,
}


def from_json(document: Any, file: str | Path = "settings.json") -> ModelSettings:
    """The settings of whichever kind ``document`` (a parsed ``settings.json``) holds."""
    body = checkpoint.settings_body(document, file)
    if "kind" not in body:
        raise CheckpointError(f"{file}: kind is missing; expected {_kinds()}")
    if not isinstance(body["kind"], str) or body["kind"] not in KINDS:
        raise invalid(str(file), "kind", _kinds(), body["kind"])
    return KINDS[body["kind"]].from_json(document, file)


def _kinds() -> str:
    return " or ".join(map(json.dumps, KINDS))


def read_settings(path: str | Path) -> tuple[ModelSettings, Path]:
    """The checked settings of the model directory ``path`` (or of a file in it) and the
    directory; the weights file's shapes are checked against them too."""
    directory = checkpoint.model_dir(path)
    settings = from_json(checkpoint.load_settings(directory), directory / checkpoint.SETTINGS_FILE)
    weights = directory / checkpoint.MODEL_FILE
    checkpoint.check_shapes(weights, checkpoint.read_shapes(weights), settings.weight_shapes())
    return settings, directory
