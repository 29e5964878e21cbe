"""clearlstm.LSTM / LSTMCell against torch.nn.LSTM / LSTMCell: same weights, same numbers.

Order of checks (fastrnns' test.py): parameters identical first, then outputs and final
memories, then every gradient — w.r.t. the input, the initial state and every parameter.
Each LSTM check runs on the ``"reference"`` backend (the cell stepped in Python) and on the
default ``"auto"`` (which picks a fast kernel where one applies).

This file: LSTM outputs, final memories and gradients over the option matrix, unbatched
input, and gradcheck. Construction and weights, LSTMCell and dropout have their own
``test_parity_*.py``.
"""

from __future__ import annotations

import itertools
import zlib

import pytest
import torch
from parity_helpers import (
    BACKENDS,
    LENGTHS,
    SORTED_LENGTHS,
    TOL,
    VARIANTS,
    B,
    H,
    I,
    P,
    T,
    assert_same_grads,
    assert_same_parameters,
    leaf_pair,
    weighted_loss,
)
from torch import nn
from torch.func import functional_call
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence
from torch.testing import assert_close

import clearlstm

pytestmark = pytest.mark.filterwarnings("ignore:LSTM with projections is not supported")


MATRIX = list(
    itertools.product(
        (1, 2, 3),  # num_layers
        (False, True),  # bidirectional
        (0, P),  # proj_size
        (False, True),  # batch_first
        (True, False),  # bias
        (False, True),  # initial state given
        VARIANTS,
        (torch.float32, torch.float64),
    )
)


def matrix_id(case: tuple) -> str:
    layers, bi, proj, bf, bias, init, variant, dtype = case
    return (
        f"L{layers}-{'bi' if bi else 'uni'}-p{proj}-{'bf' if bf else 'tf'}-"
        f"{'bias' if bias else 'nobias'}-{'hx' if init else 'nohx'}-{variant}-"
        f"{str(dtype).removeprefix('torch.')}"
    )


@pytest.mark.parametrize("case", MATRIX, ids=[matrix_id(c) for c in MATRIX])
@pytest.mark.parametrize("backend", BACKENDS)
def test_lstm_matches_torch(backend: str, case: tuple) -> None:
    layers, bi, proj, bf, bias, init, variant, dtype = case
    tol = TOL[dtype]
    torch.manual_seed(zlib.crc32(matrix_id(case).encode()))
    ref = nn.LSTM(I, H, layers, bias, bf, 0.0, bi, proj, dtype=dtype)
    ours = clearlstm.LSTM.from_torch(ref, backend=backend)
    assert_same_parameters(ref, ours)

    d, out_size = 2 if bi else 1, proj or H
    x_ref, x_ours = leaf_pair(torch.randn((B, T, I) if bf else (T, B, I), dtype=dtype))
    hx_ref = hx_ours = None
    if init:
        h0_ref, h0_ours = leaf_pair(torch.randn(layers * d, B, out_size, dtype=dtype))
        c0_ref, c0_ours = leaf_pair(torch.randn(layers * d, B, H, dtype=dtype))
        hx_ref, hx_ours = (h0_ref, c0_ref), (h0_ours, c0_ours)

    if variant == "full":
        out_ref, (h_ref, c_ref) = ref(x_ref, hx_ref)
        out_ours, (h_ours, c_ours) = ours(x_ours, hx_ours)
    elif variant == "lengths":
        # torch has no lengths=: its equivalent is the packed sequence, padded back to T.
        packed = pack_padded_sequence(x_ref, LENGTHS, batch_first=bf, enforce_sorted=False)
        out_packed, (h_ref, c_ref) = ref(packed, hx_ref)
        out_ref, _ = pad_packed_sequence(out_packed, batch_first=bf, total_length=T)
        out_ours, (h_ours, c_ours) = ours(x_ours, hx_ours, lengths=torch.tensor(LENGTHS))
        valid = torch.arange(T)[:, None] < torch.tensor(LENGTHS)[None, :]  # (T, B)
        padded = ~valid.T if bf else ~valid
        assert torch.equal(out_ours[padded], torch.zeros_like(out_ours[padded]))
    else:
        sort = variant == "packed_sorted"
        lengths = SORTED_LENGTHS if sort else LENGTHS
        packs = [
            pack_padded_sequence(x, lengths, batch_first=bf, enforce_sorted=sort)
            for x in (x_ref, x_ours)
        ]
        out_ref, (h_ref, c_ref) = ref(packs[0], hx_ref)
        out_ours, (h_ours, c_ours) = ours(packs[1], hx_ours)
        assert isinstance(out_ours, PackedSequence)
        assert torch.equal(out_ours.batch_sizes, out_ref.batch_sizes)
        for name in ("sorted_indices", "unsorted_indices"):
            a, b = getattr(out_ours, name), getattr(out_ref, name)
            assert (a is None and b is None) or torch.equal(a, b), name
        out_ref, out_ours = out_ref.data, out_ours.data

    assert out_ours.shape == out_ref.shape
    assert_close(out_ours, out_ref, **tol)
    assert_close(h_ours, h_ref, **tol)
    assert_close(c_ours, c_ref, **tol)

    weights = [torch.randn_like(v) for v in (out_ref, h_ref, c_ref)]
    weighted_loss(weights, [out_ref, h_ref, c_ref]).backward()
    weighted_loss(weights, [out_ours, h_ours, c_ours]).backward()
    assert_close(x_ours.grad, x_ref.grad, **tol)
    if variant == "lengths":
        assert not x_ours.grad[padded].any(), "padded input steps must get no gradient"
    if init:
        assert_close(h0_ours.grad, h0_ref.grad, **tol)
        assert_close(c0_ours.grad, c0_ref.grad, **tol)
    assert_same_grads(ref, ours, tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("with_hx", [False, True])
@pytest.mark.parametrize(("layers", "bi", "proj"), [(1, False, 0), (2, True, P), (3, True, 0)])
@pytest.mark.parametrize("backend", BACKENDS)
def test_unbatched_input_matches_torch(backend, layers, bi, proj, with_hx, dtype) -> None:
    tol = TOL[dtype]
    torch.manual_seed(3)
    ref = nn.LSTM(I, H, layers, bidirectional=bi, proj_size=proj, dtype=dtype)
    ours = clearlstm.LSTM.from_torch(ref, backend=backend)
    x_ref, x_ours = leaf_pair(torch.randn(T, I, dtype=dtype))
    d = 2 if bi else 1
    hx_ref = hx_ours = None
    if with_hx:
        h0_ref, h0_ours = leaf_pair(torch.randn(layers * d, proj or H, dtype=dtype))
        c0_ref, c0_ours = leaf_pair(torch.randn(layers * d, H, dtype=dtype))
        hx_ref, hx_ours = (h0_ref, c0_ref), (h0_ours, c0_ours)
    out_ref, (h_ref, c_ref) = ref(x_ref, hx_ref)
    out_ours, (h_ours, c_ours) = ours(x_ours, hx_ours)
    assert out_ours.shape == (T, d * (proj or H))
    assert h_ours.shape == (layers * d, proj or H) and c_ours.shape == (layers * d, H)
    for a, b in [(out_ours, out_ref), (h_ours, h_ref), (c_ours, c_ref)]:
        assert_close(a, b, **tol)
    weights = [torch.randn_like(v) for v in (out_ref, h_ref, c_ref)]
    weighted_loss(weights, [out_ref, h_ref, c_ref]).backward()
    weighted_loss(weights, [out_ours, h_ours, c_ours]).backward()
    assert_close(x_ours.grad, x_ref.grad, **tol)
    if with_hx:
        assert_close(h0_ours.grad, h0_ref.grad, **tol)
        assert_close(c0_ours.grad, c0_ref.grad, **tol)
    assert_same_grads(ref, ours, tol)


# ---------------------------------------------------------------------------------------
# gradcheck in float64


@pytest.mark.parametrize("proj", [0, 2])
@pytest.mark.parametrize("backend", BACKENDS)
def test_lstm_gradcheck_bidirectional_lengths(backend, proj) -> None:
    torch.manual_seed(16)
    lstm = clearlstm.LSTM(2, 3, 2, bidirectional=True, proj_size=proj, backend=backend).double()
    names = [n for n, _ in lstm.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in lstm.parameters()]
    x = torch.randn(3, 2, 2, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(4, 2, proj or 3, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(4, 2, 3, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([3, 2])

    def run(x, h0, c0, *params):
        state = dict(zip(names, params, strict=True))
        out, (h_n, c_n) = functional_call(lstm, state, (x, (h0, c0)), {"lengths": lengths})
        return out, h_n, c_n

    assert torch.autograd.gradcheck(run, (x, h0, c0, *params))
