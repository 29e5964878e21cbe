"""The ``clearlstm`` command: argument parsing and dispatch only — no math lives here.

Each sub-command is registered by an ``add_<name>`` function; user mistakes raise
:class:`UsageError` (or a library ValueError/TypeError) and end with one clear message and a
non-zero exit code, never a traceback. Set ``CLEARLSTM_DEBUG=1`` to see tracebacks.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable, Sequence

from rich.console import Console


class UsageError(ValueError):
    """A mistake in what the user asked for; printed without a traceback."""


def finite_float(text: str) -> float:
    """argparse type: a finite number."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number; got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number; got {text!r}")
    return value


def number_list(text: str) -> list[float]:
    """argparse type: comma-separated finite numbers, at least one."""
    parts = [p.strip() for p in text.split(",")]
    if not text.strip() or any(not p for p in parts):
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers such as 0,0.5,0.25,1; got {text!r}"
        )
    return [finite_float(p) for p in parts]


def add_explain(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "explain",
        help="walk the seed's LSTM unit through one step or a sequence",
        description=(
            "Explain StatQuest's LSTM unit stage by stage: each gate's x-axis value, its "
            "activation and what it means. Default: one step with C=2, h=1, x=1."
        ),
    )
    parser.add_argument("--input", type=finite_float, default=1.0, help="input x (default 1)")
    parser.add_argument(
        "--sequence",
        type=number_list,
        help="comma-separated inputs to unroll step by step, e.g. 0,0.5,0.25,1",
    )
    parser.add_argument(
        "--long-term",
        type=finite_float,
        help="previous long-term memory C (default 2 for one step, 0 for a sequence)",
    )
    parser.add_argument(
        "--short-term",
        type=finite_float,
        help="previous short-term memory h (default 1 for one step, 0 for a sequence)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON at full precision")
    parser.set_defaults(run=run_explain)


def run_explain(args: argparse.Namespace, console: Console) -> int:
    from clearlstm import explain

    single = args.sequence is None
    inputs = [args.input] if single else args.sequence
    c0 = args.long_term if args.long_term is not None else (2.0 if single else 0.0)
    h0 = args.short_term if args.short_term is not None else (1.0 if single else 0.0)
    walk = explain.explain_sequence(inputs, c0, h0)
    if args.json:
        print(explain.to_json(walk))
    else:
        explain.render(walk, console)
    return 0


# One entry per sub-command, in the order `clearlstm --help` lists them.
SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    add_explain,
]


def build_parser() -> argparse.ArgumentParser:
    from clearlstm import __version__

    parser = argparse.ArgumentParser(
        prog="clearlstm",
        description="An exact, observable LSTM: every gate at every step.",
    )
    parser.add_argument("--version", action="version", version=f"clearlstm {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Tables need more than the 80 columns rich assumes when output is piped.
    console = Console() if sys.stdout.isatty() else Console(width=120)
    try:
        return args.run(args, console)
    except (UsageError, ValueError, TypeError, OSError) as error:
        if os.environ.get("CLEARLSTM_DEBUG"):
            raise
        Console(stderr=True).print(f"[bold red]error:[/] {error}", highlight=False)
        return 1
    except KeyboardInterrupt:
        Console(stderr=True).print("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
