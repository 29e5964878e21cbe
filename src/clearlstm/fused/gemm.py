"""The torch GEMMs around the fused kernels: the input product of all steps, the per-step
recurrent product on prepacked weights, and how many threads each gets.

float32 goes through oneDNN's dense linear where this torch has it (``torch.ops.mkldnn``),
else, and for float64, ``torch.mm``/``addmm`` (MKL); both ways are tested.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache, lru_cache

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
# A forward-only call whose threads are learnt from timings (clearlstm.fused.chooser) runs
# its GEMMs on torch's threads from here (two threads win from ~1.6 MFLOP on an idle
# machine), where threads_keep_bits holds; the chooser falls back to one thread when busy.
LEARNT_GEMM_FLOPS = 2**20
ONEDNN_MIN_FLOPS = 2**22  # see input_product
# threads_keep_bits checks gradient GEMMs on random operands of the call's size up to this
# many dz elements (64 MiB of float32): beyond, a learnt plan keeps the size rule.
GRADIENT_CHECK_MAX = 2**24


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


@lru_cache(maxsize=1024)
def threads_keep_bits(kind: str, m: int, k: int, n: int, dtype: torch.dtype, threads: int) -> bool:
    """Whether GEMMs of ``kind`` give the same bits on ``threads`` threads as on one:
    ``"input"`` (:func:`input_product` of ``a (m, k)`` and ``w (n, k)``, bias included),
    ``"step"`` (:func:`step_product`, weights prepacked for ``m`` rows) or ``"gradient"``
    (:func:`gradient_products` of ``dz (m, n)``, ``x (m, k)``, ``h_prev (m, n / 4)``).

    Checked once per shape on this machine, on random operands: a GEMM's sums run in an order
    that depends on its blocking, never on the values, so one comparison of every output
    element shows whether the threads split the sum (it would change the bits) or only the
    rows and columns (it cannot). MKL and oneDNN in torch 2.13 on this CPU split only rows
    and columns at every shape tested (tests/test_threads.py), but a build may differ; where
    the bits differ a learnt plan keeps the size rule (:data:`SMALL_GEMM_FLOPS`).
    """
    if threads < 2:
        return True
    if kind == "gradient" and m * n > GRADIENT_CHECK_MAX:
        return False  # not checked at this size (the size rule then holds on every option)
    gen = torch.Generator().manual_seed(0)
    a, w, bias = (torch.randn(*s, generator=gen, dtype=dtype) for s in ((m, k), (n, k), (n,)))
    if kind == "gradient":
        dz, h_prev = (torch.randn(m, s, generator=gen, dtype=dtype) for s in (n, n // 4))
    step = step_product(w, m) if kind == "step" else None  # packed once, as a call does

    def products() -> tuple[Tensor | None, ...]:
        if kind == "gradient":
            return gradient_products(dz, a, w, h_prev, (True,) * 4)
        return ((step(a) if step else input_product(a, w, bias)).clone(),)

    before, results = torch.get_num_threads(), []
    for count in (1, threads):
        torch.set_num_threads(count)
        try:
            results.append(products())
        finally:
            torch.set_num_threads(before)
    return all(torch.equal(*pair) for pair in zip(*results, strict=True))


def learnt_gemm_threads(learnt: bool, threads: int, kind: str, m: int, k: int, n: int,
                        dtype: torch.dtype, default: int) -> tuple[int, float]:  # fmt: skip
    """``(threads, min_flops)`` for :func:`gemm_threads`: a learnt plan's ``threads`` (one,
    or torch's) from :data:`LEARNT_GEMM_FLOPS` where :func:`threads_keep_bits`, else
    ``default`` threads from :data:`SMALL_GEMM_FLOPS`; so the bits never depend on which
    thread count the chooser picked. A plan that timings put on several threads found the
    cores free, so its GEMMs (forward, and a training call's gradients) may use them too."""
    torch_threads = torch.get_num_threads()
    if learnt and threads_keep_bits(kind, m, k, n, dtype, torch_threads):
        return (torch_threads if threads > 1 else 1), LEARNT_GEMM_FLOPS
    return default, SMALL_GEMM_FLOPS


_FEW_INPUTS = 8  # see gradient_products


def gradient_products(
    dz: Tensor, x: Tensor, w_ih: Tensor, h_prev: Tensor | None, need: tuple[bool, ...]
) -> tuple[Tensor | None, ...]:
    """A layer's gradients from ``dz (T * B, G)``, the gradient w.r.t. its pre-activations:
    ``dx = dz @ w_ih`` ``(T * B, I)``, ``dw_ih = dz.T @ x`` ``(G, I)``, ``db`` ``(G,)`` and
    ``dw_hh = dz.T @ h_prev`` ``(G, H)``, each only where ``need`` (four flags) says; ``x
    (T * B, I)``, ``w_ih (G, I)``; ``h_prev (T * B, H)``, the short-term memory each step
    started from, is needed for ``dw_hh`` only. Run on the caller's :func:`gemm_threads`."""
    dx = dw_ih = db = dw_hh = None
    # Operands laid out so MKL takes its faster paths for few inputs (measured: dx 2.3-3x
    # faster with 8 inputs, slower from 16; dw_ih 1.0-3x, never slower).
    if need[0]:
        weight = w_ih.t().contiguous().t() if x.shape[1] <= _FEW_INPUTS else w_ih
        dx = torch.mm(dz, weight)
    if need[1]:
        dw_ih = torch.mm(x.t(), dz).t()
    if need[2]:
        db = dz.sum(0)
    if need[3]:
        dw_hh = torch.mm(dz.t(), h_prev)
    return dx, dw_ih, db, dw_hh


@contextmanager
def gemm_threads(flops: float, threads: int, min_flops: float = SMALL_GEMM_FLOPS) -> Iterator[None]:
    """Run small GEMMs (below ``min_flops``) on one thread: waking a thread pool costs more
    than they take (and on a busy machine a parallel region can wait milliseconds for a
    descheduled thread)."""
    before = torch.get_num_threads()
    wanted = 1 if flops < min_flops else max(1, min(threads, before))
    if wanted == before:
        yield
        return
    torch.set_num_threads(wanted)
    try:
        yield
    finally:
        torch.set_num_threads(before)
