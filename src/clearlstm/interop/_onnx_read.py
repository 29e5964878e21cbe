"""Reading an untrusted ONNX file's LSTM ops into clearlstm (see :mod:`clearlstm.interop.onnx`).

The file is capped in size, external data is refused (nothing is read outside the file), and
every tensor's shape is checked against the node's attributes before a module is built.
Only the stack of LSTM ops is imported: what comes after the last one (a linear head) is not.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from clearlstm.interop._common import LayerSpec, build, check_size, require

# torch gate k is ONNX's gate ONNX_TO_TORCH[k]: i, f, g, o from i, o, f, c.
ONNX_TO_TORCH = (0, 2, 3, 1)
# Ops allowed between two LSTM ops: they only move or rename values.
_SHAPE_OPS = frozenset({"Transpose", "Reshape", "Squeeze", "Unsqueeze", "Identity", "Flatten"})
_DEFAULT_ACTIVATIONS = ("Sigmoid", "Tanh", "Tanh")
_SOURCE = "clearlstm.interop.onnx.import_onnx"


def to_torch_gates(weight: np.ndarray) -> np.ndarray:
    """Rows of (4H, ...) reordered from ONNX's i, o, f, c to torch's i, f, g, o."""
    return np.concatenate([np.split(weight, 4)[k] for k in ONNX_TO_TORCH])


def import_onnx(path: str | os.PathLike, *, max_bytes: int = 2 * 1024**3):
    """A clearlstm.LSTM (or an :class:`~clearlstm.interop._common.LSTMChain` when the layers
    differ in size or direction) with the weights of the file's LSTM ops, in eval mode.

    Peepholes ``P`` (unless all zero), ``clip`` and ``input_forget=1`` become the model's
    ``peephole``, ``cell_clip`` and ``coupled_input_forget`` (``input_forget`` read as
    onnxruntime computes it: see :mod:`clearlstm.interop.onnx`). Refused with
    NotImplementedError: ``direction="reverse"`` (clearlstm runs a reverse direction only
    inside a bidirectional layer), activations other than Sigmoid, Tanh, Tanh, activation
    alpha/beta.
    """
    onnx = require("onnx")
    path = check_size(path, max_bytes)
    source = f"{_SOURCE}({str(path)!r})"
    try:
        model = onnx.load_model_from_string(path.read_bytes())
    except Exception as error:  # protobuf's DecodeError and friends
        raise ValueError(f"{source}: not an ONNX model ({type(error).__name__}: {error})") from None
    graph = model.graph
    constants = _constants(onnx, graph, source)
    nodes = [n for n in graph.node if n.op_type == "LSTM" and n.domain in ("", "ai.onnx")]
    if not nodes:
        raise ValueError(f"{source}: the graph holds no LSTM op; found {_ops(graph)}")
    producers = {out: node for node in graph.node for out in node.output if out}
    graph_inputs = {value.name for value in graph.input} - set(constants)
    layers, dtypes, batch_first = [], set(), False
    for k, node in enumerate(nodes):
        where = f"{source}: LSTM node {node.name or k!r}"
        previous = nodes[k - 1] if k else None
        path = _check_feed(node, previous, producers, graph_inputs, where)
        spec, dtype, layout = _layer(onnx, node, constants, where)
        if k == 0:
            batch_first = _batch_first(onnx, path, layout, where)
        if layers and spec.input_size != len(layers[-1].directions) * layers[-1].hidden_size:
            last = layers[-1]
            raise ValueError(
                f"{where}: input size {spec.input_size} does not follow the previous LSTM's "
                f"output ({len(last.directions)} x {last.hidden_size})"
            )
        layers.append(spec)
        dtypes.add(dtype)
    if len(dtypes) != 1:
        raise ValueError(f"{source}: the LSTM ops mix weight dtypes {sorted(map(str, dtypes))}")
    return build(source, layers, batch_first=batch_first, dtype=dtypes.pop())


def _ops(graph) -> str:
    return ", ".join(sorted({node.op_type for node in graph.node})) or "no nodes"


def _constants(onnx, graph, source: str) -> dict:
    """Initializers and Constant nodes' tensors by name; external data refused."""
    tensors = {tensor.name: tensor for tensor in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            for attribute in node.attribute:
                if attribute.name == "value":
                    tensors[node.output[0]] = attribute.t
    for name, tensor in tensors.items():
        if tensor.data_location == onnx.TensorProto.EXTERNAL or tensor.external_data:
            raise ValueError(
                f"{source}: tensor {name!r} keeps its data in an external file; external data "
                "is refused (save the model with all tensors inside the .onnx file)"
            )
    return tensors


def _check_feed(node, previous, producers: dict, graph_inputs: set, where: str) -> list:
    """The ops between the node's X and its source, which is a graph input for the first LSTM
    and the previous LSTM's Y for the next ones; only shape-only ops may lie between."""
    name, path = node.input[0], []
    target = previous.output[0] if previous is not None and previous.output else None
    while True:
        if previous is None and name in graph_inputs:
            return path
        if previous is not None and name == target:
            return path
        producer = producers.get(name)
        if producer is None or producer.op_type not in _SHAPE_OPS or len(path) > 16:
            expected = "a graph input" if previous is None else "the previous LSTM's output Y"
            what = "nothing" if producer is None else f"a {producer.op_type} op"
            raise ValueError(
                f"{where}: its input X must be {expected} (reshaped at most); it comes from "
                f"{what}: the graph is not a plain stack of LSTM ops"
            )
        name = producer.input[0]
        path.append(producer)


def _batch_first(onnx, path: list, layout: int, where: str) -> bool:
    """Whether the graph input is (B, T, I): layout=1, or layout=0 behind a Transpose that
    swaps the first two axes (what export writes for batch_first)."""
    swaps = 0
    for op in path:
        perm = _attributes(onnx, op).get("perm")
        if op.op_type == "Transpose" and list(perm or []) == [1, 0, 2]:
            swaps += 1
        elif op.op_type != "Identity":
            raise ValueError(
                f"{where}: between the graph input and the first LSTM only Identity and a "
                f"Transpose of the first two axes are understood; found {op.op_type} "
                f"(perm={list(perm) if perm else None})"
            )
    return bool(layout ^ (swaps % 2))


def _attributes(onnx, node) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _layer(onnx, node, constants: dict, where: str) -> tuple[LayerSpec, torch.dtype, int]:
    attrs = _attributes(onnx, node)
    hidden = attrs.get("hidden_size")
    if not isinstance(hidden, int) or hidden <= 0:
        raise ValueError(f"{where}: attribute hidden_size must be a positive int; got {hidden!r}")
    direction = attrs.get("direction", b"forward")
    direction = direction.decode() if isinstance(direction, bytes) else str(direction)
    if direction not in ("forward", "reverse", "bidirectional"):
        raise ValueError(
            f"{where}: direction must be forward, reverse or bidirectional; got {direction!r}"
        )
    layout = attrs.get("layout", 0)
    if layout not in (0, 1):
        raise ValueError(f"{where}: layout must be 0 or 1; got {layout!r}")
    dirs = 2 if direction == "bidirectional" else 1
    variants = _variants(attrs, direction, dirs)
    options = _options(attrs, where)
    inputs = list(node.input) + [""] * (8 - len(node.input))
    w = _tensor(onnx, constants, inputs[1], "W", where, required=True)
    dtype = w.dtype
    input_size = w.shape[2] if w.ndim == 3 else -1
    _expect(w, (dirs, 4 * hidden, input_size), "W", where)
    r = _tensor(onnx, constants, inputs[2], "R", where, required=True, dtype=dtype)
    _expect(r, (dirs, 4 * hidden, hidden), "R", where)
    b = _tensor(onnx, constants, inputs[3], "B", where, dtype=dtype)
    if b is not None:
        _expect(b, (dirs, 8 * hidden), "B", where)
    p = _tensor(onnx, constants, inputs[7], "P", where, dtype=dtype)
    if p is not None:
        _expect(p, (dirs, 3 * hidden), "P", where)
        if np.any(p != 0):
            options["peephole"] = True
    for index, name in ((5, "initial_h"), (6, "initial_c")):
        state = _tensor(onnx, constants, inputs[index], name, where, dtype=dtype)
        if state is not None and np.any(state != 0):
            raise NotImplementedError(
                f"{where}: a constant non-zero {name} is not imported: a clearlstm.LSTM "
                "holds no initial state; pass it at call time as hx=(h_0, c_0)"
            )
    coupled = bool(options.get("coupled_input_forget"))
    directions = []
    for d in range(dirs):
        weights = {"weight_ih": _torch_rows(w[d], coupled), "weight_hh": _torch_rows(r[d], coupled)}
        if b is not None:
            weights["bias_ih"] = _torch_rows(b[d, : 4 * hidden], coupled)
            weights["bias_hh"] = _torch_rows(b[d, 4 * hidden :], coupled)
        if options.get("peephole"):
            p_i, p_o, p_f = np.split(p[d], 3)
            if coupled:  # f = 1 - sigmoid(z_i + P_i c) = sigmoid(-z_i - P_i c)
                p_i, p_f = np.zeros_like(p_i), -p_i
            weights["weight_peephole"] = np.stack([p_i, p_f, p_o])
        directions.append(weights)
    torch_dtype = torch.float32 if dtype == np.float32 else torch.float64
    spec = LayerSpec(input_size, hidden, directions, variants, options)
    return spec, torch_dtype, layout


def _torch_rows(weight: np.ndarray, coupled: bool) -> np.ndarray:
    """:func:`to_torch_gates`; ``coupled`` (input_forget=1, onnxruntime's ``f = 1 - i``): the
    forget block is the negated input slot, the unused input block zero."""
    i, o, _, c = np.split(weight, 4)
    if not coupled:
        return to_torch_gates(weight)
    return np.concatenate([np.zeros_like(i), -i, c, o])


def _options(attrs: dict, where: str) -> dict[str, object]:
    """The clearlstm.LSTM variant arguments of the node's ``clip`` and ``input_forget``."""
    options: dict[str, object] = {}
    if "clip" in attrs:
        clip = attrs["clip"]
        if not (isinstance(clip, float) and np.isfinite(clip) and clip > 0):
            raise ValueError(
                f"{where}: attribute clip must be a positive finite float; got {clip!r}"
            )
        options["cell_clip"] = float(str(np.float32(clip)))  # 0.8, not 0.800000011920929
    forget = attrs.get("input_forget", 0)
    if forget not in (0, 1):
        raise ValueError(f"{where}: attribute input_forget must be 0 or 1; got {forget!r}")
    if forget:
        options["coupled_input_forget"] = True
    return options


def _variants(attrs: dict, direction: str, dirs: int) -> dict[str, str]:
    """The node's features beyond a plain LSTM (refused by `build`)."""
    found: dict[str, str] = {}
    if direction == "reverse":
        found["reverse"] = "direction='reverse'"
    activations = attrs.get("activations")
    if activations is not None:
        names = tuple(a.decode() if isinstance(a, bytes) else a for a in activations)
        if names != _DEFAULT_ACTIVATIONS * dirs:
            found["activations"] = f"activations={list(names)}"
    for name in ("activation_alpha", "activation_beta"):
        if attrs.get(name):
            found["activations"] = f"{name}={list(attrs[name])}"
    return found


def _tensor(onnx, constants, name, what, where, *, required=False, dtype=None):
    """Input ``what`` as a numpy array (float32 or float64), None when absent."""
    if not name:
        if required:
            raise ValueError(f"{where}: input {what} is missing")
        return None
    tensor = constants.get(name)
    if tensor is None:
        if what in ("initial_h", "initial_c"):
            return None  # a graph input: given at call time
        raise ValueError(
            f"{where}: input {what} ({name!r}) must be an initializer or a Constant; it is "
            "computed in the graph or fed at run time"
        )
    kinds = {onnx.TensorProto.FLOAT: np.float32, onnx.TensorProto.DOUBLE: np.float64}
    if tensor.data_type not in kinds:
        kind = onnx.TensorProto.DataType.Name(tensor.data_type)
        raise ValueError(f"{where}: input {what} must be float or double; got {kind}")
    expected = (
        int(np.prod(tensor.dims, dtype=np.int64)) * np.dtype(kinds[tensor.data_type]).itemsize
    )
    if tensor.raw_data and len(tensor.raw_data) != expected:
        raise ValueError(
            f"{where}: input {what} claims shape {list(tensor.dims)} ({expected} bytes) but "
            f"holds {len(tensor.raw_data)} bytes"
        )
    array = onnx.numpy_helper.to_array(tensor)
    if array.shape != tuple(tensor.dims):
        raise ValueError(f"{where}: input {what} has shape {array.shape}, not {list(tensor.dims)}")
    if dtype is not None and array.dtype != dtype:
        raise ValueError(f"{where}: input {what} is {array.dtype} but W is {dtype}")
    return array


def _expect(array: np.ndarray, shape: tuple[int, ...], what: str, where: str) -> None:
    if array.shape != shape:
        expected = tuple("I" if s == -1 else s for s in shape)
        raise ValueError(
            f"{where}: input {what} must have shape {expected} for its hidden_size and "
            f"direction; got {array.shape}"
        )
