"""clearlstm.LSTM's weights as torch.nn.LSTM's: same seed, same initial weights; state dicts
load both ways; ``to_torch`` / ``from_torch`` round trips keep the numbers and the options.
"""

from __future__ import annotations

import pytest
import torch
from parity_helpers import (
    TOL,
    B,
    H,
    I,
    P,
    T,
    assert_same_parameters,
)
from torch import nn
from torch.testing import assert_close

import clearlstm

pytestmark = pytest.mark.filterwarnings("ignore:LSTM with projections is not supported")


CONSTRUCTION = [
    dict(num_layers=1),
    dict(num_layers=2, bias=False),
    dict(num_layers=2, bidirectional=True, proj_size=P),
    dict(num_layers=3, batch_first=True, bidirectional=True, dropout=0.25),
    dict(num_layers=2, proj_size=1, dtype=torch.float64),
]


@pytest.mark.parametrize("kwargs", CONSTRUCTION)
def test_same_seed_gives_same_initial_weights(kwargs) -> None:
    torch.manual_seed(11)
    ref = nn.LSTM(I, H, **kwargs)
    torch.manual_seed(11)
    ours = clearlstm.LSTM(I, H, **kwargs)
    assert_same_parameters(ref, ours)
    # and the random stream is left where torch leaves it
    torch.manual_seed(12)
    nn.LSTM(I, H, **kwargs)
    after_ref = torch.rand(3)
    torch.manual_seed(12)
    clearlstm.LSTM(I, H, **kwargs)
    assert torch.equal(torch.rand(3), after_ref)


@pytest.mark.parametrize("kwargs", CONSTRUCTION)
def test_torch_state_dict_loads_strictly(kwargs) -> None:
    torch.manual_seed(5)
    ref = nn.LSTM(I, H, **kwargs)
    ours = clearlstm.LSTM(I, H, **kwargs)
    assert not all(
        torch.equal(a, b) for a, b in zip(ref.parameters(), ours.parameters(), strict=True)
    )
    ours.load_state_dict(ref.state_dict())  # strict: same keys, same shapes
    assert_same_parameters(ref, ours)
    assert list(ours.state_dict()) == list(ref.state_dict())


@pytest.mark.parametrize("kwargs", CONSTRUCTION)
def test_to_torch_round_trip(kwargs) -> None:
    torch.manual_seed(6)
    ours = clearlstm.LSTM(I, H, **kwargs).eval()
    ref = ours.to_torch()
    assert isinstance(ref, nn.LSTM) and not ref.training
    for name in (
        "input_size",
        "hidden_size",
        "num_layers",
        "bias",
        "batch_first",
        "dropout",
        "bidirectional",
        "proj_size",
    ):
        assert getattr(ref, name) == getattr(ours, name), name
    assert_same_parameters(ref, ours)
    back = clearlstm.LSTM.from_torch(ref)
    assert not back.training
    assert_same_parameters(ours, back)
    dtype = ours.weight_ih_l0.dtype
    x = torch.randn((B, T, I) if ours.batch_first else (T, B, I), dtype=dtype)
    out_ref, (h_ref, c_ref) = ref(x)
    out_back, (h_back, c_back) = back(x)
    assert_close(out_back, out_ref, **TOL[dtype])
    assert_close(h_back, h_ref, **TOL[dtype])
    assert_close(c_back, c_ref, **TOL[dtype])


def test_from_torch_keeps_training_mode_and_passes_options() -> None:
    ref = nn.LSTM(I, H, num_layers=2, dropout=0.5)
    assert clearlstm.LSTM.from_torch(ref).training
    assert not clearlstm.LSTM.from_torch(ref.eval()).training
    ours = clearlstm.LSTM.from_torch(ref, check_finite=False, backend="reference")
    assert ours.check_finite is False and ours.backend == "reference"
    assert ours.dropout == 0.5
