"""Indexing a trace, or asking its retention, out of range names the valid range."""

from __future__ import annotations

import re

import pytest
import torch
from error_helpers import B, I, T, lstm

# ---------------------------------------------------------------------------------------
# Trace


@pytest.mark.parametrize(
    ("key", "shown"),
    [(2, "[2, 0]"), ((0, 1), "[0, 1]"), ((-3, 0), "[-3, 0]"), ((1, -2), "[1, -2]")],
)
def test_trace_index_out_of_range(key, shown) -> None:
    _, _, trace = lstm(num_layers=2)(torch.randn(T, B, I), trace=True)
    with pytest.raises(
        IndexError,
        match=rf"Trace: no record {re.escape(shown)}; this trace has 2 layer\(s\) and "
        rf"1 direction\(s\), indexed trace\[layer, direction\]",
    ):
        trace[key]
    assert trace[-2, -1] is trace[0, 0]


def test_trace_retention_of_a_missing_direction() -> None:
    _, _, trace = lstm()(torch.randn(T, B, I), trace=True)
    with pytest.raises(IndexError, match=r"Trace: no record \[-1, 1\]; this trace has 1 layer"):
        trace.retention(direction=1)
    with pytest.raises(IndexError, match=r"Trace: no record \[-1, 1\]"):
        trace.half_life(direction=1)


@pytest.mark.parametrize("start", [-1, T, T + 3])
def test_trace_retention_start_out_of_range(start) -> None:
    _, _, trace = lstm()(torch.randn(T, B, I), trace=True)
    with pytest.raises(
        ValueError, match=rf"Trace\.retention: start must be in \[0, {T - 1}\]; got {start}"
    ):
        trace.retention(start=start)
