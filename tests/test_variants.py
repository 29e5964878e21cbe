"""The LSTM variants (peepholes, coupled input-forget gate, cell clip) on the fused kernels
against the reference path, value by value: outputs, final states, the trace and every
gradient, with padding, both directions and two layers; float64 gradcheck of both paths.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.testing import assert_close

import clearlstm
from clearlstm.core.records import LayerRecord, LayerWeights, Variant
from clearlstm.fused import kernels_variant
from clearlstm.nn.functional import lstm

TOL = {torch.float64: {"atol": 1e-10, "rtol": 1e-9}, torch.float32: {"atol": 5e-5, "rtol": 1e-4}}
SCALED_ATOL = {torch.float64: 1e-10, torch.float32: 3e-4}  # as in test_kernels
PROPERTY = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
VARIANTS = {
    "peephole": {"peephole": True},
    "coupled": {"coupled_input_forget": True},
    "clip": {"cell_clip": 0.8},
    "all": {"peephole": True, "coupled_input_forget": True, "cell_clip": 1.5},
}


def assert_scaled(actual, expected, dtype, what):
    """Equal up to SCALED_ATOL of the largest entry (NaN where the other has NaN)."""
    scale = max(1.0, expected.nan_to_num().abs().max().item())
    assert_close(actual, expected, atol=SCALED_ATOL[dtype] * scale, rtol=0, equal_nan=True,
                 msg=lambda m: f"{what}: {m}")  # fmt: skip


@st.composite
def variant_case(draw):
    dtype = draw(st.sampled_from([torch.float64, torch.float32]))
    variant = dict(draw(st.sampled_from(list(VARIANTS.values()))))
    if "cell_clip" in variant:
        variant["cell_clip"] = draw(st.sampled_from([0.25, 0.8, 1.5, 3.0]))
    steps, batch = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    inputs, hidden = draw(st.integers(1, 4)), draw(st.sampled_from([1, 3, 8, 64]))
    layers, bidirectional = draw(st.integers(1, 2)), draw(st.booleans())
    lengths = None
    if draw(st.booleans()):
        lengths = draw(st.lists(st.integers(1, steps), min_size=batch, max_size=batch))
    # float32 with weights of 2.5 * sqrt(H) (saturated gates, peepholes compounding) drifts
    # from the float64 truth by ~1e-3 of the largest gradient in either float32 path
    scale = draw(st.sampled_from([0.5, 1.0, 2.5] if dtype == torch.float64 else [0.5, 1.0]))
    seed = draw(st.integers(0, 2**16))
    given_state = draw(st.booleans())
    return dtype, variant, (steps, batch, inputs, hidden), layers, bidirectional, lengths, scale, \
        seed, given_state  # fmt: skip


def make_model(variant, inputs, hidden, layers, bidirectional, dtype, scale, seed):
    torch.manual_seed(seed)
    model = clearlstm.LSTM(inputs, hidden, layers, bidirectional=bidirectional, dtype=dtype,
                           **variant)  # fmt: skip
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(scale * hidden**0.5)  # weights of a trained model, not an initial one
    return model


def run(model, backend, x, state, lengths, weights_out):
    """Forward and backward of one path: every value and gradient, and the trace."""
    model.backend = backend
    model.zero_grad()
    x = x.clone().requires_grad_()
    hx = None if state is None else tuple(s.clone().requires_grad_() for s in state)
    out, (h, c), trace = model(x, hx, lengths=lengths, trace=True)
    loss = (out * weights_out[0]).sum() + (h * weights_out[1]).sum() + (c * weights_out[2]).sum()
    loss.backward()
    grads = {"input": x.grad} | {n: p.grad.clone() for n, p in model.named_parameters()}
    if hx is not None:
        grads |= {"h_0": hx[0].grad, "c_0": hx[1].grad}
    return (out, h, c), grads, trace


@PROPERTY
@given(variant_case())
def test_fused_equals_reference(case):
    dtype, variant, (steps, batch, inputs, hidden), layers, bidirectional, lengths, scale, seed, \
        given_state = case  # fmt: skip
    model = make_model(variant, inputs, hidden, layers, bidirectional, dtype, scale, seed)
    directions = 2 if bidirectional else 1
    x = torch.randn(steps, batch, inputs, dtype=dtype) * 2
    state = None
    if given_state:
        state = tuple(torch.randn(layers * directions, batch, hidden, dtype=dtype) for _ in "hc")
    if lengths is not None:
        lengths = torch.tensor(lengths)
    shapes = [(steps, batch, hidden * directions), (layers * directions, batch, hidden)]
    weights_out = [torch.randn(s, dtype=dtype) for s in (shapes[0], shapes[1], shapes[1])]
    expected = run(model, "reference", x, state, lengths, weights_out)
    actual = run(model, "fused", x, state, lengths, weights_out)
    for name, a, e in zip(("output", "h_n", "c_n"), actual[0], expected[0], strict=True):
        assert_close(a, e, **TOL[dtype], msg=lambda m, name=name: f"{name}: {m}")
    # float32 gradients at a clip's bound hinge on which side each path's rounding fell
    if dtype == torch.float64 or "cell_clip" not in variant:
        for name, e in expected[1].items():
            assert_scaled(actual[1][name], e, dtype, f"gradient of {name}")
    for layer in range(layers):
        for direction in range(directions):
            for field in LayerRecord._fields:
                a = getattr(actual[2][layer, direction], field)
                e = getattr(expected[2][layer, direction], field)
                assert_scaled(a, e, dtype, f"trace[{layer}, {direction}].{field}")


@pytest.mark.parametrize("backend", ["reference", "fused"])
def test_trace_is_what_the_activations_saw(backend):
    model = make_model(VARIANTS["all"], 3, 8, 1, False, torch.float64, 2.0, 3)
    model.backend = backend
    _, _, trace = model(torch.randn(6, 2, 3, dtype=torch.float64), trace=True)
    rec = trace[0, 0]
    _, z_f, z_g, z_o = rec.pre_activation.unbind(2)
    assert rec.pre_activation.abs().max() <= 1.5  # clipped
    assert_close(rec.forget_gate, torch.sigmoid(z_f))
    assert_close(rec.input_gate, 1 - rec.forget_gate)  # coupled
    assert_close(rec.potential_memory, torch.tanh(z_g))
    assert_close(rec.output_gate, torch.sigmoid(z_o))
    assert_close(rec.h, rec.output_gate * torch.tanh(rec.c))


def _function(variant: Variant, backend: str, lengths, reverse_pair: bool):
    def f(x, h0, c0, w_ih, w_hh, b_ih, b_hh, peep):
        w = LayerWeights(w_ih, w_hh, b_ih, b_hh, None, peep if variant.peephole else None,
                         variant)  # fmt: skip
        weights = [w, w] if reverse_pair else [w]
        state = (h0.expand(len(weights), -1, -1), c0.expand(len(weights), -1, -1))
        out, h, c, _ = lstm(x, *state, weights, bidirectional=reverse_pair, lengths=lengths,
                            backend=backend)  # fmt: skip
        return out, h, c

    return f


@pytest.mark.parametrize("backend", ["reference", "fused"])
@pytest.mark.parametrize("name", list(VARIANTS))
def test_gradcheck(name, backend):
    kw = VARIANTS[name]
    variant = Variant(kw.get("peephole", False), kw.get("coupled_input_forget", False),
                      kw.get("cell_clip"))  # fmt: skip
    gen = torch.Generator().manual_seed(7)
    steps, batch, inputs, hidden = 4, 2, 2, 3

    def rand(*shape, s=1.0):
        t = torch.randn(*shape, generator=gen, dtype=torch.float64) * s
        return t.requires_grad_()

    args = (rand(steps, batch, inputs), rand(1, batch, hidden), rand(1, batch, hidden),
            rand(4 * hidden, inputs, s=0.8), rand(4 * hidden, hidden, s=0.8),
            rand(4 * hidden, s=0.5), rand(4 * hidden, s=0.5), rand(3, hidden))  # fmt: skip
    f = _function(variant, backend, torch.tensor([4, 3]), True)
    assert torch.autograd.gradcheck(f, args, eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_float32_fused_close_to_float64_reference(name):
    """The float32 kernels' approximate tanh stays close under every variant."""
    model = make_model(VARIANTS[name], 3, 16, 1, True, torch.float64, 1.0, 11)
    x = torch.randn(20, 3, 3, dtype=torch.float64)
    expected, _ = model(x)
    model32 = copy.deepcopy(model).float()
    model32.backend = "fused"
    actual, _ = model32(x.float())
    assert_close(actual.double(), expected, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("threads", [1, 2])
def test_threads_give_the_same_bits(threads):
    model = make_model(VARIANTS["all"], 4, 8, 1, False, torch.float32, 1.0, 5)
    model.backend = "fused"
    x = torch.randn(9, 6, 4)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one, _ = model(x)
        torch.set_num_threads(threads)
        other, _ = model(x)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one, other)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(VARIANTS))
def test_four_sequences_together_give_each_ones_bits(name, dtype):
    # From hidden 64 the kernels run four sequences per pass over w_hh (sequences [0, 4)
    # of 6 here, the last two alone): each must get the bits it gets run alone.
    variant = VARIANTS[name]
    steps, batch, hidden = 11, 6, 64
    rng = np.random.default_rng(3)

    def rand(*shape, s=1.0):
        return (rng.standard_normal(shape) * s).astype(dtype)

    xw, whh = rand(steps, batch, 4 * hidden), rand(4 * hidden, hidden, s=hidden**-0.5)
    h0, c0, peep = rand(batch, hidden), rand(batch, hidden), rand(3, hidden)
    if not variant.get("peephole"):
        peep = peep[:0]  # (0, H): none
    coupled, clip = bool(variant.get("coupled_input_forget")), variant.get("cell_clip", 0.0)
    lengths = np.array([11, 4, 9, 1, 11, 7])
    grad_out, grad_hn, grad_cn = (
        rand(steps, batch, hidden),
        rand(batch, hidden),
        rand(batch, hidden),
    )

    def run(b0, b1):
        out, gates, cs, pre = (
            np.zeros((steps, batch, w), dtype) for w in (hidden, 4 * hidden, hidden, 4 * hidden)
        )
        h_n, c_n, dh0, dc0 = (np.zeros((batch, hidden), dtype) for _ in range(4))
        dz, dpeep = np.zeros((steps, batch, 4 * hidden), dtype), np.zeros((batch, 3, hidden), dtype)
        kernels_variant.forward_rows_variant(
            xw.copy(), np.ascontiguousarray(whh.T), h0, c0, lengths, False, out, h_n, c_n,
            gates, cs, pre, True, True, peep, coupled, clip, 0.0, 0.0, b0, b1)  # fmt: skip
        kernels_variant.backward_rows_variant(
            grad_out, grad_hn, grad_cn, gates, cs, pre, c0, whh, lengths, False, dz, dh0, dc0,
            peep, dpeep, coupled, clip, b0, b1)  # fmt: skip
        return out, h_n, c_n, gates, cs, pre, dz, dh0, dc0, dpeep

    together = run(0, batch)
    for b in range(batch):
        alone = run(b, b + 1)
        for got, want in zip(together, alone, strict=True):
            axis = 1 if got.ndim == 3 and got.shape[0] == steps else 0
            np.testing.assert_array_equal(np.take(got, b, axis), np.take(want, b, axis))
