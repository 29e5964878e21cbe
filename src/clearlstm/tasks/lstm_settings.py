"""The LSTM variant a trained model uses, as ``settings.json`` holds it (``model.lstm``).

:class:`LstmSettings` has one field per constructor argument of
:data:`clearlstm.nn.variants.DEFAULTS` (peepholes, coupled gates, cell clip, layer norm,
zoneout, variational dropout, the forget-gate bias and chrono initialisation), each checked
on load like every other setting. Its defaults are torch's LSTM, and a plain model's file
has no ``lstm`` key (as every file written before variants), so old folders load as the plain
LSTM they hold. :meth:`LstmSettings.weight_shapes` lists the tensors a variant adds
(``weight_peephole_l{k}``, the layer norm's gains and biases), so a weights file of another
variant is refused before a model is allocated.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from clearlstm.errors import CheckpointError
from clearlstm.nn import variants
from clearlstm.tasks.settings_base import MAX_STEPS, Shapes, join
from clearlstm.train.codec import JsonSettings, invalid, limits, to_json

FORGET_BIAS_LIMIT = 100.0  # sigmoid(100) is 1 in float64: a larger bias changes nothing
MIN_CHRONO_STEPS = 3  # chrono draws from U(1, T_max - 1): at least 3


def _rate() -> Any:
    return field(default=0.0, metadata=limits(low=0, below=1))


@dataclass(frozen=True)
class LstmSettings(JsonSettings):
    """``LSTM(..., **settings.kwargs())``'s variant arguments (``model.lstm`` in the file);
    the defaults are torch's LSTM. Every key is written when a variant is saved."""

    forget_bias: float | None = field(
        default=None, metadata=limits(low=-FORGET_BIAS_LIMIT, high=FORGET_BIAS_LIMIT)
    )
    init: Literal["torch", "chrono"] = "torch"
    chrono_max_steps: int | None = field(
        default=None, metadata=limits(low=MIN_CHRONO_STEPS, high=MAX_STEPS)
    )
    peephole: bool = False
    coupled_input_forget: bool = False
    cell_clip: float | None = field(default=None, metadata=limits(above=0))
    layer_norm: bool = False
    zoneout_h: float = _rate()
    zoneout_c: float = _rate()
    recurrent_dropout: float = _rate()
    input_dropout: float = _rate()

    @classmethod
    def of(cls, lstm: variants.VariantArguments) -> LstmSettings:
        """The settings of a built ``LSTM`` (its :meth:`variant_config`)."""
        return cls(**lstm.variant_config())

    def kwargs(self) -> dict[str, Any]:
        """The keyword arguments of ``LSTM``/``LSTMCell`` these settings stand for."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @property
    def plain(self) -> bool:
        """torch's LSTM with torch's initialisation."""
        return self == LstmSettings()

    def weight_shapes(self, hidden: int, layers: int, prefix: str = "lstm.") -> Shapes:
        """The tensors this variant adds to a one-direction LSTM's, name -> shape."""
        added = variants.variant_parameter_shapes(self.kwargs(), hidden, layers)
        return {prefix + name: shape for name, shape in added.items()}

    def describe(self) -> str:
        """The variant in words, e.g. ``LSTM with peepholes, cell clip 3 (as asked)``."""
        if self.plain:
            return "plain LSTM (torch's)"
        switches = {
            "peepholes": self.peephole,
            "coupled input and forget gates": self.coupled_input_forget,
            "layer norm": self.layer_norm,
        }
        parts = [name for name, on in switches.items() if on]
        if self.cell_clip is not None:
            parts.append(f"cell clip {self.cell_clip:g}")
        for name in variants.RATES:
            if getattr(self, name):
                parts.append(f"{name.replace('_', ' ')} {getattr(self, name):g}")
        if self.forget_bias is not None:
            parts.append(f"forget bias {self.forget_bias:g}")
        if self.init == "chrono":
            parts.append(f"chrono init (time scales up to {self.chrono_max_steps} steps)")
        return "LSTM with " + ", ".join(parts) + " (as asked)"

    def check_json(self, file: str, where: str) -> None:
        chrono = self.init == "chrono"
        steps = join(where, "chrono_max_steps")
        if chrono and self.chrono_max_steps is None:
            need = f'an integer of at least {MIN_CHRONO_STEPS} with init "chrono"'
            raise invalid(file, steps, need, None)
        if not chrono and self.chrono_max_steps is not None:
            raise invalid(file, steps, 'null unless init is "chrono"', self.chrono_max_steps)
        if chrono and self.forget_bias is not None:
            need = 'null with init "chrono" (which sets the forget bias itself)'
            raise invalid(file, join(where, "forget_bias"), need, self.forget_bias)


def for_training(config: Mapping[str, Any] | None, window: int, members: int = 1) -> LstmSettings:
    """The checked settings of a model about to be trained on ``window``-step pieces, from
    ``config`` (some names of :data:`~clearlstm.nn.variants.DEFAULTS`; ``clearlstm train``'s
    variant flags): ``init="chrono"`` without ``chrono_max_steps`` spreads the time scales up
    to the window. ``members``: the networks of a forecaster's ensemble. A ``ValueError``
    names the flag when the values cannot train or would not load again."""
    config = dict(config or {})
    unknown = sorted(set(config) - set(variants.DEFAULTS))
    if unknown:
        raise ValueError(
            f"unknown LSTM arguments {unknown}; expected names among {', '.join(variants.DEFAULTS)}"
        )
    if config.get("init") == "chrono" and config.get("chrono_max_steps") is None:
        if window < MIN_CHRONO_STEPS:
            raise ValueError(
                f"--init chrono spreads the memory time scales up to --chrono-max-steps, which "
                f"defaults to the window ({window} steps here) and must be at least "
                f"{MIN_CHRONO_STEPS}; give --chrono-max-steps N"
            )
        config["chrono_max_steps"] = window
    if config.get("layer_norm") and members > 1:
        raise ValueError(
            "--layer-norm normalises each step over all of the LSTM's units, so it would join "
            f"the ensemble's {members} networks (--ensemble {members}, 9 by default) into one; "
            "add --ensemble 1"
        )
    unchecked = LstmSettings(**config)
    try:  # the same checks as loading: what trains can be loaded again
        return LstmSettings.from_json(to_json(unchecked), "LSTM variant")
    except CheckpointError as error:
        raise ValueError(str(error)) from None
