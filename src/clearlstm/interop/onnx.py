"""ONNX out and in: a standard graph of ``LSTM`` ops, one per layer.

ONNX's LSTM keeps its gates in the order i, o, f, c (torch: i, f, g, o) and both biases in
one tensor ``B = [Wb, Rb]`` of shape (D, 8H); the conversion happens here and nowhere else.

The exported graph takes ``input`` ((T, B, I), or (B, T, I) with ``batch_first``),
optionally ``lengths`` (int32 (B,): ONNX ``sequence_lens``) and ``h_0``,
``c_0`` ((L*D, B, H)), and gives ``output``, ``h_n``, ``c_n`` like torch's
``output, (h_n, c_n)``. Between layers each Y (T, D, B, H) becomes (T, B, D*H) by Transpose and
Reshape. Dropout is an inference graph's no-op and is left out.

ONNX runtimes agree with us on padded batches: outputs past a sequence's length are zero and
Y_h is the state at its last valid step.

>>> import os, tempfile, torch, clearlstm
>>> from clearlstm.interop import onnx as clearlstm_onnx
>>> model = clearlstm.LSTM(3, 4, num_layers=2)
>>> path = os.path.join(tempfile.mkdtemp(), "model.onnx")
>>> _ = clearlstm_onnx.export(model, path)
>>> again = clearlstm_onnx.import_onnx(path)
>>> x = torch.randn(5, 2, 3)
>>> bool(torch.equal(again(x)[0], model(x)[0]))
True
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from clearlstm.files import write_atomically
from clearlstm.interop._common import require, torch_layers
from clearlstm.interop._onnx_read import import_onnx
from clearlstm.nn.lstm import LSTM

__all__ = ["TORCH_TO_ONNX", "export", "import_onnx"]

# ONNX gate k takes torch's gate TORCH_TO_ONNX[k]: i, o, f, c from i, f, g, o.
TORCH_TO_ONNX = (0, 3, 1, 2)
MIN_OPSET = 14  # the LSTM op's `layout` attribute
DEFAULT_OPSET = 17


def to_onnx_gates(weight: np.ndarray) -> np.ndarray:
    """Rows of (4H, ...) reordered from torch's i, f, g, o to ONNX's i, o, f, c."""
    return np.concatenate([np.split(weight, 4)[k] for k in TORCH_TO_ONNX])


def export(
    model: LSTM | nn.LSTM,
    path: str | os.PathLike,
    *,
    opset: int = DEFAULT_OPSET,
    lengths: bool = False,
    initial_state: bool = False,
    batchwise: bool = False,
) -> Path:
    """Write ``model`` as an ONNX graph of LSTM ops; returns the path.

    ``lengths``: the graph takes ``lengths`` (int32, one per sequence) for padded batches.
    ``initial_state``: the graph takes ``h_0`` and ``c_0``. Without them it starts from zeros.
    ``batchwise``: a ``batch_first`` model's LSTM ops take (B, T, I) themselves (ONNX
    ``layout=1``); onnxruntime's CPU LSTM refuses layout=1, so by default a batch_first model
    gets layout=0 ops between two Transposes and runs everywhere.
    ``proj_size`` is refused: ONNX's LSTM has no projection.
    """
    onnx = require("onnx")
    source = "clearlstm.interop.onnx.export"
    if isinstance(opset, bool) or not isinstance(opset, int):
        raise TypeError(f"{source}: opset must be an int; got {opset!r}")
    newest = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= opset <= newest:
        raise ValueError(
            f"{source}: opset must be in [{MIN_OPSET}, {newest}] (this onnx package); got {opset}"
        )
    layers, dtype = torch_layers(model, source)
    graph = _Graph(onnx, np.float32 if dtype == torch.float32 else np.float64)
    batch_first = bool(model.batch_first)
    layout = int(batch_first and batchwise)
    model_proto = graph.build(
        layers, batch_first, layout, lengths=lengths, initial_state=initial_state
    )
    model_proto.opset_import[0].version = opset
    onnx.checker.check_model(model_proto, full_check=True)
    return write_atomically(path, model_proto.SerializeToString())


class _Graph:
    """Nodes, initializers and names of the graph being written."""

    def __init__(self, onnx, dtype: type) -> None:
        self.onnx, self.helper, self.dtype = onnx, onnx.helper, np.dtype(dtype)
        self.elem = self.helper.np_dtype_to_tensor_dtype(self.dtype)
        self.nodes: list = []
        self.initializers: list = []

    def constant(self, name: str, value: np.ndarray) -> str:
        self.initializers.append(self.onnx.numpy_helper.from_array(value, name))
        return name

    def node(self, op: str, inputs: list[str], output: str, **attributes) -> str:
        self.nodes.append(self.helper.make_node(op, inputs, [output], name=output, **attributes))
        return output

    def build(self, layers, batch_first: bool, layout: int, *, lengths: bool, initial_state: bool):
        helper, elem = self.helper, self.elem
        int32 = self.onnx.TensorProto.INT32
        stacked = len(layers[0].directions)
        hidden = layers[0].hidden_size
        total = len(layers) * stacked
        steps_batch = ["batch", "steps"] if batch_first else ["steps", "batch"]
        inputs = [
            helper.make_tensor_value_info("input", elem, [*steps_batch, layers[0].input_size])
        ]
        if lengths:
            inputs.append(helper.make_tensor_value_info("lengths", int32, ["batch"]))
        if initial_state:
            for name in ("h_0", "c_0"):
                inputs.append(helper.make_tensor_value_info(name, elem, [total, "batch", hidden]))
        flat = self.constant("flat_shape", np.array([0, 0, -1], dtype=np.int64))
        x, finals, last = "input", {"h": [], "c": []}, len(layers) - 1
        if batch_first and not layout:  # (B, T, I) -> (T, B, I) for layout=0 ops
            x = self.node("Transpose", [x], "input_tbi", perm=[1, 0, 2])
        for k, spec in enumerate(layers):
            lstm_inputs = [x, *self._weights(k, spec), "lengths" if lengths else ""]
            if initial_state:
                lstm_inputs += [self._state(name, k, stacked, layout) for name in "hc"]
            y, y_h, y_c = f"Y_l{k}", f"Y_h_l{k}", f"Y_c_l{k}"
            direction = "bidirectional" if spec.bidirectional else "forward"
            self.nodes.append(
                helper.make_node(
                    "LSTM",
                    _strip(lstm_inputs),
                    [y, y_h, y_c],
                    name=f"lstm_l{k}",
                    hidden_size=spec.hidden_size,
                    direction=direction,
                    layout=layout,
                )
            )
            if not layout:  # (T, D, B, H) -> (T, B, D, H); layout=1 gives (B, T, D, H)
                y = self.node("Transpose", [y], f"Y_l{k}_tbdh", perm=[0, 2, 1, 3])
            named = "output" if k == last and layout == int(batch_first) else f"X_l{k + 1}"
            x = self.node("Reshape", [y, flat], named)
            finals["h"].append(y_h)
            finals["c"].append(y_c)
        if x != "output":  # (T, B, D*H) -> (B, T, D*H)
            self.node("Transpose", [x], "output", perm=[1, 0, 2])
        for name, parts in finals.items():
            if layout:  # layout=1 gives (B, D, H)
                joined = self._join(parts, 1, f"{name}_n_bdh")
                self.node("Transpose", [joined], f"{name}_n", perm=[1, 0, 2])
            else:
                self._join(parts, 0, f"{name}_n")
        outputs = [
            helper.make_tensor_value_info("output", elem, [*steps_batch, stacked * hidden]),
            helper.make_tensor_value_info("h_n", elem, [total, "batch", hidden]),
            helper.make_tensor_value_info("c_n", elem, [total, "batch", hidden]),
        ]
        graph = helper.make_graph(
            self.nodes, "clearlstm", inputs, outputs, initializer=self.initializers
        )
        return helper.make_model(graph, producer_name="clearlstm")

    def _weights(self, k: int, spec) -> list[str]:
        """W, R and B (or "" without bias) of layer ``k`` in ONNX's layout."""
        dirs = spec.directions
        w = np.stack([to_onnx_gates(d["weight_ih"]) for d in dirs]).astype(self.dtype)
        r = np.stack([to_onnx_gates(d["weight_hh"]) for d in dirs]).astype(self.dtype)
        names = [self.constant(f"W_l{k}", w), self.constant(f"R_l{k}", r)]
        if "bias_ih" not in dirs[0]:
            return [*names, ""]
        b = np.stack(
            [
                np.concatenate([to_onnx_gates(d["bias_ih"]), to_onnx_gates(d["bias_hh"])])
                for d in dirs
            ]
        )
        return [*names, self.constant(f"B_l{k}", b.astype(self.dtype))]

    def _state(self, name: str, k: int, stacked: int, layout: int) -> str:
        """Layer ``k``'s slice (D, B, H) of ``h_0`` or ``c_0``, as (B, D, H) for layout=1."""
        start = self.constant(f"{name}_start_l{k}", np.array([k * stacked], dtype=np.int64))
        end = self.constant(f"{name}_end_l{k}", np.array([(k + 1) * stacked], dtype=np.int64))
        part = self.node("Slice", [f"{name}_0", start, end], f"{name}_0_l{k}")
        if layout:
            part = self.node("Transpose", [part], f"{name}_0_l{k}_bdh", perm=[1, 0, 2])
        return part

    def _join(self, parts: list[str], axis: int, output: str) -> str:
        if len(parts) == 1:
            return self.node("Identity", parts, output)
        return self.node("Concat", parts, output, axis=axis)


def _strip(names: list[str]) -> list[str]:
    """Trailing optional inputs left out rather than named ""."""
    while names and not names[-1]:
        names = names[:-1]
    return names
