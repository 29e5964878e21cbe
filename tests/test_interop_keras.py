"""Keras 3 weights in and out (clearlstm.interop.keras), without TensorFlow: files built with
h5py in Keras 3's layout, outputs checked against Keras' LSTM equations in numpy."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import clearlstm
from clearlstm.interop import LSTMChain
from clearlstm.interop.keras import export_keras_weights, import_keras

h5py = pytest.importorskip("h5py")

B, T, I = 3, 7, 4


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def keras_lstm(x, kernel, recurrent, bias, *, backwards=False) -> tuple[np.ndarray, ...]:
    """Keras' LSTM on (B, T, I): gates i, f, c, o; returns all h (B, T, H), last h, last c."""
    hidden = recurrent.shape[0]
    h, c = np.zeros((x.shape[0], hidden)), np.zeros((x.shape[0], hidden))
    steps = range(x.shape[1])[::-1] if backwards else range(x.shape[1])
    out = np.zeros((x.shape[0], x.shape[1], hidden))
    for t in steps:
        z = x[:, t] @ kernel + h @ recurrent + (0 if bias is None else bias)
        zi, zf, zc, zo = np.split(z, 4, axis=-1)
        i, f, o = sigmoid(zi), sigmoid(zf), sigmoid(zo)
        c = f * c + i * np.tanh(zc)
        h = o * np.tanh(c)
        out[:, t] = h
    return out, h, c


def random_cell(rng, inputs: int, hidden: int, bias: bool = True) -> list[np.ndarray]:
    cell = [rng.normal(0, 0.5, (inputs, 4 * hidden)), rng.normal(0, 0.5, (hidden, 4 * hidden))]
    return [*cell, rng.normal(0, 0.5, 4 * hidden)] if bias else cell


def write_weights(handle, layers: dict[str, list]) -> None:
    """Keras 3's layout: vars/, layers/NAME/vars/, layers/NAME/cell/vars/0..2 (Bidirectional:
    layers/NAME/forward_layer/... and backward_layer/...); a Dense head beside them."""
    handle.create_group("vars")
    for name, cells in layers.items():
        group = handle.create_group(f"layers/{name}")
        group.create_group("vars")
        sides = (
            [group]
            if len(cells) == 1
            else [group.create_group(s) for s in ("forward_layer", "backward_layer")]
        )
        for side, cell in zip(sides, cells, strict=True):
            target = side.create_group("cell/vars")
            for k, value in enumerate(cell):
                target[str(k)] = value.astype(np.float32)
    dense = handle.create_group("layers/dense/vars")
    dense["0"], dense["1"] = np.ones((8, 1), np.float32), np.zeros(1, np.float32)


def weights_file(path: Path, layers: dict[str, list]) -> Path:
    with h5py.File(path, "w") as handle:
        write_weights(handle, layers)
    return path


def keras_file(path: Path, layers: dict[str, list], configs: list[dict]) -> Path:
    """A .keras zip: config.json (a Sequential of ``configs``), metadata.json, the weights."""
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as handle:
        write_weights(handle, layers)
    config = {"module": "keras", "class_name": "Sequential", "config": {"layers": configs}}
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("metadata.json", json.dumps({"keras_version": "3.6.0"}))
        archive.writestr("config.json", json.dumps(config))
        archive.writestr("model.weights.h5", buffer.getvalue())
    return path


def lstm_config(units: int, **changes) -> dict:
    config = {"name": "lstm", "units": units, "activation": "tanh"}
    config |= {"recurrent_activation": "sigmoid", "use_bias": True, "return_sequences": True}
    config |= {"go_backwards": False, "unit_forget_bias": True} | changes
    return {"module": "keras.layers", "class_name": "LSTM", "config": config}


def test_stacked_weights_file_matches_keras_equations(tmp_path):
    rng = np.random.default_rng(0)
    cells = [random_cell(rng, I, 5), random_cell(rng, 5, 5), random_cell(rng, 5, 5)]
    names = ["lstm", "lstm_1", "lstm_2"]
    path = weights_file(
        tmp_path / "m.weights.h5", {n: [c] for n, c in zip(names, cells, strict=True)}
    )
    model = import_keras(path)
    assert isinstance(model, clearlstm.LSTM) and model.batch_first and model.num_layers == 3
    x = rng.normal(size=(B, T, I))
    expected, states = x, []
    for cell in cells:
        cell32 = [w.astype(np.float32).astype(np.float64) for w in cell]
        expected, h, c = keras_lstm(expected, *cell32)
        states.append((h, c))
    with torch.no_grad():
        out, (h_n, c_n) = model(torch.tensor(x, dtype=torch.float32))
    assert np.abs(out.numpy() - expected).max() < 1e-5
    assert np.abs(h_n.numpy() - np.stack([h for h, _ in states])).max() < 1e-5
    assert np.abs(c_n.numpy() - np.stack([c for _, c in states])).max() < 1e-5
    assert model(torch.randn(B, T, I), trace=True)[2][2, 0].input_gate.shape == (T, B, 5)


def test_keras_file_bidirectional_and_other_sizes(tmp_path):
    rng = np.random.default_rng(1)
    forward, backward = random_cell(rng, I, 3), random_cell(rng, I, 3)
    top = random_cell(rng, 6, 2, bias=False)
    bidirectional = {
        "module": "keras.layers",
        "class_name": "Bidirectional",
        "config": {"merge_mode": "concat", "layer": lstm_config(3)},
    }
    configs = [
        {"class_name": "InputLayer", "config": {"batch_shape": [None, None, I]}},
        bidirectional,
        {"class_name": "Dropout", "config": {"rate": 0.1}},
        lstm_config(2, use_bias=False),
        {"class_name": "Dense", "config": {"units": 1}},
    ]
    layers = {"bidirectional": [forward, backward], "lstm": [top]}
    chain = import_keras(keras_file(tmp_path / "m.keras", layers, configs))
    assert isinstance(chain, LSTMChain) and [m.bidirectional for m in chain] == [True, False]
    assert chain[1].bias is False
    x = rng.normal(size=(B, T, I))
    f32 = [[w.astype(np.float32).astype(np.float64) for w in c] for c in (forward, backward, top)]
    ahead, _, _ = keras_lstm(x, *f32[0])
    behind, _, _ = keras_lstm(x, *f32[1], backwards=True)
    expected, h, _ = keras_lstm(np.concatenate([ahead, behind], -1), *f32[2], None)
    with torch.no_grad():
        out, states = chain(torch.tensor(x, dtype=torch.float32))
    assert np.abs(out.numpy() - expected).max() < 1e-5
    assert np.abs(states[1][0][0].numpy() - h).max() < 1e-5


@pytest.mark.parametrize(
    "changes, variant",
    [
        ({"activation": "relu"}, "activations"),
        ({"recurrent_activation": "hard_sigmoid"}, "activations"),
        ({"go_backwards": True}, "reverse"),
    ],
)
def test_variants_are_refused_by_name(tmp_path, changes, variant):
    rng = np.random.default_rng(2)
    path = keras_file(
        tmp_path / "v.keras", {"lstm": [random_cell(rng, I, 3)]}, [lstm_config(3, **changes)]
    )
    name = next(iter(changes))
    with pytest.raises(NotImplementedError, match=rf"{name}=.*\({variant}\)"):
        import_keras(path)


def test_write_read_round_trip(tmp_path):
    torch.manual_seed(0)
    model = clearlstm.LSTM(I, 6, num_layers=2, bidirectional=True, batch_first=True)
    path = export_keras_weights(model, tmp_path / "out.weights.h5")
    with h5py.File(path, "r") as handle:
        kernel = handle["layers/bidirectional_1/backward_layer/cell/vars/0"][()]
        assert kernel.shape == (12, 24) and "vars" in handle
    again = import_keras(path)
    assert again.bidirectional and again.num_layers == 2
    for name, value in model.state_dict().items():
        if name.startswith("bias_ih"):  # Keras holds one bias: the sum of torch's two
            value = value + model.state_dict()[name.replace("_ih", "_hh")]
        if name.startswith("bias_hh"):
            value = torch.zeros_like(value)
        assert torch.equal(again.state_dict()[name], value), name
    x = torch.randn(B, T, I)
    with torch.no_grad():
        assert (again(x)[0] - model(x)[0]).abs().max() < 1e-6
    no_bias = clearlstm.LSTM(I, 3, bias=False)
    again = import_keras(export_keras_weights(no_bias, tmp_path / "nb.weights.h5"))
    assert again.bias is False and torch.equal(again.weight_hh_l0, no_bias.weight_hh_l0)


def test_bad_files_are_refused(tmp_path):
    with pytest.raises(NotImplementedError, match=r"proj_size=2"):
        export_keras_weights(clearlstm.LSTM(I, 3, proj_size=2), tmp_path / "p.weights.h5")
    with pytest.raises(ValueError, match=r"\.weights\.h5"):
        export_keras_weights(clearlstm.LSTM(I, 3), tmp_path / "p.h5")
    rng = np.random.default_rng(3)
    cell = random_cell(rng, I, 3)
    path = weights_file(tmp_path / "a.weights.h5", {"lstm": [cell]})
    with pytest.raises(ValueError, match="limit is 10 bytes"):
        import_keras(path, max_bytes=10)
    outside = weights_file(tmp_path / "outside.weights.h5", {"lstm": [cell]})
    with h5py.File(tmp_path / "link.weights.h5", "w") as handle:
        handle["layers/lstm"] = h5py.ExternalLink(str(outside), "/layers/lstm")
    with pytest.raises(ValueError, match="ExternalLink"):
        import_keras(tmp_path / "link.weights.h5")
    wrong = [cell[0], cell[1][:, :8], cell[2]]
    with pytest.raises(ValueError, match=r"recurrent_kernel must be \(H, 4H\)"):
        import_keras(weights_file(tmp_path / "w.weights.h5", {"lstm": [wrong]}))
    mixed = weights_file(
        tmp_path / "mix.weights.h5", {"lstm": [cell], "bidirectional": [cell, cell]}
    )
    with pytest.raises(ValueError, match=r"import the \.keras file"):
        import_keras(mixed)
    (tmp_path / "junk.keras").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="zip archive"):
        import_keras(tmp_path / "junk.keras")
