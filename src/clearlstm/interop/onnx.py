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

The variants ONNX's LSTM op expresses travel as its own inputs and attributes:

- ``peephole=True``: input ``P`` (D, 3H), ordered ``[P_i, P_o, P_f]`` (torch's
  ``weight_peephole`` rows are p_i, p_f, p_o); the input and forget gates peek at the old
  memory, the output gate at the new one, as in the spec's equations.
- ``cell_clip``: attribute ``clip``, applied to every gate's pre-activation (peephole terms
  included), not to the memory before ``h``'s tanh: what onnxruntime does (tested).
- ``coupled_input_forget=True``: attribute ``input_forget=1``. The spec says only "couple the
  input and forget gates"; onnxruntime computes ``f = 1 - i`` from the *input* gate's
  weights, clearlstm ``i = 1 - f`` from the forget gate's. As ``1 - sigmoid(z) =
  sigmoid(-z)`` (and the clip is symmetric), export writes the forget gate's weights, biases
  and peephole both in the forget slot and, negated, in the input slot: the graph then means
  the same under either reading. Import follows onnxruntime: ``z_f = -z_i`` of the file
  (``p_f = -P_i``); the model's unused input-gate rows (and ``p_i``) are zero.

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
ONNX_VARIANTS = ("peephole", "coupled_input_forget", "cell_clip")  # what the LSTM op holds
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
    ``proj_size`` is refused: ONNX's LSTM has no projection; so is any variant the LSTM op
    cannot express (peepholes, the coupled input-forget gate and the cell clip it can: see
    the module docstring).
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
    layers, dtype = torch_layers(model, source, ONNX_VARIANTS)
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
            w, r, b, p = self._weights(k, spec)
            states = ["", ""]
            if initial_state:
                states = [self._state(name, k, stacked, layout) for name in "hc"]
            lstm_inputs = [x, w, r, b, "lengths" if lengths else "", *states, p]
            y, y_h, y_c = f"Y_l{k}", f"Y_h_l{k}", f"Y_c_l{k}"
            direction = "bidirectional" if spec.bidirectional else "forward"
            variant = {}
            if spec.options.get("cell_clip") is not None:
                variant["clip"] = float(spec.options["cell_clip"])
            if spec.options.get("coupled_input_forget"):
                variant["input_forget"] = 1
            self.nodes.append(
                helper.make_node(
                    "LSTM",
                    _strip(lstm_inputs),
                    [y, y_h, y_c],
                    name=f"lstm_l{k}",
                    hidden_size=spec.hidden_size,
                    direction=direction,
                    layout=layout,
                    **variant,
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
        """W, R, B (or "" without bias) and P (or "" without peepholes) of layer ``k`` in
        ONNX's layout; a coupled input-forget gate's forget rows go negated into the input
        slot."""
        dirs, coupled = spec.directions, bool(spec.options.get("coupled_input_forget"))

        def stacked(name: str) -> np.ndarray:
            rows = [_onnx_rows(np.split(d[name], 4), coupled) for d in dirs]
            return np.stack(rows).astype(self.dtype)

        names = [self.constant(f"W_l{k}", stacked("weight_ih"))]
        names.append(self.constant(f"R_l{k}", stacked("weight_hh")))
        b = None
        if "bias_ih" in dirs[0]:
            b = np.concatenate([stacked("bias_ih"), stacked("bias_hh")], axis=1)
        names.append("" if b is None else self.constant(f"B_l{k}", b))
        p = None
        if "weight_peephole" in dirs[0]:
            p = np.stack([_onnx_peepholes(d["weight_peephole"], coupled) for d in dirs])
        names.append("" if p is None else self.constant(f"P_l{k}", p.astype(self.dtype)))
        return names

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


def _onnx_rows(blocks: list[np.ndarray], coupled: bool) -> np.ndarray:
    """Torch's gate blocks i, f, g, o as ONNX's i, o, f, c; ``coupled``: the input slot holds
    the negated forget block (module docstring)."""
    i, f, g, o = blocks
    return np.concatenate([-f if coupled else i, o, f, g])


def _onnx_peepholes(peep: np.ndarray, coupled: bool) -> np.ndarray:
    """``(3, H)`` rows p_i, p_f, p_o as ONNX's ``P`` (3H,): P_i, P_o, P_f."""
    p_i, p_f, p_o = peep
    return np.concatenate([-p_f if coupled else p_i, p_o, p_f])


def _strip(names: list[str]) -> list[str]:
    """Trailing optional inputs left out rather than named ""."""
    while names and not names[-1]:
        names = names[:-1]
    return names
