"""Helpers for the tests of untrusted model folders: copy a model, edit its settings, run the
CLI in a subprocess that cannot hang or eat the machine, and list what a run wrote."""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

MEMORY_LIMIT = 8 * 2**30  # a run reading /dev/zero stops here (MemoryError), not at swap


def copy_model(source: Path, folder: Path) -> Path:
    shutil.copytree(source, folder)
    return folder


def edit_settings(folder: Path, change: Callable[[dict[str, Any]], None]) -> None:
    path = folder / "settings.json"
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document, indent=2))


def as_old_folder(document: dict[str, Any]) -> None:
    """As a folder written before the weights hash and the recorded example."""
    document.pop("weights_sha256", None)
    document.pop("example", None)


def file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def run_cli(
    *args: str, timeout: float = 120, cwd: Path | None = None
) -> subprocess.CompletedProcess:
    """``clearlstm ARGS`` in a fresh process; a run past ``timeout`` raises TimeoutExpired."""
    return subprocess.run(
        [sys.executable, "-m", "clearlstm.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "CLEARLSTM_DEBUG": ""},
        preexec_fn=_limit_memory,
    )


def one_line_error(stderr: str, *needles: str) -> str:
    """The error message, checked to be one ``error:`` line without a traceback."""
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def listing(root: Path) -> dict[str, tuple[int, int]]:
    """Every entry under ``root`` (links not followed): kind bits, size, modification time."""
    found = {}
    for folder, names, files in os.walk(root):  # links to folders are not followed
        for name in names + files:
            path = Path(folder) / name
            info = path.lstat()
            found[str(path.relative_to(root))] = (info.st_mode, info.st_size, info.st_mtime_ns)
    return found
