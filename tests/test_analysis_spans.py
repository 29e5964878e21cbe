"""Span search on planted patterns: a motif switched on in a few units recurs at known
places; the search recovers exactly those places, best matches first."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clearlstm.analysis import SpanMatch, SpanSearch, find_spans

MOTIF_UNITS = (1, 4, 6)
PLACES = [(20, 30), (70, 78), (120, 135), (200, 210)]  # the first is the query


def planted(seed: int = 0) -> np.ndarray:
    """``(250, 8)`` states below 0.4 everywhere but the motif units, which are on (0.9)
    over every planted place; a decoy with only two motif units on at 160-170."""
    rng = np.random.default_rng(seed)
    states = rng.uniform(-1.0, 0.4, size=(250, 8))
    for a, b in PLACES:
        states[a:b, list(MOTIF_UNITS)] = 0.9
    states[160:170, [1, 4]] = 0.9
    states[120:135, 7] = 0.95  # one more unit on at the third place: lower Jaccard
    return states


def test_recovers_the_planted_recurrences() -> None:
    search = find_spans(planted(), 20, 30, threshold=0.5, min_length=5)
    assert isinstance(search, SpanSearch) and search.units == MOTIF_UNITS
    assert all(isinstance(m, SpanMatch) for m in search.matches)
    found = [(m.start, m.stop) for m in search.matches]
    assert found == [(200, 210), (70, 78), (120, 135)]  # exact places, the query left out
    scores = {(m.start, m.stop): m.score for m in search.matches}
    assert scores[(200, 210)] == scores[(70, 78)] == 1.0
    assert scores[(120, 135)] == pytest.approx(3 / 4)  # unit 7 on too
    assert search.matches[2].units_on == (1, 4, 6, 7) and search.matches[2].length == 15


def test_min_length_and_query_and_partial_overlap() -> None:
    states = planted()
    # Default min_length is the query's (10): the 8-step place is too short.
    default = find_spans(states, 20, 30, threshold=0.5)
    assert [(m.start, m.stop) for m in default.matches] == [(200, 210), (120, 135)]
    with_query = find_spans(torch.from_numpy(states), 20, 30, 0.5, include_query=True)
    assert (20, 30) in [(m.start, m.stop) for m in with_query.matches]
    # With two of three units enough, the decoy at 160-170 is found, scored 2 / 3.
    partial = find_spans(states, 20, 30, 0.5, min_length=5, min_shared=0.6)
    decoy = next(m for m in partial.matches if m.start == 160)
    assert decoy.stop == 170 and decoy.score == pytest.approx(2 / 3)
    assert partial.matches[-1] is decoy  # lowest score last


def test_query_inside_a_longer_run_and_nothing_on() -> None:
    states = planted()
    search = find_spans(states, 122, 126, threshold=0.5)  # inside the third place
    assert search.units == (1, 4, 6, 7)
    assert [(m.start, m.stop) for m in search.matches] == []  # only the third place has 7
    states[:, :] = -1.0
    empty = find_spans(states, 0, 5, threshold=0.0)
    assert empty.units == () and empty.matches == ()


def test_nan_counts_as_off() -> None:
    states = planted()
    states[75, 4] = np.nan  # splits the second place in two short runs
    search = find_spans(states, 20, 30, threshold=0.5, min_length=5)
    assert (70, 78) not in [(m.start, m.stop) for m in search.matches]
    assert (70, 75) in [(m.start, m.stop) for m in search.matches]


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((np.zeros(5), 0, 2, 0.5), {}, r"states must be \(T, H\)"),
        ((np.zeros((5, 2)), 3, 3, 0.5), {}, "need 0 <= start < stop <= 5"),
        ((np.zeros((5, 2)), 0, 9, 0.5), {}, "need 0 <= start < stop <= 5"),
        ((np.zeros((5, 2)), 0, 2, 0.5), {"min_shared": 0.0}, r"min_shared must be in \(0, 1\]"),
        ((np.zeros((5, 2)), 0, 2, 0.5), {"min_length": 0}, "min_length must be a positive"),
    ],
)
def test_errors_name_the_argument(args, kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        find_spans(*args, **kwargs)
