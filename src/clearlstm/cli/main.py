"""The ``clearlstm`` command: argument parsing and dispatch only — no math lives here.

Each sub-command is registered by an ``add_<name>`` function; every numeric flag is checked
against its range while parsing (:mod:`clearlstm.cli.flags`). User mistakes raise
:class:`UsageError` (or a library ValueError/TypeError) and end with one clear message and a
non-zero exit code, never a traceback. Set ``CLEARLSTM_DEBUG=1`` to see tracebacks.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from rich.console import Console
from rich.text import Text

from clearlstm.cli.flags import (
    MAX_SEED,
    MAX_THREADS,
    FlagError,
    integer,
    number,
    number_list,
    temperature,
)
from clearlstm.cli.series_flags import (
    add_backtest,
    add_covariates,
    add_forecast,
    add_id_column,
    add_split_options,
)
from clearlstm.cli.variant_flags import add_peephole_option, add_variant_options
from clearlstm.errors import UsageError

MAX_UNITS, MAX_LAYERS, MAX_STEPS = 65_536, 1_024, 1_000_000_000  # as clearlstm.tasks.settings
MAX_MEMBERS = 1_024  # as clearlstm.tasks.settings
TRANSFORMS = ("auto", "none", "log", "boxcox")  # as clearlstm.tasks.transforms
NORMALISE = ("auto", "last", "mean", "seasonal", "none")  # auto and clearlstm.tasks.models'
MAX_FORECAST = 100_000  # forecast --steps: one model call per step
MAX_CHARACTERS = 1_000_000  # generate --length


def add_explain(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "explain",
        help="walk the seed's LSTM unit through one step or a sequence",
        description=(
            "Explain StatQuest's LSTM unit stage by stage: each gate's x-axis value, its "
            "activation and what it means. Default: one step with C=2, h=1, x=1."
        ),
    )
    parser.add_argument("--input", type=number("--input"), default=1.0, help="input x (default 1)")
    parser.add_argument(
        "--sequence",
        type=number_list("--sequence"),
        help="comma-separated inputs to unroll step by step, e.g. 0,0.5,0.25,1",
    )
    parser.add_argument(
        "--long-term",
        type=number("--long-term"),
        help="previous long-term memory C (default 2 for one step, 0 for a sequence)",
    )
    parser.add_argument(
        "--short-term",
        type=number("--short-term"),
        help="previous short-term memory h (default 1 for one step, 0 for a sequence)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON at full precision")
    parser.add_argument(
        "--model",
        help="explain a model from `clearlstm train` instead: its gates on --sequence (or --text)",
    )
    parser.add_argument("--text", help="with --model of a text model: the characters to read")
    add_peephole_option(parser)
    parser.set_defaults(run=lambda args, console: _see().run_explain(args, console))


def add_train(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "train",
        help="train a forecaster on a series, or a character model on a text",
        description=(
            "Train on a CSV series (--csv FILE), a bundled dataset (--dataset NAME; default "
            "co2) or a text (--text FILE). A series is split in time into train / validation "
            "/ test parts (70/15/15 unless --val-size, --test-size or --test-start say "
            "otherwise); the LSTM is backtested from every origin of the test part beside "
            "naive, seasonal-naive, AutoETS, AutoARIMA and AutoTheta forecasts from the same "
            "origins, with conformal intervals, then refitted on all rows (--no-refit keeps "
            "the validation-chosen model). Under torchrun the same command trains on several "
            "processes (DistributedDataParallel, gloo)."
        ),
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--dataset", help="a bundled dataset (see `clearlstm datasets`)")
    source.add_argument("--csv", help="a CSV file: a header line, one row per time step")
    source.add_argument("--text", help="a UTF-8 text file: train a character-level model")
    parser.add_argument("--target", nargs="+", help="column(s) to forecast")
    parser.add_argument("--time-column", help="column of time labels (kept for output only)")
    add_covariates(parser)
    parser.add_argument(
        "--fill",
        choices=["previous", "linear"],
        help="fill missing values: carry the previous value, or interpolate (default: error)",
    )
    add = parser.add_argument
    add("--window", type=integer("--window", 1), help="steps read (24; text: 100 characters)")
    add("--horizon", type=integer("--horizon", 1), help="steps forecast at once (default 1)")
    add("--season", type=integer("--season", 1, MAX_STEPS), help="season (default: detected)")
    add_split_options(parser)
    add_id_column(parser)
    add(
        "--backtest-horizon",
        type=integer("--backtest-horizon", 1, MAX_STEPS),
        help="steps forecast from each test origin (default: --horizon)",
    )
    add("--backtest-csv", help="write the test part's backtest forecasts to this CSV file")
    add(
        "--no-refit",
        dest="refit",
        action="store_false",
        help="save the validation-chosen model, not one refitted on all rows",
    )
    add("--hidden-size", type=integer("--hidden-size", 1, MAX_UNITS), help="units (32; text 256)")
    add("--layers", type=integer("--layers", 1, MAX_LAYERS), default=1, help="LSTM layers (1)")
    add("--epochs", type=integer("--epochs", 1), help="most epochs (default 100; text: 10)")
    add("--patience", type=integer("--patience", 1), help="early-stopping patience (10; text 3)")
    add("--batch-size", type=integer("--batch-size", 1), help="global batch size (default 32)")
    add("--lr", type=number("--lr", above=0, high=10), help="learning rate (0.003; text: 0.005)")
    add("--clip", type=number("--clip", above=0), default=1.0, help="gradient-norm clip (1)")
    add("--seed", type=integer("--seed", 0, MAX_SEED), default=0, help="random seed (default 0)")
    threads = integer("--threads", 1, MAX_THREADS)
    add("--threads", type=threads, default=1, help="CPU threads per process (1: fastest here)")
    add(
        "--transform", choices=TRANSFORMS,
        help="series: the targets' transform (default auto: none, log or Box-Cox, chosen on "
        "validation)",
    )  # fmt: skip
    add(
        "--normalise", choices=NORMALISE,
        help="series: what each window is read relative to (default auto: its mean or last "
        "value, chosen on validation)",
    )  # fmt: skip
    members = integer("--ensemble", 1, MAX_MEMBERS)
    add("--ensemble", type=members, help="series: networks whose median forecasts (default 9)")
    add(
        "--linear", choices=["on", "off"],
        help="series: a linear autoregression beside the LSTM, started at its ridge fit (on)",
    )  # fmt: skip
    add_variant_options(parser)
    parser.add_argument("--out", default="clearlstm-model", help="model directory to write")
    parser.add_argument("--plot", help="also write a PNG of history, test truth and forecast")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out")
    parser.add_argument("--overwrite", action="store_true", help="replace a run in --out")
    parser.set_defaults(run=lambda args, console: _commands().run_train(args, console))


def add_generate(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "generate",
        help="sample text from a trained character model",
        description="Continue a prompt with a model from `clearlstm train --text`.",
    )
    parser.add_argument("--model", required=True, help="the --out directory of clearlstm train")
    parser.add_argument("--prompt", default="\n", help="text to continue")
    parser.add_argument(
        "--temperature", type=temperature, default=0.8, help="(0.8; 0: the likeliest character)"
    )
    length = integer("--length", 1, MAX_CHARACTERS)
    parser.add_argument("--length", type=length, default=300, help="characters (default 300)")
    seed = integer("--seed", 0, MAX_SEED)
    parser.add_argument("--seed", type=seed, default=0, help="random seed (default 0)")
    parser.set_defaults(run=lambda args, console: _commands().run_generate(args, console))


def add_datasets(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "datasets",
        help="list the bundled datasets",
        description="The real series and text inside the package, with source and licence.",
    )
    parser.set_defaults(run=lambda args, console: _commands().run_datasets(args, console))


def _commands():
    from clearlstm.cli import commands

    return commands


def _add_subject_options(parser: argparse.ArgumentParser) -> None:
    """What to look inside: StatQuest's unit (default) or a saved model, and a sequence."""
    parser.add_argument("--model", help="a model directory from `clearlstm train --out`")
    parser.add_argument(
        "--sequence",
        type=number_list("--sequence"),
        help="comma-separated inputs (default: Company A's)",
    )
    parser.add_argument("--csv", help="read the sequence from a CSV file")
    parser.add_argument("--column", help="with --csv and the seed's unit: the column to read")
    parser.add_argument("--text", help="read a text model's characters from a UTF-8 file")
    parser.add_argument(
        "--long-term", type=number("--long-term"), help="the seed's unit: initial memory C (0)"
    )
    parser.add_argument(
        "--short-term", type=number("--short-term"), help="the seed's unit: initial h (0)"
    )
    add_peephole_option(parser)


def add_figure(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "figure",
        help="draw gate heatmaps, retention curves or the unit diagram (PNG or SVG)",
        description=(
            "Draw a picture of what an LSTM keeps and forgets: 'heatmap' (every gate and memory, "
            "units x steps), 'retention' (how much of one step's memory is left later, with "
            "half-lives) or 'unit' (the seed's one-unit diagram with one step's numbers; default "
            "the series' step x=1, C=2, h=1). StatQuest's unit on Company A by default."
        ),
    )
    parser.add_argument("kind", choices=["heatmap", "retention", "unit"], help="which picture")
    parser.add_argument("--out", help="file to write, .png or .svg (default clearlstm-KIND.png)")
    _add_subject_options(parser)
    add = parser.add_argument
    add("--input", type=number("--input"), default=1.0, help="unit: input x (1)")
    add("--step", type=integer("--step", 1), default=1, help="unit: which step to draw (1: first)")
    start = integer("--start", 1)
    add("--start", type=start, default=1, help="retention: the step whose memory to follow (1)")
    layer = integer("--layer", -MAX_LAYERS, MAX_LAYERS - 1)
    add("--layer", type=layer, default=-1, help="layer to draw (default -1: the last)")
    direction = integer("--direction", 0, 1)
    add("--direction", type=direction, default=0, help="1: a bidirectional model's reverse")
    parser.set_defaults(run=lambda args, console: _see().run_figure(args, console))


def add_report(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "report",
        help="write one self-contained HTML report of what an LSTM keeps and forgets",
        description=(
            "The explanation in words, the figures, the retention summary and the exact numbers "
            "in one HTML file that needs no network. StatQuest's unit on Company A by default."
        ),
    )
    _add_subject_options(parser)
    parser.add_argument("--out", default="report.html", help="file to write (report.html)")
    parser.add_argument(
        "--images", choices=["svg", "png"], default="svg", help="embed figures as (svg)"
    )
    parser.set_defaults(run=lambda args, console: _see().run_report(args, console))


def add_serve(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "serve",
        help="start the explorer: a local web page that moves the gates live",
        description=(
            "A local web explorer: sliders for the seed's unit, playback of a sequence, and "
            "gate heatmaps of saved models (--models DIR). Binds 127.0.0.1; Ctrl-C stops it."
        ),
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    port = integer("--port", 0, 65535)
    parser.add_argument("--port", type=port, default=8765, help="port (8765; 0 picks a free one)")
    parser.add_argument("--models", help="folder of model directories to offer on the page")
    parser.add_argument("--verbose", action="store_true", help="log every request")
    parser.set_defaults(run=lambda args, console: _see().run_serve(args, console))


def _see():
    from clearlstm.cli import see

    return see


def add_diagnose(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "diagnose",
        help="print versions, CPU features, threads and the kernel cache, for bug reports",
        description=(
            "What a bug report needs: clearlstm, Python, torch, numba, numpy and llvmlite "
            "versions and paths, the CPU and its vector features, thread settings, oneDNN, "
            "and which numba kernels are compiled in the cache. Compiles and runs nothing."
        ),
    )
    parser.add_argument("--json", action="store_true", help="print JSON, for machines")
    parser.set_defaults(run=run_diagnose)


def run_diagnose(args: argparse.Namespace, console: Console) -> int:
    from clearlstm.cli import diagnose

    info = diagnose.gather()
    if args.json:
        import json

        print(json.dumps(info, indent=2, allow_nan=False))
    else:
        diagnose.render(info, console)
    return 0


# One entry per sub-command, in the order `clearlstm --help` lists them.
SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    add_explain,
    add_train,
    add_forecast,
    add_backtest,
    add_generate,
    add_datasets,
    add_figure,
    add_report,
    add_serve,
    add_diagnose,
]


class Parser(argparse.ArgumentParser):
    """argparse with its usage errors on one plain line (sub-commands' parsers are Parsers
    too: ``add_subparsers`` makes them of the parent's class)."""

    def error(self, message: str) -> NoReturn:
        print_error(f"{message} (see `{self.prog} --help`)")
        self.exit(2)


def print_error(message: str) -> None:
    """``error: message`` on stderr: the prefix red, the message as plain text, never markup
    or emoji codes (it holds the user's paths and column names)."""
    # soft_wrap: a long path or message stays on one line, whole, for copying.
    text = Text.assemble(("error:", "bold red"), " ", message)
    Console(stderr=True, soft_wrap=True).print(text, markup=False, emoji=False, highlight=False)


def build_parser() -> argparse.ArgumentParser:
    from clearlstm import __version__

    parser = Parser(
        prog="clearlstm",
        description="An exact, observable LSTM: every gate at every step.",
    )
    parser.add_argument("--version", action="version", version=f"clearlstm {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    code = _run(argv)
    if code == 0 and "TORCHELASTIC_RUN_ID" in os.environ:  # a torchrun worker, done
        from clearlstm.train.distributed import exit_worker

        exit_worker(code)
    return code


def _run(argv: Sequence[str] | None) -> int:
    debug = bool(os.environ.get("CLEARLSTM_DEBUG"))
    try:
        args = build_parser().parse_args(argv)
    except FlagError as error:  # a number outside its flag's range
        if debug:
            raise
        print_error(str(error))
        return 1
    # Tables need more than the 80 columns rich assumes when output is piped. What commands
    # print holds the user's paths, column names and messages: plain text, never markup or
    # emoji codes (styles come as rich Text and tables).
    plain = {"markup": False, "emoji": False, "highlight": False}
    console = Console(**plain) if sys.stdout.isatty() else Console(width=120, **plain)
    try:
        return args.run(args, console)
    except (UsageError, ValueError, TypeError, OSError) as error:
        if debug:
            raise
        print_error(str(error))
        return 1
    except KeyboardInterrupt:
        Console(stderr=True, markup=False).print("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
