"""The LSTM variants' constructor arguments: initialisation (forget bias, chrono), parameters,
routing (never torch's op; only kernels with the variant math), errors, the cell, streaming,
and what a checkpoint saves.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

import clearlstm
from clearlstm.core.cell import cell_step
from clearlstm.core.records import LayerWeights, Variant
from clearlstm.fused import kernels_variant
from clearlstm.nn.functional import choose_backend


def test_forget_bias_sets_the_forget_block_only():
    torch.manual_seed(0)
    plain = clearlstm.LSTM(3, 4, 2)
    torch.manual_seed(0)
    model = clearlstm.LSTM(3, 4, 2, forget_bias=1.0)
    for name, p in model.named_parameters():
        expected = getattr(plain, name).detach().clone()
        if name.startswith("bias_ih"):
            expected[4:8] = 1.0
        elif name.startswith("bias_hh"):
            expected[4:8] = 0.0
        assert torch.equal(p.detach(), expected), name


def test_chrono_init():
    torch.manual_seed(0)
    model = clearlstm.LSTM(3, 50, bidirectional=True, init="chrono", chrono_max_steps=100)
    for sfx in ("_l0", "_l0_reverse"):
        b_ih, b_hh = getattr(model, "bias_ih" + sfx), getattr(model, "bias_hh" + sfx)
        forget = b_ih[50:100]
        assert forget.min() >= 0 and forget.max() <= math.log(99)
        assert forget.std() > 0.3  # spread, not one value
        assert torch.equal(b_ih[:50], -forget)
        assert torch.equal(b_hh[:100], torch.zeros(100))
    model.reset_parameters()  # applies it again
    assert torch.equal(model.bias_ih_l0[:50], -model.bias_ih_l0[50:100])


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"init": "chrono"}, "chrono_max_steps"),
        ({"init": "chrono", "chrono_max_steps": 2}, "chrono_max_steps"),
        ({"chrono_max_steps": 10}, "only with init='chrono'"),
        ({"init": "glorot"}, "init must be one of"),
        ({"forget_bias": 1.0, "bias": False}, "bias=True"),
        ({"forget_bias": 1.0, "init": "chrono", "chrono_max_steps": 9}, "forget bias itself"),
        ({"forget_bias": float("nan")}, "finite"),
        ({"cell_clip": 0.0}, "positive"),
        ({"cell_clip": -1.0}, "positive"),
    ],
)
def test_bad_arguments_are_named(kwargs, error):
    with pytest.raises(ValueError, match=error):
        clearlstm.LSTM(3, 4, **kwargs)
    with pytest.raises(ValueError, match=error):
        clearlstm.LSTMCell(3, 4, **kwargs)


def test_bad_types_are_named():
    with pytest.raises(TypeError, match="peephole must be True or False"):
        clearlstm.LSTM(3, 4, peephole=1)
    with pytest.raises(TypeError, match="cell_clip must be a positive number"):
        clearlstm.LSTM(3, 4, cell_clip="1")


def test_peephole_parameters_after_torch_ones():
    torch.manual_seed(1)
    reference = torch.nn.LSTM(3, 4, 2, bidirectional=True)
    torch.manual_seed(1)
    model = clearlstm.LSTM(3, 4, 2, bidirectional=True, peephole=True)
    names = [n for n, _ in model.named_parameters()]
    assert names[-4:] == ["weight_peephole_l0", "weight_peephole_l0_reverse",
                          "weight_peephole_l1", "weight_peephole_l1_reverse"]  # fmt: skip
    assert model.weight_peephole_l1_reverse.shape == (3, 4)
    for name, p in reference.named_parameters():  # the same seed: torch's weights
        assert torch.equal(getattr(model, name), p), name
    assert model.layer_weights(1, 1).peephole is model.weight_peephole_l1_reverse


def test_coupled_input_weights_get_zero_gradients():
    model = clearlstm.LSTM(3, 4, coupled_input_forget=True)
    out, (_, c) = model(torch.randn(5, 2, 3))
    (out.sum() + c.sum()).backward()
    for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
        grad = getattr(model, name).grad
        assert torch.equal(grad[:4], torch.zeros_like(grad[:4])), name
        assert grad[4:].abs().sum() > 0


def test_one_step_matches_the_onnx_equations():
    """ONNX LSTM (f = sigmoid, g = h = tanh): peepholes on i, f from C_{t-1}, on o from C_t,
    every gate's input clipped, i = 1 - f with input_forget."""
    gen = torch.Generator().manual_seed(2)
    batch, hidden = 3, 5
    xw, h, c = (torch.randn(batch, n, generator=gen, dtype=torch.float64) * 2
                for n in (4 * hidden, hidden, hidden))  # fmt: skip
    w_hh = torch.randn(4 * hidden, hidden, generator=gen, dtype=torch.float64)
    p = torch.randn(3, hidden, generator=gen, dtype=torch.float64)
    z = xw + h @ w_hh.T
    zi, zf, zg, zo = z.chunk(4, -1)
    for coupled, bound in ((False, 1.0), (True, 2.0), (True, None)):
        clip = (lambda v: v) if bound is None else (lambda v, b=bound: v.clamp(-b, b))
        f = torch.sigmoid(clip(zf + p[1] * c))
        i = 1 - f if coupled else torch.sigmoid(clip(zi + p[0] * c))
        c_new = f * c + i * torch.tanh(clip(zg))
        h_new = torch.sigmoid(clip(zo + p[2] * c_new)) * torch.tanh(c_new)
        step = cell_step(xw, h, c, w_hh, None, peephole=p, coupled_input_forget=coupled,
                         cell_clip=bound)  # fmt: skip
        assert_close(step.c, c_new)
        assert_close(step.h, h_new)


def test_auto_never_picks_torch_for_a_variant():
    x = torch.randn(5, 64, 3)
    plain = clearlstm.LSTM(3, 128)
    variant = clearlstm.LSTM(3, 128, cell_clip=1.0)
    assert choose_backend(x, plain.all_weights()[0], False, "auto") == "torch"
    assert choose_backend(x, variant.all_weights()[0], False, "auto") == "fused"
    projected = clearlstm.LSTM(3, 8, proj_size=4, peephole=True)
    assert choose_backend(x, projected.all_weights()[0], False, "auto") == "reference"
    out, _ = projected(torch.randn(5, 2, 3))  # the reference runs projection with peepholes
    assert out.shape == (5, 2, 4)


def test_torch_backend_refuses_variants():
    model = clearlstm.LSTM(3, 4, peephole=True, backend="torch")
    with pytest.raises(NotImplementedError, match="backend='torch' runs only the plain LSTM"):
        model(torch.randn(5, 2, 3))
    with pytest.raises(NotImplementedError, match=r"torch\.nn\.LSTM has no"):
        model.to_torch()


@pytest.mark.parametrize("kernel", ["small", "split", "blas"])
def test_kernels_without_variant_math_refuse(kernel):
    model = clearlstm.LSTM(3, 4, coupled_input_forget=True, kernel=kernel)
    with pytest.raises(ValueError, match=f"kernel '{kernel}' does not run the LSTM variants"):
        model(torch.randn(5, 2, 3))


def test_a_variant_call_runs_the_variant_kernels(monkeypatch):
    calls = []
    real = kernels_variant.forward_rows_variant
    monkeypatch.setattr(kernels_variant, "forward_rows_variant",
                        lambda *a: calls.append(1) or real(*a))  # fmt: skip
    for kernel in ("auto", "sequence"):
        model = clearlstm.LSTM(1, 2, peephole=True, kernel=kernel)  # a tiny call: not "small"
        model(torch.randn(3, 1, 1))
    assert len(calls) == 2


def test_nan_in_a_peephole_is_named():
    model = clearlstm.LSTM(3, 4, peephole=True)
    with torch.no_grad():
        model.weight_peephole_l0[1, 2] = float("nan")
    for backend in ("fused", "reference"):
        model.backend = backend
        with pytest.raises(ValueError, match="weight_peephole_l0"):
            model(torch.randn(5, 2, 3))


@pytest.mark.parametrize(
    "kwargs", [{"peephole": True}, {"coupled_input_forget": True}, {"cell_clip": 0.5}]
)
def test_cell_equals_one_step_of_the_lstm(kwargs):
    model = clearlstm.LSTM(3, 4, **kwargs)
    cell = clearlstm.LSTMCell(3, 4, **kwargs)
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_peephole"):
            if hasattr(cell, name):
                getattr(cell, name).copy_(getattr(model, name + "_l0") * 3)
                getattr(model, name + "_l0").mul_(3)
    x = torch.randn(1, 2, 3)
    _, (h, c) = model(x)
    h1, c1 = cell(x[0])
    assert_close(h1, h[0])
    assert_close(c1, c[0])
    assert cell.extra_repr().endswith(", ".join(f"{k}={v!r}" for k, v in kwargs.items()))


def test_stream_steps_a_variant_model():
    model = clearlstm.LSTM(3, 4, 2, peephole=True, coupled_input_forget=True, cell_clip=0.7)
    x = torch.randn(6, 2, 3)
    expected, _ = model(x)
    stream = model.stream()
    steps = torch.stack([stream.step(x[t]) for t in range(6)])
    assert_close(steps, expected)


def test_config_and_checkpoint_round_trip():
    kwargs = {"forget_bias": 1.0, "peephole": True, "cell_clip": 2.0}
    model = clearlstm.LSTM(3, 4, bidirectional=True, **kwargs)
    assert repr(model) == (
        "LSTM(3, 4, bidirectional=True, forget_bias=1.0, peephole=True, cell_clip=2.0)"
    )
    config = model.variant_config()
    assert config == {"forget_bias": 1.0, "init": "torch", "chrono_max_steps": None,
                      "peephole": True, "coupled_input_forget": False,
                      "cell_clip": 2.0, "layer_norm": False, "zoneout_h": 0.0, "zoneout_c": 0.0,
                      "recurrent_dropout": 0.0, "input_dropout": 0.0}  # fmt: skip
    again = clearlstm.LSTM(3, 4, bidirectional=True, **config)
    again.load_state_dict(model.state_dict())
    x = torch.randn(5, 2, 3)
    assert torch.equal(again(x)[0], model(x)[0])
    assert clearlstm.LSTM(3, 4).variant_config() == dict.fromkeys(config) | {
        "init": "torch",
        "peephole": False,
        "coupled_input_forget": False,
        "layer_norm": False,
    } | dict.fromkeys(("zoneout_h", "zoneout_c", "recurrent_dropout", "input_dropout"), 0.0)


def test_layer_weights_default_to_the_plain_cell():
    w = LayerWeights(torch.zeros(4, 1), torch.zeros(4, 1), None, None, None)
    assert w.peephole is None and w.variant is None
    assert Variant() == Variant(False, False, None)
