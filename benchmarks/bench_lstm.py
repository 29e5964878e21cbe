"""clearlstm's fused CPU kernels against torch.nn.LSTM, a torch LSTMCell loop and ONNX Runtime.

Run ``python benchmarks/bench_lstm.py`` (``--quick`` for fewer repeats and no largest
shape). One process, the same weights for every peer, rounds interleaved (each round runs
every contender, in shuffled order, for a block of calls after a short idle, the first
dropped), medians.
Prints the tables and writes ``BENCHMARKS.md`` with the machine's description. Ratios are
``peer time / clearlstm time`` (above 1: clearlstm is faster). float32 throughout.

Workloads: inference; training step (forward + backward of ``output.sum()``); inference
with the trace recorded; streaming one step per call; peak memory of a training step (fresh
subprocesses, RSS); a state decaying into denormal numbers; cold start (fresh process).
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

import clearlstm

SHAPES = [  # (T, B, I, H)
    (5, 1, 1, 1),
    (1000, 1, 1, 32),
    (1000, 1, 8, 64),
    (1000, 1, 32, 128),
    (100, 32, 64, 256),
    (200, 16, 128, 512),
    (100, 64, 512, 1024),
]
STREAM_HIDDEN = (32, 64, 256)


# --- peers -------------------------------------------------------------------------------


def onnx_lstm_session(lstm: nn.LSTM, threads: int):
    """An ONNX Runtime session running one ``LSTM`` operator with ``lstm``'s weights.

    Inputs ``X (T, B, I)``, ``initial_h, initial_c (1, B, H)``; output ``Y (T, 1, B, H)``.
    ONNX orders the gate blocks i, o, f, c where torch has i, f, g, o.
    """
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    hidden = lstm.hidden_size
    order = [0, 3, 1, 2]  # torch blocks (i, f, g, o) -> onnx (i, o, f, c)

    def reorder(w: torch.Tensor) -> np.ndarray:
        blocks = w.detach().reshape(4, hidden, *w.shape[1:])
        return blocks[order].reshape(w.shape).numpy()

    w = reorder(lstm.weight_ih_l0)[None]  # (1, 4H, I)
    r = reorder(lstm.weight_hh_l0)[None]  # (1, 4H, H)
    b = np.concatenate([reorder(lstm.bias_ih_l0), reorder(lstm.bias_hh_l0)])[None]  # (1, 8H)
    node = helper.make_node(
        "LSTM",
        ["X", "W", "R", "B", "", "initial_h", "initial_c"],
        ["Y", "Y_h", "Y_c"],
        hidden_size=hidden,
    )
    f32 = TensorProto.FLOAT
    graph = helper.make_graph(
        [node],
        "lstm",
        [
            helper.make_tensor_value_info("X", f32, ["T", "B", lstm.input_size]),
            helper.make_tensor_value_info("initial_h", f32, [1, "B", hidden]),
            helper.make_tensor_value_info("initial_c", f32, [1, "B", hidden]),
        ],
        [
            helper.make_tensor_value_info("Y", f32, ["T", 1, "B", hidden]),
            helper.make_tensor_value_info("Y_h", f32, [1, "B", hidden]),
            helper.make_tensor_value_info("Y_c", f32, [1, "B", hidden]),
        ],
        [numpy_helper.from_array(a, n) for a, n in ((w, "W"), (r, "R"), (b, "B"))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    onnx.checker.check_model(model)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )


def cell_loop(cell: nn.LSTMCell, x: torch.Tensor) -> torch.Tensor:
    """The plain torch loop: one ``nn.LSTMCell`` call per step. ``x (T, B, I)``."""
    h = c = x.new_zeros(x.shape[1], cell.hidden_size)
    outputs = []
    for x_t in x:
        h, c = cell(x_t, (h, c))
        outputs.append(h)
    return torch.stack(outputs)


# --- timing ------------------------------------------------------------------------------


SETTLE_SECONDS = 0.03


def interleaved(
    contenders: dict[str, Callable[[], object]], repeats: int, block: int = 4
) -> dict[str, float]:
    """Median seconds per call per contender, from ``repeats`` rounds.

    Each round runs every contender, in a new shuffled order, for ``block`` calls in a row
    and keeps all but the first. Interleaving rounds cancels the machine's drift. Before each
    block the machine idles for :data:`SETTLE_SECONDS`: torch's idle OpenMP workers spin
    ~10 ms after a parallel region, and would otherwise tax whichever contender runs next.
    So each library is timed as a user calling it repeatedly sees it.
    """
    names = list(contenders)
    for fn in contenders.values():  # warm-up: compile, allocate, fill caches
        fn()
    times: dict[str, list[float]] = {n: [] for n in names}
    order = random.Random(0)
    for _ in range(repeats):
        for name in order.sample(names, len(names)):
            fn = contenders[name]
            time.sleep(SETTLE_SECONDS)
            fn()
            for _ in range(block - 1):
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    return {n: statistics.median(t) for n, t in times.items()}


def lstm_flops(steps: int, batch: int, inputs: int, hidden: int) -> float:
    """Multiply-adds of the two products, counted as 2 FLOPs; the gates are negligible."""
    return 2.0 * steps * batch * 4 * hidden * (inputs + hidden)


def measured_gemm_rate(n: int = 2048) -> float:
    """Best single-precision GEMM rate torch reaches here, GFLOP/s (median of 7 per library).

    Both torch's BLAS (``torch.mm``: MKL, which runs a slower code path on AMD CPUs) and
    oneDNN (what torch.nn.LSTM uses on CPU) are measured; the faster one is the bar.
    """
    a, b = torch.randn(n, n), torch.randn(n, n)
    candidates = [lambda: a @ b]
    if torch.backends.mkldnn.is_available():
        a_dnn, b_dnn = a.to_mkldnn(), b.to_mkldnn()
        candidates.append(lambda: torch._C._nn.mkldnn_linear(a_dnn, b_dnn))
    rates = []
    for gemm in candidates:
        gemm()
        times = []
        for _ in range(7):
            start = time.perf_counter()
            gemm()
            times.append(time.perf_counter() - start)
        rates.append(2.0 * n**3 / statistics.median(times) / 1e9)
    return max(rates)


# --- workloads ---------------------------------------------------------------------------


def bench_shape(shape: tuple[int, int, int, int], repeats: int, threads: int) -> dict:
    steps, batch, inputs, hidden = shape
    torch.manual_seed(0)
    ref = nn.LSTM(inputs, hidden)
    ours = clearlstm.LSTM.from_torch(ref)
    cell = nn.LSTMCell(inputs, hidden)
    cell.load_state_dict({k.removesuffix("_l0"): v for k, v in ref.state_dict().items()})
    session = onnx_lstm_session(ref, threads)
    x = torch.randn(steps, batch, inputs)
    zeros = np.zeros((1, batch, hidden), np.float32)
    feed = {"X": x.numpy(), "initial_h": zeros, "initial_c": zeros}

    with torch.no_grad():  # every peer computes the same numbers
        expected = ref(x)[0]
        torch.testing.assert_close(ours(x)[0], expected, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(cell_loop(cell, x), expected, atol=1e-4, rtol=1e-4)
        onnx_y = torch.from_numpy(session.run(["Y"], feed)[0][:, 0])
        torch.testing.assert_close(onnx_y, expected, atol=1e-4, rtol=1e-4)

    def no_grad(fn):
        def run():
            with torch.no_grad():
                fn()

        return run

    inference = interleaved(
        {
            "clearlstm": no_grad(lambda: ours(x)),
            "clearlstm trace": no_grad(lambda: ours(x, trace=True)),
            "torch no_grad": no_grad(lambda: ref(x)),
            "torch grad": lambda: ref(x),
            "LSTMCell loop": no_grad(lambda: cell_loop(cell, x)),
            "onnxruntime": lambda: session.run(["Y"], feed),
        },
        repeats,
    )

    def train(module):
        def step():
            module.zero_grad(set_to_none=True)
            module(x)[0].sum().backward()

        return step

    training = interleaved({"clearlstm": train(ours), "torch": train(ref)}, repeats)
    return {"shape": shape, "inference": inference, "training": training}


def bench_streaming(hidden: int, steps: int, repeats: int) -> dict[str, float]:
    """Seconds per step, one call per step, batch 1, input size = hidden."""
    torch.manual_seed(0)
    ref = nn.LSTM(hidden, hidden)
    ours = clearlstm.LSTM.from_torch(ref)
    x = torch.randn(steps, 1, hidden)

    def stream_ours():
        stream = ours.stream()
        for x_t in x:
            stream.step(x_t)

    def stream_torch():
        state = None
        with torch.no_grad():
            for x_t in x:
                _, state = ref(x_t[None], state)

    with torch.no_grad():
        stream = ours.stream()
        streamed = torch.stack([stream.step(x_t) for x_t in x])
        torch.testing.assert_close(streamed, ref(x)[0], atol=1e-5, rtol=1e-5)
    times = interleaved({"clearlstm": stream_ours, "torch.nn.LSTM": stream_torch}, repeats)
    return {name: t / steps for name, t in times.items()}


def decaying_weights(module: nn.LSTM) -> None:
    """Weights that drive ``c`` and ``h`` through the denormal range on zero input:
    forget gate ~0.97, input gate ~0, potential memory ~tanh(small * h)."""
    hidden = module.hidden_size
    with torch.no_grad():
        for p in module.parameters():
            p.zero_()
        module.weight_hh_l0.uniform_(-0.01, 0.01)
        module.bias_ih_l0[:hidden] = -20.0  # input gate closed
        module.bias_ih_l0[hidden : 2 * hidden] = 3.5  # forget gate ~0.97
        module.bias_ih_l0[3 * hidden :] = 20.0  # output gate open


def bench_denormal(repeats: int) -> dict[str, float]:
    """T=1000, B=1, I=1, H=32: ordinary random weights vs a state decaying through denormals."""
    steps, hidden = 1000, 32
    torch.manual_seed(0)
    normal = nn.LSTM(1, hidden)
    decaying = nn.LSTM(1, hidden)
    decaying_weights(decaying)
    x = torch.randn(steps, 1, 1)
    zero_x = torch.zeros(steps, 1, 1)
    start = torch.full((1, 1, hidden), 1e-30)  # reaches denormals (< 1.2e-38) after ~600 steps
    ours_normal = clearlstm.LSTM.from_torch(normal)
    ours_decaying = clearlstm.LSTM.from_torch(decaying)
    with torch.no_grad():
        c_last = decaying(zero_x, (start, start))[1][1]
        assert c_last.abs().max() < torch.finfo(torch.float32).tiny, "no denormals reached"
        return interleaved(
            {
                "clearlstm normal": lambda: ours_normal(x),
                "clearlstm decaying": lambda: ours_decaying(zero_x, (start, start)),
                "torch normal": lambda: normal(x),
                "torch decaying": lambda: decaying(zero_x, (start, start)),
            },
            repeats,
        )


_MEMORY_SCRIPT = """
import os, threading, time, torch, clearlstm
T, B, I, H = {shape}
torch.manual_seed(0)
ref = torch.nn.LSTM(I, H)
module = ref if {torch!r} else clearlstm.LSTM.from_torch(ref)
x = torch.randn(T, B, I)
module(x[:2])[0].sum().backward()  # warm up: compile, allocate parameter gradients
page = os.sysconf("SC_PAGE_SIZE")

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * page

peak, running = [rss()], [True]

def sample():
    while running[0]:
        peak.append(rss())
        time.sleep(0.0005)

before = rss()
sampler = threading.Thread(target=sample)
sampler.start()
module(x)[0].sum().backward()
running[0] = False
sampler.join()
print((max(peak) - before) / 2**20)
"""


def peak_training_memory(shape: tuple[int, ...], use_torch: bool) -> float:
    """MiB the resident memory grows by at its peak during one training step, sampled every
    0.5 ms in a fresh process (glibc told to return big blocks to the OS at once)."""
    script = _MEMORY_SCRIPT.format(shape=tuple(shape), torch=use_torch)
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072", MALLOC_TRIM_THRESHOLD_="131072")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    if out.returncode:
        raise RuntimeError(out.stderr)
    return float(out.stdout.strip().splitlines()[-1])


def cold_start() -> dict[str, float]:
    """Seconds in a fresh process: import torch; import clearlstm + first fused call."""
    script = (
        "import time; t0 = time.perf_counter(); import torch; t1 = time.perf_counter(); "
        "import clearlstm; m = clearlstm.LSTM(1, 32); "
        "m(torch.randn(10, 1, 1)); t2 = time.perf_counter(); print(t1 - t0, t2 - t1)"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    import_torch, first_call = map(float, out.stdout.split())
    return {"import torch": import_torch, "import clearlstm + first call": first_call}


# --- report ------------------------------------------------------------------------------


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import numba
    import onnxruntime

    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    return (
        f"{cpu}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}; "
        f"Python {platform.python_version()}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), numba {numba.__version__}, "
        f"onnxruntime {onnxruntime.__version__}; load average at start: {load}"
    )


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3f}"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def two_core_state(threads: int) -> float:
    """torch.nn.LSTM at (1000, 1, 8, 64), ``threads`` threads over one thread (median of 9).

    It synchronises its threads every step, so this says whether each thread has a core of
    its own: about 1.4 when it has, 3-4 when the second core is shared or far away (this
    kind of virtual machine switches between the two every few minutes).
    """
    torch.manual_seed(0)
    lstm, x = nn.LSTM(8, 64), torch.randn(1000, 1, 8)
    before = torch.get_num_threads()
    times = {}
    try:
        for n in (1, threads):
            torch.set_num_threads(n)
            with torch.no_grad():
                times[n] = interleaved({"torch": lambda: lstm(x)}, 3)["torch"]
    finally:
        torch.set_num_threads(before)
    return times[threads] / times[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, no largest shape")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--output", type=Path, default=Path("BENCHMARKS.md"))
    parser.add_argument("--threads", type=int, default=None, help="torch threads for every peer")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    repeats = args.repeats or (5 if args.quick else 15)
    shapes = SHAPES[:-1] if args.quick else SHAPES
    threads = torch.get_num_threads()
    description = machine()
    state_before = two_core_state(threads)
    sections = [f"# Benchmarks\n\nMachine: {description}\n"]
    print(description)

    results = []
    for shape in shapes:
        big = shape[0] * shape[1] * shape[3] > 1e6
        results.append(bench_shape(shape, max(3, repeats // 3) if big else repeats, threads))
        print("done", shape, flush=True)

    peers = ["torch no_grad", "torch grad", "LSTMCell loop", "onnxruntime"]
    rows = []
    for r in results:
        t = r["inference"]
        best = min(peers, key=t.get)
        rows.append(
            [str(r["shape"]), ms(t["clearlstm"])]
            + [ms(t[p]) for p in peers]
            + [f"{t[best] / t['clearlstm']:.2f} ({best})"]
            + [f"{t['torch no_grad'] / t['clearlstm']:.2f}"]
        )
    inference = table(
        ["(T, B, I, H)", "clearlstm ms", *[f"{p} ms" for p in peers], "best peer / ours",
         "torch no_grad / ours"],
        rows,
    )  # fmt: skip
    training = table(
        ["(T, B, I, H)", "clearlstm ms", "torch ms", "torch / ours"],
        [
            [str(r["shape"]), ms(r["training"]["clearlstm"]), ms(r["training"]["torch"]),
             f"{r['training']['torch'] / r['training']['clearlstm']:.2f}"]
            for r in results
        ],
    )  # fmt: skip
    trace = table(
        ["(T, B, I, H)", "plain ms", "with trace ms", "overhead"],
        [
            [str(r["shape"]), ms(r["inference"]["clearlstm"]),
             ms(r["inference"]["clearlstm trace"]),
             f"{r['inference']['clearlstm trace'] / r['inference']['clearlstm'] - 1:+.1%}"]
            for r in results
        ],
    )  # fmt: skip
    sections += [
        "## Inference (no_grad)\n", inference,
        "\n## Training step (forward + backward)\n", training,
        "\n## Inference with the trace recorded\n", trace,
    ]  # fmt: skip

    stream_rows = []
    for hidden in STREAM_HIDDEN:
        t = bench_streaming(hidden, 300 if args.quick else 1000, max(3, repeats // 3))
        stream_rows.append(
            [str(hidden), f"{t['clearlstm'] * 1e6:.1f}", f"{t['torch.nn.LSTM'] * 1e6:.1f}",
             f"{t['torch.nn.LSTM'] / t['clearlstm']:.1f}"]
        )  # fmt: skip
    sections += [
        "\n## Streaming, one step per call (B = 1, I = H)\n",
        table(["H", "clearlstm µs/step", "torch.nn.LSTM µs/step", "torch / ours"], stream_rows),
    ]

    d = bench_denormal(repeats)
    sections += [
        "\n## Denormal-proof (T=1000, B=1, I=1, H=32; state decaying through denormals)\n",
        table(
            ["", "normal ms", "decaying ms", "decaying / normal"],
            [
                [who, ms(d[f"{who} normal"]), ms(d[f"{who} decaying"]),
                 f"{d[f'{who} decaying'] / d[f'{who} normal']:.2f}"]
                for who in ("clearlstm", "torch")
            ],
        ),
    ]  # fmt: skip

    memory_shape = shapes[-1]
    mem_ours = peak_training_memory(memory_shape, use_torch=False)
    mem_torch = peak_training_memory(memory_shape, use_torch=True)
    sections += [
        f"\n## Peak memory of a training step {memory_shape} (RSS growth, fresh process)\n",
        table(
            ["clearlstm MiB", "torch MiB", "ours / torch"],
            [[f"{mem_ours:.0f}", f"{mem_torch:.0f}", f"{mem_ours / max(mem_torch, 1e-9):.2f}"]],
        ),
    ]
    largest = results[-1]
    flops = lstm_flops(*largest["shape"])
    gemm = measured_gemm_rate()
    rates = {
        "clearlstm inference": flops / largest["inference"]["clearlstm"] / 1e9,
        "torch inference": flops / largest["inference"]["torch no_grad"] / 1e9,
        "clearlstm training": 3 * flops / largest["training"]["clearlstm"] / 1e9,
        "torch training": 3 * flops / largest["training"]["torch"] / 1e9,
    }
    sections += [
        f"\n## Achieved rate at {largest['shape']} vs measured SGEMM ({gemm:.0f} GFLOP/s)\n",
        table(
            ["", "GFLOP/s", "of GEMM rate"],
            [[k, f"{v:.0f}", f"{v / gemm:.0%}"] for k, v in rates.items()],
        ),
    ]
    cold = cold_start()
    sections += [
        "\n## Cold start (fresh process)\n",
        table(["", "s"], [[k, f"{v:.2f}"] for k, v in cold.items()]),
        f"\nRounds: {repeats} (a third for the big shapes), interleaved, each a block of 4 "
        "calls per contender after 30 ms idle, the first dropped; medians. "
        "Ratios above 1 mean clearlstm is faster. clearlstm runs with its defaults, "
        "the NaN/Inf check of inputs and weights included (no peer checks).\n",
        f"\nTwo-core state (torch.nn.LSTM at (1000, 1, 8, 64), {threads} threads / 1 thread; "
        "about 1.4 when each thread has a core, 3-4 when the second core is shared or far "
        f"away): {state_before:.1f} at the start, {two_core_state(threads):.1f} at the end. "
        "Two-thread kernels, torch's and ours, depend on it; clearlstm's choice between "
        "splitting a sequence across threads or not follows it.\n",
    ]
    report = "\n".join(sections)
    print(report)
    args.output.write_text(report + "\n")


if __name__ == "__main__":
    main()
