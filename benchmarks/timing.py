"""Timing in one process: interleaved rounds of every contender (medians), the GEMM rate
torch reaches here, and whether torch's two threads each have a core of their own.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

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
