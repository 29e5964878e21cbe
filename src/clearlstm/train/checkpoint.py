"""Saving and loading trained models and training state: safetensors and JSON, no pickle.

A model directory (``clearlstm train --out DIR``) holds:

- ``model.safetensors``: the trained weights; its metadata says ``format: clearlstm``.
- ``settings.json``: the model and data settings (kind, sizes, columns, scaler, window,
  vocabulary, the weights' SHA-256, ...), enough to rebuild the model and use it. Their
  fields are the frozen dataclasses of :mod:`clearlstm.tasks.settings`, checked on loading by
  :mod:`clearlstm.train.codec`; this module checks the file's format and version.
- ``training.safetensors``: the state of the run after its last finished epoch (weights,
  optimizer, schedule, random-number state, best-so-far), for ``--resume``. Its JSON part
  travels in the safetensors metadata, so the whole state is one file and one atomic write.

Weights and settings are written as one unit (:func:`clearlstm.files.replace_files_together`),
under :func:`clearlstm.train.lock.training_lock`. A folder may come from someone else: every
file is read by :func:`read_regular_file` (regular files inside the folder, size-capped before
reading), with safetensors and :mod:`json` only, so opening it cannot run code (no pickle, no
``torch.load``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import stat
import struct
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save
from torch import Tensor

from clearlstm.errors import CheckpointError
from clearlstm.files import replace_files_together, write_atomically

FORMAT = "clearlstm"
FORMAT_VERSION = "1"
READABLE_VERSIONS = ("1",)  # settings.json versions this code reads
MAX_SETTINGS_BYTES = 16 * 2**20  # a vocabulary of 100,000 characters is about 1 MB
MAX_WEIGHTS_BYTES = 2 * 2**30
MAX_TRAINING_BYTES = 4 * 2**30  # weights, best weights and Adam's two moments
MAX_HEADER_BYTES = 100_000_000  # safetensors' own limit
MAX_DATA_BYTES = 2 * 2**30  # a data file inside the model folder
MODEL_FILE = "model.safetensors"
SETTINGS_FILE = "settings.json"
TRAINING_FILE = "training.safetensors"
FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")  # weights
STATE_DTYPES = ("U8", "I64")  # also in a training state: random-number state, Adam's step
_ITEM_BYTES = {"F16": 2, "BF16": 2, "F32": 4, "F64": 8, "U8": 1, "I64": 8}
_KINDS = {stat.S_ISDIR: "a folder", stat.S_ISFIFO: "a FIFO (named pipe)"}
_KINDS |= {stat.S_ISCHR: "a device", stat.S_ISBLK: "a device", stat.S_ISSOCK: "a socket"}


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` (creating its folder) so a reader sees the old or the new file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, data)


def _resolved(folder: str | Path, name: str | Path) -> tuple[Path, Path]:
    try:
        root = Path(folder).resolve()
        return root, (root / name).resolve()
    except (OSError, RuntimeError) as error:  # RuntimeError: a loop of links
        raise CheckpointError(f"{Path(folder) / name} cannot be resolved: {error}") from None


def inside(folder: str | Path, name: str | Path) -> Path | None:
    """``folder / name`` with links resolved, or None when that lies outside ``folder``."""
    root, path = _resolved(folder, name)
    return path if root in path.parents else None


@contextlib.contextmanager
def _open_regular(folder: str | Path, name: str | Path, max_bytes: int) -> Iterator[tuple]:
    """``(fd, size)`` of the regular file ``name`` inside ``folder``, or a CheckpointError."""
    shown = Path(folder) / name
    root, path = _resolved(folder, name)
    if root not in path.parents:
        raise CheckpointError(
            f"{shown} leads to {path}, outside the model folder; a model's files must lie "
            "inside its folder"
        )
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)  # O_NONBLOCK: opening a FIFO returns at once
    except FileNotFoundError:
        raise CheckpointError(f"{shown}: no such file") from None
    except OSError as error:
        raise CheckpointError(f"{shown} cannot be opened: {error.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = next((k for test, k in _KINDS.items() if test(info.st_mode)), "not a file")
            raise CheckpointError(f"{shown} is {kind}; expected a regular file")
        if info.st_size > max_bytes:  # checked before a byte is read
            raise CheckpointError(
                f"{shown} has {info.st_size:,} bytes; clearlstm reads at most {max_bytes:,} "
                "here: it is not a file clearlstm wrote"
            )
        yield fd, info.st_size
    finally:
        os.close(fd)


def _read_exactly(fd: int, size: int, shown: Path) -> bytes:
    data = os.read(fd, size)  # one read below 2 GiB
    while len(data) < size and (more := os.read(fd, size - len(data))):
        data += more
    if len(data) < size:
        raise CheckpointError(f"{shown} was cut short while it was read; try again")
    return data


def read_regular_file(folder: str | Path, name: str | Path, max_bytes: int) -> bytes:
    """The bytes of ``name`` in ``folder``: a regular file, inside the folder once links are
    resolved, of at most ``max_bytes`` (checked before reading). Every reader of a model
    folder goes through here, so a crafted folder cannot make clearlstm read outside it,
    read without end (``/dev/zero``) or wait for ever (a FIFO)."""
    with _open_regular(folder, name, max_bytes) as (fd, size):
        return _read_exactly(fd, size, Path(folder) / name)


def check_regular_file(folder: str | Path, name: str | Path, max_bytes: int) -> Path:
    """The resolved path of ``name``, where :func:`read_regular_file` would accept it."""
    with _open_regular(folder, name, max_bytes):
        return _resolved(folder, name)[1]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _unreadable(path: Path, size: int, why: str) -> CheckpointError:
    return CheckpointError(
        f"{path} ({size} bytes) is not a readable safetensors file: {why}. It may be "
        "truncated (an interrupted copy) or not a clearlstm model; copy it again or retrain"
    )


def _parse_header(
    head: bytes, size: int, path: Path, dtypes: tuple[str, ...] = FLOAT_DTYPES
) -> tuple[dict[str, tuple], dict[str, str]]:
    """Shapes and metadata from the start of a safetensors file of ``size`` bytes, checked:
    the header fits the file, each tensor's bytes lie inside it, dtypes are ``dtypes``."""
    if size < 8:
        raise _unreadable(path, size, "shorter than the 8-byte header length")
    (length,) = struct.unpack("<Q", head[:8])
    if length > min(MAX_HEADER_BYTES, size - 8):
        raise _unreadable(path, size, f"its header claims {length:,} bytes")
    try:
        header = json.loads(head[8 : 8 + length])
    except (ValueError, RecursionError) as error:
        raise _unreadable(path, size, f"its header is not JSON ({_why(error)})") from None
    if not isinstance(header, dict):
        raise _unreadable(path, size, "its header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise _unreadable(path, size, "its __metadata__ is not an object of strings")
    if metadata.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is a safetensors file, but not one clearlstm wrote (its metadata has no "
            "'format: clearlstm'); pass the --out directory of `clearlstm train`"
        )
    shapes, room = {}, size - 8 - length  # room: the bytes after the header
    for name, entry in header.items():
        ok = isinstance(entry, dict) and entry.get("dtype") in dtypes
        shape, offsets = (entry.get("shape"), entry.get("data_offsets")) if ok else (None, None)
        ok = ok and isinstance(shape, list) and all(_count(n) for n in shape)
        ok = ok and isinstance(offsets, list) and len(offsets) == 2 and all(map(_count, offsets))
        if ok:
            ok = offsets[1] - offsets[0] == math.prod(shape) * _ITEM_BYTES[entry["dtype"]]
        if not ok or not offsets[0] <= offsets[1] <= room:
            raise _unreadable(path, size, f"tensor {name!r} has a bad entry {entry!r:.200}")
        shapes[name] = tuple(shape)
    return shapes, metadata


def _count(n: Any) -> bool:
    return type(n) is int and n >= 0


def _read_header(folder: Path, name: str) -> tuple[dict[str, tuple], dict[str, str]]:
    with _open_regular(folder, name, MAX_WEIGHTS_BYTES) as (fd, size):
        head = os.read(fd, 8)
        if len(head) == 8:
            (length,) = struct.unpack("<Q", head)
            if length <= min(MAX_HEADER_BYTES, size - 8):
                head += _read_exactly(fd, length, folder / name)
        return _parse_header(head, size, folder / name)


def read_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """The tensor shapes of a safetensors file, from its header only (no tensor is read)."""
    return _read_header(path.parent, path.name)[0]


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


def encode_weights(weights: dict[str, Tensor], metadata: dict[str, str] | None = None) -> bytes:
    """The bytes of ``model.safetensors`` (hash them for the settings' ``weights_sha256``)."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in weights.items()}
    data = save(tensors, metadata={"format": FORMAT, "version": FORMAT_VERSION, **(metadata or {})})
    return _sorted_metadata(data)


def _sorted_metadata(data: bytes) -> bytes:
    """``data`` with its header's metadata in key order. safetensors writes the metadata from a
    hash map, in an order that changes from call to call, so the same weights would make
    files of other bytes (and another ``weights_sha256``); the header keeps its length."""
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    if len(text) > length:  # not the layout this was written for: keep safetensors' bytes
        return data
    return data[:8] + text.ljust(length) + data[8 + length :]


def save_model(
    directory: Path, weights: dict[str, Tensor] | bytes, settings: dict[str, Any]
) -> None:
    """Write ``model.safetensors`` and ``settings.json`` as one unit: after a crash at any
    moment the folder holds the old pair or the new one."""
    data = weights if isinstance(weights, bytes) else encode_weights(weights)
    document = {"format": FORMAT, "version": FORMAT_VERSION, **settings}
    try:  # strict JSON: a number that does not exist is null, never NaN or Infinity
        text = (json.dumps(document, indent=2, allow_nan=False) + "\n").encode()
    except ValueError as error:
        raise CheckpointError(
            f"{directory / SETTINGS_FILE}: a setting is not a finite number ({error}); "
            "nothing was written"
        ) from None
    for name, content, most in ((MODEL_FILE, data, MAX_WEIGHTS_BYTES),
                                (SETTINGS_FILE, text, MAX_SETTINGS_BYTES)):  # fmt: skip
        if len(content) > most:
            raise CheckpointError(
                f"{directory / name} would have {len(content):,} bytes, more than the "
                f"{most:,} clearlstm reads back; train a smaller model"
            )
    replace_files_together(directory, {MODEL_FILE: data, SETTINGS_FILE: text})


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    for key in keys:
        if keys.count(key) > 1:
            raise CheckpointError(f"the key {key!r} appears {keys.count(key)} times in one object")
    return dict(pairs)


_AGAIN = "it may be truncated or not a clearlstm file: retrain or copy it again"


def _why(error: Exception) -> str:
    """What is wrong with a JSON text, in the file's terms rather than Python's."""
    if isinstance(error, RecursionError):
        return "its lists or objects are nested too deeply"
    if "integer string conversion" in str(error):  # Python's int_max_str_digits limit
        return f"it holds an integer of more than {sys.get_int_max_str_digits()} digits"
    return str(error)


def load_settings(directory: Path) -> dict[str, Any]:
    """The parsed ``settings.json`` of a model directory, checked to be clearlstm's (its
    fields are checked by the settings classes of :mod:`clearlstm.tasks.settings`)."""
    path = directory / SETTINGS_FILE
    data = read_regular_file(directory, SETTINGS_FILE, MAX_SETTINGS_BYTES)
    try:
        settings = json.loads(data.decode("utf-8"), object_pairs_hook=_unique_keys)
    except CheckpointError as error:
        raise CheckpointError(f"{path}: {error}") from None
    except (ValueError, RecursionError) as error:  # JSON, UTF-8, a 5000-digit integer
        raise CheckpointError(f"{path} is not valid JSON ({_why(error)}); {_AGAIN}") from None
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
    directory: Path,
    expected: Mapping[str, Tensor | Sequence[int]],
    digest: str | None = None,
) -> dict[str, Tensor]:
    """The weights of a model directory, checked against the shapes the settings give and,
    when the settings record one (folders written before it do not), their SHA-256.

    The file is read once; its header's shapes and its hash are checked before any tensor is
    made from those bytes.
    """
    path = directory / MODEL_FILE
    want = {k: tuple(v.shape if isinstance(v, Tensor) else v) for k, v in expected.items()}
    data = read_regular_file(directory, MODEL_FILE, MAX_WEIGHTS_BYTES)
    check_shapes(path, _parse_header(data, len(data), path)[0], want)
    if digest is not None and sha256(data) != digest:
        raise CheckpointError(
            f"{path}: its SHA-256 is {sha256(data)}, but {SETTINGS_FILE} records {digest}: "
            "the weights were changed, truncated or replaced after training; copy the model "
            "folder again or retrain"
        )
    tensors = _tensors(data, path)
    check_shapes(path, {k: tuple(v.shape) for k, v in tensors.items()}, want)
    return tensors


def _tensors(data: bytes, path: Path) -> dict[str, Tensor]:
    try:
        return load(data)
    except (SafetensorError, ValueError, RuntimeError, TypeError, OverflowError) as error:
        raise _unreadable(path, len(data), str(error)) from None


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
    data = encode_weights(tensors, {"training_state": json.dumps(state)})
    atomic_write(directory / TRAINING_FILE, data)


def load_training_state(directory: Path) -> tuple[dict[str, Tensor], dict]:
    """What :func:`save_training_state` wrote."""
    path = directory / TRAINING_FILE
    if not path.exists():
        raise CheckpointError(
            f"--resume: {directory} has no {TRAINING_FILE}, so there is no run to continue; "
            "start without --resume"
        )
    data = read_regular_file(directory, TRAINING_FILE, MAX_TRAINING_BYTES)
    _, metadata = _parse_header(data, len(data), path, FLOAT_DTYPES + STATE_DTYPES)
    tensors = _tensors(data, path)
    try:
        state = json.loads(metadata["training_state"])
    except (KeyError, ValueError, RecursionError):
        state = None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} is a clearlstm file but holds no training state")
    return tensors, state


def rng_tensors() -> dict[str, Tensor]:
    """The global torch random-number state, as a tensor to save."""
    return {"rng/torch": torch.get_rng_state()}


def restore_rng(tensors: dict[str, Tensor]) -> None:
    torch.set_rng_state(tensors["rng/torch"])
