"""Measurements that need a fresh Python process each: peak memory of a training step,
cold start (import + first fused call), and start-up of the ``clearlstm`` command.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time

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


STARTUP_COMMANDS = {
    "python -c pass": ["-c", "pass"],
    'python -c "import torch"': ["-c", "import torch"],
    "clearlstm --help (python -m clearlstm --help)": ["-m", "clearlstm", "--help"],
}


def startup_times(runs: int = 7) -> dict[str, float]:
    """Median wall seconds of each :data:`STARTUP_COMMANDS` entry, each run a fresh process.

    Rounds interleave the commands, so the machine's drift and the disk cache touch them
    alike; one unmeasured round first warms the cache. Python's own start-up is the floor,
    ``import torch`` what a command pays if it imports torch.
    """
    times: dict[str, list[float]] = {name: [] for name in STARTUP_COMMANDS}
    for round_ in range(runs + 1):
        for name, args in STARTUP_COMMANDS.items():
            start = time.perf_counter()
            out = subprocess.run([sys.executable, *args], capture_output=True, text=True)
            elapsed = time.perf_counter() - start
            if out.returncode:
                raise RuntimeError(f"startup_times: {name} exited {out.returncode}: {out.stderr}")
            if round_:
                times[name].append(elapsed)
    return {name: statistics.median(t) for name, t in times.items()}
