"""A/B timing of two clearlstm trees in one process: is any shape more than 5% slower?

Run ``python benchmarks/ab_compare.py --old /tmp/old/src --new src`` (``--quick`` drops the
largest shape; ``--threads 1,2``; ``--busy`` adds a CPU hog on another core; ``--json OUT``;
``--row-cap S`` ends a row's rounds after S seconds, for overloaded machines).
Each tree's ``clearlstm`` package is copied as ``clearlstm_a`` (old) and ``clearlstm_b``
(new), with its imports rewritten, so both load side by side: same interpreter, same torch,
same machine state, which a run per tree cannot promise. Copies live under the temp folder,
keyed on their content, so numba's ``cache=True`` (keyed on file paths and stamps) stays
valid between runs; each contender is still warmed up before timing.

Timing: rounds interleave A and B in shuffled order; each contender runs a block of calls
after a 30 ms idle (spinning OpenMP workers would otherwise bill the next contender); round 0
and (calls under 5 ms) the first call of each block are dropped. Reported: medians of
per-call time, new/old, a 90% bootstrap interval of that ratio over rounds, and the ratio of
10th percentiles (on a shared, loaded machine: calls that were not preempted). Exit code 0.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import importlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from torch import nn

SHAPES = [  # (T, B, I, H)
    (5, 1, 1, 1),
    (24, 1, 1, 32),
    (1000, 1, 1, 32),
    (1000, 1, 8, 64),
    (1000, 1, 32, 128),
    (100, 32, 64, 256),
    (200, 16, 128, 512),
    (100, 8, 16, 64),
    (50, 4, 8, 32),
]
QUICK_DROPS = {(200, 16, 128, 512)}
STREAM_HIDDEN = 64
SETTLE_SECONDS = 0.03
ROUNDS = (15, 25)  # kept rounds for long / short calls; one more runs first, dropped
LIMIT = 1.05  # the acceptance rule: new/old above this is flagged
NAMES = {"old": "clearlstm_a", "new": "clearlstm_b"}

# --- side-by-side copies -------------------------------------------------------------------

_CALL = re.compile(r"((?:files|import_module|find_spec|__import__)\(\s*)([\"'])clearlstm(?=[\"'.])")
_DOTTED = re.compile(r"(?<![\w.\-/])clearlstm(?=\.[A-Za-z_])")
_STATEMENT = re.compile(r"\b(from|import)(\s+)clearlstm\b")
_IMPORT_LIST = re.compile(r"^(\s*(?:>>>\s*)?import\s+)([^\n#]+)$", re.M)


def rewrite(text: str, name: str) -> str:
    """``text`` with every reference to the ``clearlstm`` package renamed to ``name``.

    Covers import statements (also ``import torch, clearlstm``), dotted module paths (also in
    strings for importlib and ``resources.files``) and a bare ``"clearlstm"`` passed to
    ``files``/``import_module``; other strings (a checkpoint's format name) are left alone.
    """
    text = _CALL.sub(lambda m: f"{m[1]}{m[2]}{name}", text)
    text = _DOTTED.sub(name, text)
    text = _STATEMENT.sub(lambda m: f"{m[1]}{m[2]}{name}", text)
    return _IMPORT_LIST.sub(lambda m: m[1] + re.sub(r"(?<![\w.])clearlstm\b", name, m[2]), text)


def package_copy(src_root: Path, name: str) -> Path:
    """``src_root/clearlstm`` copied as ``name`` into a content-keyed temp folder; its parent."""
    package = src_root / "clearlstm"
    if not (package / "__init__.py").is_file():
        raise FileNotFoundError(
            f"--old/--new: expected a folder holding clearlstm/; got {src_root}"
        )
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", "*.nbi", "*.nbc")
    digest = hashlib.sha256(name.encode())
    for path in sorted(package.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(package)).encode() + path.read_bytes())
    root = Path(tempfile.gettempdir()) / "clearlstm_ab" / digest.hexdigest()[:16]
    if not (root / name).is_dir():
        root.parent.mkdir(parents=True, exist_ok=True)
        building = Path(tempfile.mkdtemp(prefix="building-", dir=root.parent))
        shutil.copytree(package, building / name, ignore=skip)
        for source in (building / name).rglob("*.py"):
            source.write_text(rewrite(source.read_text(), name))
        try:
            building.rename(root)
        except OSError:  # another run made it first
            shutil.rmtree(building)
    return root


def load(src_root: Path, name: str):
    """The copied package, imported under ``name``."""
    root = package_copy(src_root, name)
    sys.path.insert(0, str(root))
    module = importlib.import_module(name)
    if not Path(module.__file__).is_relative_to(root):
        raise ImportError(f"{name}: imported from {module.__file__}, expected under {root}")
    return module


# --- workloads -----------------------------------------------------------------------------


def _no_grad(fn: Callable[[], object]) -> Callable[[], object]:
    def run():
        with torch.no_grad():
            return fn()

    return run


def workloads(shape: tuple[int, int, int, int]) -> list[str]:
    """The workloads of ``shape``: padded batches only where there is a batch."""
    names = ["inference", "training", "trace"]
    return names + (["padded"] if shape[1] > 1 else [])


def contender(package, ref: nn.LSTM, shape, workload: str) -> Callable[[], object]:
    """One call of ``workload`` on ``package.LSTM`` holding ``ref``'s weights."""
    steps, batch, inputs, _ = shape
    lstm = package.LSTM(ref.input_size, ref.hidden_size)
    lstm.load_state_dict(ref.state_dict())
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(steps, batch, inputs, generator=gen)
    if workload == "inference":
        return _no_grad(lambda: lstm(x)[0])
    if workload == "trace":
        return _no_grad(lambda: lstm(x, trace=True)[0])
    if workload == "padded":
        lengths = torch.randint(steps // 2, steps + 1, (batch,), generator=gen)
        lengths[0] = steps
        return _no_grad(lambda: lstm(x, lengths=lengths)[0])
    if workload == "training":

        def step():
            lstm.zero_grad(set_to_none=True)
            out = lstm(x)[0]
            out.sum().backward()
            return out.detach()

        return step
    if workload == "stream":
        if not hasattr(lstm, "stream"):
            raise AttributeError(f"{package.__name__}.LSTM has no stream()")
        stream, x_t = lstm.stream(), x[0]
        return _no_grad(lambda: stream.step(x_t))
    raise ValueError(f"workload: expected inference/training/trace/padded/stream; got {workload}")


# --- timing --------------------------------------------------------------------------------


def measure(
    fns: dict[str, Callable[[], object]], rounds: tuple[int, int], target: float, cap: float
) -> dict:
    """Per-call seconds of each contender, a list per kept round; stops early past ``cap`` s."""
    per_call = []
    for fn in fns.values():  # fn ran once already (compiled); once more to fill caches
        fn()
        start = time.perf_counter()
        fn()
        per_call.append(time.perf_counter() - start)
    timed = int(min(200, max(1, target / max(per_call))))
    lead = 1 if max(per_call) < 0.005 else 0  # first call after the idle wakes workers
    wanted = rounds[0] if max(per_call) * timed > target else rounds[1]
    samples: dict[str, list[list[float]]] = {n: [] for n in fns}
    order, deadline = random.Random(0), time.perf_counter() + cap
    for round_ in range(wanted + 1):
        for name in order.sample(list(fns), len(fns)):
            fn = fns[name]
            time.sleep(SETTLE_SECONDS)
            for _ in range(lead):
                fn()
            block = []
            for _ in range(timed):
                start = time.perf_counter()
                fn()
                block.append(time.perf_counter() - start)
            if round_:
                samples[name].append(block)
        if round_ >= 3 and time.perf_counter() > deadline:  # an overloaded machine
            break
    return samples


def summary(old: list[list[float]], new: list[list[float]]) -> dict:
    """Medians (µs), new/old and a 90% bootstrap interval of it, resampling whole rounds."""
    a, b = np.array(old), np.array(new)  # (rounds, calls per block)
    idx = np.random.default_rng(0).integers(0, len(a), (2000, len(a)))
    boot_a = np.median(a[idx].reshape(len(idx), -1), axis=1)
    boot_b = np.median(b[idx].reshape(len(idx), -1), axis=1)
    lo, hi = np.quantile(boot_b / boot_a, [0.05, 0.95])
    old_us, new_us = float(np.median(a)) * 1e6, float(np.median(b)) * 1e6
    m_a, m_b = np.median(a, axis=1), np.median(b, axis=1)
    return {
        "old_us": old_us,
        "new_us": new_us,
        "ratio": new_us / old_us,
        "paired": float(np.median(m_b / m_a)),  # median of per-round ratios
        "p10_ratio": float(np.quantile(b, 0.1) / np.quantile(a, 0.1)),  # least preempted calls
        "lo": float(lo),
        "hi": float(hi),
        "old_rounds_us": (m_a * 1e6).round(2).tolist(),
        "new_rounds_us": (m_b * 1e6).round(2).tolist(),
    }


def bench_row(packages: dict, shape, workload: str, target: float, cap: float) -> dict:
    """One table row; errors of either side land in the row's ``error``."""
    torch.manual_seed(0)
    ref = nn.LSTM(shape[2], shape[3])
    began = time.perf_counter()
    fns, outputs, errors = {}, {}, []
    for side, package in packages.items():
        try:
            if isinstance(package, Exception):
                raise package
            fn = contender(package, ref, shape, workload)
            outputs[side] = fn().float()  # the first call compiles or loads the kernels
            fns[side] = fn
        except Exception as error:  # a tree mid-rewrite: report, don't die
            errors.append(f"{side}: {type(error).__name__}: {error}")
    if len(fns) == 2:
        a, b = outputs["old"], outputs["new"]
        if a.shape != b.shape:
            errors.append(f"output shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
        elif not torch.allclose(a, b, atol=1e-4, rtol=1e-4):
            errors.append(f"outputs differ by up to {(a - b).abs().max().item():.2e}")
    row = {"shape": list(shape), "workload": workload, "error": "; ".join(errors) or None}
    if len(fns) == 2:
        try:
            samples = measure(fns, ROUNDS, target, cap)
            row.update(summary(samples["old"], samples["new"]))
        except Exception as error:
            row["error"] = f"while timing: {type(error).__name__}: {error}"
    row["seconds"] = round(time.perf_counter() - began, 2)
    return row


# --- report --------------------------------------------------------------------------------


def _us(value: float | None) -> str:
    return "—" if value is None else f"{value:,.1f}" if value < 1e4 else f"{value:,.0f}"


def print_table(console: Console, rows: list[dict], threads: int, busy: bool) -> None:
    load_note = ", other core busy" if busy else ""
    table = Table(title=f"new/old, torch threads = {threads}{load_note}")
    columns = ("T×B×I×H", "workload", "old µs", "new µs", "new/old", "90% interval", "p10 ratio")
    for col in columns:
        table.add_column(col, justify="left" if col in ("T×B×I×H", "workload") else "right")
    table.add_column("note")
    for row in rows:
        ratio = row.get("ratio")
        slow = ratio is not None and ratio > LIMIT
        sure = slow and row["lo"] > LIMIT
        note = "SLOWER" if sure else "slower? (within noise)" if slow else ""
        if ratio is not None and len(row["old_rounds_us"]) < ROUNDS[0]:
            note += f" only {len(row['old_rounds_us'])} rounds (--row-cap)"
        if row["error"]:
            note = (note + " " if note else "") + row["error"][:90]
        table.add_row(
            "×".join(map(str, row["shape"])),
            row["workload"],
            _us(row.get("old_us")),
            _us(row.get("new_us")),
            "—" if ratio is None else f"{ratio:.3f}",
            "" if ratio is None else f"{row['lo']:.2f}–{row['hi']:.2f}",
            "" if ratio is None else f"{row['p10_ratio']:.3f}",
            note,
            style="bold red" if sure else "red" if slow else "yellow" if row["error"] else None,
        )
    console.print(table)


def _load() -> str:
    """The 1/5/15-minute load averages: above the CPU count, timings mean little."""
    return " ".join(f"{v:.1f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "?"


def start_hog() -> subprocess.Popen:
    """A busy-looping interpreter pinned to the last CPU this process may use."""
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(hog.pid, {max(os.sched_getaffinity(0))})
    return hog


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", type=Path, required=True, help="folder holding the old clearlstm/")
    parser.add_argument("--new", type=Path, required=True, help="folder holding the new clearlstm/")
    parser.add_argument("--quick", action="store_true", help="drop the largest shape")
    parser.add_argument("--threads", default="1,2", help="torch thread counts, e.g. 1,2")
    parser.add_argument("--busy", action="store_true", help="a CPU hog on another core")
    parser.add_argument("--json", type=Path, help="write the raw medians here")
    parser.add_argument("--shapes", help="only these shapes, e.g. 5x1x1x1,50x4x8x32")
    parser.add_argument(
        "--row-cap", type=float, default=40.0, help="seconds of timing per row, at most"
    )
    args = parser.parse_args(argv)
    console = Console()
    if not console.is_terminal:
        console = Console(width=140)
    began = time.perf_counter()
    packages: dict = {}
    for side, name in NAMES.items():
        try:
            packages[side] = load(getattr(args, side).resolve(), name)
        except Exception as error:
            packages[side] = error
            console.print(f"[yellow]{side} tree did not import: {type(error).__name__}: {error}")
    console.print(
        f"old: {getattr(packages['old'], '__file__', '?')}\n"
        f"new: {getattr(packages['new'], '__file__', '?')}\n"
        f"torch {torch.__version__}, {os.cpu_count()} CPUs, load {_load()}"
    )
    shapes = [s for s in SHAPES if not (args.quick and s in QUICK_DROPS)]
    if args.shapes:
        wanted = {tuple(int(n) for n in s.split("x")) for s in args.shapes.split(",")}
        shapes = [s for s in shapes if s in wanted]
    target = 0.01 if args.quick else 0.02  # seconds of timed calls per block
    hog = start_hog() if args.busy else None
    results = []
    try:
        for threads in (int(t) for t in args.threads.split(",")):
            torch.set_num_threads(threads)
            rows = []
            for shape in shapes:
                for workload in workloads(shape):
                    gc.collect()
                    rows.append(bench_row(packages, shape, workload, target, args.row_cap))
            stream_shape = (1, 1, STREAM_HIDDEN, STREAM_HIDDEN)
            rows.append(bench_row(packages, stream_shape, "stream", target, args.row_cap))
            for row in rows:
                row["threads"] = threads
            print_table(console, rows, threads, args.busy)
            results.extend(rows)
    finally:
        if hog is not None:
            hog.kill()
            hog.wait()
    leaked = sorted(m for m in sys.modules if m == "clearlstm" or m.startswith("clearlstm."))
    if leaked:
        console.print(f"[red]unrenamed modules were imported (a missed rewrite): {leaked}")
    slow = [r for r in results if r.get("ratio", 0) > LIMIT]
    errors = [r for r in results if r["error"]]
    console.print(
        f"{len(results)} rows, {len(slow)} above {LIMIT:.2f}, {len(errors)} with errors; "
        f"total {time.perf_counter() - began:.0f} s; load now {_load()}"
    )
    if args.json:
        meta = {"argv": sys.argv[1:], "torch": torch.__version__, "load_end": _load()}
        args.json.write_text(json.dumps({"meta": meta, "rows": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
