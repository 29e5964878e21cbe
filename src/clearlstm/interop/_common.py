"""What the ONNX and Keras converters share: one description of an imported stack, the one
place that refuses LSTM variants clearlstm.LSTM cannot run yet, and building the module.

Every importer turns its file into :class:`LayerSpec` records in torch's layout (gates i, f,
g, o) and calls :func:`build`; so supporting a variant (peepholes, a coupled input-forget
gate and cell clip are; layer norm is not yet) means adding it to clearlstm.LSTM and passing
it on in :func:`build` (``LayerSpec.options``) — one place, for every format.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
from torch import Tensor, nn

from clearlstm.nn.lstm import LSTM
from clearlstm.nn.variants import DEFAULTS

MAX_FILE_BYTES = 2 * 1024**3  # files are untrusted: nothing larger is read

# Variant -> (what clearlstm.LSTM lacks, what to do instead). A variant supported later moves
# from here into `build` (peepholes, input_forget and clip have: LayerSpec.options).
VARIANTS: dict[str, tuple[str, str]] = {
    "layer_norm": ("layer-normalised gates", "use a model without layer normalisation"),
    "activations": (
        "other activation functions than sigmoid, tanh, tanh",
        "use the default activations (Keras activation='tanh', recurrent_activation="
        "'sigmoid'; ONNX activations Sigmoid, Tanh, Tanh without alpha or beta)",
    ),
    "reverse": (
        "reverse-only layer (a reverse direction runs only inside a bidirectional layer)",
        "flip each sequence in time yourself and use a forward layer",
    ),
    "merge_mode": (
        "other merges of a bidirectional layer's two directions than concatenation",
        "save the model with merge_mode='concat' and combine the two halves yourself",
    ),
    "proj_size": (
        "",  # not a missing feature of ours: the target format has no projection
        "export a model without proj_size (ONNX's and Keras' LSTM have no projection); keep "
        "a projected model as a torch state_dict",
    ),
}

# clearlstm.LSTM variant argument -> (what the exported LSTM op lacks or what this exporter does
# not write yet, what to do instead). Dropout (recurrent_dropout, input_dropout) is a no-op in
# an inference graph, like torch's dropout, and is left out of the export (not refused).
EXPORT_VARIANTS: dict[str, tuple[str, str]] = {
    "layer_norm": (
        "ONNX's and Keras' LSTM ops have no layer normalisation",
        "keep a layer-normalised model as a torch state_dict",
    ),
    "zoneout_h": (
        "ONNX's and Keras' LSTM ops have no zoneout (in evaluation the blend z * previous + "
        "(1 - z) * new of every state)",
        "keep a zoneout model as a torch state_dict",
    ),
    "zoneout_c": (
        "ONNX's and Keras' LSTM ops have no zoneout (in evaluation the blend z * previous + "
        "(1 - z) * new of every state)",
        "keep a zoneout model as a torch state_dict",
    ),
}


def refuse(source: str, variant: str, found: str) -> None:
    """Raise the NotImplementedError that names what was ``found`` (the attribute and its
    value), the ``variant`` it asks for, and the way around it."""
    missing, workaround = VARIANTS[variant]
    what = f"clearlstm.LSTM has no {missing} yet" if missing else "the format cannot hold it"
    raise NotImplementedError(
        f"{source}: {found} is not supported ({variant}): {what}; {workaround}"
    )


def require(module: str, extra: str = "interop") -> ModuleType:
    """Import an optional dependency, or say which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(
            f"clearlstm.interop needs the {module!r} package: pip install 'clearlstm[{extra}]'"
        ) from error


def check_size(path: str | os.PathLike, limit: int = MAX_FILE_BYTES) -> Path:
    """The path of a regular file no larger than ``limit`` bytes."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    size = path.stat().st_size
    if size > limit:
        raise ValueError(f"{path}: file is {size} bytes; the limit is {limit} bytes")
    return path


@dataclass
class LayerSpec:
    """One imported layer in torch's layout: per direction a dict of numpy arrays
    ``weight_ih`` (4H, I), ``weight_hh`` (4H, H), optionally ``bias_ih``, ``bias_hh`` (4H,)
    and, with ``options["peephole"]``, ``weight_peephole`` (3, H) rows p_i, p_f, p_o.
    ``variants``: the features beyond a plain LSTM the file asks for that clearlstm cannot run
    (refused by `build`); ``options``: the clearlstm.LSTM variant arguments it can
    (``peephole``, ``coupled_input_forget``, ``cell_clip``), passed on by `build`."""

    input_size: int
    hidden_size: int
    directions: list[dict[str, np.ndarray]]
    variants: dict[str, str] = field(default_factory=dict)  # variant -> "attribute=value"
    options: dict[str, object] = field(default_factory=dict)  # LSTM keyword -> value

    @property
    def bidirectional(self) -> bool:
        return len(self.directions) == 2

    @property
    def bias(self) -> bool:
        return any("bias_ih" in d or "bias_hh" in d for d in self.directions)


class LSTMChain(nn.ModuleList):
    """Stacks of LSTM layers that one clearlstm.LSTM cannot hold (other hidden sizes, one
    layer bidirectional and the next not): each stack runs on the previous one's output.

    Returns ``output, states``: ``states`` is one ``(h_n, c_n)`` per stack.
    """

    def forward(
        self, input: Tensor, *, lengths: Tensor | list[int] | None = None
    ) -> tuple[Tensor, list[tuple[Tensor, Tensor]]]:
        states = []
        for stack in self:
            input, state = stack(input, lengths=lengths)
            states.append(state)
        return input, states


def build(
    source: str, layers: list[LayerSpec], *, batch_first: bool, dtype: torch.dtype
) -> LSTM | LSTMChain:
    """One clearlstm.LSTM when the layers fit one (same hidden size and directions), else an
    :class:`LSTMChain` of them; refuses every variant first."""
    for spec in layers:
        for variant, value in spec.variants.items():
            refuse(source, variant, value)
    groups: list[list[LayerSpec]] = []
    for spec in layers:
        last = groups[-1][-1] if groups else None
        fits = last is not None and (spec.hidden_size, spec.bidirectional, spec.options) == (
            last.hidden_size,
            last.bidirectional,
            last.options,
        )
        if fits:
            groups[-1].append(spec)
        else:
            groups.append([spec])
    stacks = [_stack(group, batch_first, dtype) for group in groups]
    return stacks[0] if len(stacks) == 1 else LSTMChain(stacks)


def _stack(group: list[LayerSpec], batch_first: bool, dtype: torch.dtype) -> LSTM:
    first, bias = group[0], any(spec.bias for spec in group)
    module = LSTM(
        first.input_size,
        first.hidden_size,
        len(group),
        bias=bias,
        batch_first=batch_first,
        bidirectional=first.bidirectional,
        dtype=dtype,
        **first.options,
    )
    state = {}
    for layer, spec in enumerate(group):
        for direction, weights in enumerate(spec.directions):
            sfx = f"_l{layer}" + ("_reverse" if direction else "")
            names = ("weight_ih", "weight_hh") + (("bias_ih", "bias_hh") if bias else ())
            for name in names + (("weight_peephole",) if "peephole" in spec.options else ()):
                value = weights.get(name)
                if value is None:  # a layer without bias in a stack with bias
                    value = np.zeros(4 * spec.hidden_size)
                state[name + sfx] = torch.as_tensor(np.ascontiguousarray(value), dtype=dtype)
    module.load_state_dict(state)
    return module.eval()


# The clearlstm.LSTM arguments that only set initial values: nothing to export.
_INIT_ONLY = ("forget_bias", "init", "chrono_max_steps")
_TRAINING_ONLY = ("recurrent_dropout", "input_dropout")  # no-ops in an inference graph


def torch_layers(
    model: nn.Module, source: str, cell_variants: tuple[str, ...] = ()
) -> tuple[list[LayerSpec], torch.dtype]:
    """A clearlstm.LSTM's or torch.nn.LSTM's layers as LayerSpecs (numpy, torch layout).

    ``cell_variants``: the variant arguments the target format holds (they go to
    ``LayerSpec.options``); any other variant the model runs raises NotImplementedError."""
    if not isinstance(model, (LSTM, nn.LSTM)):
        raise TypeError(
            f"{source}: model must be a clearlstm.LSTM or torch.nn.LSTM; got {type(model).__name__}"
        )
    if model.proj_size:
        refuse(source, "proj_size", f"proj_size={model.proj_size}")
    options = _cell_options(model, source, cell_variants)
    params = {name: p.detach().cpu().numpy() for name, p in model.named_parameters()}
    dtype = model.weight_ih_l0.dtype
    if dtype not in (torch.float32, torch.float64):
        raise TypeError(f"{source}: model dtype must be float32 or float64; got {dtype}")
    layers = []
    for layer in range(model.num_layers):
        directions = []
        for direction in range(2 if model.bidirectional else 1):
            sfx = f"_l{layer}" + ("_reverse" if direction else "")
            names = ("weight_ih", "weight_hh") + (("bias_ih", "bias_hh") if model.bias else ())
            names += ("weight_peephole",) if "peephole" in options else ()
            directions.append({name: params[name + sfx] for name in names})
        input_size = directions[0]["weight_ih"].shape[1]
        layers.append(LayerSpec(input_size, model.hidden_size, directions, options=options))
    return layers, dtype


def _cell_options(model: nn.Module, source: str, allowed: tuple[str, ...]) -> dict[str, object]:
    """The model's non-default variant arguments that change the cell, all within ``allowed``."""
    if not isinstance(model, LSTM):
        return {}
    options = {}
    for name, value in model.variant_config().items():
        if name in _INIT_ONLY or name in _TRAINING_ONLY or value == DEFAULTS.get(name):
            continue
        if name in EXPORT_VARIANTS and name not in allowed:
            missing, workaround = EXPORT_VARIANTS[name]
            raise NotImplementedError(
                f"{source}: the model's {name}={value!r} is not supported: {missing}; {workaround}"
            )
        if name not in allowed:
            held = f"it holds only {', '.join(allowed)}" if allowed else "it holds no variant"
            raise NotImplementedError(
                f"{source}: the model's {name}={value!r} is not supported: the format cannot "
                f"hold it ({held}); export a model without {name}"
            )
        options[name] = value
    return options
