"""The forecast and backtest sub-commands' flags, and where a series' parts lie and which
columns are covariates (``train`` shares :func:`add_split_options` and
:func:`add_covariates`). Parsing only: what they do is in :mod:`clearlstm.cli.commands`."""

from __future__ import annotations

import argparse

from clearlstm.cli.flags import integer

MAX_STEPS = 1_000_000_000  # as clearlstm.tasks.settings
MAX_FORECAST = 100_000  # forecast --steps: one model call per step


def _commands():
    from clearlstm.cli import commands

    return commands


def add_split_options(parser: argparse.ArgumentParser) -> None:
    """Where the test and validation parts lie (checked against the data once it is read)."""
    test = parser.add_mutually_exclusive_group()
    rows = integer("--test-size", 1, MAX_STEPS)
    test.add_argument("--test-size", type=rows, help="rows in the test part (default 15%%)")
    test.add_argument("--test-start", help="the test part's first time label, e.g. 2015-01")
    rows = integer("--val-size", 1, MAX_STEPS)
    parser.add_argument("--val-size", type=rows, help="rows in the validation part (15%%)")


def add_id_column(parser: argparse.ArgumentParser) -> None:
    """``train --id-column``: a long-format file of many series, one global model."""
    parser.add_argument(
        "--id-column",
        help="long format: the column naming each row's series; trains one model on all the "
        "series, each scaled by its own training part, and scores it per series and overall",
    )


def _add_id(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--id", help="a model trained with --id-column: this series only")


def add_covariates(parser: argparse.ArgumentParser) -> None:
    """Past-only and future-known covariates (Darts' past and future covariates)."""
    parser.add_argument(
        "--covariates",
        nargs="+",
        metavar="COL",
        help="past-only covariates: extra input columns, not forecast, known up to the "
        "forecast origin only (so past the end of the data the model forecasts at most "
        "--horizon steps)",
    )
    parser.add_argument(
        "--future-covariates",
        nargs="+",
        metavar="COL",
        help="covariates known for the forecast rows too (a calendar, a planned price, "
        "holidays): the model reads their values on the rows it forecasts; `clearlstm "
        "forecast --csv` reads them from rows after the last target value, with empty "
        "target cells",
    )


def add_backtest(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "backtest",
        help="forecast from every origin of the test part and score it beside the baselines",
        description=(
            "A rolling-origin backtest of a model from `clearlstm train`: from each origin of "
            "the test part the LSTM and the baselines (naive, seasonal naive, AutoETS, "
            "AutoARIMA, AutoTheta) forecast --horizon steps from the rows before it; scores "
            "per step, conformal intervals and their coverage are printed and every forecast "
            "is written to --out. A model refitted on all rows has seen the test part, so "
            "the validation-chosen model is trained again (same seed, same weights) first."
        ),
    )
    parser.add_argument("--model", required=True, help="the --out directory of clearlstm train")
    parser.add_argument("--csv", help="backtest on this CSV file (same columns) instead")
    steps = integer("--horizon", 1, MAX_STEPS)
    parser.add_argument(
        "--horizon", type=steps, help="steps from each origin (default: the model's)"
    )
    every = integer("--refit-every", 1, MAX_STEPS)
    parser.add_argument(
        "--refit-every",
        type=every,
        help="train the LSTM again on all rows before every K-th origin (default: never)",
    )
    _add_id(parser)
    parser.add_argument("--out", default="backtest.csv", help="CSV file to write")
    parser.add_argument("--plot", help="PNG of the history, test truth and backtest forecasts")
    parser.set_defaults(run=lambda args, console: _commands().run_backtest(args, console))


def add_forecast(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "forecast",
        help="forecast past the end of a series with a trained model",
        description="Recursive multi-step forecast with a model from `clearlstm train`.",
    )
    parser.add_argument("--model", required=True, help="the --out directory of clearlstm train")
    steps = integer("--steps", 1, MAX_FORECAST)
    parser.add_argument(
        "--steps",
        type=steps,
        help="steps past the end (default 12; a model with future covariates: the rows after "
        "the last target value; with past-only covariates: its horizon)",
    )
    parser.add_argument(
        "--csv",
        help="forecast this CSV file (same columns) instead; for a model with future "
        "covariates, end it with rows that hold their values and empty target cells",
    )
    _add_id(parser)
    parser.add_argument("--out", default="forecast.csv", help="CSV file to write")
    parser.add_argument("--plot", help="PNG of history, test truth and forecast")
    parser.set_defaults(run=lambda args, console: _commands().run_forecast(args, console))
