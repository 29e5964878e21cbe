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

The cell variants themselves are :func:`clearlstm.core.cell.cell_step`'s keyword arguments.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from clearlstm.core.records import Variant

INITS = ("torch", "chrono")
DEFAULTS = {  # constructor argument -> default (torch's behaviour)
    "forget_bias": None,
    "init": "torch",
    "chrono_max_steps": None,
    "peephole": False,
    "coupled_input_forget": False,
    "cell_clip": None,
}


def check_variant(
    owner: str, peephole: object, coupled: object, cell_clip: object
) -> Variant | None:
    """The :class:`Variant` these arguments ask for, None for the plain cell."""
    for name, value in (("peephole", peephole), ("coupled_input_forget", coupled)):
        if not isinstance(value, bool):
            raise TypeError(f"{owner}: {name} must be True or False; got {value!r}")
    if cell_clip is not None:
        if isinstance(cell_clip, bool) or not isinstance(cell_clip, (int, float)):
            raise TypeError(
                f"{owner}: cell_clip must be a positive number or None; got {cell_clip!r}"
            )
        if not (math.isfinite(cell_clip) and cell_clip > 0):
            raise ValueError(f"{owner}: cell_clip must be positive and finite; got {cell_clip}")
        cell_clip = float(cell_clip)
    if not (peephole or coupled or cell_clip is not None):
        return None
    return Variant(peephole, coupled, cell_clip)


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
