"""The LSTM variant flags: ``clearlstm train``'s (peepholes, coupled gates, cell clip, layer
norm, zoneout, variational dropout, forget bias, chrono init) and ``--peephole`` of
``clearlstm explain``, ``figure`` and ``report`` (the seed's unit with peepholes).

Each value is checked while parsing (:mod:`clearlstm.cli.flags`), combinations in
:func:`variant_options`; the library checks them again (:mod:`clearlstm.tasks.lstm_settings`)
with the same limits. Imports nothing heavy: ``--help`` stays fast.
"""

from __future__ import annotations

import argparse

from clearlstm.cli.flags import FlagError, finite_float, integer, number, number_list
from clearlstm.errors import UsageError

MAX_STEPS = 1_000_000_000  # as clearlstm.tasks.settings
FORGET_BIAS_LIMIT = 100.0  # as clearlstm.tasks.lstm_settings
MIN_CHRONO_STEPS = 3  # as clearlstm.tasks.lstm_settings
EXPLAIN_PEEPHOLE = [0.5, 0.5, 0.5]  # explain --peephole without numbers: p_i, p_f, p_o
# The LSTM constructor arguments the flags set (clearlstm.nn.variants.DEFAULTS), by dest.
SWITCHES = ("peephole", "coupled_input_forget", "layer_norm")
VALUES = ("cell_clip", "zoneout_h", "zoneout_c", "recurrent_dropout", "input_dropout")
VALUES += ("forget_bias", "init", "chrono_max_steps")


def rate(flag: str):
    """argparse type: a probability in ``[0, 1)`` (1 would drop or freeze every unit)."""

    def parse(text: str) -> float:
        value = finite_float(text)
        if not 0 <= value < 1:
            raise FlagError(f"{flag} must be a number of at least 0 and less than 1; got {text}")
        return value

    parse.__name__ = "rate"
    return parse


def add_variant_options(parser: argparse.ArgumentParser) -> None:
    """``clearlstm train``'s LSTM variant flags (default: torch's LSTM)."""
    group = parser.add_argument_group(
        "LSTM variant (default: torch's LSTM; saved in settings.json, used by every command "
        "that loads the model)"
    )
    add = group.add_argument
    add("--peephole", action="store_true", help="gates also read the long-term memory")
    add(
        "--coupled-input-forget", action="store_true",
        help="input gate = 1 - forget gate (ONNX's input_forget)",
    )  # fmt: skip
    add(
        "--cell-clip", type=number("--cell-clip", above=0), metavar="X",
        help="clip every gate's pre-activation to [-X, X] (ONNX's clip)",
    )  # fmt: skip
    add(
        "--layer-norm", action="store_true",
        help="layer-normalised LSTM (Ba et al. 2016); series: needs --ensemble 1",
    )  # fmt: skip
    for flag, what in (
        ("--zoneout-h", "each unit keeps its previous h with probability P (training)"),
        ("--zoneout-c", "each unit keeps its previous C with probability P (training)"),
        ("--recurrent-dropout", "variational dropout on h before the recurrent product"),
        ("--input-dropout", "variational dropout on each layer's input"),
    ):
        add(flag, type=rate(flag), metavar="P", help=f"{what}; 0 <= P < 1 (0)")
    bias = number("--forget-bias", low=-FORGET_BIAS_LIMIT, high=FORGET_BIAS_LIMIT)
    add("--forget-bias", type=bias, metavar="X", help="start the forget gates' bias at X (1.0)")
    add(
        "--init", choices=["torch", "chrono"],
        help="gate biases: torch's (default) or chrono (Tallec & Ollivier 2018)",
    )  # fmt: skip
    steps = integer("--chrono-max-steps", MIN_CHRONO_STEPS, MAX_STEPS)
    add(
        "--chrono-max-steps", type=steps, metavar="N",
        help="--init chrono: the longest memory time scale, in steps (default: the window)",
    )  # fmt: skip


def variant_options(args: argparse.Namespace) -> dict:
    """The LSTM constructor arguments the flags ask for (only those given)."""
    if args.chrono_max_steps is not None and args.init != "chrono":
        raise UsageError(
            f"--chrono-max-steps applies only with --init chrono; got --init {args.init or 'torch'}"
        )
    if args.forget_bias is not None and args.init == "chrono":
        raise UsageError(
            f"--init chrono sets the forget gates' biases itself; give it or --forget-bias, not "
            f"both (got --forget-bias {args.forget_bias:g})"
        )
    config = {name: True for name in SWITCHES if getattr(args, name)}
    return config | {
        name: getattr(args, name) for name in VALUES if getattr(args, name) is not None
    }


def peephole_weights(text: str) -> list[float]:
    """argparse type: three numbers ``p_i,p_f,p_o``."""
    values = number_list("--peephole")(text)
    if len(values) != 3:
        raise FlagError(
            f"--peephole takes three numbers p_i,p_f,p_o (e.g. 0.5,0.5,0.5); got {len(values)}"
        )
    return values


def add_peephole_option(parser: argparse.ArgumentParser) -> None:
    """``clearlstm explain --peephole [P_I,P_F,P_O]``."""
    parser.add_argument(
        "--peephole",
        nargs="?",
        const=EXPLAIN_PEEPHOLE,
        type=peephole_weights,
        metavar="P_I,P_F,P_O",
        help="give the unit peepholes: the input and forget gates also read C, the output gate "
        "C' (default weights 0.5,0.5,0.5; negative ones as --peephole=-1,0.5,0.5)",
    )
