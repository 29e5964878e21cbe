"""LSTMVis-style span search (Strobelt et al. 2017): select a span, find where its units
switch on together again.

The units "on" over a span are those above ``threshold`` at every step of it. A match is a
maximal run of steps, elsewhere in the data, where those units are on together (all of
them, or at least ``min_shared`` of them at each step), at least ``min_length`` steps long.
Its score is the Jaccard index of the two on-sets: the selected units against the units on
over the whole match, so a match where many *other* units are on too scores lower.

>>> import torch
>>> states = torch.zeros(12, 3)
>>> states[2:5, 0] = states[8:11, 0] = 1.0
>>> search = find_spans(states, 2, 5, threshold=0.5)
>>> search.units, [(m.start, m.stop, m.score) for m in search.matches]
((0,), [(8, 11, 1.0)])
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class SpanMatch:
    """A run ``[start, stop)`` where the selected units are on together."""

    start: int
    stop: int
    score: float  # Jaccard of the selected units and the units on over the whole run
    units_on: tuple[int, ...]  # units on over the whole run

    @property
    def length(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class SpanSearch:
    """The query span, the units it selected and the matches, best first."""

    start: int
    stop: int
    threshold: float
    units: tuple[int, ...]  # units on over the whole query span
    matches: tuple[SpanMatch, ...]  # best score first, then longer, then earlier


def _runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """Maximal ``[start, stop)`` runs of True."""
    padded = np.concatenate([[False], flags, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def find_spans(
    states: object,
    start: int,
    stop: int,
    threshold: float,
    *,
    min_length: int | None = None,
    min_shared: float = 1.0,
    include_query: bool = False,
) -> SpanSearch:
    """Search ``states (T, H)`` (numpy or torch; NaN counts as off) for runs like ``[start,
    stop)``.

    ``min_length`` defaults to the query's length; ``min_shared`` in ``(0, 1]`` is the
    fraction of the selected units that must be on at each step of a match. The run that
    contains the query is left out unless ``include_query``. No unit on over the query
    gives no matches.
    """
    if isinstance(states, torch.Tensor):
        states = states.detach().cpu().double().numpy()
    x = np.asarray(states, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"find_spans: states must be (T, H); got shape {x.shape}")
    steps = x.shape[0]
    try:
        a, b = operator.index(start), operator.index(stop)
    except TypeError:
        a, b = -1, -1
    if not 0 <= a < b <= steps:
        raise ValueError(
            f"find_spans: need 0 <= start < stop <= {steps} (ints); got start={start!r}, "
            f"stop={stop!r}"
        )
    start, stop = a, b
    if not 0 < min_shared <= 1:
        raise ValueError(f"find_spans: min_shared must be in (0, 1]; got {min_shared}")
    min_length = stop - start if min_length is None else min_length
    if isinstance(min_length, bool) or not isinstance(min_length, int) or min_length < 1:
        raise ValueError(f"find_spans: min_length must be a positive int; got {min_length!r}")
    on = np.nan_to_num(x, nan=-np.inf) > threshold  # (T, H)
    selected = np.flatnonzero(on[start:stop].all(0))
    units = tuple(selected.tolist())
    if not units:
        return SpanSearch(start, stop, float(threshold), units, ())
    need = max(1, int(np.ceil(min_shared * len(units) - 1e-9)))
    together = on[:, selected].sum(1) >= need
    matches = []
    for a, b in _runs(together):
        if b - a < min_length or (not include_query and a < stop and start < b):
            continue
        run_on = np.flatnonzero(on[a:b].all(0))
        both = len(np.intersect1d(run_on, selected))
        score = both / len(np.union1d(run_on, selected))
        matches.append(SpanMatch(a, b, float(score), tuple(run_on.tolist())))
    matches.sort(key=lambda m: (-m.score, -m.length, m.start))
    return SpanSearch(start, stop, float(threshold), units, tuple(matches))
