"""``clearlstm diagnose``: what a bug report needs about this machine and install.

:func:`gather` returns a plain, JSON-ready dict (versions, CPU features, threads, numba's
kernel cache); :func:`render` prints it. Nothing is compiled and no kernel runs, so the
numba threading layer shows only if something in this process already started it.
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import os
import pickle
import platform
import re
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

# /proc/cpuinfo flags that the numba kernels (via LLVM) and torch's GEMMs can use.
CPU_FLAGS = (
    "avx2",
    "fma",
    "avx512f",
    "avx512_bf16",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "amx_bf16",
)
ENV_PREFIXES = ("OMP_", "MKL_", "KMP_", "GOMP_", "NUMBA_", "CLEARLSTM_")
ENV_NAMES = ("OPENBLAS_NUM_THREADS", "TORCH_NUM_THREADS", "ATEN_CPU_CAPABILITY")
# numba's cache file names: <module>.<qualname>-<first line>.py<major><minor><abiflags>.nbi
_INDEX = re.compile(r"^(?P<module>[^.]+)\.(?P<function>.+)-(?P<line>\d+)\.py(?P<py>\d+)\w*\.nbi$")


def gather() -> dict[str, Any]:
    """Everything :func:`render` shows, as JSON-ready values (None where unknown)."""
    import clearlstm

    versions: dict[str, Any] = {
        "clearlstm": {"version": clearlstm.__version__, "path": _folder(clearlstm)},
        "python": {"version": platform.python_version(), "path": sys.executable},
    }
    for name in ("torch", "numba", "numpy", "llvmlite"):
        versions[name] = _package(name)
    return {
        "versions": versions,
        "platform": _platform(),
        "cpu_features": _cpu_features(),
        "threads": _threads(),
        "backends": _backends(),
        "environment": {
            k: v
            for k, v in sorted(os.environ.items())
            if k.startswith(ENV_PREFIXES) or k in ENV_NAMES
        },
        "numba_cache": numba_cache(),
    }


def _folder(module: Any) -> str | None:
    file = getattr(module, "__file__", None)
    return str(Path(file).resolve().parent) if file else None


def _package(name: str) -> dict[str, Any]:
    try:
        module = importlib.import_module(name)
    except Exception as error:  # a broken install is what a bug report should show
        return {"version": None, "path": None, "error": f"{type(error).__name__}: {error}"}
    return {"version": getattr(module, "__version__", None), "path": _folder(module)}


def _cpuinfo() -> tuple[str | None, set[str] | None]:
    """The CPU model and flags from /proc/cpuinfo (Linux); (None, None) elsewhere."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return None, None
    model = flags = None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model is None:
            model = value.strip()
        elif key in ("flags", "Features") and flags is None:  # x86, arm64
            flags = set(value.split())
    return model, flags


def _platform() -> dict[str, Any]:
    model, _ = _cpuinfo()
    affinity = getattr(os, "sched_getaffinity", None)
    return {
        "system": platform.system(),
        "release": platform.release(),
        "machine": platform.machine(),
        "platform": platform.platform(),
        "cpu_model": model or platform.processor() or None,
        "cpu_count": os.cpu_count(),
        "usable_cpus": len(affinity(0)) if affinity else None,
    }


def _cpu_features() -> dict[str, Any]:
    _, flags = _cpuinfo()
    features: dict[str, Any] = {
        flag: (flag in flags) if flags is not None else None for flag in CPU_FLAGS
    }
    features["torch_cpu_capability"] = _try(
        lambda: importlib.import_module("torch").backends.cpu.get_cpu_capability()
    )
    features["llvm_host_cpu"] = _try(
        lambda: importlib.import_module("llvmlite.binding").get_host_cpu_name()
    )
    return features


def _threads() -> dict[str, Any]:
    info: dict[str, Any] = {}
    try:
        import torch

        info["torch"] = torch.get_num_threads()
        info["torch_interop"] = torch.get_num_interop_threads()
    except Exception:
        info["torch"] = info["torch_interop"] = None
    try:
        import numba
    except Exception:
        return info | {"numba": None, "numba_threading_layer": None}
    info["numba"] = numba.config.NUMBA_NUM_THREADS
    info["numba_threading_layer_requested"] = numba.config.THREADING_LAYER
    try:  # only if some parallel kernel already ran here: diagnose starts nothing
        info["numba_threading_layer"] = numba.threading_layer()
    except ValueError:
        info["numba_threading_layer"] = None
    layers = {"omp": "omppool", "tbb": "tbbpool", "workqueue": "workqueue"}
    info["numba_threading_layers_available"] = [
        name for name, pool in layers.items() if _importable(f"numba.np.ufunc.{pool}")
    ]
    return info


def _backends() -> dict[str, Any]:
    try:
        import torch
    except Exception:
        return {"mkldnn": None, "mkl": None, "openmp": None}
    return {
        "mkldnn": torch.backends.mkldnn.is_available(),
        "mkl": torch.backends.mkl.is_available(),
        "openmp": torch.backends.openmp.is_available(),
    }


def _try(call: Any) -> Any:
    try:
        return call()
    except Exception:
        return None


def _importable(name: str) -> bool:
    try:
        importlib.import_module(name)
    except Exception:
        return False
    return True


def cached_kernels(source: Path) -> list[tuple[str, int]]:
    """The ``@njit(cache=True)`` functions of one source file: (name, first decorator line),
    the line numba puts in the cache file name. Read from the source: nothing is compiled."""
    found = []
    for node in ast.parse(source.read_text()).body:
        if not isinstance(node, ast.FunctionDef):
            continue
        for decorator in node.decorator_list:
            keywords = decorator.keywords if isinstance(decorator, ast.Call) else []
            if any(
                k.arg == "cache" and isinstance(k.value, ast.Constant) and k.value.value is True
                for k in keywords
            ):
                found.append((node.name, min(d.lineno for d in node.decorator_list)))
                break
    return found


def cache_dir(fused: Path) -> tuple[Path, str]:
    """Where numba keeps the compiled kernels of ``fused``, and why there (numba's own order:
    NUMBA_CACHE_DIR, else ``__pycache__`` beside the sources if writable, else the user's)."""
    import numba

    sha = hashlib.sha1(str(fused.resolve()).encode()).hexdigest()
    if numba.config.CACHE_DIR:
        return Path(numba.config.CACHE_DIR) / f"{fused.name}_{sha}", "NUMBA_CACHE_DIR"
    in_tree = fused / "__pycache__"
    if os.access(in_tree if in_tree.exists() else fused, os.W_OK):
        return in_tree, "__pycache__ beside clearlstm/fused"
    from numba.misc.appdirs import AppDirs

    user = AppDirs(appname="numba", appauthor=False).user_cache_dir
    return Path(user) / f"{fused.name}_{sha}", "user cache (__pycache__ not writable)"


def _read_index(index: Path, source: Path, numba_version: str) -> tuple[bool | None, int | None]:
    """(fresh, signatures) of one index as numba would judge it: same numba version and the
    same source hash. Unpickles only this cache, as numba itself does on every load."""
    try:
        with index.open("rb") as f:
            if pickle.load(f) != numba_version:
                return False, None
            stamp, overloads = pickle.loads(f.read())
        fresh = stamp == hashlib.sha256(source.read_bytes()).digest()
        return fresh, len(overloads)
    except Exception:
        return None, None


def numba_cache() -> dict[str, Any]:
    """Which ``clearlstm.fused`` kernels have compiled code in numba's cache, and how fresh."""
    try:
        import numba
    except Exception as error:
        return {"directory": None, "error": f"{type(error).__name__}: {error}", "kernels": []}
    fused = Path(__file__).resolve().parents[1] / "fused"
    folder, reason = cache_dir(fused)
    py = f"{sys.version_info[0]}{sys.version_info[1]}"
    indexes = {}
    for path in sorted(folder.glob("*.nbi")) if folder.is_dir() else []:
        match = _INDEX.match(path.name)
        if match and match["py"] == py:
            indexes[(match["module"], match["function"], int(match["line"]))] = path
    kernels, current = [], set()
    for source in sorted(fused.glob("*.py")):
        for name, line in cached_kernels(source):
            key = (source.stem, name, line)
            current.add(key)
            index = indexes.get(key)
            fresh, signatures = (
                _read_index(index, source, numba.__version__) if index else (False, 0)
            )
            kernels.append(
                {
                    "module": source.stem,
                    "function": name,
                    "line": line,
                    "index": index.name if index else None,
                    "fresh": fresh,
                    "signatures": signatures,
                }
            )
    return {
        "directory": str(folder),
        "reason": reason,
        "exists": folder.is_dir(),
        "kernels": kernels,
        "stale_indexes": sorted(p.name for k, p in indexes.items() if k not in current),
    }


def _text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "-"
    return str(value)


def sections(info: dict[str, Any]) -> list[tuple[str, list[tuple[str, str]]]]:
    """The report as titled (key, value) rows, shared by the table and the plain text."""
    versions = [
        (name, f"{_text(v.get('version'))}  {_text(v.get('path') or v.get('error'))}")
        for name, v in info["versions"].items()
    ]
    cache = info["numba_cache"]
    kernels = [
        (
            f"{k['module']}.{k['function']}",
            "not cached"
            if k["index"] is None
            else f"{k['index']}  fresh: {_text(k['fresh'])}, signatures: {_text(k['signatures'])}",
        )
        for k in cache["kernels"]
    ]
    head = [("directory", f"{_text(cache['directory'])}  ({_text(cache.get('reason'))})")]
    if cache.get("stale_indexes"):
        head.append(("stale indexes", _text(cache["stale_indexes"])))
    plain = ["platform", "cpu_features", "threads", "backends", "environment"]
    rows = [("versions", versions)]
    rows += [(name, [(k, _text(v)) for k, v in info[name].items()]) for name in plain]
    return [*rows, ("numba cache", head + kernels)]


def render(info: dict[str, Any], console: Console) -> None:
    """Tables on a terminal; aligned plain text when piped, for pasting into an issue."""
    for title, rows in sections(info):
        if console.is_terminal:
            table = Table(title=title, show_header=False, title_justify="left")
            table.add_column(style="bold")
            table.add_column(overflow="fold")
            for key, value in rows or [("(none set)", "")]:
                table.add_row(Text(key), Text(value))  # a path's [ ] is not markup
            console.print(table)
        else:
            print(f"[{title}]")
            width = max((len(k) for k, _ in rows), default=0)
            for key, value in rows or [("(none set)", "")]:
                print(f"  {key.ljust(width)}  {value}")
