"""Every forward route, chosen through the public ``backend=`` / ``kernel=`` arguments, against
the reference: outputs, final states, the trace and every gradient, with NaN in the padding,
one and two layers, one and two directions, float32 and float64. And the same input gives the
same bits on every call, with one thread and two, whatever else the machine is doing."""

from __future__ import annotations

import math
import subprocess
import sys

import numba
import pytest
import torch
from torch.testing import assert_close

import clearlstm
from clearlstm.fused import dispatch

TOL = {torch.float64: {"atol": 1e-10, "rtol": 1e-9}, torch.float32: {"atol": 2e-5, "rtol": 1e-4}}
# (backend, kernel): every way a call can run
ROUTES = [
    ("reference", "auto"),
    ("torch", "auto"),
    ("auto", "auto"),
    ("fused", "small"),
    ("fused", "sequence"),
    ("fused", "split"),
    ("fused", "blas"),
]
TWO_NUMBA_THREADS = numba.config.NUMBA_NUM_THREADS >= 2 and dispatch.numba_threads_usable()


def route_id(route: tuple[str, str]) -> str:
    return route[0] if route[1] == "auto" else route[1]


def skip_unavailable(kernel: str) -> None:
    if kernel == "split" and not TWO_NUMBA_THREADS:
        pytest.skip("the split kernel needs two numba threads")


def padded_batch(inputs: int, dtype: torch.dtype, steps: int = 7) -> tuple[torch.Tensor, list]:
    """``x (T, 3, I)`` with lengths ``[T, 4, 1]`` and NaN in every padded step."""
    lengths = [steps, 4, 1]
    x = torch.randn(steps, 3, inputs, dtype=dtype)
    for b, n in enumerate(lengths):
        x[n:, b] = math.nan
    return x, lengths


def outputs_and_gradients(lstm, x, hx, lengths, trace: bool) -> dict[str, torch.Tensor]:
    """Every value of one training step: outputs, states, trace, gradients of all leaves."""
    x = x.clone().requires_grad_()
    hx = tuple(h.clone().requires_grad_() for h in hx)
    lstm.zero_grad()
    result = lstm(x, hx, lengths=lengths, trace=trace)
    out, (h_n, c_n) = result[:2]
    weights = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)
    ((weights * out).sum() + h_n.sum() - 0.5 * c_n.sum()).backward()
    values = {"output": out, "h_n": h_n, "c_n": c_n, "grad x": x.grad}
    values |= {"grad h_0": hx[0].grad, "grad c_0": hx[1].grad}
    values |= {f"grad {name}": p.grad for name, p in lstm.named_parameters()}
    if trace:
        tr = result[2]
        for layer in range(tr.num_layers):
            for direction in range(tr.num_directions):
                for field, value in tr[layer, direction]._asdict().items():
                    values[f"trace {layer},{direction} {field}"] = value
    return {k: v.detach() for k, v in values.items()}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["one-way", "bidirectional"])
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("route", ROUTES, ids=route_id)
def test_every_route_equals_the_reference(route, layers, bidirectional, dtype) -> None:
    backend, kernel = route
    skip_unavailable(kernel)
    torch.manual_seed(layers * 10 + bidirectional)
    options = {"num_layers": layers, "bidirectional": bidirectional, "dtype": dtype}
    reference = clearlstm.LSTM(3, 6, backend="reference", **options)
    lstm = clearlstm.LSTM(3, 6, backend=backend, kernel=kernel, **options)
    lstm.load_state_dict(reference.state_dict())
    x, lengths = padded_batch(3, dtype)
    directions = 2 if bidirectional else 1
    hx = tuple(torch.randn(layers * directions, 3, 6, dtype=dtype) for _ in range(2))
    trace = backend != "torch"  # torch's op records nothing
    expected = outputs_and_gradients(reference, x, hx, lengths, trace)
    actual = outputs_and_gradients(lstm, x, hx, lengths, trace)
    assert expected.keys() == actual.keys()
    for name, value in expected.items():
        assert torch.isfinite(actual[name]).all() or name.startswith("trace"), name
        assert torch.equal(value.isnan(), actual[name].isnan()), f"NaN pattern of {name}"
        assert_close(actual[name].nan_to_num(), value.nan_to_num(), **TOL[dtype], msg=name)


@pytest.mark.parametrize("route", ROUTES, ids=route_id)
def test_nan_in_padding_never_reaches_a_gradient(route) -> None:
    """The reported case: a one-layer LSTM(16, 64), bigger than the small-call sizes, trained
    on a padded batch with NaN in the padding, had a NaN ``weight_ih_l0.grad`` on the route
    that skipped the padding rule."""
    backend, kernel = route
    skip_unavailable(kernel)
    torch.manual_seed(0)
    lstm = clearlstm.LSTM(16, 64, backend=backend, kernel=kernel)
    x, lengths = padded_batch(16, torch.float32, steps=40)
    out, _ = lstm(x, lengths=lengths)
    out.sum().backward()
    for name, p in lstm.named_parameters():
        assert torch.isfinite(p.grad).all(), f"{name}.grad holds NaN on route {route}"
    assert torch.isfinite(out).all() and (out[4:, 1] == 0).all()


def test_kernel_and_backend_are_checked() -> None:
    with pytest.raises(ValueError, match=r"LSTM: kernel must be one of \('auto', 'small'"):
        clearlstm.LSTM(2, 4, kernel="fast")
    with pytest.raises(ValueError, match="kernel='blas' selects a fused kernel, so backend"):
        clearlstm.LSTM(2, 4, backend="torch", kernel="blas")
    if TWO_NUMBA_THREADS:
        with pytest.raises(ValueError, match=r"kernel .split. needs 2 numba threads .* even"):
            clearlstm.LSTM(2, 5, kernel="split")(torch.randn(3, 1, 2))


# (T, B, I, H), backend, kernel: shapes whose "auto" plan takes each kernel, and forced ones
DETERMINISM_CASES = [
    ((5, 1, 1, 1), "auto", "auto"),  # small
    ((300, 1, 32, 128), "auto", "auto"),  # sequence, one sequence (once timed against split)
    ((60, 3, 16, 64), "fused", "auto"),  # sequence, the batch across threads
    ((20, 8, 16, 520), "fused", "auto"),  # blas
    ((60, 1, 16, 64), "fused", "split"),
    ((30, 4, 16, 200), "auto", "auto"),  # torch's op
]


def _repeated_calls(shape, backend, kernel, calls: int, busy_from: int) -> list[list[bytes]]:
    steps, batch, inputs, hidden = shape
    torch.manual_seed(1)
    lstm = clearlstm.LSTM(inputs, hidden, backend=backend, kernel=kernel)
    x = torch.randn(steps, batch, inputs)
    results, hog = [], None
    try:
        for call in range(calls):
            if call == busy_from:  # the second core taken by another process
                hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
            values = outputs_and_gradients(lstm, x, (torch.zeros(1, batch, hidden),) * 2, None,
                                           trace=False)  # fmt: skip
            with torch.no_grad():
                values["inference"] = lstm(x)[0]
                if backend != "auto" or shape[3] <= 128:  # the trace where our kernels run
                    values["trace"] = lstm(x, trace=True)[2][0, 0].c
            results.append([v.numpy().tobytes() for v in values.values()])
    finally:
        if hog is not None:
            hog.kill()
            hog.wait()
    return results


@pytest.mark.slow
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("case", DETERMINISM_CASES, ids=lambda c: f"{c[0]}-{c[2]}")
def test_twelve_identical_calls_give_identical_bits(case, threads) -> None:
    shape, backend, kernel = case
    skip_unavailable(kernel)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        results = _repeated_calls(shape, backend, kernel, calls=12, busy_from=6)
    finally:
        torch.set_num_threads(before)
    for call, result in enumerate(results[1:], start=1):
        assert result == results[0], f"call {call} differs from the first ({threads} threads)"
