"""Streaming (``lstm.stream()``): one step per call equals the whole-sequence call."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

# float32 outputs: two float32 computations (reference and kernel: other sum orders, another
# tanh) of 7 saturated steps (scale 4) have been seen 3.4e-5 apart: atol 5e-5.
from test_kernels import DTYPES, TOL
from torch.testing import assert_close

import clearlstm


@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
@settings(max_examples=15, deadline=None)
@given(
    layers=st.integers(1, 3),
    batch=st.integers(1, 3),
    hidden=st.sampled_from([1, 4, 33]),
    with_hx=st.booleans(),
)
def test_stream_equals_full_call(dtype, layers, batch, hidden, with_hx) -> None:
    torch.manual_seed(layers + 10 * batch + hidden)
    lstm = clearlstm.LSTM(3, hidden, layers, dtype=dtype)
    x = torch.randn(8, batch, 3, dtype=dtype)
    hx = None
    if with_hx:
        hx = (
            torch.randn(layers, batch, hidden, dtype=dtype),
            torch.randn(layers, batch, hidden, dtype=dtype),
        )
    with torch.no_grad():
        out, (h_n, c_n) = lstm(x, hx)
    stream = lstm.stream(hx)
    ys = torch.stack([stream.step(x_t) for x_t in x])
    assert_close(ys, out, **TOL[dtype])
    assert_close(stream.state[0], h_n, **TOL[dtype])
    assert_close(stream.state[1], c_n, **TOL[dtype])


def test_stream_unbatched_reset_and_projection() -> None:
    torch.manual_seed(1)
    for proj in (0, 2):  # with projection the stream steps the reference cell
        lstm = clearlstm.LSTM(3, 4, 2, proj_size=proj, dtype=torch.float64)
        x = torch.randn(5, 3, dtype=torch.float64)
        with torch.no_grad():
            out, _ = lstm(x)
        stream = lstm.stream()
        first = torch.stack([stream.step(x_t) for x_t in x])
        stream.reset()
        second = torch.stack([stream.step(x_t) for x_t in x])
        assert_close(first, out, **TOL[torch.float64])
        assert torch.equal(first, second)


def test_stream_errors() -> None:
    with pytest.raises(
        NotImplementedError, match=r"LSTM\.stream: a bidirectional LSTM cannot stream"
    ):
        clearlstm.LSTM(3, 4, bidirectional=True).stream()
    stream = clearlstm.LSTM(3, 4).stream()
    with pytest.raises(ValueError, match=r"LSTM.stream: expected a step of shape \(B, 3\)"):
        stream.step(torch.randn(2, 5))
    stream.step(torch.randn(2, 3))
    with pytest.raises(ValueError, match=r"LSTM\.stream: expected a batch of 2"):
        stream.step(torch.randn(4, 3))


@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
def test_stream_reads_views_and_leaves_inputs_alone(dtype) -> None:
    # The fast stream reads the step's memory in place: a strided view, a tensor that
    # requires grad and a 1-D step must give the contiguous step's numbers, input untouched.
    torch.manual_seed(3)
    lstm = clearlstm.LSTM(3, 5, 2, dtype=dtype)
    x = torch.randn(4, 3, 2, dtype=dtype)  # steps along the last axis: x[..., t] is strided
    expected = lstm.stream()
    views, grads = lstm.stream(), lstm.stream()
    for t in range(2):
        step = x[..., t]
        assert not step.is_contiguous()
        before = step.clone()
        want = expected.step(step.contiguous())
        assert torch.equal(views.step(step), want)
        assert torch.equal(grads.step(step.clone().requires_grad_()), want)
        assert torch.equal(step, before)
    single = lstm.stream()
    assert torch.equal(single.step(x[0, :, 0]), lstm.stream().step(x[:1, :, 0])[0])
