"""Layer norm, zoneout and variational dropout: the math against the papers' equations, what
training and evaluation do, the masks, parameters, errors, the cell, streaming, what a
checkpoint saves, parity with torch when they are off, and the exports' refusals.
"""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

import clearlstm
from clearlstm.core.cell import cell_step
from clearlstm.core.records import LayerNormWeights, Variant, draw_masks
from clearlstm.interop import keras as clearlstm_keras
from clearlstm.interop import onnx as clearlstm_onnx

D = torch.float64


def _ln(v, gain, bias):
    mean = v.mean(-1, keepdim=True)
    var = ((v - mean) ** 2).mean(-1, keepdim=True)
    return (v - mean) / torch.sqrt(var + 1e-5) * gain + bias


def test_layer_norm_step_is_ba_et_al_with_haste_placement():
    gen = torch.Generator().manual_seed(1)
    batch, hidden = 3, 4

    def r(*shape):
        return torch.randn(*shape, generator=gen, dtype=D)

    xw, h, c, w_hh, b_hh = r(batch, 4 * hidden), r(batch, hidden), r(batch, hidden), \
        r(4 * hidden, hidden), r(4 * hidden)  # fmt: skip
    ln = LayerNormWeights(*(r(n) for n in [4 * hidden] * 4 + [hidden] * 2))
    step = cell_step(xw, h, c, w_hh, b_hh, layer_norm=ln)
    z = xw + _ln(h @ w_hh.T, ln.weight_hh, ln.bias_hh) + b_hh  # xw: LN_ih(W_ih x) + b_ih
    i, f, g, o = z.chunk(4, -1)
    c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h_new = torch.sigmoid(o) * torch.tanh(_ln(c_new, ln.weight_c, ln.bias_c))
    assert_close(step.c, c_new)  # the state is the memory before its LN
    assert_close(step.h, h_new)


def test_zoneout_keeps_or_blends_the_previous_state():
    gen = torch.Generator().manual_seed(2)
    batch, hidden = 4, 5
    xw, h, c = (torch.randn(batch, n, generator=gen, dtype=D) for n in (4 * hidden, hidden, hidden))
    w_hh = torch.randn(4 * hidden, hidden, generator=gen, dtype=D)
    plain = cell_step(xw, h, c, w_hh, None)
    d_h = (torch.rand(batch, hidden, generator=gen) < 0.5).to(D)
    d_c = (torch.rand(batch, hidden, generator=gen) < 0.5).to(D)
    kept = cell_step(xw, h, c, w_hh, None, zoneout=(d_h, d_c))
    assert torch.equal(kept.c[d_c == 1], c[d_c == 1])  # kept units: exactly the previous value
    assert torch.equal(kept.h[d_h == 1], h[d_h == 1])
    assert torch.equal(kept.c[d_c == 0], plain.c[d_c == 0])
    assert torch.equal(kept.h[d_h == 0], plain.h[d_h == 0])  # h from the memory before zoneout
    blended = cell_step(xw, h, c, w_hh, None, zoneout=(0.3, 0.6))  # evaluation: expectation
    assert_close(blended.c, 0.6 * c + 0.4 * plain.c)
    assert_close(blended.h, 0.3 * h + 0.7 * plain.h)


@pytest.mark.parametrize("backend", ["reference", "fused"])
def test_evaluation_is_deterministic_and_zoneout_is_its_expectation(backend):
    torch.manual_seed(0)
    model = clearlstm.LSTM(3, 6, zoneout_h=0.4, zoneout_c=0.2, recurrent_dropout=0.5,
                           input_dropout=0.5, dtype=D, backend=backend).eval()  # fmt: skip
    x = torch.randn(5, 2, 3, dtype=D)
    out, _ = model(x)
    assert torch.equal(out, model(x)[0])  # no masks in evaluation
    w = model.all_weights()[0]
    h = c = torch.zeros(2, 6, dtype=D)
    for t in range(5):  # the same weights stepped by hand with the rates as blend
        z = x[t] @ w.w_ih.T + w.b_ih + h @ w.w_hh.T + w.b_hh
        i, f, g, o = z.chunk(4, -1)
        c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h_new = torch.sigmoid(o) * torch.tanh(c_new)
        c, h = 0.2 * c + 0.8 * c_new, 0.4 * h + 0.6 * h_new
        assert_close(out[t], h)


@pytest.mark.parametrize("backend", ["reference", "fused"])
def test_recurrent_dropout_uses_one_mask_per_sequence(backend):
    """A unit dropped from h never reaches the recurrent product, at any step: changing its
    initial value changes nothing but that unit's own state."""
    model = clearlstm.LSTM(2, 6, recurrent_dropout=0.5, dtype=D, backend=backend).train()
    x, h0, c0 = torch.randn(8, 3, 2, dtype=D), torch.randn(1, 3, 6, dtype=D), \
        torch.zeros(1, 3, 6, dtype=D)  # fmt: skip
    torch.manual_seed(5)
    mask = draw_masks(model.all_weights()[0].variant, 8, 3, 2, 6, 6, x).recurrent
    assert set(mask.unique().tolist()) <= {0.0, 2.0} and (mask == 0).any()
    torch.manual_seed(5)
    out, _ = model(x, (h0, c0))
    h1 = h0.clone()
    h1[0][mask == 0] += 10.0  # only dropped units moved
    torch.manual_seed(5)
    again, _ = model(x, (h1, c0))
    assert torch.equal(out, again)
    h1[0][mask != 0] += 1.0
    torch.manual_seed(5)
    assert not torch.allclose(model(x, (h1, c0))[0], out)


def test_masks_come_from_torchs_generator_at_their_rates():
    variant = Variant(zoneout_h=0.3, zoneout_c=0.1, recurrent_dropout=0.25, input_dropout=0.5)
    like = torch.zeros(1)
    torch.manual_seed(9)
    masks = draw_masks(variant, 200, 50, 40, 30, 30, like)
    torch.manual_seed(9)
    again = draw_masks(variant, 200, 50, 40, 30, 30, like)
    assert all(torch.equal(a, b) for a, b in zip(masks, again, strict=True))
    assert abs(masks.zoneout_h.mean().item() - 0.3) < 0.01  # 1 = keep, at the zoneout rate
    assert abs(masks.zoneout_c.mean().item() - 0.1) < 0.01
    assert abs((masks.recurrent == 0).double().mean().item() - 0.25) < 0.05
    assert abs(masks.input.mean().item() - 1.0) < 0.1  # inverted dropout keeps the mean
    none = draw_masks(Variant(zoneout_c=0.2), 3, 2, 4, 5, 5, like)
    assert none.input is None and none.recurrent is None and none.zoneout_h is None


def test_parameters_names_and_initialisation():
    torch.manual_seed(1)
    reference = torch.nn.LSTM(3, 4, 2, bidirectional=True)
    torch.manual_seed(1)
    model = clearlstm.LSTM(3, 4, 2, bidirectional=True, layer_norm=True)
    for name, p in reference.named_parameters():  # the same seed: torch's weights
        assert torch.equal(getattr(model, name), p), name
    names = [n for n, _ in model.named_parameters() if n.startswith("ln_")]
    assert len(names) == 24 and "ln_weight_c_l1_reverse" in names
    assert model.ln_weight_ih_l0.shape == (16,) and model.ln_bias_c_l1.shape == (4,)
    assert torch.equal(model.ln_weight_hh_l1, torch.ones(16))
    assert torch.equal(model.ln_bias_ih_l0, torch.zeros(16))
    assert model.layer_weights(1, 1).layer_norm.weight_c is model.ln_weight_c_l1_reverse


def test_every_variant_off_is_torch():
    off = {"layer_norm": False, "zoneout_h": 0.0, "zoneout_c": 0, "recurrent_dropout": 0.0,
           "input_dropout": 0.0}  # fmt: skip
    torch.manual_seed(2)
    reference = torch.nn.LSTM(3, 5, 2, bidirectional=True)
    model = clearlstm.LSTM.from_torch(reference, **off)
    assert model.all_weights()[0].variant is None
    x = torch.randn(6, 2, 3)
    assert_close(model(x)[0], reference(x)[0])
    assert repr(model) == "LSTM(3, 5, num_layers=2, bidirectional=True)"


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"zoneout_h": 1.0}, r"zoneout_h must be in \[0, 1\)"),
        ({"zoneout_c": -0.1}, "zoneout_c must be in"),
        ({"recurrent_dropout": 1.5}, "recurrent_dropout must be in"),
        ({"input_dropout": float("nan")}, "input_dropout must be in"),
    ],
)
def test_bad_rates_are_named(kwargs, error):
    for module in (clearlstm.LSTM, clearlstm.LSTMCell):
        with pytest.raises(ValueError, match=error):
            module(3, 4, **kwargs)


def test_bad_types_are_named():
    with pytest.raises(TypeError, match="layer_norm must be True or False"):
        clearlstm.LSTM(3, 4, layer_norm=1)
    with pytest.raises(TypeError, match=r"zoneout_h must be a number in \[0, 1\); got '0.1'"):
        clearlstm.LSTMCell(3, 4, zoneout_h="0.1")


@pytest.mark.parametrize("kwargs", [{"layer_norm": True}, {"zoneout_h": 0.3, "zoneout_c": 0.4},
                                    {"peephole": True, "layer_norm": True}])  # fmt: skip
def test_cell_equals_one_step_of_the_lstm(kwargs):
    model = clearlstm.LSTM(3, 4, **kwargs).eval()
    cell = clearlstm.LSTMCell(3, 4, **kwargs).eval()
    with torch.no_grad():
        for name, p in cell.named_parameters():
            p.copy_(getattr(model, name + "_l0").uniform_(-1, 1))
    x, h, c = torch.randn(1, 2, 3), torch.randn(1, 2, 4), torch.randn(1, 2, 4)
    _, (h1, c1) = model(x, (h, c))
    h2, c2 = cell(x[0], (h[0], c[0]))
    assert_close(h2, h1[0])
    assert_close(c2, c1[0])
    assert cell.extra_repr().endswith(", ".join(f"{k}={v!r}" for k, v in kwargs.items()))


def test_cell_in_training_takes_the_sequence_masks():
    cell = clearlstm.LSTMCell(3, 4, recurrent_dropout=0.5, input_dropout=0.5, dtype=D).train()
    x, h, c = torch.randn(2, 3, dtype=D), torch.randn(2, 4, dtype=D), torch.randn(2, 4, dtype=D)
    with pytest.raises(ValueError, match=r"cell\.draw_masks\(batch\)"):
        cell(x, (h, c))
    torch.manual_seed(0)
    masks = cell.draw_masks(2)
    h1, c1 = cell(x, (h, c), masks=masks)
    model = clearlstm.LSTM(3, 4, recurrent_dropout=0.5, input_dropout=0.5, dtype=D)
    with torch.no_grad():
        for name, p in cell.named_parameters():
            getattr(model, name + "_l0").copy_(p)
    _, h, c, _ = clearlstm.nn.functional.lstm(
        x[None], h[None], c[None], model.all_weights(), training=True, masks=[masks]
    )
    assert_close(h1, h[0])
    assert_close(c1, c[0])
    with pytest.raises(ValueError, match=r"masks\.input must have shape \(3, 3\)"):
        cell(torch.randn(3, 3, dtype=D), masks=masks)


def test_stream_steps_an_evaluation_model():
    model = clearlstm.LSTM(3, 4, 2, layer_norm=True, zoneout_h=0.2, zoneout_c=0.3,
                           recurrent_dropout=0.4).eval()  # fmt: skip
    x = torch.randn(6, 2, 3)
    expected, _ = model(x)
    stream = model.stream()
    assert_close(torch.stack([stream.step(x[t]) for t in range(6)]), expected)


def test_config_and_checkpoint_round_trip():
    kwargs = {"layer_norm": True, "zoneout_c": 0.25, "recurrent_dropout": 0.1}
    model = clearlstm.LSTM(3, 4, bidirectional=True, **kwargs).eval()
    with torch.no_grad():
        model.ln_weight_c_l0_reverse.uniform_(0.5, 1.5)
    config = model.variant_config()
    assert {k: config[k] for k in kwargs} == kwargs and config["input_dropout"] == 0.0
    again = clearlstm.LSTM(3, 4, bidirectional=True, **config).eval()
    again.load_state_dict(model.state_dict())
    x = torch.randn(5, 2, 3)
    assert torch.equal(again(x)[0], model(x)[0])


@pytest.mark.parametrize(
    "kwargs, name",
    [({"layer_norm": True}, "layer_norm=True"), ({"zoneout_h": 0.1}, "zoneout_h=0.1"),
     ({"zoneout_c": 0.2}, "zoneout_c=0.2"), ({"peephole": True}, "peephole=True")],
)  # fmt: skip
def test_exports_refuse_what_the_lstm_op_cannot_hold(tmp_path, kwargs, name):
    """ONNX's LSTM op holds peepholes (its input P) but not layer norm or zoneout; Keras's
    LSTM holds none of the four."""
    pytest.importorskip("onnx")
    model = clearlstm.LSTM(3, 4, **kwargs)
    if "peephole" not in kwargs:
        with pytest.raises(NotImplementedError, match=f"model's {name} is not supported"):
            clearlstm_onnx.export(model, tmp_path / "m.onnx")
    pytest.importorskip("h5py")
    with pytest.raises(NotImplementedError, match=f"model's {name} is not supported"):
        clearlstm_keras.export_keras_weights(model, tmp_path / "m.weights.h5")
    assert not list(tmp_path.iterdir())


def test_dropout_exports_as_the_inference_graph(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    model = clearlstm.LSTM(3, 4, recurrent_dropout=0.3, input_dropout=0.2).eval()
    path = clearlstm_onnx.export(model, tmp_path / "m.onnx")
    x = torch.randn(5, 2, 3)
    (out, *_) = ort.InferenceSession(str(path)).run(None, {"input": x.numpy()})
    assert_close(torch.from_numpy(out), model(x)[0], atol=1e-5, rtol=1e-4)


def test_evaluation_with_only_dropout_is_the_plain_lstm():
    torch.manual_seed(3)
    reference = torch.nn.LSTM(3, 5, 2)
    model = clearlstm.LSTM.from_torch(reference, recurrent_dropout=0.5, input_dropout=0.3).eval()
    x = torch.randn(6, 2, 3)
    with torch.no_grad():
        assert_close(model(x)[0], reference(x)[0])
        assert not torch.allclose(model.train()(x)[0], reference(x)[0])


@pytest.mark.parametrize("bidirectional", [False, True])
def test_variant_parameter_shapes_list_what_the_model_adds(bidirectional):
    from clearlstm.nn.variants import variant_parameter_shapes

    model = clearlstm.LSTM(3, 4, 2, bidirectional=bidirectional, peephole=True, layer_norm=True)
    torch_names = {n for n, _ in torch.nn.LSTM(3, 4, 2, bidirectional=bidirectional)
                   .named_parameters()}  # fmt: skip
    added = {n: tuple(p.shape) for n, p in model.named_parameters() if n not in torch_names}
    shapes = variant_parameter_shapes(model.variant_config(), 4, 2, bidirectional)
    assert list(shapes.items()) == list(added.items())
    assert variant_parameter_shapes(clearlstm.LSTM(3, 4).variant_config(), 4, 1) == {}
