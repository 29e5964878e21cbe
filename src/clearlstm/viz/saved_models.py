"""Saved models (``clearlstm train --out DIR``) opened for looking inside, and a folder of them.

Files are read through :mod:`clearlstm.train.checkpoint` (safetensors and JSON, no pickle), so
opening a model from someone else cannot run code. A :class:`SavedModel` knows how its LSTM
reads a sequence: a forecaster's rows are scaled with the training scaler and shown to the
LSTM relative to their level (as :meth:`Forecaster.features` does); a text model's characters
go through its embedding. :class:`ModelFolder` lists the models of one folder and opens them
by name without ever reaching outside that folder (the explorer's ``--models DIR``).
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from torch import nn

from clearlstm.errors import CheckpointError, ModelNotFound
from clearlstm.nn.lstm import LSTM
from clearlstm.tasks.settings import (
    EXAMPLE_CHARS,
    CharModelSettings,
    ModelSettings,
    read_settings,
)
from clearlstm.train import checkpoint
from clearlstm.viz.subject import Subject, check_numbers

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


@dataclass(frozen=True)
class SavedModel:
    """A trained model from a model directory, with the LSTM inside it."""

    name: str
    directory: Path
    settings: ModelSettings
    module: nn.Module  # Forecaster or CharModel, in eval mode
    lstm: LSTM

    @property
    def reads_text(self) -> bool:
        return isinstance(self.settings, CharModelSettings)

    @property
    def columns(self) -> list[str]:
        """The columns a forecaster reads, targets first (empty for a text model)."""
        if isinstance(self.settings, CharModelSettings):
            return []
        return list(self.settings.data.columns)

    @cached_property
    def example(self) -> list[list[float]] | str | None:
        """A sequence to start from: the last window of the training series, or the start of
        the training text, as the settings record them (older folders: from a bundled
        dataset, or a data file inside the model folder); None when there is none. A data
        path elsewhere is never opened: a model folder may come from someone else."""
        settings = self.settings
        if isinstance(settings, CharModelSettings):
            return settings.example or self._text_start()
        from clearlstm.tasks.forecasting import last_window

        try:
            return last_window(settings, self.directory).tolist()
        except (ValueError, LookupError, OSError):
            return None

    def _text_start(self) -> str | None:
        from clearlstm.tasks.datasets import get_dataset
        from clearlstm.tasks.text import decode_text, read_text

        data = self.settings.data
        try:
            if data.dataset:
                return read_text(get_dataset(data.dataset).path)[:EXAMPLE_CHARS]
            if data.text is None or checkpoint.inside(self.directory, data.text) is None:
                return None
            raw = checkpoint.read_regular_file(self.directory, data.text, checkpoint.MAX_DATA_BYTES)
            return decode_text(raw, Path(data.text))[:EXAMPLE_CHARS]
        except (ValueError, LookupError, OSError):
            return None

    def describe(self) -> str:
        lstm = self.lstm
        shape = f"{lstm.num_layers} layer(s) × {lstm.hidden_size} units"
        if isinstance(self.settings, CharModelSettings):
            return f"text model, {shape}, {len(self.settings.vocabulary)} characters"
        return f"forecaster of {', '.join(self.columns)}, {shape}"

    def subject_from_numbers(self, values: list | np.ndarray, source: str = "sequence") -> Subject:
        """``values (T, C)`` in the data's units (or ``(T,)`` for one column)."""
        if isinstance(self.settings, CharModelSettings):
            raise ValueError(f"model {self.name!r} reads text; give it text, not numbers")
        rows = check_numbers(values, source)
        columns = self.columns
        if rows.shape[1] != len(columns):
            raise ValueError(
                f"{source}: model {self.name!r} reads {len(columns)} column(s) "
                f"({', '.join(columns)}) per step; got {rows.shape[1]}"
            )
        scaled = self.settings.data.scaler.to_scaler().transform(rows)
        x = torch.as_tensor(scaled, dtype=self.lstm.weight_ih_l0.dtype)[None]  # (1, T, C)
        features = getattr(self.module, "features", lambda v: v)
        with torch.no_grad():
            inputs = features(x)[0][:, None, :]  # (T, 1, C) as the LSTM reads them
        normalise = getattr(self.module, "normalise", "last")
        level = {"mean": "mean", "none": "zero"}.get(normalise, "last row")
        notes = [
            "The LSTM reads each row scaled with the training scaler, the targets relative to "
            f"the sequence's {level} (the model's own input features)."
        ]
        return Subject(f"model {self.name}", self.lstm, inputs, rows, columns, notes=notes)

    def subject_from_csv(self, path: str | Path) -> Subject:
        """The model's columns read from a CSV file."""
        from clearlstm.tasks.series import read_series

        if isinstance(self.settings, CharModelSettings):
            raise ValueError(f"model {self.name!r} reads text; give it text, not a CSV file")
        data = self.settings.data
        series = read_series(
            path, list(data.targets), list(data.covariates), data.time_column, None,
            list(data.future_covariates),
        )  # fmt: skip
        subject = self.subject_from_numbers(series.values, str(path))
        return subject if series.time is None else _with_labels(subject, series.time)

    def subject_from_text(self, text: str, source: str = "text") -> Subject:
        if not isinstance(self.settings, CharModelSettings):
            raise ValueError(f"model {self.name!r} reads numbers; give it a sequence, not text")
        from clearlstm.tasks.text import encode

        if not text:
            raise ValueError(f"{source}: the text is empty")
        ids = encode(text, self.settings.vocabulary)  # (T,)
        with torch.no_grad():
            inputs = self.module.embedding(ids)[:, None, :]  # (T, 1, E)
        shown = inputs[:, 0, :].double().numpy()
        columns = [f"embedding[{k}]" for k in range(shown.shape[1])]
        check_numbers(shown, source)
        return Subject(
            f"model {self.name}",
            self.lstm,
            inputs,
            shown,
            columns,
            step_labels=list(text),
            text=text,
        )


def _with_labels(subject: Subject, labels: list[str]) -> Subject:
    from dataclasses import replace

    return replace(subject, step_labels=labels)


def _load_forecaster(directory: Path) -> tuple[nn.Module, ModelSettings]:
    from clearlstm.tasks.forecasting import load_forecaster

    model, settings, _ = load_forecaster(directory)
    return model, settings


def _load_text_model(directory: Path) -> tuple[nn.Module, ModelSettings]:
    from clearlstm.tasks.text import load_char_model

    return load_char_model(directory)


# The loading function of each kind of model `clearlstm train` writes; a new kind plugs in here.
LOADERS: dict[str, Callable[[Path], tuple[nn.Module, ModelSettings]]] = {
    "forecaster": _load_forecaster,
    "char_lm": _load_text_model,
}


def load_saved_model(path: str | Path, name: str | None = None) -> SavedModel:
    """Open the model directory ``path`` (or a file inside it) with its kind's loader."""
    settings, directory = read_settings(path)
    kind = settings.kind
    if kind not in LOADERS:
        raise CheckpointError(
            f"{directory} holds a model of kind {kind!r}; clearlstm can look inside "
            f"{', '.join(LOADERS)} models"
        )
    module, settings = LOADERS[kind](directory)
    return SavedModel(name or directory.name, directory, settings, module, module.lstm)


class ModelFolder:
    """The model directories directly inside ``root``, opened by name and kept in memory.

    A name is one path component (letters, digits, ``.``, ``_``, ``-``); after symlinks are
    resolved the model must still lie inside ``root``. Loaded models are cached and reloaded
    when their files change; the cache is shared by the server's threads.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise FileNotFoundError(f"models folder {root} does not exist or is not a folder")
        self._cache: dict[str, tuple[float, SavedModel]] = {}
        self._lock = threading.Lock()

    def names(self) -> list[str]:
        """The names of the model folders, sorted. An entry that cannot be followed (a loop of
        links, no permission) or leads outside ``root`` is no model and is left out, so one
        bad entry never hides the others."""
        found = []
        try:
            entries = sorted(self.root.iterdir())
        except OSError as error:
            raise CheckpointError(f"models folder {self.root}: {error.strerror or error}") from None
        for entry in entries:
            try:
                named = NAME.fullmatch(entry.name) and self._inside(entry)
                if named and (entry / checkpoint.SETTINGS_FILE).is_file():
                    found.append(entry.name)
            except OSError:
                continue
        return found

    def _inside(self, path: Path) -> bool:
        """``path`` lies inside ``root`` once links are resolved (False for a loop of links)."""
        try:
            resolved = path.resolve()
        except (OSError, RuntimeError):  # RuntimeError: a loop of links (Python < 3.13)
            return False
        return resolved.parent == self.root or self.root in resolved.parents

    def directory(self, name: str) -> Path:
        """The folder of model ``name``; :class:`ModelNotFound` for anything else."""
        if not isinstance(name, str) or not NAME.fullmatch(name) or name in (".", ".."):
            raise ModelNotFound(
                f"{name!r} is not a model name: use one folder name from the models folder "
                "(letters, digits, '.', '_', '-'; no slashes)"
            )
        path = self.root / name
        if not self._inside(path):
            raise ModelNotFound(f"model {name!r} lies outside the models folder")
        if not (path / checkpoint.SETTINGS_FILE).is_file():
            known = ", ".join(self.names()) or "none"
            raise ModelNotFound(f"no model named {name!r}; the models folder holds: {known}")
        return path

    def open(self, name: str) -> SavedModel:
        """Model ``name``, loaded again when its files change; a broken model raises
        :class:`CheckpointError` (or :class:`ModelNotFound`) for this model alone."""
        path = self.directory(name)
        with self._lock:  # one load per model, even when requests arrive together
            stamp = _stamp(path)
            cached = self._cache.get(name)
            if cached is None or cached[0] != stamp:
                self._cache[name] = (stamp, load_saved_model(path, name))
            return self._cache[name][1]


def _stamp(path: Path) -> tuple:
    """What changes when a model's files are replaced (a swapped-in folder: new inodes)."""
    try:
        found = [os.stat(path / f) for f in (checkpoint.SETTINGS_FILE, checkpoint.MODEL_FILE)]
    except OSError as error:
        raise CheckpointError(f"{path}: {error.strerror or error}") from None
    return tuple((s.st_ino, s.st_mtime_ns, s.st_size) for s in found)
