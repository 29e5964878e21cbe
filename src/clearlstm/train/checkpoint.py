"""Saving and loading trained models and training state: safetensors and JSON, no pickle.

A model directory (``clearlstm train --out DIR``) holds:

- ``model.safetensors``: the trained weights; its metadata says ``format: clearlstm``.
- ``settings.json``: the model and data settings (kind, sizes, columns, scaler, window,
  vocabulary, ...), enough to rebuild the model and use it. Their fields are the frozen
  dataclasses of :mod:`clearlstm.tasks.settings`, checked on loading by
  :mod:`clearlstm.train.codec`; this module checks the file's format and version.
- ``training.safetensors``: the state of the run after its last finished epoch (weights,
  optimizer, schedule, random-number state, best-so-far), for ``--resume``. Its JSON part
  travels in the safetensors metadata, so the whole state is one file and one atomic write.

Every file is written to a temporary file beside it and moved into place with
:func:`os.replace`, so a crash mid-save leaves the previous file intact. Loading reads
tensors with safetensors and settings with :mod:`json` only: opening a file from someone else
cannot run code (there is no pickle and no ``torch.load`` anywhere).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save
from torch import Tensor

from clearlstm.errors import CheckpointError
from clearlstm.files import write_atomically

FORMAT = "clearlstm"
FORMAT_VERSION = "1"
READABLE_VERSIONS = ("1",)  # settings.json versions this code reads
MAX_SETTINGS_BYTES = 64 * 2**20  # a vocabulary of a million characters is a few MB
MODEL_FILE = "model.safetensors"
SETTINGS_FILE = "settings.json"
TRAINING_FILE = "training.safetensors"
T = TypeVar("T")


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` (creating its folder) so a reader sees the old or the new file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, data)


def _tensor_bytes(tensors: dict[str, Tensor], metadata: dict[str, str]) -> bytes:
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    return save(tensors, metadata={"format": FORMAT, "version": FORMAT_VERSION, **metadata})


def _open(path: Path, read: Callable[[Any], T]) -> T:
    """``read(file)`` on a safetensors file that clearlstm wrote, with clear errors."""
    if not path.exists():
        raise CheckpointError(f"{path}: no such file")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            result = read(f) if metadata.get("format") == FORMAT else None
    except (SafetensorError, OSError, RuntimeError, ValueError) as error:
        size = path.stat().st_size
        raise CheckpointError(
            f"{path} ({size} bytes) is not a readable safetensors file: {error}. It may be "
            "truncated (an interrupted copy) or not a clearlstm model; copy it again or retrain"
        ) from None
    if metadata.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is a safetensors file, but not one clearlstm wrote (its metadata has no "
            "'format: clearlstm'); pass the --out directory of `clearlstm train`"
        )
    return result  # type: ignore[return-value]


def _read_tensors(path: Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Tensors and metadata of a safetensors file that clearlstm wrote."""

    def read(f: Any) -> tuple[dict[str, Tensor], dict[str, str]]:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()  # noqa: SIM118

    return _open(path, read)


def read_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """The tensor shapes of a safetensors file, from its header only (no tensor is read)."""
    return _open(path, lambda f: {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()})  # noqa: SIM118


def model_dir(path: str | Path) -> Path:
    """The model directory for ``--model PATH`` (a directory, or a file inside one)."""
    path = Path(path)
    directory = path.parent if path.is_file() else path
    if not directory.exists():
        raise CheckpointError(f"{directory}: no such model directory")
    for name in (MODEL_FILE, SETTINGS_FILE):
        if not (directory / name).exists():
            raise CheckpointError(
                f"{directory} has no {name}: it is not a clearlstm model directory; pass the "
                "--out directory of `clearlstm train`"
            )
    return directory


def save_model(directory: Path, weights: dict[str, Tensor], settings: dict[str, Any]) -> None:
    """Write ``model.safetensors`` and ``settings.json`` (the weights first)."""
    atomic_write(directory / MODEL_FILE, _tensor_bytes(weights, {}))
    document = {"format": FORMAT, "version": FORMAT_VERSION, **settings}
    atomic_write(directory / SETTINGS_FILE, (json.dumps(document, indent=2) + "\n").encode())


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    for key in keys:
        if keys.count(key) > 1:
            raise CheckpointError(f"the key {key!r} appears {keys.count(key)} times in one object")
    return dict(pairs)


def load_settings(directory: Path) -> dict[str, Any]:
    """The parsed ``settings.json`` of a model directory, checked to be clearlstm's (its
    fields are checked by the settings classes of :mod:`clearlstm.tasks.settings`)."""
    path = directory / SETTINGS_FILE
    size = path.stat().st_size
    if size > MAX_SETTINGS_BYTES:
        raise CheckpointError(
            f"{path} has {size:,} bytes; a clearlstm settings file has at most "
            f"{MAX_SETTINGS_BYTES:,}: it is not one clearlstm wrote"
        )
    try:
        settings = json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=_unique_keys)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as error:
        raise CheckpointError(
            f"{path} is not valid JSON ({error}); it may be truncated: retrain or copy it again"
        ) from None
    except CheckpointError as error:
        raise CheckpointError(f"{path}: {error}") from None
    if not isinstance(settings, dict) or settings.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a clearlstm settings file (no 'format: clearlstm')")
    return settings


def settings_body(document: dict[str, Any], file: str | Path) -> dict[str, Any]:
    """``document`` without its ``format`` and ``version``, once both are ones this code reads."""
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise CheckpointError(f"{file} is not a clearlstm settings file (no 'format: clearlstm')")
    version = document.get("version", "missing")
    if version not in READABLE_VERSIONS:
        raise CheckpointError(
            f"{file}: version must be {' or '.join(map(json.dumps, READABLE_VERSIONS))}; found "
            f"{json.dumps(version)}: the folder was written by another clearlstm; use that "
            "version, or retrain"
        )
    return {k: v for k, v in document.items() if k not in ("format", "version")}


def load_weights(
    directory: Path, expected: Mapping[str, Tensor | Sequence[int]]
) -> dict[str, Tensor]:
    """The weights of a model directory, checked against the shapes the settings give.

    The shapes are compared from the file's header first, so weights of another model are
    refused before any tensor is read.
    """
    path = directory / MODEL_FILE
    want = {k: tuple(v.shape if isinstance(v, Tensor) else v) for k, v in expected.items()}
    check_shapes(path, read_shapes(path), want)
    tensors, _ = _read_tensors(path)
    check_shapes(path, {k: tuple(v.shape) for k, v in tensors.items()}, want)
    return tensors


def check_shapes(
    path: Path, found: Mapping[str, tuple[int, ...]], expected: Mapping[str, tuple[int, ...]]
) -> None:
    """A clear error when tensors of shapes ``found`` do not fit a model needing ``expected``."""
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    if missing or extra:
        raise CheckpointError(
            f"{path} holds weights of another model: missing {missing or 'none'}, unexpected "
            f"{extra or 'none'}; it does not belong with the settings beside it"
        )
    for name, want in expected.items():
        if tuple(found[name]) != tuple(want):
            raise CheckpointError(
                f"{path}: weight {name!r} has shape {tuple(found[name])} but the "
                f"model in the settings needs {tuple(want)}: these weights come from a "
                "model of another shape (hidden size, layers, inputs or horizon)"
            )


def save_training_state(directory: Path, tensors: dict[str, Tensor], state: dict) -> None:
    """One atomic file: ``tensors`` plus the JSON-able ``state``."""
    data = _tensor_bytes(tensors, {"training_state": json.dumps(state)})
    atomic_write(directory / TRAINING_FILE, data)


def load_training_state(directory: Path) -> tuple[dict[str, Tensor], dict]:
    """What :func:`save_training_state` wrote."""
    path = directory / TRAINING_FILE
    if not path.exists():
        raise CheckpointError(
            f"--resume: {directory} has no {TRAINING_FILE}, so there is no run to continue; "
            "start without --resume"
        )
    tensors, metadata = _read_tensors(path)
    if "training_state" not in metadata:
        raise CheckpointError(f"{path} is a clearlstm file but holds no training state")
    return tensors, json.loads(metadata["training_state"])


def rng_tensors() -> dict[str, Tensor]:
    """The global torch random-number state, as a tensor to save."""
    return {"rng/torch": torch.get_rng_state()}


def restore_rng(tensors: dict[str, Tensor]) -> None:
    torch.set_rng_state(tensors["rng/torch"])
