"""The machine's limits for an LSTM's recurrence, measured: FMA rate and L1/L2 read bandwidth
of one core (numba loops, float32), and from them a floor per shape.

Floor of a call ``(T, B, I, H)`` on one core: the input product (``T·B·4H·I`` multiply-adds
at the FMA rate) plus, per step, the larger of streaming ``w_hh`` (``16 H²`` bytes, from L1
if it fits there, else from L2 at best) and the ``B·4H·H`` recurrent multiply-adds. The
gates' arithmetic is left out, so no kernel can beat the floor; ``ours / floor`` says how far
from the machine's limit a kernel runs. Used by ``bench_lstm.py``.
"""

from __future__ import annotations

import time
from typing import NamedTuple

import numpy as np
from numba import njit

L1_BYTES = 32 * 1024  # a conservative L1d size (48 KiB on the machine measured)
L2_TEST_BYTES = 512 * 1024  # beyond L1, within every L2 of this class of CPU


class Limits(NamedTuple):
    fma_per_s: float  # float32 multiply-adds per second, one core
    l1_bytes_per_s: float
    l2_bytes_per_s: float


@njit(fastmath=True)
def _fma_loop(n, a, b):  # 128 independent chains: the FMA units' throughput, not latency
    acc = np.empty(128, np.float32)
    for j in range(128):
        acc[j] = j
    for _ in range(n):
        for j in range(128):
            acc[j] = acc[j] * a + b
    return acc.sum()


@njit(fastmath=True)
def _read_loop(n, x):  # reassociated sum: LLVM keeps several vector accumulators
    total = np.float32(0.0)
    for _ in range(n):
        for j in range(x.size):
            total += x[j]
    return total


def _best(fn, *args, repeats: int = 9) -> float:
    fn(*args)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - start)
    return min(times)  # the unpreempted run: a limit, not a typical time


def measure_limits() -> Limits:
    """One core's float32 FMA rate and read bandwidth from L1 and L2 (best of 9 runs)."""
    a, b = np.float32(0.999), np.float32(0.001)
    n = 100_000
    fma = 128 * n / _best(_fma_loop, n, a, b)
    rates = []
    for size in (L1_BYTES // 2, L2_TEST_BYTES):
        x = np.ones(size // 4, np.float32)
        reps = max(1, int(1e8 // size))
        rates.append(reps * size / _best(_read_loop, reps, x))
    return Limits(fma, rates[0], rates[1])


def floor_seconds(shape: tuple[int, int, int, int], limits: Limits) -> float:
    """The floor of one float32 inference call of ``shape = (T, B, I, H)`` on one core."""
    steps, batch, inputs, hidden = shape
    weight_bytes = 16 * hidden * hidden
    bandwidth = limits.l1_bytes_per_s if weight_bytes <= L1_BYTES else limits.l2_bytes_per_s
    per_step = max(weight_bytes / bandwidth, batch * 4 * hidden * hidden / limits.fma_per_s)
    return steps * batch * 4 * hidden * inputs / limits.fma_per_s + steps * per_step


if __name__ == "__main__":
    found = measure_limits()
    print(
        f"FMA {found.fma_per_s / 1e9:.0f} G/s, L1 {found.l1_bytes_per_s / 1e9:.0f} GB/s, "
        f"L2 {found.l2_bytes_per_s / 1e9:.0f} GB/s"
    )
