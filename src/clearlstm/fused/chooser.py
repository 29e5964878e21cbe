"""Threads learnt from timings, for the calls whose bits cannot depend on them.

A forward-only call (inference, the trace) of the whole-sequence or the per-step kernel gives
every sequence the same arithmetic whether the batch runs on one thread or is split across
several (each thread runs whole sequences; the GEMMs around the kernel split their rows and
columns, never the sum: :func:`clearlstm.fused.gemm.threads_keep_bits` checks it for each
shape on this machine). So the thread count is free to follow the machine's state: two
threads win while each has a core (1.4-1.9x at (100, 8, 16, 64) and (200, 16, 128, 512)
traces), and lose up to 85x when the second core is busy, the parallel region waiting a time
slice for its second thread. :class:`ThreadChooser` times both on real calls and runs the
faster. One sequence (no batch to split) chooses between the sequence kernel on one thread
and the split kernel on two (:func:`clearlstm.fused.dispatch.split_learnt`): the split
forward and backward sum each unit as the sequence kernel does, so it too gives the same
bits, in training too; an option is then a ``(kernel, threads)`` pair. One sequence's
training is timed as a whole, gradient GEMMs included, which run on the second thread too
where that keeps their bits (:func:`clearlstm.fused.gemm.learnt_gemm_threads`). Other
training calls keep the size rule of :func:`clearlstm.fused.dispatch.sequence_threads`.
"""

from __future__ import annotations

import math
from collections.abc import Hashable

KEEP = 3  # timings kept per option: the fastest counts (noise only ever adds time)
PROBE_EVERY = 64  # calls between probes of the other option, at least
# Each option is timed twice before the choice settles, unless its first time was this many
# times the other's: one unlucky call (preempted, page faults) would otherwise pick the
# slower option for PROBE_EVERY calls, a whole run for a short job.
SECOND_LOOK = 2.0
PROBE_BUDGET = 32  # calls between probes per probe's cost in calls: ~3% of the time, at most
PROBE_MAX_EVERY = 4096  # calls: a busy machine that turned idle is noticed within this many


class ThreadChooser:
    """Per call size (``key``), which of two options runs (``(kernel, threads)`` pairs for
    :mod:`clearlstm.fused.dispatch`; any hashables), learnt from timings.

    Each option's first call is not counted (it may compile, start threads, fault in buffers);
    then each is timed twice more (once if it took over :data:`SECOND_LOOK` times the other),
    and the faster by its fastest recent call runs. The other is timed again after
    :data:`PROBE_EVERY` calls, or later when its last probe cost more (so probing a two-thread
    call that waits milliseconds for a core takes at most about 1/:data:`PROBE_BUDGET` of the
    time); three slow calls in a row of the option in use hand over to the other. Used only
    where both options give the same bits.
    """

    def __init__(self) -> None:
        self._seconds: dict[tuple, dict[Hashable, list[float]]] = {}  # key -> option -> recent
        self._warm: set[tuple] = set()  # (key, option) whose first call came back
        self._calls: dict[tuple, int] = {}  # calls planned per key
        self._next_probe: dict[tuple, int] = {}  # the call that probes the other option

    def threads(self, key: tuple, one: Hashable, many: Hashable) -> Hashable:
        """The option for the next call of size ``key``: ``one`` (fewer threads, measured
        first) or ``many``."""
        calls = self._calls.get(key, 0)
        self._calls[key] = calls + 1
        seen = self._seconds.get(key, {})
        for option in (one, many):  # measure one thread first: it never waits for a core
            if option not in seen:
                return option
        for option, other in ((one, many), (many, one)):  # a second timing, unless far slower
            if len(seen[option]) < 2 and min(seen[option]) < SECOND_LOOK * min(seen[other]):
                return option
        faster, other = (one, many) if min(seen[one]) <= min(seen[many]) else (many, one)
        if calls >= self._next_probe.get(key, PROBE_EVERY):
            self._next_probe[key] = calls + PROBE_EVERY  # until the probe reports its cost
            return other
        return faster

    def record(self, key: tuple, threads: Hashable, seconds: float) -> None:
        """A call of size ``key`` run on option ``threads`` took ``seconds``."""
        if (key, threads) not in self._warm:
            self._warm.add((key, threads))
            return
        seen = self._seconds.setdefault(key, {})
        recent = seen.setdefault(threads, [])
        recent.append(seconds)
        del recent[:-KEEP]
        if len(seen) < 2:
            return
        best = min(min(times) for times in seen.values())
        if seconds > best and min(recent) > best:  # a probe that lost: what it cost decides
            extra = PROBE_BUDGET * (seconds - best) / best
            wait = min(PROBE_MAX_EVERY, max(PROBE_EVERY, math.ceil(extra)))
            self._next_probe[key] = self._calls.get(key, 1) - 1 + wait  # from the probe's call


thread_chooser = ThreadChooser()  # the process's; tests may swap it
