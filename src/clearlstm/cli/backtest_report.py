"""What ``clearlstm backtest`` does, and the backtest's tables and sentences that ``train``
prints too (rich). Only the command line calls these; the library prints nothing."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from clearlstm.cli import train_report
from clearlstm.tasks.backtest import Backtest, tested_evaluations, write_csv


def _say(console: Console, text: str) -> None:
    """Plain text: paths and column names in it are no markup and no emoji codes."""
    console.print(text, markup=False, emoji=False, highlight=False)


def show(backtest: Backtest, console: Console) -> None:
    """The scores table, the per-step table (more than one step), the verdict and the
    intervals' coverage, per target."""
    for j, evaluation in enumerate(tested_evaluations(backtest)):
        console.print(train_report.evaluation_table(evaluation, backtest.horizon))
        if backtest.horizon > 1:
            console.print(train_report.steps_table(backtest, j))
        _say(console, evaluation.verdict())
    for method, why in backtest.skipped.items():
        _say(console, f"{method} is left out of the comparison: {why}")
    _say(console, train_report.intervals_sentence(backtest))


def write(path: Path, backtest: Backtest) -> int:
    """The backtest's CSV file; the number of rows written."""
    if path.exists() and path.is_dir():
        raise ValueError(f"--out {path} is a directory; give a CSV file name")
    return write_csv(path, backtest)


def run(args: argparse.Namespace, console: Console) -> int:
    """``clearlstm backtest --model DIR``, on one CPU thread as ``train`` (the same weights
    when the model is trained again, and faster for these small models)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run(args, console)
    finally:
        torch.set_num_threads(threads)


def _run(args: argparse.Namespace, console: Console) -> int:
    import time

    from clearlstm.cli import panel_report
    from clearlstm.tasks import forecast, forecasting, refit
    from clearlstm.tasks.backtest import backtest_model

    if panel_report.is_panel(args):
        return panel_report.run_backtest(args, console)
    started = time.perf_counter()
    model, settings, directory = forecasting.load_forecaster(args.model)
    series = forecasting.series_for_model(settings, args.csv, directory)
    data = settings.data
    split = forecast.backtest_split(series, settings)
    if settings.refitted:
        _say(
            console,
            f"The folder's model was refitted on all {settings.fitted_rows} rows, test part "
            "included: training the validation-chosen model again on the rows before the test "
            "part (same seed and settings).",
        )
        model, settings, _ = refit.validated(settings, series.values, split)
    horizon = args.horizon if args.horizon is not None else data.horizon
    result = backtest_model(model, settings, series, split, horizon, args.refit_every)
    if args.refit_every:
        _say(
            console,
            f"The LSTM was trained again on all rows before every {args.refit_every}th origin "
            f"({settings.result.best_epoch} epochs each); its intervals keep the validation "
            "part's widths.",
        )
    show(result, console)
    rows = write(Path(args.out), result)
    _say(console, f"Backtest forecasts ({rows} rows) written to {args.out}")
    if args.plot:
        title = f"Backtest of {Path(directory).name}: {horizon} step(s) from each origin"
        forecast.plot(Path(args.plot), series, split.test_start, title, result)
        _say(console, f"Plot written to {args.plot}")
    _say(console, f"Took {time.perf_counter() - started:.0f} s")
    return 0
