"""Layer norm, zoneout and variational dropout on the fused kernels against the reference
path, value by value (outputs, final states, the trace, every gradient), given the same masks,
in evaluation and training, with padding, both directions, two layers and the other variants
mixed in; float64 gradcheck of both paths.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from test_variants import PROPERTY, SCALED_ATOL, TOL, assert_scaled
from torch.testing import assert_close

import clearlstm
from clearlstm.core.records import (
    LayerMasks,
    LayerNormWeights,
    LayerRecord,
    LayerWeights,
    Variant,
    draw_masks,
)
from clearlstm.nn.functional import lstm

VARIANTS = {
    "layer_norm": {"layer_norm": True},
    "zoneout": {"zoneout_h": 0.3, "zoneout_c": 0.5},
    "zoneout_c": {"zoneout_c": 0.2},
    "dropout": {"recurrent_dropout": 0.4, "input_dropout": 0.25},
    "recurrent_dropout": {"recurrent_dropout": 0.3},
    "all": dict(
        layer_norm=True,
        zoneout_h=0.2,
        zoneout_c=0.3,
        recurrent_dropout=0.3,
        input_dropout=0.2,
        peephole=True,
        cell_clip=2.0,
    ),
    "norm_coupled": {"layer_norm": True, "coupled_input_forget": True, "cell_clip": 0.9},
}


def all_masks(model, steps, batch, dtype):
    """One set of masks per layer-direction, as a training call would draw them."""
    masks, directions = [], model.num_directions
    for k, w in enumerate(model.all_weights()):
        inputs = model.input_size if k < directions else model.hidden_size * directions
        h = model.hidden_size
        masks.append(draw_masks(w.variant, steps, batch, inputs, h, h, torch.zeros(1, dtype=dtype)))
    return masks


@st.composite
def case(draw):
    dtype = draw(st.sampled_from([torch.float64, torch.float32]))
    variant = draw(st.sampled_from(list(VARIANTS)))
    steps, batch = draw(st.integers(1, 6)), draw(st.integers(1, 5))
    inputs, hidden = draw(st.integers(1, 4)), draw(st.sampled_from([1, 3, 8, 64]))
    layers, bidirectional = draw(st.integers(1, 2)), draw(st.booleans())
    lengths = None
    if draw(st.booleans()):
        lengths = draw(st.lists(st.integers(1, steps), min_size=batch, max_size=batch))
    scale = draw(st.sampled_from([0.5, 1.0, 2.0] if dtype == torch.float64 else [0.5, 1.0]))
    training, given_state = draw(st.booleans()), draw(st.booleans())
    return (dtype, variant, (steps, batch, inputs, hidden), layers, bidirectional, lengths, scale,
            draw(st.integers(0, 2**16)), training, given_state)  # fmt: skip


def make_model(variant, inputs, hidden, layers, bidirectional, dtype, scale, seed):
    torch.manual_seed(seed)
    model = clearlstm.LSTM(inputs, hidden, layers, bidirectional=bidirectional, dtype=dtype,
                           **VARIANTS[variant])  # fmt: skip
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith("ln_weight"):
                p.uniform_(0.5, 1.5)  # trained gains, not ones
            elif name.startswith("ln_bias"):
                p.uniform_(-0.5, 0.5)
            else:
                p.mul_(scale * hidden**0.5)  # weights of a trained model, not an initial one
    return model


def run(model, backend, x, state, lengths, masks, training, weights_out):
    """Forward and backward of one path (through ``lstm`` with explicit masks)."""
    model.zero_grad()
    x = x.clone().requires_grad_()
    hx = None if state is None else tuple(s.clone().requires_grad_() for s in state)
    h0, c0 = (None, None) if hx is None else hx
    out, h, c, records = lstm(x, h0, c0, model.all_weights(), bidirectional=model.bidirectional,
                              training=training, lengths=lengths, record=True, backend=backend,
                              masks=masks if training else None)  # fmt: skip
    loss = (out * weights_out[0]).sum() + (h * weights_out[1]).sum() + (c * weights_out[2]).sum()
    loss.backward()
    grads = {"input": x.grad} | {n: p.grad.clone() for n, p in model.named_parameters()}
    if hx is not None:
        grads |= {"h_0": hx[0].grad, "c_0": hx[1].grad}
    return (out, h, c), grads, records


@PROPERTY
@given(case())
def test_fused_equals_reference(case):
    dtype, variant, (steps, batch, inputs, hidden), layers, bidirectional, lengths, scale, seed, \
        training, given_state = case  # fmt: skip
    model = make_model(variant, inputs, hidden, layers, bidirectional, dtype, scale, seed)
    directions = model.num_directions
    x = torch.randn(steps, batch, inputs, dtype=dtype) * 2
    state = None
    if given_state:
        state = tuple(torch.randn(layers * directions, batch, hidden, dtype=dtype) for _ in "hc")
    if lengths is not None:
        lengths = torch.tensor(lengths)
    masks = all_masks(model, steps, batch, dtype)
    shapes = [(steps, batch, hidden * directions), (layers * directions, batch, hidden)]
    weights_out = [torch.randn(s, dtype=dtype) for s in (shapes[0], shapes[1], shapes[1])]
    expected = run(model, "reference", x, state, lengths, masks, training, weights_out)
    actual = run(model, "fused", x, state, lengths, masks, training, weights_out)
    for name, a, e in zip(("output", "h_n", "c_n"), actual[0], expected[0], strict=True):
        assert_close(a, e, **TOL[dtype], msg=lambda m, name=name: f"{name}: {m}")
    if dtype == torch.float64 or "cell_clip" not in VARIANTS[variant]:
        for name, e in expected[1].items():
            assert_scaled(actual[1][name], e, dtype, f"gradient of {name}")
    for layer in range(layers):
        for direction in range(directions):
            for field in LayerRecord._fields:
                a = getattr(actual[2][layer][direction], field)
                e = getattr(expected[2][layer][direction], field)
                assert_scaled(a, e, dtype, f"record[{layer}][{direction}].{field}")


EVALUATION_ZONEOUT = {
    "zoneout": {"zoneout_h": 0.3, "zoneout_c": 0.5},
    "zoneout_c": {"zoneout_c": 0.2},
    "zoneout_h_peephole_clip": {"zoneout_h": 0.25, "peephole": True, "cell_clip": 1.5},
    "zoneout_coupled_dropout": {"zoneout_c": 0.4, "coupled_input_forget": True,
                                "recurrent_dropout": 0.3},
}  # fmt: skip


@PROPERTY
@given(st.sampled_from(list(EVALUATION_ZONEOUT)), st.sampled_from([torch.float64, torch.float32]),
       st.integers(1, 7), st.integers(1, 6), st.sampled_from([3, 8, 64]), st.booleans(),
       st.booleans(), st.integers(0, 2**16))  # fmt: skip
def test_evaluation_zoneout_without_a_gradient_equals_the_reference(
    name, dtype, steps, batch, hidden, padded, bidirectional, seed
):
    """An evaluation call without a gradient runs zoneout's expectation in the variant
    kernels (not the general one): outputs, final states and the trace against the
    reference, with padding, both directions and other variants mixed in."""
    torch.manual_seed(seed)
    model = clearlstm.LSTM(3, hidden, 2, bidirectional=bidirectional, dtype=dtype,
                           **EVALUATION_ZONEOUT[name]).eval()  # fmt: skip
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(hidden**0.5 * 0.7)
    x = torch.randn(steps, batch, 3, dtype=dtype) * 2
    lengths = torch.randint(1, steps + 1, (batch,)) if padded else None
    with torch.no_grad():
        results = {
            backend: lstm(x, None, None, model.all_weights(), bidirectional=bidirectional,
                          training=False, lengths=lengths, record=True, backend=backend)
            for backend in ("reference", "fused")
        }  # fmt: skip
    expected, actual = results["reference"], results["fused"]
    for what, a, e in zip(("output", "h_n", "c_n"), actual[:3], expected[:3], strict=True):
        assert_close(a, e, **TOL[dtype], msg=lambda m, what=what: f"{what}: {m}")
    for layer, directions in enumerate(expected[3]):
        for direction, record in enumerate(directions):
            for field in LayerRecord._fields:
                a = getattr(actual[3][layer][direction], field)
                assert_scaled(a, getattr(record, field), dtype, f"record[{layer}].{field}")


def test_evaluation_zoneout_runs_the_variant_kernel(monkeypatch):
    from clearlstm.fused import kernels_general, kernels_variant

    calls = []
    for module, name in ((kernels_variant, "forward_rows_variant"),
                         (kernels_general, "forward_rows_general")):  # fmt: skip
        real = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *a, real=real, name=name: calls.append(name)
                            or real(*a))  # fmt: skip
    model = clearlstm.LSTM(2, 3, zoneout_h=0.2, zoneout_c=0.1)
    x = torch.randn(5, 2, 2)
    with torch.no_grad():
        model.eval()(x)
    assert calls == ["forward_rows_variant"], "evaluation, no gradient: the blend"
    calls.clear()
    model.eval()(x)[0].sum().backward()
    assert calls == ["forward_rows_general"], "with a gradient: the general kernel's backward"
    calls.clear()
    with torch.no_grad():
        model.train()(x)
    assert calls == ["forward_rows_general"], "training: masks"


def test_a_training_call_draws_the_same_masks_on_both_paths():
    """Through the module: the same seed gives the same masks, so both paths agree."""
    model = make_model("all", 3, 8, 2, True, torch.float64, 1.0, 4).train()
    x = torch.randn(7, 3, 3, dtype=torch.float64)
    outputs = []
    for backend in ("reference", "fused", "fused"):
        model.backend = backend
        torch.manual_seed(123)
        outputs.append(model(x, lengths=[7, 4, 2])[0])
    assert_close(outputs[1], outputs[0], atol=1e-10, rtol=1e-9)
    assert torch.equal(outputs[1], outputs[2])  # the same seed, the same bits
    torch.manual_seed(124)
    assert not torch.allclose(model(x)[0], outputs[2])  # another seed, other masks


def _function(variant: Variant, backend: str, masks: LayerMasks | None, lengths):
    def f(x, h0, c0, w_ih, w_hh, b_ih, b_hh, peep, *ln):
        norm = LayerNormWeights(*ln) if variant.layer_norm else None
        w = LayerWeights(w_ih, w_hh, b_ih, b_hh, None, peep if variant.peephole else None,
                         variant, norm)  # fmt: skip
        state = (h0.expand(2, -1, -1), c0.expand(2, -1, -1))
        out, h, c, _ = lstm(x, *state, [w, w], bidirectional=True, lengths=lengths,
                            backend=backend, training=masks is not None,
                            masks=None if masks is None else [masks, masks])  # fmt: skip
        return out, h, c

    return f


@pytest.mark.parametrize("backend", ["reference", "fused"])
@pytest.mark.parametrize(  # dropout in evaluation is the plain LSTM
    "name, training", [("layer_norm", False), ("zoneout", False), ("zoneout", True),
                       ("dropout", True), ("all", False), ("all", True)],
)  # fmt: skip
def test_gradcheck(name, backend, training):
    kw = {k: v for k, v in VARIANTS[name].items()}
    variant = Variant(**kw)
    gen = torch.Generator().manual_seed(7)
    steps, batch, inputs, hidden = 3, 2, 2, 2  # small: gradcheck perturbs every entry

    def rand(*shape, s=1.0, shift=0.0):
        t = torch.randn(*shape, generator=gen, dtype=torch.float64) * s + shift
        return t.requires_grad_()

    ln = [rand(4 * hidden, s=0.3, shift=1.0), rand(4 * hidden, s=0.3),
          rand(4 * hidden, s=0.3, shift=1.0), rand(4 * hidden, s=0.3),
          rand(hidden, s=0.3, shift=1.0), rand(hidden, s=0.3)]  # fmt: skip
    args = (rand(steps, batch, inputs), rand(1, batch, hidden), rand(1, batch, hidden),
            rand(4 * hidden, inputs, s=0.8), rand(4 * hidden, hidden, s=0.8),
            rand(4 * hidden, s=0.5), rand(4 * hidden, s=0.5), rand(3, hidden), *ln)  # fmt: skip
    masks = None
    if training:
        torch.manual_seed(3)
        masks = draw_masks(variant, steps, batch, inputs, hidden, hidden, args[0])
    f = _function(variant, backend, masks, torch.tensor([3, 2]))
    assert torch.autograd.gradcheck(f, args, eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("threads", [1, 2])
def test_threads_give_the_same_bits(threads):
    model = make_model("all", 4, 8, 1, False, torch.float32, 1.0, 5).train()
    model.backend = "fused"
    x = torch.randn(9, 6, 4)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        torch.manual_seed(0)
        one, _ = model(x)
        torch.set_num_threads(threads)
        torch.manual_seed(0)
        other, _ = model(x)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one, other)


def test_float32_fused_close_to_float64_reference():
    model = make_model("all", 3, 16, 1, True, torch.float64, 1.0, 11).eval()
    x = torch.randn(20, 3, 3, dtype=torch.float64)
    expected, _ = model(x)
    model32 = model.float()
    model32.backend = "fused"
    actual, _ = model32(x.float())
    assert_close(actual.double(), expected, atol=50 * SCALED_ATOL[torch.float32], rtol=1e-4)
