"""Writing output files (figures, reports) so that a reader never sees half a file.

The bytes go to a temporary file in the target's folder and then replace the target in one
:func:`os.replace`; a crash or Ctrl-C mid-write leaves the previous file (or none) in place.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once: os.umask can only be read by setting it, which is not safe across threads.
_PERMISSIONS = 0o666 & ~_umask()


def write_atomically(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path``; its folder must exist. Returns the path."""
    path = Path(path)
    folder = path.parent
    if not folder.is_dir():
        raise FileNotFoundError(f"{path}: folder {folder} does not exist")
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())  # on disk before the rename: a power cut keeps one whole file
        os.chmod(temporary, _PERMISSIONS)  # mkstemp's 0600 would hide the file from others
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path
