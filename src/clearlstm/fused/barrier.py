"""A spin barrier between numba threads, for kernels whose threads meet at every step.

Acquire/release atomics on int64 counters (each thread's progress on its own cache line), the
x86 pause hint while spinning, then ``sched_yield``; a partner later than the patience gives
up the call (the caller reruns it on one thread), so a thread that never arrives cannot hang
the process.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from clearlstm.fused.kernel_math import JIT

# A waiting thread polls with the pause hint (~20 ns each), then yields its core (~0.4 µs
# each; the partner may be waiting for it). A partner late by more than the patience (about
# 0.2 ms by default) has lost its core, typically to another thread pool's spinning worker
# (torch's idle OpenMP workers spin ~10 ms after each parallel region): the call is then
# abandoned and the caller reruns it on one thread, which also means a partner that never
# arrives cannot hang the process.
_SPINS_BEFORE_YIELD = 2_000
PATIENCE = 2_500  # polls, pauses and yields together
PAD = 16  # int64 slots between counters: each on its own cache line


def _element_pointer(context, builder, signature, args):
    array_type = signature.args[0]
    array = context.make_array(array_type)(context, builder, args[0])
    return cgutils.get_item_pointer(context, builder, array_type, array, [args[1]])


@intrinsic
def _load_acquire(typingctx, array, index):
    """``array[index]`` read with acquire ordering (int64 array)."""

    def codegen(context, builder, signature, args):
        pointer = _element_pointer(context, builder, signature, args)
        return builder.load_atomic(pointer, ordering="acquire", align=8)

    return types.int64(array, index), codegen


@intrinsic
def _store_release(typingctx, array, index, value):
    """``array[index] = value`` with release ordering (int64 array)."""

    def codegen(context, builder, signature, args):
        pointer = _element_pointer(context, builder, signature, args)
        builder.store_atomic(args[2], pointer, ordering="release", align=8)
        return context.get_dummy_value()

    return types.void(array, index, value), codegen


@intrinsic
def _pause(typingctx):
    """The x86 spin-wait hint."""

    def codegen(context, builder, signature, args):
        function = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), []), "llvm.x86.sse2.pause"
        )
        builder.call(function, [])
        return context.get_dummy_value()

    return types.void(), codegen


@intrinsic
def _sched_yield(typingctx):
    """libc's ``sched_yield()``: let another thread have this core."""

    def codegen(context, builder, signature, args):
        function = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.IntType(32), []), "sched_yield"
        )
        builder.call(function, [])
        return context.get_dummy_value()

    return types.void(), codegen


@njit(**JIT)
def barrier(counters, me, threads, target):
    """Announce that thread ``me`` finished step ``target - 1``; wait for the others.

    ``counters (threads * PAD + 2,)``: slot ``p * PAD`` is thread ``p``'s progress; slot
    ``threads * PAD`` is set to 1 when someone gave up, the last slot holds the patience.
    Returns False when the call was abandoned.
    """
    _store_release(counters, me * PAD, target)
    abandon = threads * PAD
    patience = counters[abandon + 1]
    for p in range(threads):
        spins = 0
        while _load_acquire(counters, p * PAD) < target:
            spins += 1
            if spins < _SPINS_BEFORE_YIELD:
                _pause()
            else:
                _sched_yield()
            if spins > patience or _load_acquire(counters, abandon) != 0:
                _store_release(counters, abandon, 1)
                return False
    return True


def new_counters(threads: int, patience: int) -> np.ndarray:
    """The counters :func:`barrier` takes: progress slots, the abandon flag, the patience."""
    counters = np.zeros(threads * PAD + 2, np.int64)
    counters[-1] = patience
    return counters
