"""The LSTM variants' constructor arguments, shared by ``LSTM`` and ``LSTMCell``: checks, the
gate-bias initialisations, and what ``extra_repr`` and ``variant_config`` list.

Initialisation (only the starting values change, not the cell):

- ``forget_bias=1.0``: the forget-gate block of ``bias_ih`` set to it and that of ``bias_hh``
  to 0, so the memory is kept by default early in training (Jozefowicz, Zaremba & Sutskever
  2015, "An Empirical Exploration of Recurrent Network Architectures"; Keras'
  ``unit_forget_bias=True`` is 1.0).
- ``init="chrono"`` with ``chrono_max_steps=T_max``: forget bias ``log(U(1, T_max - 1))``,
  input bias its negative (in ``bias_ih``; ``bias_hh``'s blocks 0), so the memory time scales
  spread up to ``T_max`` steps (Tallec & Ollivier 2018, "Can Recurrent Neural Networks Warp
  Time?").

The cell variants themselves are :func:`clearlstm.core.cell.cell_step`'s keyword arguments,
with their sources: ``peephole`` (Gers & Schmidhuber 2000), ``coupled_input_forget`` and
``cell_clip`` (ONNX's LSTM), ``layer_norm`` (Ba, Kiros & Hinton 2016, "Layer
Normalization"; haste's placement: on ``W_ih x``, on ``W_hh h`` and on ``c`` before
``tanh``), ``zoneout_h``/``zoneout_c`` (Krueger et al. 2016, "Zoneout"), ``recurrent_dropout``
and ``input_dropout`` (Gal & Ghahramani 2016, "A Theoretically Grounded Application of Dropout
in Recurrent Neural Networks": one mask per sequence, the same at every step).

:data:`DEFAULTS` lists every variant and initialisation argument with its default (torch's
behaviour): ``LSTM.variant_config()`` saves exactly these, and ``LSTM(..., **config)``
builds the same model again.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from clearlstm.core.records import LayerNormWeights, Variant

INITS = ("torch", "chrono")
DEFAULTS = {  # constructor argument -> default (torch's behaviour)
    "forget_bias": None,
    "init": "torch",
    "chrono_max_steps": None,
    "peephole": False,
    "coupled_input_forget": False,
    "cell_clip": None,
    "layer_norm": False,
    "zoneout_h": 0.0,
    "zoneout_c": 0.0,
    "recurrent_dropout": 0.0,
    "input_dropout": 0.0,
}
RATES = ("zoneout_h", "zoneout_c", "recurrent_dropout", "input_dropout")  # each in [0, 1)
LN_NAMES = ("weight_ih", "bias_ih", "weight_hh", "bias_hh", "weight_c", "bias_c")


def check_variant(owner: str, peephole: object, coupled: object, cell_clip: object,
                  layer_norm: object = False, **rates: object) -> Variant | None:  # fmt: skip
    """The :class:`Variant` these arguments ask for, None for the plain cell; ``rates``:
    the :data:`RATES` by name."""
    named = (("peephole", peephole), ("coupled_input_forget", coupled), ("layer_norm", layer_norm))
    for name, value in named:
        if not isinstance(value, bool):
            raise TypeError(f"{owner}: {name} must be True or False; got {value!r}")
    checked = {}
    for name in RATES:
        value = rates.pop(name, 0.0)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{owner}: {name} must be a number in [0, 1); got {value!r}")
        if not 0 <= value < 1:
            raise ValueError(f"{owner}: {name} must be in [0, 1); got {value}")
        checked[name] = float(value)
    if rates:
        raise TypeError(f"{owner}: unexpected variant arguments {sorted(rates)}")
    if cell_clip is not None:
        if isinstance(cell_clip, bool) or not isinstance(cell_clip, (int, float)):
            raise TypeError(
                f"{owner}: cell_clip must be a positive number or None; got {cell_clip!r}"
            )
        if not (math.isfinite(cell_clip) and cell_clip > 0):
            raise ValueError(f"{owner}: cell_clip must be positive and finite; got {cell_clip}")
        cell_clip = float(cell_clip)
    if not (peephole or coupled or cell_clip is not None or layer_norm or any(checked.values())):
        return None
    return Variant(peephole, coupled, cell_clip, layer_norm, **checked)


def layer_norm_names(suffix: str) -> list[str]:
    """The parameter names of one layer-direction's layer norm, ``ln_weight_ih{suffix}``
    (LN on ``W_ih x``, gain, ``(4H,)``), ``ln_bias_ih``, ``ln_weight_hh``, ``ln_bias_hh``
    (on ``W_hh h``), ``ln_weight_c``, ``ln_bias_c`` (on ``c``, ``(H,)``)."""
    return [f"ln_{name}{suffix}" for name in LN_NAMES]


def layer_norm_shapes(hidden: int) -> list[tuple[int]]:
    return [(4 * hidden,)] * 4 + [(hidden,)] * 2


@torch.no_grad()
def init_layer_norm(params: list[Tensor]) -> None:
    """Gains 1, biases 0 (torch.nn.LayerNorm's), in :func:`layer_norm_names`' order."""
    for k, p in enumerate(params):
        p.fill_(1.0 if k % 2 == 0 else 0.0)


def check_init(
    owner: str, forget_bias: object, init: object, max_steps: object, bias: bool
) -> None:
    """Raise unless the initialisation arguments make sense together."""
    if init not in INITS:
        raise ValueError(f"{owner}: init must be one of {INITS}; got {init!r}")
    if forget_bias is not None:
        if isinstance(forget_bias, bool) or not isinstance(forget_bias, (int, float)):
            raise TypeError(f"{owner}: forget_bias must be a number or None; got {forget_bias!r}")
        if not math.isfinite(forget_bias):
            raise ValueError(f"{owner}: forget_bias must be finite; got {forget_bias}")
        if init == "chrono":
            raise ValueError(
                f"{owner}: init='chrono' sets the forget bias itself; got also "
                f"forget_bias={forget_bias}"
            )
    if (forget_bias is not None or init == "chrono") and not bias:
        raise ValueError(
            f"{owner}: forget_bias and init='chrono' set biases, so they need bias=True; "
            "got bias=False"
        )
    if init == "chrono":
        if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 3:
            raise ValueError(
                f"{owner}: init='chrono' needs chrono_max_steps, an int >= 3 (the longest "
                f"dependency in steps); got {max_steps!r}"
            )
    elif max_steps is not None:
        raise ValueError(
            f"{owner}: chrono_max_steps applies only with init='chrono'; got init={init!r}"
        )


@torch.no_grad()
def init_gate_biases(b_ih: Tensor, b_hh: Tensor, forget_bias: float | None, init: str,
                     max_steps: int | None) -> None:  # fmt: skip
    """Set one layer-direction's gate biases (gate blocks i, f, g, o) in place."""
    hidden = b_ih.shape[0] // 4
    forget, inputs = slice(hidden, 2 * hidden), slice(0, hidden)
    if init == "chrono":
        chrono = torch.empty(hidden, dtype=b_ih.dtype, device=b_ih.device)
        chrono.uniform_(1.0, max_steps - 1.0).log_()
        b_ih[forget], b_ih[inputs] = chrono, -chrono
        b_hh[forget], b_hh[inputs] = 0.0, 0.0
    else:
        b_ih[forget], b_hh[forget] = forget_bias, 0.0


def _argument(name: str) -> property:
    def get(self) -> object:
        v = self._variant
        return getattr(Variant() if v is None else v, name)

    return property(get, doc=f"The ``{name}`` constructor argument (read-only).")


class VariantArguments:
    """What ``LSTM`` and ``LSTMCell`` share about their variant: one read-only attribute per
    cell-variant argument (from ``self._variant``), ``variant_config`` and the repr's part."""

    _variant: Variant | None
    peephole = _argument("peephole")
    coupled_input_forget = _argument("coupled_input_forget")
    cell_clip = _argument("cell_clip")
    layer_norm = _argument("layer_norm")
    zoneout_h = _argument("zoneout_h")
    zoneout_c = _argument("zoneout_c")
    recurrent_dropout = _argument("recurrent_dropout")
    input_dropout = _argument("input_dropout")

    def variant_config(self) -> dict:
        """The variant and initialisation arguments of the constructor, for a checkpoint:
        ``LSTM(..., **lstm.variant_config())`` builds the same model (JSON-ready values,
        every name of :data:`DEFAULTS`)."""
        return {name: getattr(self, name) for name in DEFAULTS}

    def _variant_repr(self) -> str:
        return "".join(
            f", {name}={getattr(self, name)!r}"
            for name, default in DEFAULTS.items()
            if getattr(self, name) != default
        )

    def _register_variant_parameters(self, suffixes: list[str], hidden: int, factory: dict):
        """``weight_peephole{sfx} (3, H)`` and the layer norm's (:func:`layer_norm_names`)
        per layer-direction suffix, after torch's parameters (the same seed still gives
        torch's weights)."""
        for sfx in suffixes if self.peephole else ():
            self.register_parameter(
                f"weight_peephole{sfx}", torch.nn.Parameter(torch.empty(3, hidden, **factory))
            )
        for sfx in suffixes if self.layer_norm else ():
            for name, shape in zip(layer_norm_names(sfx), layer_norm_shapes(hidden), strict=True):
                self.register_parameter(name, torch.nn.Parameter(torch.empty(shape, **factory)))

    def _reset_layer_norm(self, suffixes: list[str]) -> None:
        for sfx in suffixes if self.layer_norm else ():
            init_layer_norm([getattr(self, n) for n in layer_norm_names(sfx)])

    def _layer_norm_weights(self, sfx: str) -> LayerNormWeights | None:
        if not self.layer_norm:
            return None
        return LayerNormWeights(*(getattr(self, n) for n in layer_norm_names(sfx)))


def variant_parameter_shapes(
    config: dict, hidden_size: int, num_layers: int, bidirectional: bool = False
) -> dict[str, tuple[int, ...]]:
    """The parameters a variant ``config`` (``variant_config()``'s dict) adds to an ``LSTM``'s
    torch ones, name -> shape, in registration order: for checking a checkpoint's weights
    before building the model."""
    directions = 2 if bidirectional else 1
    suffixes = [f"_l{k // directions}" + ("_reverse" if k % directions else "")
                for k in range(num_layers * directions)]  # fmt: skip
    shapes: dict[str, tuple[int, ...]] = {}
    for sfx in suffixes if config.get("peephole") else ():
        shapes[f"weight_peephole{sfx}"] = (3, hidden_size)
    for sfx in suffixes if config.get("layer_norm") else ():
        shapes |= dict(zip(layer_norm_names(sfx), layer_norm_shapes(hidden_size), strict=True))
    return shapes
