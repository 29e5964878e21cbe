"""Dropout between layers as torch.nn.LSTM draws it: reproducible under a seed, the same
numbers as torch, nothing drawn in eval mode.
"""

from __future__ import annotations

import pytest
import torch
from parity_helpers import (
    BACKENDS,
    TOL,
    B,
    H,
    I,
    T,
)
from torch import nn
from torch.testing import assert_close

import clearlstm


@pytest.mark.parametrize("backend", BACKENDS)
def test_dropout_in_training_is_reproducible_and_matches_torch(backend) -> None:
    torch.manual_seed(13)
    ref = nn.LSTM(I, H, num_layers=3, dropout=0.5, bidirectional=True)
    ours = clearlstm.LSTM.from_torch(ref, backend=backend)
    assert ours.training
    x = torch.randn(T, B, I)
    torch.manual_seed(0)
    out_a, (h_a, _) = ours(x)
    torch.manual_seed(0)
    out_b, (h_b, _) = ours(x)
    assert torch.equal(out_a, out_b) and torch.equal(h_a, h_b)
    torch.manual_seed(1)
    out_c, _ = ours(x)
    assert not torch.allclose(out_a, out_c), "a different seed must drop different units"
    torch.manual_seed(0)
    out_ref, (h_ref, _) = ref(x)
    assert_close(out_a, out_ref, **TOL[torch.float32])
    assert_close(h_a, h_ref, **TOL[torch.float32])
    out_eval, _ = ours.eval()(x)
    assert not torch.allclose(out_a, out_eval), "training-mode dropout must change the output"


@pytest.mark.parametrize("backend", BACKENDS)
def test_dropout_has_no_effect_in_eval_mode(backend) -> None:
    torch.manual_seed(14)
    with_dropout = clearlstm.LSTM(I, H, num_layers=2, dropout=0.7, backend=backend).eval()
    without = clearlstm.LSTM(I, H, num_layers=2, backend=backend)
    without.load_state_dict(with_dropout.state_dict())
    x = torch.randn(T, B, I)
    torch.manual_seed(0)
    out_a, (h_a, c_a) = with_dropout(x)
    drawn_after = torch.rand(3)
    out_b, (h_b, c_b) = without(x)
    assert torch.equal(out_a, out_b) and torch.equal(h_a, h_b) and torch.equal(c_a, c_b)
    torch.manual_seed(0)
    assert torch.equal(drawn_after, torch.rand(3)), "eval mode must draw no random numbers"


def test_dropout_one_drops_everything_between_layers() -> None:
    torch.manual_seed(15)
    ours = clearlstm.LSTM(I, H, num_layers=2, dropout=1.0, bias=False)
    out, (h_n, c_n) = ours(torch.randn(T, B, I))
    # layer 1 sees only zeros, and without bias its state stays zero
    assert not out.any() and not h_n[1].any() and not c_n[1].any()
    assert h_n[0].abs().sum() > 0
