"""Keras 3 LSTM weights in and out, read and written with h5py (no TensorFlow, no Keras).

Keras keeps per layer a ``kernel`` (I, 4H), a ``recurrent_kernel`` (H, 4H) and one ``bias``
(4H,), gates in the order i, f, c, o (torch's i, f, g, o), batch-major input. So
``weight_ih = kernel.T``, ``weight_hh = recurrent_kernel.T``, ``bias_ih = bias`` and
``bias_hh = 0``; writing back stores ``bias_ih + bias_hh``.

The h5 layout (Keras 3 ``saving_lib``: ``H5IOStore`` and ``H5Entry``; a layer in a model's
``layers`` list is stored under its snake-cased class name, numbered per class from the
second on, its own variables in ``vars/0, 1, ...`` in creation order)::

    vars/                                          the model's own (none)
    layers/lstm/vars/                              the RNN layer's own (none)
    layers/lstm/cell/vars/0, 1, 2                  kernel, recurrent_kernel, bias
    layers/lstm_1/cell/vars/0, 1, 2                the second LSTM layer
    layers/bidirectional/forward_layer/cell/vars/0, 1, 2
    layers/bidirectional/backward_layer/cell/vars/0, 1, 2

A ``.weights.h5`` file is that file; a ``.keras`` file is a zip of ``config.json``,
``metadata.json`` and ``model.weights.h5``. From a ``.keras`` file the layers' settings are
checked (activations, ``go_backwards``, ``merge_mode``); a bare ``.weights.h5`` holds none, so
its LSTMs are assumed to use Keras' defaults. Other layers (a Dense head) are not imported,
Dropout between LSTM layers is an inference no-op.
"""

from __future__ import annotations

import io
import json
import os
import re
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from clearlstm.files import write_atomically
from clearlstm.interop._common import (
    MAX_FILE_BYTES,
    LayerSpec,
    LSTMChain,
    build,
    check_size,
    require,
    torch_layers,
)
from clearlstm.nn.lstm import LSTM

__all__ = ["export_keras_weights", "import_keras"]

_SOURCE = "clearlstm.interop.keras"
_CELL = "cell/vars"
_SIDES = ("forward_layer", "backward_layer")
_NAMES = re.compile(r"(lstm|bidirectional)(?:_(\d+))?")


def import_keras(path: str | os.PathLike, *, max_bytes: int = MAX_FILE_BYTES) -> LSTM | LSTMChain:
    """A clearlstm.LSTM (batch_first, eval mode) with the LSTM layers of a Keras 3
    ``.keras`` or ``.weights.h5`` file; an LSTMChain when the layers differ in size.

    Refused with NotImplementedError: ``activation`` other than tanh, ``recurrent_activation``
    other than sigmoid, ``go_backwards=True``, a Bidirectional ``merge_mode`` other than concat.
    """
    h5py = require("h5py")
    path = check_size(path, max_bytes)
    source = f"{_SOURCE}.import_keras({str(path)!r})"
    config = None
    if path.suffix == ".keras":
        config, data = _read_archive(path, source, max_bytes)
        handle = h5py.File(io.BytesIO(data), "r")
    else:
        try:
            handle = h5py.File(path, "r")
        except OSError as error:
            raise ValueError(f"{source}: not an HDF5 file ({error})") from None
    with handle:
        layers_group = _child(h5py, handle, "layers", "group", source)
        entries = _from_config(config, source) if config else _from_names(layers_group, source)
        layers = [_layer(h5py, layers_group, name, settings, source) for name, settings in entries]
    double = layers[0].directions[0]["weight_ih"].dtype == np.float64
    return build(source, layers, batch_first=True, dtype=torch.float64 if double else torch.float32)


def export_keras_weights(model: LSTM | nn.LSTM, path: str | os.PathLike) -> Path:
    """Write ``model``'s weights as a Keras 3 ``.weights.h5`` file (the layout above) for a
    Keras model of the same LSTM layers; returns the path. ``proj_size`` is refused."""
    h5py = require("h5py")
    source = f"{_SOURCE}.export_keras_weights"
    if not str(path).endswith(".weights.h5"):
        raise ValueError(f"{source}: path must end with .weights.h5 (Keras 3); got {str(path)!r}")
    layers, _ = torch_layers(model, source)
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as handle:
        handle.create_group("vars")
        kind = "bidirectional" if model.bidirectional else "lstm"
        for k, spec in enumerate(layers):
            group = handle.create_group(f"layers/{kind}" + (f"_{k}" if k else ""))
            group.create_group("vars")
            sides = [group.create_group(side) for side in _SIDES] if spec.bidirectional else [group]
            for side, weights in zip(sides, spec.directions, strict=True):
                if spec.bidirectional:
                    side.create_group("vars")
                side.create_group("cell").create_group("vars")
                cell = side[_CELL]
                cell["0"] = weights["weight_ih"].T
                cell["1"] = weights["weight_hh"].T
                if "bias_ih" in weights:
                    cell["2"] = weights["bias_ih"] + weights["bias_hh"]
    return write_atomically(path, buffer.getvalue())


def _read_archive(path: Path, source: str, max_bytes: int) -> tuple[dict, bytes]:
    """``config.json`` and ``model.weights.h5`` of a .keras zip, sizes checked first."""
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise ValueError(
            f"{source}: a .keras file must be a zip archive; this one is not"
        ) from None
    with archive:
        sizes = {info.filename: info.file_size for info in archive.infolist()}
        for name, limit in (("config.json", 64 * 1024**2), ("model.weights.h5", max_bytes)):
            if name not in sizes:
                raise ValueError(f"{source}: the archive holds no {name}; found {sorted(sizes)}")
            if sizes[name] > limit:
                raise ValueError(f"{source}: {name} is {sizes[name]} bytes; the limit is {limit}")
        try:
            config = json.loads(archive.read("config.json"))
        except ValueError as error:
            raise ValueError(f"{source}: config.json is not JSON ({error})") from None
        return config, archive.read("model.weights.h5")


def _from_config(config: dict, source: str) -> list[tuple[str, dict]]:
    """(h5 group name, layer settings) of each LSTM layer, in model order."""
    layers = (config.get("config") or {}).get("layers") if isinstance(config, dict) else None
    if not isinstance(layers, list):
        raise ValueError(f"{source}: config.json has no model layers list (config.layers)")
    counts = {"lstm": 0, "bidirectional": 0}
    found, ended, classes = [], False, []
    for layer in layers:
        kind = layer.get("class_name") if isinstance(layer, dict) else None
        classes.append(kind)
        settings = layer.get("config") or {}
        if kind in ("LSTM", "Bidirectional"):
            if ended:
                raise ValueError(
                    f"{source}: the LSTM layers must follow one another (Dropout between is "
                    f"fine); the model's layers are {classes}"
                )
            name = kind.lower()
            group = name + (f"_{counts[name]}" if counts[name] else "")
            counts[name] += 1
            found.append((group, settings))
        elif found and kind != "Dropout":
            ended = True
    if not found:
        raise ValueError(f"{source}: the model holds no LSTM layer; its layers are {classes}")
    return found


def _from_names(layers_group, source: str) -> list[tuple[str, dict]]:
    """The LSTM groups of a bare weights file, by their number (settings unknown)."""
    matches = [
        (m.group(1), int(m.group(2) or 0), m.group(0))
        for m in map(_NAMES.fullmatch, layers_group)
        if m
    ]
    kinds = {kind for kind, _, _ in matches}
    if not matches:
        raise ValueError(
            f"{source}: no LSTM layer (layers/lstm, layers/bidirectional) in the file; found "
            f"{sorted(layers_group)}"
        )
    if len(kinds) > 1:
        raise ValueError(
            f"{source}: the file mixes LSTM and Bidirectional layers, whose order a weights "
            "file does not record; import the .keras file instead"
        )
    return [(name, {}) for _, _, name in sorted(matches)]


def _layer(h5py, layers_group, name: str, settings: dict, source: str) -> LayerSpec:
    where = f"{source}: layer {name!r}"
    group = _child(h5py, layers_group, name, "group", where)
    variants: dict[str, str] = {}
    if name.startswith("bidirectional"):
        merge = settings.get("merge_mode", "concat")
        if merge != "concat":
            variants["merge_mode"] = f"merge_mode={merge!r}"
        inner = [settings.get("layer") or {}, settings.get("backward_layer") or {}]
        for cell in inner:
            _check_settings(cell.get("config") or {}, variants, backward_ok=cell is inner[1])
        sides = [_child(h5py, group, side, "group", where) for side in _SIDES]
    else:
        _check_settings(settings, variants, backward_ok=False)
        sides = [group]
    directions = [_cell(h5py, side, where) for side in sides]
    units = settings.get("units") or (settings.get("layer") or {}).get("config", {}).get("units")
    hidden = directions[0]["weight_hh"].shape[1]
    input_size = directions[0]["weight_ih"].shape[1]
    for weights in directions:
        if weights["weight_ih"].shape[1] != input_size or weights["weight_hh"].shape[1] != hidden:
            raise ValueError(f"{where}: the two directions differ in size")
    if units is not None and units != hidden:
        raise ValueError(f"{where}: config says units={units}; the weights have {hidden}")
    return LayerSpec(input_size, hidden, directions, variants)


def _check_settings(settings: dict, variants: dict, *, backward_ok: bool) -> None:
    if settings.get("activation", "tanh") != "tanh":
        variants["activations"] = f"activation={settings['activation']!r}"
    if settings.get("recurrent_activation", "sigmoid") != "sigmoid":
        variants["activations"] = f"recurrent_activation={settings['recurrent_activation']!r}"
    if settings.get("go_backwards") and not backward_ok:
        variants["reverse"] = "go_backwards=True"


def _cell(h5py, group, where: str) -> dict[str, np.ndarray]:
    """One direction's weights in torch's layout, every shape checked before reading."""
    cell = _child(h5py, _child(h5py, group, "cell", "group", where), "vars", "group", where)
    names = sorted(cell)
    if names not in (["0", "1"], ["0", "1", "2"]):
        raise ValueError(
            f"{where}: {cell.name} must hold variables 0, 1 and optionally 2 (kernel, "
            f"recurrent_kernel, bias); found {names}"
        )
    shapes = {n: _child(h5py, cell, n, "dataset", where).shape for n in names}
    kernel, recurrent = shapes["0"], shapes["1"]
    if len(recurrent) != 2 or recurrent[0] < 1 or recurrent[1] != 4 * recurrent[0]:
        raise ValueError(f"{where}: recurrent_kernel must be (H, 4H); got {recurrent}")
    four_h = recurrent[1]
    if len(kernel) != 2 or kernel[0] < 1 or kernel[1] != four_h:
        raise ValueError(f"{where}: kernel must be (input size, {four_h}); got {kernel}")
    if "2" in shapes and shapes["2"] != (four_h,):
        raise ValueError(f"{where}: bias must be ({four_h},); got {shapes['2']}")
    arrays = {n: _read(cell[n], where) for n in names}
    weights = {"weight_ih": arrays["0"].T.copy(), "weight_hh": arrays["1"].T.copy()}
    if "2" in arrays:
        weights["bias_ih"] = arrays["2"]
        weights["bias_hh"] = np.zeros_like(arrays["2"])
    return weights


def _read(dataset, where: str) -> np.ndarray:
    if dataset.dtype not in (np.float16, np.float32, np.float64):
        raise ValueError(f"{where}: {dataset.name} must be floating point; got {dataset.dtype}")
    array = dataset[()]
    return array.astype(np.float32) if array.dtype == np.float16 else array


def _child(h5py, group, name: str, kind: str, where: str):
    """``group[name]`` if it is a hard link to a ``kind`` stored inside this file."""
    link = group.get(name, getlink=True)
    if link is None:
        raise ValueError(f"{where}: {group.name.rstrip('/')}/{name} is missing")
    if not isinstance(link, h5py.HardLink):
        raise ValueError(f"{where}: {name} is a {type(link).__name__}; only plain entries are read")
    item = group[name]
    expected = h5py.Group if kind == "group" else h5py.Dataset
    if not isinstance(item, expected):
        raise ValueError(f"{where}: {item.name} must be a {kind}")
    if kind == "dataset" and (item.is_virtual or item.external):
        raise ValueError(f"{where}: {item.name} keeps its data outside the file; refused")
    return item
