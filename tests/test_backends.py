"""The backend choice (``backend="auto"``) and the torch-op path, against torch and reference."""

from __future__ import annotations

import pytest
import torch

# float32 outputs: two float32 computations (reference and kernel: other sum orders, another
# tanh) of 7 saturated steps (scale 4) have been seen 3.4e-5 apart: atol 5e-5.
from test_kernels import DTYPES, TOL, make_layer
from torch.testing import assert_close

import clearlstm
from clearlstm.core.records import LayerWeights
from clearlstm.nn.functional import lstm_layer


def test_auto_matches_torch_lstm() -> None:
    torch.manual_seed(0)
    ref = torch.nn.LSTM(4, 6, num_layers=2, bidirectional=True, dtype=torch.float64)
    ours = clearlstm.LSTM.from_torch(ref)  # backend="auto" takes the fused kernels here
    x = torch.randn(9, 3, 4, dtype=torch.float64)
    out_ref, (h_ref, c_ref) = ref(x)
    out, (h, c) = ours(x)
    for a, b in ((out_ref, out), (h_ref, h), (c_ref, c)):
        assert_close(b, a, **TOL[torch.float64])


def test_fused_backend_rejects_projection() -> None:
    lstm = clearlstm.LSTM(3, 4, proj_size=2, backend="fused")
    with pytest.raises(
        NotImplementedError,
        match="LSTM: backend='fused' needs a CPU tensor of float32/float64 and no projection",
    ):
        lstm(torch.randn(5, 2, 3))


def test_auto_falls_back_for_other_dtypes() -> None:
    torch.manual_seed(2)
    ref = clearlstm.LSTM(3, 4, dtype=torch.bfloat16, backend="reference")
    auto = clearlstm.LSTM(3, 4, dtype=torch.bfloat16)
    auto.load_state_dict(ref.state_dict())
    x = torch.randn(5, 2, 3, dtype=torch.bfloat16)
    assert torch.equal(auto(x)[0], ref(x)[0])


def test_auto_dispatch_picks_each_path() -> None:
    """``"auto"``: fused kernels for small layers and for the trace, torch's op for large ones
    and for projection, the reference elsewhere (see :mod:`clearlstm.functional`)."""
    from clearlstm.nn.functional import FUSED_MAX_HIDDEN, FUSED_MAX_UNITS, choose_backend

    def weights(hidden, proj=0, dtype=torch.float32):
        w_hr = torch.zeros(proj, hidden, dtype=dtype) if proj else None
        w_hh = torch.zeros(4 * hidden, proj or hidden, dtype=dtype)
        return LayerWeights(torch.zeros(4 * hidden, 3, dtype=dtype), w_hh, None, None, w_hr)

    def pick(batch, hidden, record=False, proj=0, dtype=torch.float32, backend="auto"):
        x = torch.zeros(2, batch, 3, dtype=dtype)
        return choose_backend(x, weights(hidden, proj, dtype), record, backend)

    small, wide = FUSED_MAX_UNITS // FUSED_MAX_HIDDEN, FUSED_MAX_UNITS // 8 + 1
    assert pick(1, 32) == "fused"
    assert pick(small, FUSED_MAX_HIDDEN, dtype=torch.float64) == "fused"
    assert pick(1, FUSED_MAX_HIDDEN + 1) == "torch"
    assert pick(wide, 8) == "torch"
    assert pick(64, 256, record=True) == "fused"  # the trace needs the kernels
    assert pick(1, 8, proj=4) == "torch"
    assert pick(1, 8, proj=4, record=True) == "reference"
    assert pick(1, 8, dtype=torch.bfloat16) == "reference"
    assert pick(64, 256, backend="reference") == "reference"
    with pytest.raises(NotImplementedError, match="backend='torch' cannot record the trace"):
        x = torch.zeros(2, 1, 3)
        lstm_layer(
            x, torch.zeros(1, 8), torch.zeros(1, 8), weights(8), record=True, backend="torch"
        )


@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("lengths", [None, [3, 6, 1, 6], [6, 6, 6, 6]])
def test_torch_path_matches_reference(dtype, reverse, lengths) -> None:
    """``backend="torch"`` (what ``"auto"`` takes for large layers): outputs, final memories
    and every gradient equal the reference; padded steps give zeros and no gradient."""
    case = {"shape": (6, 4, 3, 5), "lengths": lengths, "reverse": reverse, "bias": True}
    inputs = make_layer(case | {"scale": 1.0, "seed": 3}, dtype)
    x, h0, c0, weights, lens, grads = inputs
    results = []
    for backend in ("reference", "torch"):
        for t in (x, h0, c0, *weights[:4]):
            t.grad = None
        r = lstm_layer(x, h0, c0, weights, lens, reverse, False, backend)
        sum((g * v).sum() for g, v in zip(grads, r[:3], strict=True)).backward()
        results.append((r[:3], [t.grad.clone() for t in (x, h0, c0, *weights[:4])]))
    (ref_values, ref_grads), (values, grads_) = results
    for a, b in zip(ref_values + tuple(ref_grads), values + tuple(grads_), strict=True):
        assert_close(b, a, **TOL[dtype])
    if lengths is not None:
        padded = ~torch.tensor([[t < n for n in lengths] for t in range(6)])
        assert not values[0][padded].any() and not grads_[0][padded].any()


def test_auto_takes_torch_for_large_layers_and_matches_torch() -> None:
    torch.manual_seed(4)
    ref = torch.nn.LSTM(3, 160, num_layers=2, bidirectional=True)
    ours = clearlstm.LSTM.from_torch(ref)
    x = torch.randn(5, 2, 3)
    lengths = torch.tensor([5, 2])
    packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=False)
    out_ref, (h_ref, c_ref) = ref(packed)
    out, (h, c) = ours(packed)
    for a, b in ((out_ref.data, out.data), (h_ref, h), (c_ref, c)):
        assert_close(b, a, **TOL[torch.float32])
