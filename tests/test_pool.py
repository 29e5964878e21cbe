"""Recycled kernel buffers (:mod:`clearlstm.pool`): reuse only after the last tensor dies."""

from __future__ import annotations

import gc

import pytest
import torch

import clearlstm
from clearlstm.fused import pool

SHAPE = (64, 1024)  # 256 KiB in float32: the smallest pooled size


@pytest.fixture(autouse=True)
def empty_pool():
    pool.clear()
    yield
    pool.clear()


def test_a_block_is_reused_only_after_every_view_of_it_is_gone() -> None:
    first = pool.empty(SHAPE, torch.float32)
    address = first.data_ptr()
    view = first[3]  # keeps the block alive after `first` is dropped
    del first
    gc.collect()
    assert pool.pooled_bytes() == 0
    other = pool.empty(SHAPE, torch.float32)
    assert other.data_ptr() != address, "a block still in use was handed out again"
    addresses = {address, other.data_ptr()}
    del view, other
    gc.collect()
    assert pool.pooled_bytes() == 2 * 4 * 64 * 1024
    again = pool.empty(SHAPE, torch.float32)
    assert again.data_ptr() in addresses, "a freed block should be handed out again"
    assert pool.pooled_bytes() == 4 * 64 * 1024


def test_small_and_other_dtypes_are_plain_tensors() -> None:
    small = pool.empty((3, 4), torch.float32)
    half = pool.empty(SHAPE, torch.float16)
    del small, half
    gc.collect()
    assert pool.pooled_bytes() == 0


def test_pool_keeps_at_most_its_cap(monkeypatch) -> None:
    monkeypatch.setattr(pool, "MAX_POOLED_BYTES", 4 * 64 * 1024)
    blocks = [pool.empty(SHAPE, torch.float32) for _ in range(3)]
    del blocks
    gc.collect()
    assert pool.pooled_bytes() == 4 * 64 * 1024


def test_traces_from_recycled_memory_stay_correct() -> None:
    """Two traces alive at once never share memory; a dead trace's memory is reused."""
    torch.manual_seed(0)
    lstm = clearlstm.LSTM(4, 64)
    x1, x2 = torch.randn(300, 1, 4), torch.randn(300, 1, 4)
    with torch.no_grad():
        kept = lstm(x1, trace=True)[2]
        expected = kept.records[0][0].forget_gate.clone()
        for _ in range(3):
            lstm(x2, trace=True)  # dropped at once: its blocks go back to the pool
        assert torch.equal(kept.records[0][0].forget_gate, expected)
        assert pool.pooled_bytes() > 0


def test_blocks_start_on_a_cache_line() -> None:
    blocks = [pool.empty(SHAPE, torch.float32) for _ in range(4)]
    assert all(b.data_ptr() % pool.ALIGN == 0 for b in blocks)
