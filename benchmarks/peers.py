"""The peers clearlstm is measured against, built with the same weights: an ONNX Runtime
session running one ``LSTM`` operator, OpenVINO compiling the same ONNX graph (when the
``openvino`` package is installed), and the plain torch loop over ``nn.LSTMCell``. Each
peer's thread pool is pinned to the thread count clearlstm gets.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def onnx_lstm_model(lstm: nn.LSTM):
    """An ONNX model of one ``LSTM`` operator with ``lstm``'s weights.

    Inputs ``X (T, B, I)``, ``initial_h, initial_c (1, B, H)``; output ``Y (T, 1, B, H)``.
    ONNX orders the gate blocks i, o, f, c where torch has i, f, g, o.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    hidden = lstm.hidden_size
    order = [0, 3, 1, 2]  # torch blocks (i, f, g, o) -> onnx (i, o, f, c)

    def reorder(w: torch.Tensor) -> np.ndarray:
        blocks = w.detach().reshape(4, hidden, *w.shape[1:])
        return blocks[order].reshape(w.shape).numpy()

    w = reorder(lstm.weight_ih_l0)[None]  # (1, 4H, I)
    r = reorder(lstm.weight_hh_l0)[None]  # (1, 4H, H)
    b = np.concatenate([reorder(lstm.bias_ih_l0), reorder(lstm.bias_hh_l0)])[None]  # (1, 8H)
    node = helper.make_node(
        "LSTM",
        ["X", "W", "R", "B", "", "initial_h", "initial_c"],
        ["Y", "Y_h", "Y_c"],
        hidden_size=hidden,
    )
    f32 = TensorProto.FLOAT
    graph = helper.make_graph(
        [node],
        "lstm",
        [
            helper.make_tensor_value_info("X", f32, ["T", "B", lstm.input_size]),
            helper.make_tensor_value_info("initial_h", f32, [1, "B", hidden]),
            helper.make_tensor_value_info("initial_c", f32, [1, "B", hidden]),
        ],
        [
            helper.make_tensor_value_info("Y", f32, ["T", 1, "B", hidden]),
            helper.make_tensor_value_info("Y_h", f32, [1, "B", hidden]),
            helper.make_tensor_value_info("Y_c", f32, [1, "B", hidden]),
        ],
        [numpy_helper.from_array(a, n) for a, n in ((w, "W"), (r, "R"), (b, "B"))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    onnx.checker.check_model(model)
    return model


def onnx_lstm_session(lstm: nn.LSTM, threads: int):
    """An ONNX Runtime session running :func:`onnx_lstm_model` on ``threads`` threads."""
    import onnxruntime as ort

    model = onnx_lstm_model(lstm)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )


def openvino_lstm(lstm: nn.LSTM, threads: int, shape: tuple[int, int, int]):
    """OpenVINO's CPU plugin compiling :func:`onnx_lstm_model` for inputs of ``shape = (T, B,
    I)`` on ``threads`` threads (latency hint, one stream); a function of the ONNX feed
    returning ``Y``. None when ``openvino`` is not installed (it is in the ``bench`` extra)."""
    try:
        import openvino as ov
    except ImportError:
        return None
    core = ov.Core()
    model = core.read_model(onnx_lstm_model(lstm).SerializeToString())
    steps, batch, inputs = shape
    hidden = lstm.hidden_size
    model.reshape({"X": [steps, batch, inputs], "initial_h": [1, batch, hidden],
                   "initial_c": [1, batch, hidden]})  # fmt: skip
    config = {
        "INFERENCE_NUM_THREADS": threads,
        "NUM_STREAMS": 1,
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": "f32",  # else bfloat16 on CPUs that have it (1e-3 off)
    }
    compiled = core.compile_model(model, "CPU", config)
    request = compiled.create_infer_request()
    output = compiled.output("Y")

    def run(feed: dict[str, np.ndarray]) -> np.ndarray:
        return request.infer(feed)[output]

    return run


def cell_loop(cell: nn.LSTMCell, x: torch.Tensor) -> torch.Tensor:
    """The plain torch loop: one ``nn.LSTMCell`` call per step. ``x (T, B, I)``."""
    h = c = x.new_zeros(x.shape[1], cell.hidden_size)
    outputs = []
    for x_t in x:
        h, c = cell(x_t, (h, c))
        outputs.append(h)
    return torch.stack(outputs)
