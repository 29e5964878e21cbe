"""clearlstm's fused CPU kernels against torch.nn.LSTM, a torch LSTMCell loop, ONNX Runtime
and OpenVINO (when installed), with the machine's roofline floor per shape.

Run ``python benchmarks/bench_lstm.py`` (``--quick`` for fewer repeats and no largest
shape). One process, the same weights for every peer, rounds interleaved (each round runs
every contender, in shuffled order, for a block of calls after a short idle, the first
dropped), medians.
Prints the tables and writes ``BENCHMARKS.md`` with the machine's description. Ratios are
``peer time / clearlstm time`` (above 1: clearlstm is faster). float32 throughout.

Workloads: inference; training step (forward + backward of ``output.sum()``); inference
with the trace recorded; streaming one step per call; peak memory of a training step (fresh
subprocesses, RSS); a state decaying into denormal numbers; cold start (fresh process);
start-up of the ``clearlstm`` command beside Python's own and ``import torch``.

The peers are built in ``peers.py``, the timing in ``timing.py``, the fresh-process
measurements in ``fresh_process.py`` (this folder is on ``sys.path`` when the script runs).
"""

from __future__ import annotations

import argparse
import os
import platform
from pathlib import Path

import numpy as np
import torch
from fresh_process import cold_start, peak_training_memory, startup_times
from peers import cell_loop, onnx_lstm_session, openvino_lstm
from roofline import floor_seconds, measure_limits
from timing import interleaved, lstm_flops, measured_gemm_rate, two_core_state
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
STARTUP_RUNS = 7


# --- workloads ---------------------------------------------------------------------------


def bench_shape(shape: tuple[int, int, int, int], repeats: int, threads: int) -> dict:
    steps, batch, inputs, hidden = shape
    torch.manual_seed(0)
    ref = nn.LSTM(inputs, hidden)
    ours = clearlstm.LSTM.from_torch(ref)
    cell = nn.LSTMCell(inputs, hidden)
    cell.load_state_dict({k.removesuffix("_l0"): v for k, v in ref.state_dict().items()})
    session = onnx_lstm_session(ref, threads)
    openvino = openvino_lstm(ref, threads, (steps, batch, inputs))
    x = torch.randn(steps, batch, inputs)
    zeros = np.zeros((1, batch, hidden), np.float32)
    feed = {"X": x.numpy(), "initial_h": zeros, "initial_c": zeros}

    with torch.no_grad():  # every peer computes the same numbers
        expected = ref(x)[0]
        torch.testing.assert_close(ours(x)[0], expected, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(cell_loop(cell, x), expected, atol=1e-4, rtol=1e-4)
        onnx_y = torch.from_numpy(session.run(["Y"], feed)[0][:, 0])
        torch.testing.assert_close(onnx_y, expected, atol=1e-4, rtol=1e-4)
        if openvino is not None:
            openvino_y = torch.from_numpy(openvino(feed)[:, 0])
            torch.testing.assert_close(openvino_y, expected, atol=1e-4, rtol=1e-4)

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
            **({} if openvino is None else {"openvino": lambda: openvino(feed)}),
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

    limits = measure_limits()
    results = []
    for shape in shapes:
        big = shape[0] * shape[1] * shape[3] > 1e6
        results.append(bench_shape(shape, max(3, repeats // 3) if big else repeats, threads))
        print("done", shape, flush=True)

    peers = ["torch no_grad", "torch grad", "LSTMCell loop", "onnxruntime"]
    peers += ["openvino"] if "openvino" in results[0]["inference"] else []
    rows = []
    for r in results:
        t = r["inference"]
        best = min(peers, key=t.get)
        floor = floor_seconds(r["shape"], limits)
        rows.append(
            [str(r["shape"]), ms(t["clearlstm"])]
            + [ms(t[p]) for p in peers]
            + [f"{t[best] / t['clearlstm']:.2f} ({best})"]
            + [f"{t['torch no_grad'] / t['clearlstm']:.2f}", ms(floor)]
            + [f"{t['clearlstm'] / floor:.1f}"]
        )
    inference = table(
        ["(T, B, I, H)", "clearlstm ms", *[f"{p} ms" for p in peers], "best peer / ours",
         "torch no_grad / ours", "floor ms", "ours / floor"],
        rows,
    )  # fmt: skip
    roof = (
        f"Floor: one core at the measured limits (FMA {limits.fma_per_s / 1e9:.0f} G/s, "
        f"L1 {limits.l1_bytes_per_s / 1e9:.0f} GB/s, L2 {limits.l2_bytes_per_s / 1e9:.0f} "
        "GB/s; benchmarks/roofline.py): input product plus, per step, w_hh streamed or the "
        "recurrent FMAs, whichever is slower; gates left out.\n"
    )
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
        "## Inference (no_grad)\n", inference, roof,
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
    startup = startup_times(STARTUP_RUNS)
    floor = startup["python -c pass"]
    sections += [
        "\n## Cold start (fresh process)\n",
        table(["", "s"], [[k, f"{v:.2f}"] for k, v in cold.items()]),
        f"\n## Start-up (fresh process each, median of {STARTUP_RUNS})\n",
        table(
            ["command", "s", "over python -c pass"],
            [[k, f"{v:.3f}", f"{v - floor:+.3f}"] for k, v in startup.items()],
        ),
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
