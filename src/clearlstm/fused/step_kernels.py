"""Step kernels: the gates of one step for the whole batch, the recurrent product coming from a
BLAS GEMM torch runs per step (right for large ``B * H``); and one streaming step. Shapes
and arguments as in :mod:`clearlstm.fused.kernels`.
"""

from __future__ import annotations

import numpy as np
from numba import carray, njit, prange, types
from numba.extending import intrinsic

from clearlstm.fused.kernel_math import (
    JIT,
    gates_backward,
    gates_forward,
    matvec_t,
    previous_c,
    step_time,
)

# A gate pass is split across threads from this many gate values per step (~5 ms of work):
# a parallel region per step waits for a descheduled thread for milliseconds on a busy
# machine, every step (see clearlstm.fused.dispatch.SEQUENCE_PARALLEL_MACS).
PARALLEL_GATES_MIN = 1 << 24


@njit(cache=True, **JIT)
def _forward_gates_rows(
    s, xw, hw, h, c, lengths, reverse, out, gates, cs, pre, store, record, b0, b1
):
    """:func:`forward_gates` for sequences ``[b0, b1)``."""
    hidden = c.shape[1]
    width = 4 * hidden
    nan = xw.dtype.type(np.nan)
    for b in range(b0, b1):
        n = lengths[b]
        if s >= n:  # padded: the state stays, the output is zero
            out[s, b, :] = 0.0
            if store:
                gates[s, b, :] = nan
                cs[s, b, :] = nan
            if record:
                pre[s, b, :] = nan
            continue
        t = step_time(s, n, reverse)
        for j in range(width):
            hw[b, j] += xw[t, b, j]
        if record:
            for j in range(width):
                pre[t, b, j] = hw[b, j]
        gates_forward(hw, b, c, h, b, out, t, b)
        if store:
            for j in range(width):
                gates[t, b, j] = hw[b, j]
            for j in range(hidden):
                cs[t, b, j] = c[b, j]


@njit(cache=True, parallel=True)
def _forward_gates_parallel(
    s, xw, hw, h, c, lengths, reverse, out, gates, cs, pre, store, record, chunks
):
    batch = xw.shape[1]
    for p in prange(chunks):
        b0, b1 = p * batch // chunks, (p + 1) * batch // chunks
        _forward_gates_rows(
            s, xw, hw, h, c, lengths, reverse, out, gates, cs, pre, store, record, b0, b1
        )


def forward_gates(
    s: int,
    xw: np.ndarray,
    hw: np.ndarray,
    h: np.ndarray,
    c: np.ndarray,
    lengths: np.ndarray,
    reverse: bool,
    out: np.ndarray,
    gates: np.ndarray,
    cs: np.ndarray,
    pre: np.ndarray,
    store: bool,
    record: bool,
    threads: int = 1,
) -> None:
    """Processing step ``s`` for the whole batch, after BLAS computed ``hw = h @ w_hh.T``.

    ``xw (T, B, G)``, ``hw (B, G)`` (overwritten), ``h, c (B, H)`` advanced in place; other
    arguments as in :func:`forward_sequence`. With ``threads > 1`` and at least
    :data:`PARALLEL_GATES_MIN` gate values the batch is split across numba threads.
    """
    args = (s, xw, hw, h, c, lengths, reverse, out, gates, cs, pre, store, record)
    _over_batch(_forward_gates_rows, _forward_gates_parallel, args, xw.shape[2], threads)


def _over_batch(rows, parallel, args, width: int, threads: int) -> None:
    """``rows(*args, 0, B)`` for the batch ``B = args[1].shape[1]``, or ``parallel(*args,
    chunks)`` splitting it across threads when a step has enough gate values (``B * width``).
    """
    batch = args[1].shape[1]
    if threads > 1 and batch > 1 and batch * width >= PARALLEL_GATES_MIN:
        parallel(*args, min(threads, batch))
    else:
        rows(*args, 0, batch)


@njit(cache=True, **JIT)
def _backward_gates_rows(
    s, grad_out, dh_rec, dh, dc, gates, cs, c0, lengths, reverse, dz, dz_step, b0, b1
):
    """:func:`backward_gates` for sequences ``[b0, b1)``."""
    hidden = dh.shape[1]
    width = 4 * hidden
    cp = np.empty(dh.shape, dh.dtype)
    for b in range(b0, b1):
        n = lengths[b]
        if s + 1 < n:  # step s + 1 ran, so its recurrent gradient replaces the carry
            for j in range(hidden):
                dh[b, j] = dh_rec[b, j]
        if s >= n:
            dz[s, b, :] = 0.0
            dz_step[b, :] = 0.0
            continue
        t = step_time(s, n, reverse)
        for j in range(hidden):
            dh[b, j] += grad_out[t, b, j]
        previous_c(cp, b, cs, c0, s, n, reverse, b)
        gates_backward(dh, dc, cp, b, gates, cs, t, b, dz)
        for j in range(width):
            dz_step[b, j] = dz[t, b, j]


@njit(cache=True, parallel=True)
def _backward_gates_parallel(
    s, grad_out, dh_rec, dh, dc, gates, cs, c0, lengths, reverse, dz, dz_step, chunks
):
    batch = grad_out.shape[1]
    for p in prange(chunks):
        b0, b1 = p * batch // chunks, (p + 1) * batch // chunks
        _backward_gates_rows(
            s, grad_out, dh_rec, dh, dc, gates, cs, c0, lengths, reverse, dz, dz_step, b0, b1
        )


def backward_gates(
    s: int,
    grad_out: np.ndarray,
    dh_rec: np.ndarray,
    dh: np.ndarray,
    dc: np.ndarray,
    gates: np.ndarray,
    cs: np.ndarray,
    c0: np.ndarray,
    lengths: np.ndarray,
    reverse: bool,
    dz: np.ndarray,
    dz_step: np.ndarray,
    threads: int = 1,
) -> None:
    """Processing step ``s`` backwards for the whole batch; BLAS then does ``dz_step @ w_hh``.

    ``dh_rec (B, H)`` is ``dz_step @ w_hh`` of step ``s + 1`` (ignored at ``s = T - 1``);
    ``dh, dc (B, H)`` carry the gradients w.r.t. the state after step ``s``. Writes
    ``dz (T, B, G)`` at this step's times and ``dz_step (B, G)`` (zero for padded rows).
    Threads as in :func:`forward_gates`.
    """
    args = (s, grad_out, dh_rec, dh, dc, gates, cs, c0, lengths, reverse, dz, dz_step)
    _over_batch(_backward_gates_rows, _backward_gates_parallel, args, dz.shape[2], threads)


@njit(cache=True, **JIT)
def stream_step(x, w, state):
    """One step of one layer for streaming: ``x (B, I)``; ``w (I + H + 1, G)`` holds
    ``w_ih.T``, ``w_hh.T`` and the combined bias as rows (:func:`pack_stream_weights`);
    ``state (2, B, H)``: ``h`` and ``c``, advanced in place. Returns a copy of the new ``h``.
    """
    inputs, hidden = x.shape[1], state.shape[2]
    h, c = state[0], state[1]
    w_ih_t, whh_t, bias = w[:inputs], w[inputs : inputs + hidden], w[inputs + hidden]
    z = np.empty((x.shape[0], w.shape[1]), w.dtype)
    out = np.empty((1, x.shape[0], hidden), w.dtype)
    for b in range(x.shape[0]):
        for j in range(z.shape[1]):
            z[b, j] = bias[j]
        matvec_t(x, b, w_ih_t, z, b)
        matvec_t(h, b, whh_t, z, b)
        gates_forward(z, b, c, h, b, out, 0, b)
    return out[0]


def _typed_pointer(element):
    """An intrinsic turning an integer address into a pointer to ``element`` values."""

    @intrinsic
    def pointer(typingctx, address):
        def codegen(context, builder, signature, args):
            return builder.inttoptr(args[0], context.get_value_type(types.CPointer(element)))

        return types.CPointer(element)(address), codegen

    return pointer


_F32_POINTER, _F64_POINTER = _typed_pointer(types.float32), _typed_pointer(types.float64)


@njit(cache=True, **JIT)
def stream_step_f32(x_at, w_at, state_at, batch, inputs, hidden):
    """:func:`stream_step` on float32 arrays given by address: the C-contiguous input
    ``(batch, inputs)`` (a torch tensor's ``data_ptr()``), the packed weights
    ``(inputs + hidden + 1, 4 * hidden)`` and the state ``(2, batch, hidden)``, all kept
    alive and checked by the caller. Integers cross numba's dispatcher in ~30 ns each, arrays
    in ~250 ns: at H = 64 that is a tenth of a streaming step."""
    x = carray(_F32_POINTER(x_at), (batch, inputs))
    w = carray(_F32_POINTER(w_at), (inputs + hidden + 1, 4 * hidden))
    return stream_step(x, w, carray(_F32_POINTER(state_at), (2, batch, hidden)))


@njit(cache=True, **JIT)
def stream_step_f64(x_at, w_at, state_at, batch, inputs, hidden):
    """:func:`stream_step_f32` for float64 arrays."""
    x = carray(_F64_POINTER(x_at), (batch, inputs))
    w = carray(_F64_POINTER(w_at), (inputs + hidden + 1, 4 * hidden))
    return stream_step(x, w, carray(_F64_POINTER(state_at), (2, batch, hidden)))


def pack_stream_weights(w_ih: np.ndarray, w_hh: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """``w_ih (G, I)``, ``w_hh (G, H)``, ``bias (G,)`` as the rows of one ``(I + H + 1, G)``
    array for :func:`stream_step` (one argument instead of three: each costs numba ~0.1 µs)."""
    return np.ascontiguousarray(np.concatenate([w_ih.T, w_hh.T, bias[None]]))
