"""clearlstm.LSTMCell against torch.nn.LSTMCell: same weights, same numbers, same gradients;
stepping the cell gives the one-layer LSTM's numbers.
"""

from __future__ import annotations

import pytest
import torch
from parity_helpers import (
    TOL,
    B,
    H,
    I,
    T,
    assert_same_grads,
    assert_same_parameters,
    leaf_pair,
    weighted_loss,
)
from torch import nn
from torch.func import functional_call
from torch.testing import assert_close

import clearlstm


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("with_hx", [False, True])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("batched", [True, False])
def test_lstm_cell_matches_torch(batched, bias, with_hx, dtype) -> None:
    tol = TOL[dtype]
    torch.manual_seed(21)
    ref = nn.LSTMCell(I, H, bias, dtype=dtype)
    ours = clearlstm.LSTMCell.from_torch(ref)
    assert_same_parameters(ref, ours)
    lead = (B,) if batched else ()
    x_ref, x_ours = leaf_pair(torch.randn(*lead, I, dtype=dtype))
    hx_ref = hx_ours = None
    if with_hx:
        h_ref0, h_ours0 = leaf_pair(torch.randn(*lead, H, dtype=dtype))
        c_ref0, c_ours0 = leaf_pair(torch.randn(*lead, H, dtype=dtype))
        hx_ref, hx_ours = (h_ref0, c_ref0), (h_ours0, c_ours0)
    h_ref, c_ref = ref(x_ref, hx_ref)
    h_ours, c_ours = ours(x_ours, hx_ours)
    assert h_ours.shape == (*lead, H) and c_ours.shape == (*lead, H)
    assert_close(h_ours, h_ref, **tol)
    assert_close(c_ours, c_ref, **tol)
    weights = [torch.randn_like(h_ref), torch.randn_like(c_ref)]
    weighted_loss(weights, [h_ref, c_ref]).backward()
    weighted_loss(weights, [h_ours, c_ours]).backward()
    assert_close(x_ours.grad, x_ref.grad, **tol)
    if with_hx:
        assert_close(h_ours0.grad, h_ref0.grad, **tol)
        assert_close(c_ours0.grad, c_ref0.grad, **tol)
    assert_same_grads(ref, ours, tol)


@pytest.mark.parametrize("bias", [True, False])
def test_lstm_cell_same_seed_state_dict_and_round_trip(bias) -> None:
    torch.manual_seed(8)
    ref = nn.LSTMCell(I, H, bias)
    torch.manual_seed(8)
    ours = clearlstm.LSTMCell(I, H, bias)
    assert_same_parameters(ref, ours)
    other = clearlstm.LSTMCell(I, H, bias)
    other.load_state_dict(nn.LSTMCell(I, H, bias).state_dict())
    other.load_state_dict(ref.state_dict())
    assert_same_parameters(ref, other)
    back = ours.to_torch()
    assert isinstance(back, nn.LSTMCell) and back.bias == bias
    assert_same_parameters(back, ours)


def test_lstm_cell_stepped_matches_one_layer_lstm() -> None:
    torch.manual_seed(9)
    lstm = clearlstm.LSTM(I, H, dtype=torch.float64)
    cell = clearlstm.LSTMCell(I, H, dtype=torch.float64)
    cell.load_state_dict({k.removesuffix("_l0"): v for k, v in lstm.state_dict().items()})
    x = torch.randn(T, B, I, dtype=torch.float64)
    out, (h_n, c_n) = lstm(x)
    h = c = torch.zeros(B, H, dtype=torch.float64)
    for t in range(T):
        h, c = cell(x[t], (h, c))
        assert_close(h, out[t], atol=1e-12, rtol=0)
    assert_close(h, h_n[0], atol=1e-12, rtol=0)
    assert_close(c, c_n[0], atol=1e-12, rtol=0)


# ---------------------------------------------------------------------------------------
# gradcheck in float64


@pytest.mark.parametrize("batched", [True, False])
def test_lstm_cell_gradcheck(batched) -> None:
    torch.manual_seed(17)
    cell = clearlstm.LSTMCell(2, 3).double()
    names = [n for n, _ in cell.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in cell.parameters()]
    lead = (2,) if batched else ()
    x = torch.randn(*lead, 2, dtype=torch.float64, requires_grad=True)
    h = torch.randn(*lead, 3, dtype=torch.float64, requires_grad=True)
    c = torch.randn(*lead, 3, dtype=torch.float64, requires_grad=True)

    def run(x, h, c, *params):
        return functional_call(cell, dict(zip(names, params, strict=True)), (x, (h, c)))

    assert torch.autograd.gradcheck(run, (x, h, c, *params))
