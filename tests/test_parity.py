"""clearlstm.LSTM / LSTMCell against torch.nn.LSTM / LSTMCell: same weights, same numbers.

Order of checks (fastrnns' test.py): parameters identical first, then outputs and final
memories, then every gradient — w.r.t. the input, the initial state and every parameter.
Each LSTM check runs on the ``"reference"`` backend (the cell stepped in Python) and on the
default ``"auto"`` (which picks a fast kernel where one applies).
"""

from __future__ import annotations

import itertools
import zlib

import pytest
import torch
from torch import nn
from torch.func import functional_call
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence
from torch.testing import assert_close

import clearlstm

I, H, P, T, B = 3, 4, 2, 5, 3
TOL = {torch.float64: {"atol": 1e-10, "rtol": 1e-9}, torch.float32: {"atol": 1e-5, "rtol": 1e-5}}
# Lengths for the padded and unsorted-packed cases: unsorted, a length of 1, max(lengths) < T.
LENGTHS = [4, 1, 3]
SORTED_LENGTHS = [5, 3, 1]
VARIANTS = ("full", "lengths", "packed_sorted", "packed_unsorted")
BACKENDS = ("reference", "auto", "torch")

pytestmark = pytest.mark.filterwarnings("ignore:LSTM with projections is not supported")


def assert_same_parameters(ref: nn.Module, ours: nn.Module) -> None:
    ref_params, our_params = dict(ref.named_parameters()), dict(ours.named_parameters())
    assert list(ref_params) == list(our_params)
    for name, p in ref_params.items():
        assert torch.equal(p, our_params[name]), name


def assert_same_grads(ref: nn.Module, ours: nn.Module, tol: dict) -> None:
    our_params = dict(ours.named_parameters())
    for name, p in ref.named_parameters():
        assert p.grad is not None, name
        assert_close(our_params[name].grad, p.grad, **tol, msg=f"gradient of {name}")


def leaf_pair(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return t.clone().requires_grad_(), t.clone().requires_grad_()


def weighted_loss(weights: list[torch.Tensor], values: list[torch.Tensor]) -> torch.Tensor:
    return sum((w * v).sum() for w, v in zip(weights, values, strict=True))


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


# ---------------------------------------------------------------------------------------
# LSTMCell


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
# Dropout


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
