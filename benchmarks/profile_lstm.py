"""Where clearlstm's time goes, beside the peer it is measured against: the profile behind
the missed targets in ``BENCHMARKS.md``.

Run ``python benchmarks/profile_lstm.py`` (``--quick``: fewer calls, no largest shape;
``--shapes 5,1,1,1 1000,1,1,32`` to choose). float32, torch's thread setting. Two tables:

1. **Each call taken apart** (inference, inference with the trace, training step): every
   numba kernel, torch GEMM and torch LSTM op the call makes is timed by wrapping the
   functions clearlstm looks up at call time (``kernels.forward_sequence``, ``torch.mm``,
   ...). "rest" is what is left of the call: Python, autograd, argument checks, tensor and
   array conversions. The call without wrappers and its peer are timed side by side
   (interleaved, medians), as in ``bench_lstm.py``.
2. **One step of the recurrence** (one sequence, one thread, no Python): the recurrent
   product alone, the gates alone and both, forward and backward, as numba loops over the
   kernels' own helpers, in ns per step with the multiply-adds per ns.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import torch
from bench_lstm import SHAPES, interleaved, onnx_lstm_session, table
from numba import njit
from torch import nn

import clearlstm
from clearlstm.fused import kernel_math, kernels, kernels_small, kernels_split, step_kernels

# part of a call -> the (owner, attribute) pairs whose time counts there
PARTS = {
    "NaN/Inf check": [(kernels, "count_nonfinite"), (kernels, "count_nonfinite_layer")],
    "forward kernels": [
        (kernels, "forward_sequence"),
        (step_kernels, "forward_gates"),
        (kernels_split, "forward_split"),
        (kernels_small, "forward_small"),
        (kernels_small, "infer_small"),
        (kernels_small, "infer_small_checked"),
    ],
    "backward kernels": [
        (kernels, "backward_sequence"),
        (step_kernels, "backward_gates"),
        (kernels_split, "backward_split"),
        (kernels_small, "backward_small"),
    ],
    "torch GEMMs": [(torch, "mm"), (torch, "addmm"), (torch.ops.mkldnn, "_linear_pointwise")],
    "torch LSTM op": [(torch, "lstm")],
}


@contextmanager
def timed_parts(seconds: dict[str, float]) -> Iterator[None]:
    """Within the block, add the time of every call of each :data:`PARTS` function to
    ``seconds[part]`` (outermost call only, so a part never counts twice)."""
    originals = []
    depth = [0]

    def wrap(part: str, fn: Callable) -> Callable:
        def timed(*args, **kwargs):
            if depth[0]:
                return fn(*args, **kwargs)
            depth[0] += 1
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                seconds[part] += time.perf_counter() - start
                depth[0] -= 1

        return timed

    for part, functions in PARTS.items():
        for owner, name in functions:
            fn = getattr(owner, name)
            originals.append((owner, name, fn))
            setattr(owner, name, wrap(part, fn))
    try:
        yield
    finally:
        for owner, name, fn in originals:
            setattr(owner, name, fn)


def taken_apart(call: Callable[[], object], calls: int) -> dict[str, float]:
    """Median seconds per call of each part of ``call`` and of the whole ("call, timed")."""
    per_call: dict[str, list[float]] = defaultdict(list)
    call()  # warm-up: compile, allocate
    for _ in range(calls):
        seconds: dict[str, float] = defaultdict(float)
        with timed_parts(seconds):
            start = time.perf_counter()
            call()
            total = time.perf_counter() - start
        for part in PARTS:
            per_call[part].append(seconds[part])
        per_call["rest"].append(total - sum(seconds.values()))
        per_call["call, timed"].append(total)
    return {part: statistics.median(values) for part, values in per_call.items()}


def profile_shape(shape: tuple[int, int, int, int], calls: int, threads: int) -> list[list[str]]:
    steps, batch, inputs, hidden = shape
    torch.manual_seed(0)
    ref = nn.LSTM(inputs, hidden)
    ours = clearlstm.LSTM.from_torch(ref)
    x = torch.randn(steps, batch, inputs)
    session = onnx_lstm_session(ref, threads)
    zeros = np.zeros((1, batch, hidden), np.float32)
    feed = {"X": x.numpy(), "initial_h": zeros, "initial_c": zeros}

    def no_grad(fn: Callable[[], object]) -> Callable[[], object]:
        def run():
            with torch.no_grad():
                fn()

        return run

    def train(module: nn.Module) -> Callable[[], object]:
        def step():
            module.zero_grad(set_to_none=True)
            module(x)[0].sum().backward()

        return step

    infer, trace = no_grad(lambda: ours(x)), no_grad(lambda: ours(x, trace=True))
    peers = {
        "torch no_grad": no_grad(lambda: ref(x)),
        "onnxruntime": lambda: session.run(["Y"], feed),
    }
    times = interleaved({"inference": infer, "trace": trace, **peers}, max(calls // 4, 3))
    best = min(peers, key=times.get)
    trained = interleaved({"training": train(ours), "torch": train(ref)}, max(calls // 4, 3))
    workloads = [
        ("inference", infer, times["inference"], f"{best} {us(times[best])}"),
        ("trace", trace, times["trace"], f"plain call {us(times['inference'])}"),
        ("training step", train(ours), trained["training"], f"torch {us(trained['torch'])}"),
    ]
    rows = []
    for name, call, alone, peer in workloads:
        parts = taken_apart(call, calls)
        cells = [us(parts[p]) if parts[p] else "" for p in (*PARTS, "rest")]
        rows.append([str(shape), name, us(alone), peer, us(parts["call, timed"]), *cells])
    return rows


def us(seconds: float) -> str:
    return f"{seconds * 1e6:,.1f}"


# --- one step of the recurrence ----------------------------------------------------------


@njit(cache=True, **kernel_math.JIT)  # the kernels' compile flags
def _forward_steps(xw, whh_t, out, product, gates):
    """The loop of ``kernels.forward_rows`` for one sequence, with the recurrent product
    and the gates each switched on or off."""
    steps, width = xw.shape
    hidden = width // 4
    z = np.empty((1, width), xw.dtype)
    h = np.zeros((1, hidden), xw.dtype)
    c = np.zeros((1, hidden), xw.dtype)
    for t in range(steps):
        for j in range(width):
            z[0, j] = xw[t, j]
        if product:
            kernel_math.matvec_t(h, 0, whh_t, z, 0)
        if gates:
            kernel_math.gates_forward(z, 0, c, h, 0, out, t, 0)
        else:
            for j in range(hidden):
                out[t, 0, j] = z[0, j]


@njit(cache=True, **kernel_math.JIT)
def _backward_steps(grad_out, gates_rec, cs, w_hh, whh_t, dz, product, gates):
    """The loop of ``kernels.backward_rows`` for one sequence (its ``dz @ w_hh`` as there:
    dot products below ``BLOCK_MIN_HIDDEN``, axpys from it), parts switched as above."""
    steps, hidden = grad_out.shape[0], grad_out.shape[2]
    dh = np.zeros((1, hidden), grad_out.dtype)
    dc = np.zeros((1, hidden), grad_out.dtype)
    cp = np.zeros((1, hidden), grad_out.dtype)
    dz_row = np.zeros((1, 4 * hidden), grad_out.dtype)
    narrow = hidden < kernel_math.BLOCK_MIN_HIDDEN
    for t in range(steps - 1, -1, -1):
        for j in range(hidden):
            dh[0, j] += grad_out[t, 0, j]
        if gates:
            kernel_math.previous_c(cp, 0, cs, cs[0], t, steps, False, 0)
            kernel_math.gates_backward(dh, dc, cp, 0, gates_rec, cs, t, 0, dz)
        for j in range(4 * hidden):
            dz_row[0, j] = dz[t, 0, j]
        if product:
            if narrow:
                kernel_math.matvec_dot(dz_row, 0, whh_t, dh, 0)
            else:
                for j in range(hidden):
                    dh[0, j] = 0.0
                kernel_math.matvec_t(dz_row, 0, w_hh, dh, 0, True)
        for j in range(hidden):
            dh[0, j] *= 0.5  # keeps the carry bounded with the gates off


def step_rows(hidden: int, steps: int, repeats: int) -> list[list[str]]:
    """ns per step of each part of the forward and backward recurrence at ``hidden``."""
    rng = np.random.default_rng(0)
    width = 4 * hidden
    w_hh = (rng.standard_normal((width, hidden)) / np.sqrt(hidden)).astype(np.float32)
    whh_t = np.ascontiguousarray(w_hh.T)
    xw = rng.standard_normal((steps, width)).astype(np.float32)
    out = np.zeros((steps, 1, hidden), np.float32)
    grad_out = rng.standard_normal((steps, 1, hidden)).astype(np.float32)
    gates_rec = rng.uniform(0.05, 0.95, (steps, 1, width)).astype(np.float32)
    cs = rng.standard_normal((steps, 1, hidden)).astype(np.float32)
    dz = rng.standard_normal((steps, 1, width)).astype(np.float32)
    narrow_t = whh_t if hidden < kernel_math.BLOCK_MIN_HIDDEN else np.empty((0, width), np.float32)
    variants = {
        "forward: product": lambda: _forward_steps(xw, whh_t, out, True, False),
        "forward: gates": lambda: _forward_steps(xw, whh_t, out, False, True),
        "forward: step": lambda: _forward_steps(xw, whh_t, out, True, True),
        "backward: gates": lambda: _backward_steps(
            grad_out, gates_rec, cs, w_hh, narrow_t, dz, False, True
        ),
        "backward: product": lambda: _backward_steps(
            grad_out, gates_rec, cs, w_hh, narrow_t, dz, True, False
        ),
        "backward: step": lambda: _backward_steps(
            grad_out, gates_rec, cs, w_hh, narrow_t, dz, True, True
        ),
    }
    times = interleaved(variants, repeats)
    macs = width * hidden
    rows = []
    for name, seconds in times.items():
        ns = seconds / steps * 1e9
        rate = f"{macs / ns:.3g}" if "gates" not in name else ""
        rows.append([str(hidden), name, f"{ns:.0f}", rate])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls, no largest shape")
    parser.add_argument("--shapes", nargs="*", help="T,B,I,H each (default: the benchmark's)")
    args = parser.parse_args()
    shapes = [tuple(int(v) for v in s.split(",")) for s in args.shapes] if args.shapes else None
    shapes = shapes or (SHAPES[:-1] if args.quick else SHAPES)
    calls = 12 if args.quick else 40
    threads = torch.get_num_threads()

    rows = []
    for shape in shapes:
        rows += profile_shape(shape, calls if shape[-1] < 1024 else 4, threads)
    header = ["(T, B, I, H)", "workload", "call µs", "measured against, µs", "timed µs"]
    print("Each call taken apart (µs per call, medians; 'timed' includes the wrappers)\n")
    print(table([*header, *PARTS, "rest"], rows))

    hiddens = sorted({s[-1] for s in shapes if s[1] == 1})
    step_table = []
    for hidden in hiddens:
        step_table += step_rows(hidden, 1000, 5 if args.quick else 15)
    print("\nOne step of the recurrence, one sequence, one thread (ns per step)\n")
    print(table(["H", "part", "ns/step", "multiply-adds/ns"], step_table))


if __name__ == "__main__":
    main()
