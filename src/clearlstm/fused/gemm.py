"""The torch GEMMs around the fused kernels: the input product of all steps, the per-step
recurrent product on prepacked weights, and how many threads each gets.

float32 goes through oneDNN's dense linear where this torch has it (``torch.ops.mkldnn``),
else, and for float64, ``torch.mm``/``addmm`` (MKL); both ways are tested.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache

import torch
from torch import Tensor

from clearlstm.fused import pool

# Below this a GEMM runs on one thread. On an idle machine two threads win from ~1.6 MFLOP,
# but a parallel region waits for its second thread to be scheduled, milliseconds on a shared
# machine: at (300, 1, 32, 64) the 4.9 MFLOP input product on 2 threads made a 0.5 ms
# inference 63x slower under load (1.23x with it on one thread; training 13.7x -> 1.7x).
# With the halves split statically, the thread sharing its core finishes no sooner than one
# thread doing it all, so two threads pay on a busy machine only once the wait is small
# against the GEMM: from ~2 GFLOP (~15 ms on one core; (1000, 1, 32, 128) training was 6.2x
# slower on 2 threads with its 0.07-0.13 GFLOP gradient GEMMs there). Only the sizes and
# torch's setting decide, never timings.
SMALL_GEMM_FLOPS = 2**31
ONEDNN_MIN_FLOPS = 2**22  # see input_product


@cache
def has_onednn_linear() -> bool:
    """Whether this torch has oneDNN's dense linear operators (``torch.ops.mkldnn``)."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        return callable(torch.ops.mkldnn._linear_pointwise) and callable(
            torch.ops.mkldnn._reorder_linear_weight
        )
    except (AttributeError, RuntimeError):
        return False


def step_product(weight: Tensor, batch: int) -> Callable[[Tensor], Tensor]:
    """``product(a (B, K))`` returns ``a @ weight.T (B, N)`` for ``weight (N, K)``.

    float32 goes through oneDNN with the weight reordered once into its blocked layout for
    this batch size (what torch's compiler does for a Linear): per-step GEMMs 1.4-1.7x
    faster than oneDNN on a plain weight and 1.9-3.6x than torch.mm's MKL on this class of
    CPU (measured at B * H = 8k-64k). float64, and a torch without those operators, stay on
    torch.mm.
    """
    if weight.dtype == torch.float32 and has_onednn_linear():
        packed = torch.ops.mkldnn._reorder_linear_weight(weight.contiguous(), batch)
        linear = torch.ops.mkldnn._linear_pointwise
        return lambda a: linear(a, packed, None, "none", [], "")
    weight_t = weight.t().contiguous()
    return lambda a: torch.mm(a, weight_t)


def input_product(x2: Tensor, w_ih: Tensor, bias: Tensor | None) -> Tensor:
    """``x2 @ w_ih.T + bias`` ``(T * B, G)`` for every step at once, ``x2 (T * B, I)``.

    float32 from :data:`ONEDNN_MIN_FLOPS` on through oneDNN, 1.6-2.4x faster than
    ``torch.addmm``'s MKL on this class of CPU (measured from (1000, 8) x (8, 256) to
    (6400, 512) x (512, 4096)); below, and for float64, ``addmm`` into pooled memory.
    """
    flops = 2.0 * x2.shape[0] * x2.shape[1] * w_ih.shape[0]
    if x2.dtype == torch.float32 and flops >= ONEDNN_MIN_FLOPS and has_onednn_linear():
        linear = torch.ops.mkldnn._linear_pointwise
        return linear(x2.contiguous(), w_ih.contiguous(), bias, "none", [], "")
    xw = pool.empty((x2.shape[0], w_ih.shape[0]), x2.dtype)  # back to the pool after the call
    if bias is None:
        return torch.mm(x2, w_ih.t(), out=xw)
    return torch.addmm(bias, x2, w_ih.t(), out=xw)


@contextmanager
def gemm_threads(flops: float, threads: int) -> Iterator[None]:
    """Run small GEMMs on one thread: waking a thread pool costs more than they take (and on
    a busy machine a parallel region can wait milliseconds for a descheduled thread)."""
    before = torch.get_num_threads()
    wanted = 1 if flops < SMALL_GEMM_FLOPS else max(1, min(threads, before))
    if wanted == before:
        yield
        return
    torch.set_num_threads(wanted)
    try:
        yield
    finally:
        torch.set_num_threads(before)
