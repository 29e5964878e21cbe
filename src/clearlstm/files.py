"""Writing output files (figures, reports, models) so that a reader never sees half a file.

The bytes go to a temporary file in the target's folder and then replace the target in one
:func:`os.replace`; a crash or Ctrl-C mid-write leaves the previous file (or none) in place.
:func:`replace_files_together` does the same for several files of one folder at once.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import stat
import sys
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


def _fsync_folder(folder: Path) -> None:
    handle = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def _exchange(a: Path, b: Path) -> bool:
    """Swap the paths ``a`` and ``b`` in one step (Linux's ``renameat2(RENAME_EXCHANGE)``);
    False where the system or the file system cannot."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    at_cwd, exchange = -100, 2
    if renameat2(at_cwd, os.fsencode(a), at_cwd, os.fsencode(b), exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(code, f"cannot swap {a} into place: {os.strerror(code)}", str(b))


def replace_files_together(folder: str | os.PathLike, files: dict[str, bytes]) -> Path:
    """Write ``files`` (name -> bytes) into ``folder`` as one unit: a reader (or a crash at any
    moment) sees all of the old files or all of the new ones, never a mixture.

    The new files go into a fresh sibling folder beside ``folder``, with hard links to the
    folder's other regular files; after an fsync the two folders swap places in one rename
    (``RENAME_EXCHANGE``) and the old one is removed. Where the system cannot swap, the old
    folder is renamed away and the new one renamed in (for a moment there is no folder).
    Other entries (subfolders, links) are moved across after the swap. Returns the folder.
    """
    target = Path(folder).resolve()
    target.mkdir(parents=True, exist_ok=True)
    cwd = _cwd()
    fresh = Path(tempfile.mkdtemp(prefix=f".{target.name}.swap-", dir=target.parent))
    try:
        later = _fill(fresh, target, files)
        if not _exchange(fresh, target):
            aside = fresh.with_name(fresh.name + "-old")
            os.rename(target, aside)
            try:
                os.rename(fresh, target)
            except BaseException:
                os.rename(aside, target)
                raise
            fresh = aside
    except BaseException:
        shutil.rmtree(fresh, ignore_errors=True)  # the new files, never in place
        raise
    for name in later:  # the old folder now lies at `fresh`
        os.rename(fresh / name, target / name)
    _fsync_folder(target.parent)
    shutil.rmtree(fresh, ignore_errors=True)
    if cwd is not None and (cwd == target or target in cwd.parents):
        os.chdir(cwd)  # the same path, now in the new folder (the old one is gone)
    return target


def _fill(fresh: Path, target: Path, files: dict[str, bytes]) -> list[str]:
    """Write ``files`` into ``fresh`` beside hard links to ``target``'s other regular files;
    the names of its other entries, to move once the folders have swapped."""
    os.chmod(fresh, stat.S_IMODE(target.stat().st_mode))
    for name, data in files.items():
        with open(fresh / name, "xb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(fresh / name, _PERMISSIONS)
    later = []
    for entry in target.iterdir():
        if entry.name in files:
            continue
        if stat.S_ISREG(entry.lstat().st_mode):
            try:
                os.link(entry, fresh / entry.name)
            except OSError:
                shutil.copy2(entry, fresh / entry.name)
        else:
            later.append(entry.name)
    _fsync_folder(fresh)
    return later


def _cwd() -> Path | None:
    try:
        return Path(os.getcwd())
    except OSError:
        return None
