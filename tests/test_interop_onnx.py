"""ONNX out and in (clearlstm.interop.onnx): checked by onnxruntime, by onnx's reference
evaluator, and by ONNX's own LSTM node test cases run through our importer."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

import clearlstm
from clearlstm.interop import LSTMChain
from clearlstm.interop import onnx as clearlstm_onnx

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402

T, B, I, H = 6, 3, 3, 4
NODE_DATA = Path(onnx.__file__).parent / "backend" / "test" / "data" / "node"


def run_ort(path: Path, feeds: dict) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def max_diff(ours, theirs) -> float:
    return max(
        float(np.abs(a.detach().numpy() - b).max()) for a, b in zip(ours, theirs, strict=True)
    )


@pytest.mark.parametrize(
    "num_layers, bidirectional, batch_first, bias",
    list(itertools.product((1, 2), (False, True), (False, True), (True, False))),
)
def test_onnxruntime_agrees(tmp_path, num_layers, bidirectional, batch_first, bias):
    torch.manual_seed(num_layers + 2 * bidirectional + 4 * batch_first + 8 * bias)
    model = clearlstm.LSTM(
        I, H, num_layers, bias=bias, batch_first=batch_first, bidirectional=bidirectional
    )
    stacked = num_layers * (2 if bidirectional else 1)
    x = torch.randn(B, T, I) if batch_first else torch.randn(T, B, I)
    lengths = torch.randint(1, T + 1, (B,))
    hx = (torch.randn(stacked, B, H), torch.randn(stacked, B, H))
    plain = clearlstm_onnx.export(model, tmp_path / "plain.onnx")
    full = clearlstm_onnx.export(model, tmp_path / "full.onnx", lengths=True, initial_state=True)
    with torch.no_grad():
        out, (h_n, c_n) = model(x)
        theirs = run_ort(plain, {"input": x.numpy()})
        assert max_diff((out, h_n, c_n), theirs) < 1e-6
        out, (h_n, c_n) = model(x, hx, lengths=lengths)
        feeds = {"input": x.numpy(), "lengths": lengths.numpy().astype(np.int32)}
        feeds |= {"h_0": hx[0].numpy(), "c_0": hx[1].numpy()}
        theirs = run_ort(full, feeds)
    assert max_diff((out, h_n, c_n), theirs) < 1e-6
    padded = (theirs[0][:, T - 1] if batch_first else theirs[0][T - 1])[lengths < T]
    assert not padded.any()  # zero past each sequence's length, as ours


def test_round_trip_is_exact_and_traces(tmp_path):
    model = clearlstm.LSTM(I, H, num_layers=2, bidirectional=True, batch_first=True)
    path = clearlstm_onnx.export(model, tmp_path / "m.onnx", lengths=True)
    again = clearlstm_onnx.import_onnx(path)
    assert isinstance(again, clearlstm.LSTM) and again.batch_first and again.bidirectional
    for (name, a), (other, b) in zip(
        model.state_dict().items(), again.state_dict().items(), strict=True
    ):
        assert name == other and torch.equal(a, b)
    x, lengths = torch.randn(B, T, I), torch.tensor([6, 2, 4])
    with torch.no_grad():
        assert torch.equal(model(x, lengths=lengths)[0], again(x, lengths=lengths)[0])
        _, _, trace = again(x, lengths=lengths, trace=True)
    assert trace[1, 1].forget_gate.shape == (T, B, H)


def test_torch_lstm_and_float64(tmp_path):
    torch.manual_seed(1)
    model = torch.nn.LSTM(I, H, num_layers=2, bidirectional=True, dtype=torch.float64)
    path = clearlstm_onnx.export(model, tmp_path / "double.onnx", initial_state=True)
    x = torch.randn(T, B, I, dtype=torch.float64)
    hx = (torch.randn(4, B, H, dtype=torch.float64), torch.randn(4, B, H, dtype=torch.float64))
    # onnxruntime's CPU LSTM has no float64 kernel ("does not support double yet"): onnx's
    # reference evaluator checks the float64 graph instead.
    theirs = ReferenceEvaluator(str(path)).run(
        None, {"input": x.numpy(), "h_0": hx[0].numpy(), "c_0": hx[1].numpy()}
    )
    with torch.no_grad():
        out, (h_n, c_n) = model(x, hx)
    assert max_diff((out, h_n, c_n), theirs) < 1e-12
    again = clearlstm_onnx.import_onnx(path)
    assert again.weight_ih_l1_reverse.dtype == torch.float64
    with torch.no_grad():
        assert torch.allclose(again(x, hx)[0], out, rtol=0, atol=1e-12)


def test_batchwise_ops_layout_1(tmp_path):
    """``batchwise=True`` writes layout=1 ops, which onnxruntime refuses; onnx's reference
    evaluator runs them."""
    torch.manual_seed(2)
    model = clearlstm.LSTM(I, H, num_layers=2, bidirectional=True, batch_first=True)
    path = clearlstm_onnx.export(model, tmp_path / "bw.onnx", initial_state=True, batchwise=True)
    layouts = {
        a.i for n in onnx.load(str(path)).graph.node for a in n.attribute if a.name == "layout"
    }
    assert layouts == {1}
    x, hx = torch.randn(B, T, I), (torch.randn(4, B, H), torch.randn(4, B, H))
    feeds = {"input": x.numpy(), "h_0": hx[0].numpy(), "c_0": hx[1].numpy()}
    with torch.no_grad():
        ours = model(x, hx)
    assert max_diff((ours[0], *ours[1]), ReferenceEvaluator(str(path)).run(None, feeds)) < 1e-6
    assert clearlstm_onnx.import_onnx(path).batch_first


def test_export_refuses_projection_and_bad_opset(tmp_path):
    with pytest.raises(NotImplementedError, match=r"proj_size=2 .*ONNX|proj_size=2"):
        clearlstm_onnx.export(clearlstm.LSTM(I, H, proj_size=2), tmp_path / "p.onnx")
    with pytest.raises(ValueError, match="opset must be in"):
        clearlstm_onnx.export(clearlstm.LSTM(I, H), tmp_path / "p.onnx", opset=9)
    assert not (tmp_path / "p.onnx").exists()


# ---- ONNX's own LSTM node tests --------------------------------------------------------------


def node_cases(folder: Path) -> list[Path]:
    """ONNX's test_lstm_* cases in their usual layout (model.onnx, test_data_set_0/*.pb): the
    shipped ones, else regenerated from onnx.backend.test.case.node.lstm (pip's onnx wheel
    leaves the data out)."""
    shipped = sorted(NODE_DATA.glob("test_lstm_*"))
    if shipped:
        return shipped
    from onnx.backend.test.case import node as cases
    from onnx.backend.test.case.node import lstm  # noqa: F401  (defining it runs the exports)

    dirs = []
    for case in (c for c in cases._NodeTestCases if c.name.startswith("test_lstm")):
        data = folder / case.name / "test_data_set_0"
        data.mkdir(parents=True)
        (folder / case.name / "model.onnx").write_bytes(case.model.SerializeToString())
        (inputs, outputs) = case.data_sets[0]
        for kind, values, infos in (
            ("input", inputs, case.model.graph.input),
            ("output", outputs, case.model.graph.output),
        ):
            for j, (value, info) in enumerate(zip(values, infos, strict=True)):
                proto = numpy_helper.from_array(value, info.name)
                (data / f"{kind}_{j}.pb").write_bytes(proto.SerializeToString())
        dirs.append(folder / case.name)
    return dirs


def load_case(case: Path, folder: Path) -> tuple[Path, dict, dict]:
    """The case's model with W, R, B, P moved into initializers (our importer reads weights
    from the file), its run-time inputs, and the expected outputs by name."""
    model = onnx.load(str(case / "model.onnx"))
    data = case / "test_data_set_0"

    def read(kind: str, infos) -> dict:
        found = {}
        for j, info in enumerate(infos):
            tensor = onnx.TensorProto()
            tensor.ParseFromString((data / f"{kind}_{j}.pb").read_bytes())
            found[info.name] = numpy_helper.to_array(tensor)
        return found

    inputs, expected = read("input", model.graph.input), read("output", model.graph.output)
    node = model.graph.node[0]
    weights = {name for k, name in enumerate(node.input) if k in (1, 2, 3, 7) and name}
    kept = [value for value in model.graph.input if value.name not in weights]
    del model.graph.input[:]
    model.graph.input.extend(kept)
    model.graph.initializer.extend(numpy_helper.from_array(inputs[n], n) for n in weights)
    path = folder / f"{case.name}.onnx"
    path.write_bytes(model.SerializeToString())
    return path, {n: v for n, v in inputs.items() if n not in weights}, expected


def test_onnx_node_test_cases(tmp_path):
    cases = node_cases(tmp_path / "node")
    names = {case.name for case in cases}
    assert {"test_lstm_defaults", "test_lstm_with_peepholes", "test_lstm_batchwise"} <= names
    worst, refused = 0.0, {}
    for case in cases:
        path, inputs, expected = load_case(case, tmp_path)
        try:
            model = clearlstm_onnx.import_onnx(path)
        except NotImplementedError as error:
            refused[case.name] = str(error)
            continue
        x = torch.tensor(inputs["X"])
        lengths = inputs.get("sequence_lens")
        hx = None
        if "initial_h" in inputs:
            hx = (torch.tensor(inputs["initial_h"]), torch.tensor(inputs["initial_c"]))
        with torch.no_grad():
            out, (h_n, c_n) = model(x, hx, lengths=None if lengths is None else lengths.tolist())
        ours = {"Y_h": h_n, "Y_c": c_n}
        if model.batch_first:  # layout=1: Y (B, T, D, H), Y_h (B, D, H)
            ours = {"Y_h": h_n.transpose(0, 1), "Y_c": c_n.transpose(0, 1)}
            ours["Y"] = out.reshape(*out.shape[:2], -1, model.hidden_size)
        for name, value in expected.items():
            worst = max(worst, float(np.abs(ours[name].numpy() - value).max()))
    assert set(refused) == {"test_lstm_reverse"} & names
    for message in refused.values():
        assert "(reverse)" in message and "clearlstm.LSTM has no" in message
    assert worst < 1e-6, worst


# ---- the importer on other and hostile files ------------------------------------------------


def lstm_model(path: Path, hidden=(3,), *, attrs=None, peepholes=False, external=False) -> Path:
    """A hand-made graph of LSTM ops of the given hidden sizes, chained like export's."""
    rng = np.random.default_rng(0)
    nodes, inits, x, size = [], [], "X", I
    for k, h in enumerate(hidden):
        w = rng.normal(size=(1, 4 * h, size)).astype(np.float32)
        r = rng.normal(size=(1, 4 * h, h)).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"W{k}"), numpy_helper.from_array(r, f"R{k}")]
        inputs = [x, f"W{k}", f"R{k}"]
        if peepholes:
            inits.append(numpy_helper.from_array(np.ones((1, 3 * h), np.float32), f"P{k}"))
            inputs += ["", "", "", "", f"P{k}"]
        nodes.append(helper.make_node("LSTM", inputs, [f"Y{k}"], hidden_size=h, **(attrs or {})))
        nodes.append(helper.make_node("Squeeze", [f"Y{k}", "axis"], [f"X{k + 1}"]))
        x, size = f"X{k + 1}", h
    inits.append(numpy_helper.from_array(np.array([1], np.int64), "axis"))
    if external:
        inits[0].data_location = TensorProto.EXTERNAL
        inits[0].external_data.add(key="location", value="../secret.bin")
        inits[0].ClearField("float_data")
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["T", "B", I])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, None)],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path.write_bytes(model.SerializeToString())
    return path


def test_layers_of_other_sizes_give_a_chain(tmp_path):
    path = lstm_model(tmp_path / "chain.onnx", hidden=(3, 5))
    chain = clearlstm_onnx.import_onnx(path)
    assert isinstance(chain, LSTMChain) and [m.hidden_size for m in chain] == [3, 5]
    x = np.random.default_rng(1).normal(size=(T, B, I)).astype(np.float32)
    with torch.no_grad():
        out, states = chain(torch.from_numpy(x))
    assert len(states) == 2
    assert float(np.abs(out.numpy() - run_ort(path, {"X": x})[0]).max()) < 1e-5


@pytest.mark.parametrize(
    "attrs, variant",
    [
        ({"activations": ["Sigmoid", "Relu", "Tanh"]}, "activations"),
        ({"activation_alpha": [0.5]}, "activations"),
        ({"direction": "reverse"}, "reverse"),
    ],
)
def test_variants_are_refused_by_name(tmp_path, attrs, variant):
    path = lstm_model(tmp_path / "v.onnx", attrs=attrs)
    with pytest.raises(NotImplementedError, match=rf"{next(iter(attrs))}.*\({variant}\)"):
        clearlstm_onnx.import_onnx(path)


def test_hostile_files_are_refused(tmp_path):
    with pytest.raises(ValueError, match="external"):
        clearlstm_onnx.import_onnx(lstm_model(tmp_path / "ext.onnx", external=True))
    with pytest.raises(ValueError, match="limit is 100 bytes"):
        clearlstm_onnx.import_onnx(lstm_model(tmp_path / "big.onnx"), max_bytes=100)
    (tmp_path / "junk.onnx").write_bytes(b"\xff" * 64)
    with pytest.raises(ValueError, match=r"not an ONNX model|no LSTM op"):
        clearlstm_onnx.import_onnx(tmp_path / "junk.onnx")
    model = onnx.load(str(lstm_model(tmp_path / "shape.onnx")))
    model.graph.node[0].attribute[0].i = 2  # hidden_size 2, weights for 3
    (tmp_path / "shape.onnx").write_bytes(model.SerializeToString())
    with pytest.raises(ValueError, match=r"input W must have shape \(1, 8, 3\)"):
        clearlstm_onnx.import_onnx(tmp_path / "shape.onnx")
