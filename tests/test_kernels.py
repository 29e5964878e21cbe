"""The fused CPU kernels (``backend="fused"``) against the reference path, value by value.

Property tests draw shapes, values, lengths, initial states and directions; every output,
final memory, recorded gate and gradient must match :mod:`clearlstm.cell` stepped in Python.
Every kernel strategy (``"sequence"``: recurrent product fused; ``"split"``: the same with the
units split across two threads; ``"blas"``: per-step GEMM) and both thread counts are
exercised, plus streaming and a state decaying into denormals.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from torch.testing import assert_close

import clearlstm
from clearlstm.core.records import LayerRecord, LayerWeights
from clearlstm.fused import KERNELS, kernels
from clearlstm.fused.layer import run_layer as fused_layer
from clearlstm.nn.functional import lstm_layer

# float32 outputs: two float32 computations (reference and kernel: other sum orders, another
# tanh) of 7 saturated steps (scale 4) have been seen 3.4e-5 apart: atol 5e-5.
TOL = {torch.float64: {"atol": 1e-10, "rtol": 1e-9}, torch.float32: {"atol": 5e-5, "rtol": 1e-4}}
# Gradients and records, relative to the tensor's largest entry. With saturated float32 gates
# (scale 4) gradients hinge on 1 - sigmoid(z): the float32 reference itself is off the float64
# truth by ~3e-5 of the largest entry there, the fused path's approximate sigmoid by ~1.5e-4.
SCALED_ATOL = {torch.float64: 1e-10, torch.float32: 3e-4}
DTYPES = {"float64": torch.float64, "float32": torch.float32}
PROPERTY = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.filter_too_much,
    ],
)


@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def threads(request):
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)


@st.composite
def layer_case(draw):
    steps = draw(st.integers(1, 7))
    batch = draw(st.integers(1, 9))  # the forward advances 4 sequences together, then singly
    inputs = draw(st.integers(1, 5))
    hidden = draw(st.sampled_from([1, 2, 5, 8, 17, 64]))  # 64: forward in blocks of sequences
    padded = draw(st.booleans())
    lengths = None
    if padded:
        lengths = draw(st.lists(st.integers(1, steps), min_size=batch, max_size=batch))
    return {
        "shape": (steps, batch, inputs, hidden),
        "lengths": lengths,
        "reverse": draw(st.booleans()),
        "bias": draw(st.booleans()),
        # 4.0 saturates the gates. Weights scaled by 4 (~30x torch's init at H = 64) put sums
        # of 64 float32 terms in the hundreds: their rounding alone exceeds TOL there.
        "scale": draw(st.sampled_from([0.1, 1.0, 4.0] if hidden < 64 else [0.1, 0.5])),
        "seed": draw(st.integers(0, 2**31 - 1)),
    }


def make_layer(case: dict, dtype: torch.dtype):
    steps, batch, inputs, hidden = case["shape"]
    g = torch.Generator().manual_seed(case["seed"])
    scale = case["scale"]

    def leaf(*shape):
        return (scale * torch.randn(*shape, generator=g, dtype=dtype)).requires_grad_()

    x, h0, c0 = leaf(steps, batch, inputs), leaf(batch, hidden), leaf(batch, hidden)
    w = [leaf(4 * hidden, inputs), leaf(4 * hidden, hidden)]
    w += [leaf(4 * hidden), leaf(4 * hidden)] if case["bias"] else [None, None]
    lengths = None if case["lengths"] is None else torch.tensor(case["lengths"])
    grads = [torch.randn(steps, batch, hidden, generator=g, dtype=dtype)]
    grads += [torch.randn(batch, hidden, generator=g, dtype=dtype) for _ in range(2)]
    return x, h0, c0, LayerWeights(*w, None), lengths, grads


def run_layer(inputs, reverse: bool, backend: str, kernel: str | None = None):
    """Outputs, record and every gradient of one layer-direction on one path."""
    x, h0, c0, weights, lengths, grads = inputs
    leaves = [x, h0, c0, *(w for w in weights if w is not None)]
    for t in leaves:
        t.grad = None
    if kernel is None:
        result = lstm_layer(x, h0, c0, weights, lengths, reverse, True, backend)
    else:
        result = fused_layer(x, h0, c0, weights, lengths, reverse, True, kernel)
    values = (result.output, result.h_n, result.c_n)
    sum((g * v).sum() for g, v in zip(grads, values, strict=True)).backward()
    return values, result.record, [t.grad.clone() for t in leaves]


def assert_scaled_close(actual, expected, tol, msg) -> None:
    """assert_close with ``atol`` relative to the tensor's largest entry: large weights make
    large gradients, and rounding error grows with them, not with each small entry."""
    scale = max(1.0, float(expected.abs().max())) if expected.numel() else 1.0
    atol = SCALED_ATOL[expected.dtype] * scale
    assert_close(actual, expected, atol=atol, rtol=tol["rtol"], msg=msg)


def assert_same(ref, ours, tol) -> None:
    (ref_values, ref_record, ref_grads), (values, record, grads) = ref, ours
    for name, a, b in zip(("output", "h_n"), ref_values, values, strict=False):
        assert_close(b, a, **tol, msg=name)
    # |c| grows with the steps (13.5 after 2 saturated steps at H = 64): its rounding error too
    assert_scaled_close(values[2], ref_values[2], tol, "c_n")
    for name, a, b in zip(ref_record._fields, ref_record, record, strict=True):
        assert a.shape == b.shape, name
        assert torch.equal(a.isnan(), b.isnan()), f"NaN pattern of record.{name}"
        assert_scaled_close(b.nan_to_num(), a.nan_to_num(), tol, f"record.{name}")
    names = ["x", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh"]
    for name, a, b in zip(names, ref_grads, grads, strict=False):
        assert_scaled_close(b, a, tol, f"gradient w.r.t. {name}")


@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
@pytest.mark.parametrize("kernel", KERNELS)
@PROPERTY
@given(case=layer_case())
def test_fused_layer_matches_reference(threads, kernel, dtype, case) -> None:
    assume(kernel != "split" or case["shape"][3] % 2 == 0)  # units split in two halves
    inputs = make_layer(case, dtype)
    ref = run_layer(inputs, case["reverse"], "reference")
    ours = run_layer(inputs, case["reverse"], "fused", kernel)
    assert_same(ref, ours, TOL[dtype])


@pytest.mark.parametrize("kernel", ["auto", *KERNELS])  # "auto": the plan (small here)
@pytest.mark.parametrize("used", [(0,), (1,), (2,), (1, 2)], ids=["out", "h_n", "c_n", "state"])
def test_gradients_when_the_loss_uses_some_outputs(kernel, used) -> None:
    """Outputs the loss leaves out get no gradient from autograd (it is told not to fill
    zeros); the backward must still treat them as zeros."""
    case = {"shape": (4, 2, 3, 6), "lengths": [4, 2], "reverse": False, "bias": True}
    inputs = make_layer({**case, "scale": 1.0, "seed": 3}, torch.float64)
    *_, grads = inputs
    for i in {0, 1, 2} - set(used):
        grads[i].zero_()  # the reference's loss then leaves those outputs out as well

    def gradients(run) -> list[torch.Tensor]:
        x, h0, c0, weights, lengths, _ = inputs
        leaves = [x, h0, c0, *(w for w in weights if w is not None)]
        for t in leaves:
            t.grad = None
        values = run(x, h0, c0, weights, lengths)
        sum((grads[i] * values[i]).sum() for i in used).backward()
        return [t.grad.clone() for t in leaves]

    expected = gradients(lambda *a: lstm_layer(*a, False, False, "reference")[:3])
    actual = gradients(lambda *a: fused_layer(*a, False, False, kernel)[:3])
    for a, b in zip(expected, actual, strict=True):
        assert_close(b, a, **TOL[torch.float64])


@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
@settings(max_examples=15, deadline=None)
@given(
    layers=st.integers(1, 3),
    bidirectional=st.booleans(),
    batch=st.integers(1, 3),
    lengths_seed=st.one_of(st.none(), st.integers(0, 1000)),
)
def test_module_fused_equals_reference_and_trace(dtype, layers, bidirectional, batch, lengths_seed):
    torch.manual_seed(layers * 7 + batch)
    steps = 6
    ref = clearlstm.LSTM(
        3, 5, layers, bidirectional=bidirectional, dtype=dtype, backend="reference"
    )
    ours = clearlstm.LSTM(3, 5, layers, bidirectional=bidirectional, dtype=dtype, backend="fused")
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(steps, batch, 3, dtype=dtype)
    lengths = None
    if lengths_seed is not None:
        lengths = torch.randint(
            1, steps + 1, (batch,), generator=torch.Generator().manual_seed(lengths_seed)
        )
    x_ref, x_ours = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_ref, (h_ref, c_ref), trace_ref = ref(x_ref, lengths=lengths, trace=True)
    out, (h, c), trace = ours(x_ours, lengths=lengths, trace=True)
    tol = TOL[dtype]
    for a, b in ((out_ref, out), (h_ref, h), (c_ref, c)):
        assert_close(b, a, **tol)
    for layer in range(layers):
        for direction in range(2 if bidirectional else 1):
            for name, a, b in zip(
                trace_ref[layer, direction]._fields,
                trace_ref[layer, direction],
                trace[layer, direction],
                strict=True,
            ):
                assert torch.equal(a.isnan(), b.isnan()), name
                assert_close(b.nan_to_num(), a.nan_to_num(), **tol, msg=name)
    (out_ref.sum() + h_ref.sum() * 0.5 + c_ref.sum() * 0.25).backward()
    (out.sum() + h.sum() * 0.5 + c.sum() * 0.25).backward()
    assert_close(x_ours.grad, x_ref.grad, **tol)
    ref_params = dict(ref.named_parameters())
    for name, p in ours.named_parameters():
        assert_close(p.grad, ref_params[name].grad, **tol, msg=name)


@pytest.mark.parametrize("kernel", KERNELS)
def test_decaying_state_is_flushed_not_denormal(kernel) -> None:
    """A memory that decays geometrically reaches zero without passing through denormals."""
    hidden, steps = 8, 400
    zeros = torch.zeros(4 * hidden, hidden)
    bias = torch.zeros(4 * hidden)
    bias[hidden : 2 * hidden] = -1.0  # forget gate ~0.27: c shrinks ~4x per step
    bias[3 * hidden :] = 5.0
    weights = LayerWeights(torch.zeros(4 * hidden, 1), zeros, bias, torch.zeros(4 * hidden), None)
    x = torch.zeros(steps, 1, 1)
    h0 = torch.full((1, hidden), 1e-3)
    c0 = torch.full((1, hidden), 1.0)
    ref = lstm_layer(x, h0, c0, weights, backend="reference")
    ours = fused_layer(x, h0, c0, weights, None, False, True, kernel)
    assert_close(ours.output, ref.output, **TOL[torch.float32])
    c = ours.record.c.abs()
    tiny = torch.finfo(torch.float32).tiny
    assert not ((c > 0) & (c < tiny)).any(), "denormal long-term memory"
    assert (c[-1] == 0).all()


def test_float32_activations_are_close_to_exact() -> None:
    """The rational tanh/sigmoid used in float32 stay within 1e-7 of libm."""

    xw = np.linspace(-30, 30, 4 * 20001, dtype=np.float32).reshape(1, 1, -1)
    hidden = xw.shape[-1] // 4
    args = [np.zeros((hidden, 4 * hidden), np.float32), np.zeros((1, hidden), np.float32)]
    args += [np.zeros((1, hidden), np.float32), np.ones(1, np.int64), False]
    out = np.empty((1, 1, hidden), np.float32)
    gates = np.empty((1, 1, 4 * hidden), np.float32)
    cs = np.empty((1, 1, hidden), np.float32)
    h_n, c_n = np.empty((1, hidden), np.float32), np.empty((1, hidden), np.float32)
    kernels.forward_sequence(
        xw, *args, out, h_n, c_n, gates, cs, np.empty((0, 0, 0), np.float32), True, False
    )
    z = torch.from_numpy(xw[0, 0]).double()
    exact = torch.cat(
        [
            torch.sigmoid(z[: 2 * hidden]),
            torch.tanh(z[2 * hidden : 3 * hidden]),
            torch.sigmoid(z[3 * hidden :]),
        ]
    )
    assert (torch.from_numpy(gates[0, 0]).double() - exact).abs().max() < 1e-7


@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
@settings(max_examples=20, deadline=None)
@given(case=layer_case(), half=st.sampled_from([1, 3, 16, 40]))
def test_split_kernel_is_bit_identical_to_sequence_kernel(dtype, case, half) -> None:
    """Splitting the units across threads changes who computes a number, never its value."""
    steps, batch, inputs, _ = case["shape"]
    case = {**case, "shape": (steps, batch, inputs, 2 * half)}
    x, h0, c0, weights, lengths, _ = make_layer(case, dtype)
    with torch.no_grad():
        one, two = (
            fused_layer(x, h0, c0, weights, lengths, case["reverse"], True, kernel)
            for kernel in ("sequence", "split")
        )
    for name in ("output", "h_n", "c_n"):
        assert torch.equal(getattr(one, name), getattr(two, name)), name
    for name, a, b in zip(one.record._fields, one.record, two.record, strict=True):
        assert torch.equal(a.nan_to_num(7.0), b.nan_to_num(7.0)), f"record.{name}"


@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
@settings(max_examples=20, deadline=None)
@given(case=layer_case(), half=st.sampled_from([1, 3, 16, 40]))
def test_split_kernel_gradients_match_sequence_kernel(dtype, case, half) -> None:
    """Backward with the units split sums ``dz @ w_hh`` in another order: equal to rounding."""
    steps, batch, inputs, _ = case["shape"]
    case = {**case, "shape": (steps, batch, inputs, 2 * half)}
    inputs = make_layer(case, dtype)
    one = run_layer(inputs, case["reverse"], "fused", "sequence")
    two = run_layer(inputs, case["reverse"], "fused", "split")
    tol = {torch.float64: 1e-12, torch.float32: 1e-5}[dtype]
    for a, b in zip(one[2], two[2], strict=True):
        assert_close(b, a, atol=tol * max(1.0, float(a.abs().max())), rtol=tol)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@PROPERTY
@given(case=layer_case(), hidden=st.sampled_from([3, 64, 80]))
def test_each_sequence_is_computed_as_if_alone(threads, dtype, case, hidden) -> None:
    """From ``kernels.BLOCK_MIN_HIDDEN`` on the forward advances ``kernels.ROWS`` sequences
    together; each still gets the bits it gets alone, forward (outputs, records) and backward
    (``dz``, ``dh0``, ``dc0``)."""

    steps, batch, _, _ = case["shape"]
    rng = np.random.default_rng(case["seed"])
    width = 4 * hidden

    def rand(*shape):
        return (case["scale"] * rng.standard_normal(shape)).astype(dtype)

    xw, whh, h0, c0 = (
        rand(steps, batch, width),
        rand(width, hidden),
        rand(batch, hidden),
        rand(batch, hidden),
    )
    grad_out, grad_hn, grad_cn = (
        rand(steps, batch, hidden),
        rand(batch, hidden),
        rand(batch, hidden),
    )
    lengths = np.array(case["lengths"] or [steps] * batch, np.int64)

    def run(rows: slice):
        b = rows.stop - rows.start
        fwd = [np.empty((steps, b, n), dtype) for n in (hidden, width, hidden, width)]
        out, gates, cs, pre = fwd
        h_n, c_n = np.empty((b, hidden), dtype), np.empty((b, hidden), dtype)
        whh_t = np.ascontiguousarray(whh.T)
        args = (lengths[rows], case["reverse"])
        kernels.forward_sequence(
            xw[:, rows].copy(), whh_t, h0[rows].copy(), c0[rows].copy(), *args, out, h_n, c_n,
            gates, cs, pre, True, True, threads,
        )  # fmt: skip
        dz = np.empty((steps, b, width), dtype)
        dh0, dc0 = np.empty((b, hidden), dtype), np.empty((b, hidden), dtype)
        kernels.backward_sequence(
            grad_out[:, rows].copy(), grad_hn[rows].copy(), grad_cn[rows].copy(), gates, cs,
            c0[rows].copy(), whh, *args, dz, dh0, dc0, threads,
        )  # fmt: skip
        return {"out": out, "gates": gates, "cs": cs, "pre": pre, "dz": dz} | {
            "h_n": h_n[:, None],
            "c_n": c_n[:, None],
            "dh0": dh0[:, None],
            "dc0": dc0[:, None],
        }  # (B, H) as (B, 1, H): sequences on axis 1 like the rest

    together = run(slice(0, batch))
    for b in range(batch):
        alone = run(slice(b, b + 1))
        for name, value in alone.items():
            if name in ("h_n", "c_n", "dh0", "dc0"):
                mine = together[name][b : b + 1]
            else:
                mine = together[name][:, b : b + 1]
            assert np.array_equal(mine, value, equal_nan=True), (name, b)


@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
@PROPERTY
@given(case=layer_case())
def test_calls_without_gradient_match_reference(dtype, case) -> None:
    """No gradient: tiny calls run as one kernel (kernels_small), larger ones through
    the usual path; both equal the reference, with and without the record."""
    x, h0, c0, weights, lengths, _ = make_layer(case, dtype)
    for record in (False, True):
        with torch.no_grad():
            ref = lstm_layer(x, h0, c0, weights, lengths, case["reverse"], record, "reference")
            ours = lstm_layer(x, h0, c0, weights, lengths, case["reverse"], record, "fused")
        for name in ("output", "h_n", "c_n"):
            assert_close(getattr(ours, name), getattr(ref, name), **TOL[dtype], msg=name)
        assert (ours.record is None) == (not record)
        if not record:
            continue
        for name, a, b in zip(LayerRecord._fields, ref.record, ours.record, strict=True):
            assert torch.equal(a.isnan(), b.isnan()), f"NaN pattern of record.{name}"
            assert_scaled_close(b.nan_to_num(), a.nan_to_num(), TOL[dtype], f"record.{name}")
