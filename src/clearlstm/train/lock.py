"""One training run per model folder: an advisory lock held for the whole run.

Two ``clearlstm train`` runs into the same ``--out`` would interleave their training states
and models; the second one fails at once instead, naming the folder and the first process.
The lock file lives inside the folder and travels with it when the finished model is swapped
into place (:func:`clearlstm.files.replace_files_together` hard-links the folder's files).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

from clearlstm.errors import CheckpointError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = ".clearlstm.lock"

_HELD: set[Path] = set()  # folders this process holds the lock of


@contextlib.contextmanager
def training_lock(directory: str | Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on the model folder ``directory`` (created if need be)
    for a training run: a second run into the same folder fails at once, naming it. Nested
    holds in one process are free."""
    folder = Path(directory).resolve()
    if folder in _HELD or fcntl is None:
        yield
        return
    folder.mkdir(parents=True, exist_ok=True)
    flags = os.O_RDWR | os.O_CREAT | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(folder / LOCK_FILE, flags, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            raise CheckpointError(
                f"--out {directory}: another `clearlstm train` (process {holder}) is writing a "
                "model into this folder; wait for it to finish, or choose another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        for stale in folder.parent.glob(f".{folder.name}.swap-*"):  # left by a killed run
            if re.fullmatch(r"[a-z0-9_]+(-old)?", stale.name[len(folder.name) + 7 :]):
                shutil.rmtree(stale, ignore_errors=True)
        _HELD.add(folder)
        try:
            yield
        finally:
            _HELD.discard(folder)
    finally:
        os.close(fd)
