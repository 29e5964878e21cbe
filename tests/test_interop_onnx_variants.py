"""The LSTM variants through ONNX (peepholes ``P``, ``input_forget``, ``clip``): onnxruntime
against our output on random inputs and lengths, both layouts, bidirectional; the round trip;
onnxruntime's reading of ``input_forget`` and ``clip`` against a numpy evaluator of the spec's
equations; ONNX's own peephole node test imported."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

import clearlstm
from clearlstm.interop import onnx as clearlstm_onnx

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402
from test_interop_onnx import load_case, max_diff, node_cases, run_ort  # noqa: E402

T, B, I, H = 7, 4, 3, 5
VARIANTS = [
    {"peephole": True},
    {"coupled_input_forget": True},
    {"cell_clip": 0.75},
    {"peephole": True, "coupled_input_forget": True, "cell_clip": 1.5},
]


def variant_model(seed: int, **kwargs) -> clearlstm.LSTM:
    """Weights scaled up so that the clip bites and the peepholes matter."""
    torch.manual_seed(seed)
    model = clearlstm.LSTM(I, H, **kwargs)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.mul_(4.0)
    return model


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def spec_lstm(x, w, r, b, p, *, clip=None, coupled=None):
    """ONNX's LSTM equations (one forward direction, float64) for ``x (T, B, I)``, ``w (4H,
    I)``, ``r (4H, H)``, ``b (8H,)``, ``p (3H,)``: ``coupled`` None, ``"f=1-i"`` or
    ``"i=1-f"`` (the spec does not say which); ``clip`` on every gate's pre-activation."""
    hidden = r.shape[1]
    h = c = np.zeros((x.shape[1], hidden))
    p_i, p_o, p_f = np.split(p, 3)
    bound = (lambda a: a) if clip is None else (lambda a: np.clip(a, -clip, clip))
    ys = []
    for x_t in x:
        z_i, z_o, z_f, z_c = np.split(
            x_t @ w.T + h @ r.T + b[: 4 * hidden] + b[4 * hidden :], 4, -1
        )
        i, f = sigmoid(bound(z_i + p_i * c)), sigmoid(bound(z_f + p_f * c))
        if coupled == "f=1-i":
            f = 1 - i
        elif coupled == "i=1-f":
            i = 1 - f
        c = f * c + i * np.tanh(bound(z_c))
        h = sigmoid(bound(z_o + p_o * c)) * np.tanh(c)
        ys.append(h)
    return np.stack(ys), h, c


@pytest.mark.parametrize(
    "kwargs, batch_first, bidirectional",
    list(itertools.product(VARIANTS, (False, True), (False, True))),
)
def test_onnxruntime_agrees_on_variants(tmp_path, kwargs, batch_first, bidirectional):
    seed = VARIANTS.index(kwargs) + 4 * batch_first + 8 * bidirectional
    model = variant_model(seed, num_layers=2, batch_first=batch_first,
                          bidirectional=bidirectional, **kwargs)  # fmt: skip
    stacked = 2 * (2 if bidirectional else 1)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn((B, T, I) if batch_first else (T, B, I), generator=gen)
    lengths = torch.randint(1, T + 1, (B,), generator=gen)
    hx = (torch.randn(stacked, B, H, generator=gen), torch.randn(stacked, B, H, generator=gen))
    path = clearlstm_onnx.export(model, tmp_path / "v.onnx", lengths=True, initial_state=True)
    node = next(n for n in onnx.load(str(path)).graph.node if n.op_type == "LSTM")
    attributes = {a.name for a in node.attribute}
    assert ("clip" in attributes) == ("cell_clip" in kwargs)
    assert ("input_forget" in attributes) == ("coupled_input_forget" in kwargs)
    assert (len(node.input) == 8 and bool(node.input[7])) == ("peephole" in kwargs)
    feeds = {"input": x.numpy(), "lengths": lengths.numpy().astype(np.int32)}
    feeds |= {"h_0": hx[0].numpy(), "c_0": hx[1].numpy()}
    with torch.no_grad():
        out, (h_n, c_n) = model(x, hx, lengths=lengths)
    assert max_diff((out, h_n, c_n), run_ort(path, feeds)) <= 1e-5


@pytest.mark.parametrize("kwargs", VARIANTS)
def test_round_trip_keeps_the_variant_and_traces(tmp_path, kwargs):
    model = variant_model(1, num_layers=2, bidirectional=True, batch_first=True, **kwargs)
    path = clearlstm_onnx.export(model, tmp_path / "v.onnx", lengths=True)
    again = clearlstm_onnx.import_onnx(path)
    assert isinstance(again, clearlstm.LSTM)
    for name in ("peephole", "coupled_input_forget", "cell_clip"):
        assert getattr(again, name) == getattr(model, name), name
    theirs, ours = again.state_dict(), model.state_dict()
    assert set(theirs) == set(ours)
    for name, value in ours.items():
        if model.coupled_input_forget and not name.startswith("weight_peephole"):
            assert torch.equal(theirs[name][H:], value[H:]), name  # the input rows are unused
            assert not theirs[name][:H].any()
        elif model.coupled_input_forget:
            assert torch.equal(theirs[name][1:], value[1:]) and not theirs[name][0].any()
        else:
            assert torch.equal(theirs[name], value), name
    x, lengths = torch.randn(B, T, I), torch.tensor([7, 2, 5, 1])
    with torch.no_grad():
        assert torch.equal(again(x, lengths=lengths)[0], model(x, lengths=lengths)[0])
        _, _, trace = again(x, lengths=lengths, trace=True)
        _, _, mine = model(x, lengths=lengths, trace=True)
    assert torch.allclose(trace[1, 1].output_gate, mine[1, 1].output_gate, equal_nan=True)


def single_node(path, attrs: dict, seed: int = 0):
    """One forward LSTM op with W, R, B, P initializers; returns them (ONNX layout, 2-D)."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(4 * H, I)) * 2
    r = rng.normal(size=(4 * H, H)) * 2
    b = rng.normal(size=(8 * H,))
    p = rng.normal(size=(3 * H,)) * 2
    inits = [
        numpy_helper.from_array(a[None].astype(np.float32), n)
        for a, n in ((w, "W"), (r, "R"), (b, "B"), (p, "P"))
    ]
    node = helper.make_node(
        "LSTM", ["X", "W", "R", "B", "", "", "", "P"], ["Y", "Y_h", "Y_c"], hidden_size=H, **attrs
    )
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["T", "B", I])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("Y", "Y_h", "Y_c")],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path.write_bytes(model.SerializeToString())
    return [a.astype(np.float32).astype(np.float64) for a in (w, r, b, p)]


def test_onnxruntime_reads_input_forget_as_f_is_one_minus_i(tmp_path):
    """The spec leaves open which gate input_forget drops; onnxruntime keeps the input gate
    (f = 1 - i) and clips every gate's pre-activation, peephole terms included. The importer
    follows it, and our export means the same under both readings."""
    path = tmp_path / "cifg.onnx"
    w, r, b, p = single_node(path, {"input_forget": 1, "clip": 1.25})
    x = np.random.default_rng(1).normal(size=(T, B, I)).astype(np.float32)
    y_ort = run_ort(path, {"X": x})[0][:, 0]
    y_ort_reading = spec_lstm(x.astype(np.float64), w, r, b, p, clip=1.25, coupled="f=1-i")[0]
    y_other = spec_lstm(x.astype(np.float64), w, r, b, p, clip=1.25, coupled="i=1-f")[0]
    y_unclipped = spec_lstm(x.astype(np.float64), w, r, b, p, coupled="f=1-i")[0]
    assert np.abs(y_ort - y_ort_reading).max() < 1e-5
    assert np.abs(y_ort - y_other).max() > 0.05 and np.abs(y_ort - y_unclipped).max() > 0.05
    model = clearlstm_onnx.import_onnx(path)
    assert model.coupled_input_forget and model.peephole and model.cell_clip == 1.25
    with torch.no_grad():
        assert np.abs(model(torch.from_numpy(x))[0].numpy() - y_ort).max() < 1e-5
    # Our export writes the forget rows in the forget slot and, negated, in the input slot.
    again = clearlstm_onnx.export(model, tmp_path / "again.onnx")
    tensors = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(again)).graph.initializer}
    w2, r2, p2 = tensors["W_l0"][0], tensors["R_l0"][0], tensors["P_l0"][0]
    b2 = tensors["B_l0"][0]
    x64 = x.astype(np.float64)
    for reading in ("f=1-i", "i=1-f"):
        y = spec_lstm(x64, w2, r2, b2, p2, clip=1.25, coupled=reading)[0]
        assert np.abs(y - y_ort).max() < 1e-5, reading


def test_reference_evaluator_peepholes_float64_and_layout_1(tmp_path):
    """onnx's reference evaluator implements P (it ignores clip and input_forget): it checks
    the float64 graph and layout=1 ops, which onnxruntime's CPU LSTM cannot run."""
    model = variant_model(3, num_layers=2, bidirectional=True, batch_first=True, peephole=True)
    model = model.double()
    path = clearlstm_onnx.export(model, tmp_path / "p.onnx", batchwise=True, initial_state=True)
    x = torch.randn(B, T, I, dtype=torch.float64)
    hx = tuple(torch.randn(4, B, H, dtype=torch.float64) for _ in range(2))
    feeds = {"input": x.numpy(), "h_0": hx[0].numpy(), "c_0": hx[1].numpy()}
    with torch.no_grad():
        out, (h_n, c_n) = model(x, hx)
    assert max_diff((out, h_n, c_n), ReferenceEvaluator(str(path)).run(None, feeds)) < 1e-12
    again = clearlstm_onnx.import_onnx(path)
    assert again.peephole and again.batch_first and again.weight_peephole_l1.dtype == torch.float64


def test_onnx_peephole_node_case_imports(tmp_path):
    case = next(c for c in node_cases(tmp_path / "node") if c.name == "test_lstm_with_peepholes")
    path, inputs, expected = load_case(case, tmp_path)
    model = clearlstm_onnx.import_onnx(path)
    assert model.peephole and not model.coupled_input_forget and model.cell_clip is None
    hx = (torch.tensor(inputs["initial_h"]), torch.tensor(inputs["initial_c"]))
    lengths = inputs["sequence_lens"].tolist()
    with torch.no_grad():
        _, (h_n, _) = model(torch.tensor(inputs["X"]), hx, lengths=lengths)
    assert np.abs(h_n.numpy() - expected["Y_h"]).max() < 1e-6


def test_bad_variant_attributes_and_other_formats_refused(tmp_path):
    single_node(tmp_path / "clip.onnx", {"clip": -1.0})
    with pytest.raises(ValueError, match=r"clip must be a positive finite float; got -1\.0"):
        clearlstm_onnx.import_onnx(tmp_path / "clip.onnx")
    single_node(tmp_path / "forget.onnx", {"input_forget": 2})
    with pytest.raises(ValueError, match="input_forget must be 0 or 1; got 2"):
        clearlstm_onnx.import_onnx(tmp_path / "forget.onnx")
    pytest.importorskip("h5py")
    from clearlstm.interop import keras

    with pytest.raises(NotImplementedError, match=r"peephole=True .*holds no variant"):
        keras.export_keras_weights(clearlstm.LSTM(I, H, peephole=True), tmp_path / "k.weights.h5")
    assert not (tmp_path / "k.weights.h5").exists()
