"""Recycled memory for the kernels' large buffers (records, saved gates, scratch).

Fresh memory costs a page fault per 4 KiB on first write, about 0.3 ms per MB on this kind
of virtual machine: more than computing the gates of a small layer. glibc hands freed large
blocks back to the system (and faults them in again on the next call), so a trace or a
training step would pay that price on every call. Here a block whose last tensor died goes
to a free list and the next request of the same size gets it back, already mapped.

Only blocks of at least :data:`MIN_BYTES` are pooled and at most :data:`MAX_POOLED_BYTES`
are kept. A tensor from :func:`empty` is an ordinary CPU tensor over a NumPy buffer (its
storage cannot be resized); its memory is reused only once nothing refers to it anymore.
"""

from __future__ import annotations

import math
import threading
import weakref

import numpy as np
import torch

MIN_BYTES = 1 << 18  # 256 KiB: glibc already reuses smaller blocks without faults
MAX_POOLED_BYTES = 1 << 29  # 512 MiB of freed blocks kept at most
ALIGN = 64  # bytes: a cache line, and one AVX-512 vector

_NUMPY = {torch.float32: np.float32, torch.float64: np.float64}
_lock = threading.Lock()
# (bytes, dtype) -> free blocks, each kept as (raw allocation, its aligned 1-D view)
_free: dict[tuple[int, torch.dtype], list[tuple[np.ndarray, np.ndarray]]] = {}
_pooled = [0]  # bytes in _free


def empty(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """``torch.empty(shape, dtype=dtype)`` on the CPU, from recycled memory when possible.

    ``dtype`` float32 or float64. Contents are undefined, as with ``torch.empty``.
    """
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes < MIN_BYTES or dtype not in _NUMPY:
        return torch.empty(shape, dtype=dtype)
    key = (nbytes, dtype)
    with _lock:
        blocks = _free.get(key)
        block = blocks.pop() if blocks else None
        if block is not None:
            _pooled[0] -= nbytes
    if block is None:
        raw = np.empty(nbytes + ALIGN, np.uint8)
        start = -raw.ctypes.data % ALIGN  # whole cache lines: vector loads never straddle two
        block = raw, raw[start : start + nbytes].view(_NUMPY[dtype])
    array = block[1].reshape(shape)
    # torch keeps `array` (a view) alive, never the block: it returns to the pool once it dies
    weakref.finalize(array, _release, key, block)
    return torch.from_numpy(array)


def _release(key: tuple[int, torch.dtype], block: tuple[np.ndarray, np.ndarray]) -> None:
    """Called once the last tensor over ``block`` is gone."""
    nbytes = key[0]
    with _lock:
        if _pooled[0] + nbytes <= MAX_POOLED_BYTES:
            _free.setdefault(key, []).append(block)
            _pooled[0] += nbytes


def pooled_bytes() -> int:
    """Bytes held in free blocks now (for tests and diagnostics)."""
    with _lock:
        return _pooled[0]


def clear() -> None:
    """Give every free block back to the allocator."""
    with _lock:
        _free.clear()
        _pooled[0] = 0
