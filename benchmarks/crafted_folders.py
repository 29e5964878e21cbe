"""Crafted model folders for :mod:`harden_counts`: every settings key set to bad values or
deleted, lying safetensors headers, files replaced by folders, FIFOs, ``/dev/zero`` and links
out of the folder or in a loop, data paths at secrets and FIFOs, sizes the weights do not hold.
Each is ``(label, edit)``, ``edit`` changing a copy of a trained model's folder."""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

Edit = tuple[str, Callable[[Path], None]]

BAD_VALUES = [None, True, -1, 0, 0.5, 10**12, "@huge@", math.inf, math.nan, "x" * 70, [], {}]


def key_paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, inner in value.items():
            found += key_paths(inner, (*prefix, key))
    elif isinstance(value, list):
        for index, inner in list(enumerate(value))[:2]:
            found += key_paths(inner, (*prefix, index))
    return found


def setting_edits(document: dict) -> list[tuple[str, Callable[[Path], None]]]:
    """Every key set to each bad value, or deleted: (label, edit of a folder)."""
    edits = []
    for place in key_paths(document):
        for value in [*BAD_VALUES, "delete"]:

            def edit(folder: Path, place: tuple = place, value: Any = value) -> None:
                path = folder / "settings.json"
                changed = json.loads(path.read_text())
                parent = changed
                for key in place[:-1]:
                    parent = parent[key]
                if value == "delete":
                    del parent[place[-1]]
                else:
                    parent[place[-1]] = value
                text = json.dumps(changed)
                path.write_text(text.replace('"@huge@"', "9" * 5000))

            edits.append((f"{'.'.join(map(str, place))} = {value!r:.20}", edit))
    return edits


def _rewrite(change: Callable[[bytes], bytes]) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        path = folder / "model.safetensors"
        path.write_bytes(change(path.read_bytes()))

    return edit


def _header(data: bytes, field: str, value: Any) -> bytes:
    """``data`` with ``field`` of its first tensor's header entry (or its metadata) set."""
    (n,) = struct.unpack("<Q", data[:8])
    parsed = json.loads(data[8 : 8 + n])
    if field == "__metadata__":
        parsed[field] = value
    else:
        parsed[sorted(k for k in parsed if k != "__metadata__")[0]][field] = value
    text = json.dumps(parsed).encode()
    return struct.pack("<Q", len(text)) + text + data[8 + n :]


def _flip(data: bytes, at: float) -> bytes:
    i = int(len(data) * at)
    return data[:i] + bytes([data[i] ^ 0x40]) + data[i + 1 :]


def weight_edits() -> list[tuple[str, Callable[[Path], None]]]:
    """Lying header lengths, truncations, flipped bits, wrong dtypes, shapes and offsets."""
    changes: list[tuple[str, Callable[[bytes], bytes]]] = []
    for n in (0, 7, 10**9, 2**64 - 1):
        changes.append((f"header length {n}", lambda d, n=n: struct.pack("<Q", n) + d[8:]))
    for cut in (0.0, 0.001, 0.1, 0.5, 0.9, 0.999):
        changes.append((f"truncated at {cut}", lambda d, c=cut: d[: int(len(d) * c)]))
    for at in (0.05, 0.3, 0.6, 0.99):
        changes.append((f"bit flipped at {at}", lambda d, a=at: _flip(d, a)))
    fields = [("dtype", v) for v in ("I32", "BOOL", "F64", "U8", "XX")]
    fields += [("shape", v) for v in ([], [2**40, 2**40], [-1], [1, 2, 3])]
    fields += [("data_offsets", v) for v in ([0, 2**40], [-4, 0], [0], [8, 4])]
    fields += [("__metadata__", {"format": "pt"})]
    for field, value in fields:
        changes.append((f"{field} {value}", lambda d, f=field, v=value: _header(d, f, v)))
    return [(label, _rewrite(change)) for label, change in changes]


def file_edits(outside: Path) -> list[tuple[str, Callable[[Path], None]]]:
    def make(name: str, kind: str) -> Callable[[Path], None]:
        def edit(folder: Path) -> None:
            path = folder / name
            (outside / name).write_bytes(path.read_bytes())
            path.unlink()
            if kind == "folder":
                path.mkdir()
            elif kind == "fifo":
                os.mkfifo(path)
            elif kind == "dev zero":
                path.symlink_to("/dev/zero")
            elif kind == "outside":
                path.symlink_to(outside / name)
            elif kind == "loop":
                path.symlink_to(path)
            elif kind == "empty":
                path.write_bytes(b"")
            elif kind == "sparse 3 GB":
                with open(path, "wb") as file:
                    file.truncate(3 * 2**30)

        return edit

    kinds = ("missing", "folder", "fifo", "dev zero", "outside", "loop", "empty", "sparse 3 GB")
    return [(f"{name} {kind}", make(name, kind)) for name in ("settings.json", "model.safetensors")
            for kind in kinds]  # fmt: skip


def data_edits(outside: Path, field: str) -> list[tuple[str, Callable[[Path], None]]]:
    """The recorded data path at a secret outside, a FIFO, /dev/zero, a folder or a gone file
    (as in folders written before the recorded example, so the path is the only source)."""

    def make(kind: str) -> Callable[[Path], None]:
        def edit(folder: Path) -> None:
            target = {"outside": outside / "secret.txt", "dev zero": Path("/dev/zero"),
                      "gone": folder / "gone.csv"}.get(kind, folder / "data")  # fmt: skip
            if kind == "fifo":
                os.mkfifo(target)
            elif kind == "folder":
                target.mkdir()
            path = folder / "settings.json"
            changed = json.loads(path.read_text())
            changed.pop("example", None)
            changed.pop("weights_sha256", None)
            changed["data"][field] = str(target)
            path.write_text(json.dumps(changed))

        return edit

    return [
        (f"data.{field} {k}", make(k)) for k in ("outside", "fifo", "dev zero", "folder", "gone")
    ]


def size_claims() -> list[Edit]:
    """Sizes the small weights file does not hold: refused before anything is allocated."""

    def claim(key: str, value: int) -> Callable[[Path], None]:
        def edit(folder: Path) -> None:
            path = folder / "settings.json"
            changed = json.loads(path.read_text())
            changed["model"][key] = value
            path.write_text(json.dumps(changed))

        return edit

    sizes = [("hidden_size", 8000), ("hidden_size", 30000), ("hidden_size", 65536)]
    return [(f"claims model.{k} {v}", claim(k, v)) for k, v in [*sizes, ("num_layers", 1024)]]
