"""What ``train --id-column``, ``forecast`` and ``backtest`` do and print for a model trained
on many series: the per-series table with its "all series" row, the verdict, the files.
Only the command line calls these; the math is in :mod:`clearlstm.tasks.panel_train` and
:mod:`clearlstm.tasks.panel_use`."""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table
from rich.text import Text

from clearlstm.cli import train_report
from clearlstm.tasks.backtest import LEVELS, Backtest, Evaluation
from clearlstm.tasks.baselines import compare

if TYPE_CHECKING:
    from clearlstm.tasks.forecasting import SeriesOptions
    from clearlstm.tasks.panel_train import PanelRun
    from clearlstm.train.distributed import Distributed
    from clearlstm.train.loop import Reporter, TrainConfig

SHOWN = 30  # series rows in a table; settings.json holds all


def _say(console: Console, text: str) -> None:
    """Plain text: ids, paths and column names in it are no markup and no emoji codes."""
    console.print(text, markup=False, emoji=False, highlight=False)


def _refuse(flags: dict[str, object], why: str) -> None:
    for flag, value in flags.items():
        if value:
            raise ValueError(f"{flag} {why}")


def is_panel(args: argparse.Namespace) -> bool:
    """Whether ``--model`` holds a model trained on many series; ``--id`` is refused for
    one trained on a single series."""
    from clearlstm.tasks.panel_settings import is_panel

    panel = is_panel(args.model)
    if not panel and args.id is not None:
        raise ValueError(
            f"--id {args.id!r}: {args.model} holds a model of one series; --id picks a series "
            "of a model trained with --id-column"
        )
    return panel


def train(
    args: argparse.Namespace,
    options: SeriesOptions,
    config: TrainConfig,
    out: Path,
    reporter: Reporter | None,
    context: Distributed,
) -> PanelRun | None:
    """``clearlstm train --csv FILE --id-column COLUMN``."""
    from clearlstm.tasks.panel_train import train_panel

    _refuse({"--plot": args.plot}, "draws one series; it does not go with --id-column")
    return train_panel(options, args.id_column, config, out, args.resume, reporter, context)


def _short(scores: dict, key: str) -> str:
    """The LSTM against every baseline, in a word or two (MASE and RMSE, the tie band)."""
    lstm = scores["LSTM"]
    outcome = [
        (compare(getattr(lstm, key), getattr(s, key)), compare(lstm.rmse, s.rmse))
        for m, s in scores.items()
        if m != "LSTM"
    ]
    if all(o == (-1, -1) for o in outcome):
        return "beats all"
    lost = sum(o == (1, 1) for o in outcome)
    return f"loses to {lost}" if lost else "mixed"


def _number(x: float) -> str:
    return f"{x:.3f}" if math.isfinite(x) else "n/a"


def series_table(
    ids: list[str], evaluations: list[list[Evaluation]], overall: Evaluation, j: int
) -> Table:
    """Target ``j``: each series' test MASE per method, the LSTM's RMSE beside the best
    baseline's, and the LSTM's outcome; the last row over all series (mean MASE, pooled
    RMSE). At most :data:`SHOWN` series rows."""
    methods = list(overall.scores)
    title = (
        f"Backtest per series: {overall.target}, {overall.origins} forecast origins over "
        f"{len(ids)} series; MASE per method"
    )
    table = Table(title=Text(title), collapse_padding=True)  # Text: ids are no markup
    table.add_column("series", no_wrap=True)
    table.add_column("origins", justify="right")
    for m in methods:  # a one-word name is never cut short
        table.add_column(m, justify="right", min_width=max(map(len, m.split())))
    table.add_column("LSTM RMSE", justify="right")
    table.add_column("best baseline RMSE", justify="right")
    table.add_column("outcome", no_wrap=True)

    def row(name: str, e: Evaluation, style: str = "") -> None:
        s = e.scores
        key = "mase" if math.isfinite(s["LSTM"].mase) else "mae"
        others = [m for m in methods if m != "LSTM" and m in s]
        best = min(others, key=lambda m: s[m].rmse)
        cells = [_number(s[m].mase) if m in s else "-" for m in methods]
        rmse = [f"{s['LSTM'].rmse:.4g}", f"{s[best].rmse:.4g}"]
        verdict = _short({m: s[m] for m in ["LSTM", *others]}, key)
        table.add_row(Text(name, style=style), str(e.origins), *cells, *rmse, verdict)

    for name, per_target in list(zip(ids, evaluations, strict=True))[:SHOWN]:
        row(name, per_target[j])
    row("all series", overall, "bold")
    more = f"; {SHOWN} of {len(ids)} series shown, all in settings.json" if len(ids) > SHOWN else ""
    table.caption = (
        "Lower is better. All series: mean MASE over the series, RMSE pooled over every test "
        "forecast. Outcome: the LSTM against every baseline on MASE and RMSE both (a 2% tie "
        f"band): beats all, loses to N of them, or mixed{more}."
    )
    return table


def _intervals(backtests: list[Backtest]) -> str:
    from clearlstm.tasks.panel_train import coverage

    found = {lv: coverage(backtests, lv) for lv in LEVELS}
    parts = [
        f"{lv:.0%} nominal covers {', '.join(f'{100 * c:.1f}%' for c in cover)}"
        for lv, cover in found.items()
        if cover is not None
    ]
    if not parts:
        return "No intervals: no series' validation part holds a whole horizon to calibrate on."
    return (
        "Prediction intervals (split conformal per series and horizon step, from its "
        f"validation errors), over all series' test parts: {'; '.join(parts)}."
    )


def show_scores(
    ids: list[str],
    evaluations: list[list[Evaluation]],
    overall: list[Evaluation],
    backtests: list[Backtest],
    console: Console,
) -> None:
    """The per-series tables, the verdict over all series, what was left out, the
    intervals' coverage."""
    for j, total in enumerate(overall):
        console.print(series_table(ids, evaluations, total, j))
        _say(console, total.verdict())
    for name, b in zip(ids, backtests, strict=True):
        for method, why in b.skipped.items():
            _say(console, f"{name}: {method} is left out of its comparison: {why}")
    _say(console, _intervals(backtests))


def show(args: argparse.Namespace, run: PanelRun, console: Console) -> None:
    """What ``train --id-column`` prints after training."""
    settings, fit = run.settings, run.fit
    _say(console, f"Chosen: {run.choices}")
    _say(
        console,
        f"Best validation loss (pooled over {len(settings.ids)} series) {fit.best_val:.4f} at "
        f"epoch {fit.best_epoch} of {fit.epochs_run}",
    )
    show_scores(settings.ids, run.evaluations, run.overall, run.backtests, console)
    console.print(train_report.memory_table(run.memory, "on the test windows"))
    _say(console, train_report.memory_sentence(run.memory))
    if settings.refitted:
        _say(
            console,
            f"Refitted on all {settings.data.rows} rows of the {len(settings.ids)} series for "
            f"{fit.best_epoch} epochs in {run.refit_seconds:.1f} s: that is the saved model.",
        )
    else:
        why = "--no-refit" if not args.refit else "no epoch improved on validation"
        _say(console, f"The saved model is the validation-chosen one ({why}).")
    if args.backtest_csv:
        from clearlstm.tasks import panel_use

        column, path = settings.panel.id_column, Path(args.backtest_csv)
        rows = panel_use.write_backtests(path, column, settings.ids, run.backtests)
        _say(console, f"Backtest forecasts ({rows} rows) written to {args.backtest_csv}")


def run_forecast(args: argparse.Namespace, console: Console) -> int:
    """``clearlstm forecast --model DIR [--id X]`` of a model trained on many series."""
    from clearlstm.tasks import panel_use

    _refuse({"--plot": args.plot}, "draws one series; it does not go with a panel model")
    model, settings, directory = panel_use.load_panel_model(args.model)
    if model.columns > model.targets:
        raise ValueError(
            "forecast: this model reads covariates, whose values past the end of the data are "
            "unknown, so it cannot forecast past the end"
        )
    panel, where = panel_use.panel_for_model(settings, args.csv, directory, args.id)
    steps = 12 if args.steps is None else args.steps  # --steps' documented default
    forecasts = panel_use.forecast_panel(model, settings, panel, where, steps)
    rows = panel_use.write_forecasts(
        Path(args.out), panel.id_column, panel.ids, forecasts, settings.data.time_column
    )
    which = "refitted on all rows" if settings.refitted else "the validation-chosen model"
    _say(
        console,
        f"{steps} step(s) forecast past the end of {len(panel)} series of {panel.source} "
        f"({which}): {args.out} ({rows} rows, column {settings.panel.id_column!r} first)",
    )
    if any(f.bands for f in forecasts):
        _say(console, "With each series' 80% and 95% conformal intervals where calibrated.")
    return 0


def run_backtest(args: argparse.Namespace, console: Console) -> int:
    """``clearlstm backtest --model DIR [--id X]`` of a model trained on many series."""
    from clearlstm.tasks import panel_use
    from clearlstm.tasks.backtest import tested_evaluations
    from clearlstm.tasks.panel_train import aggregate

    started = time.perf_counter()
    flags = {"--plot": args.plot, "--refit-every": args.refit_every}
    _refuse(flags, "is for a model of one series; it does not go with a panel model yet")
    model, settings, directory = panel_use.load_panel_model(args.model)
    panel, where = panel_use.panel_for_model(settings, args.csv, directory)
    if settings.refitted:
        _say(
            console,
            "The folder's model was refitted on all rows, test parts included: training the "
            "validation-chosen model again on every series' rows before its test part.",
        )
    tests, _ = panel_use.backtest_panel(model, settings, panel, where, args.horizon, args.id)
    ids = panel.ids if args.id is None else [args.id]
    evaluations = [tested_evaluations(t) for t in tests]
    show_scores(ids, evaluations, aggregate(tests), tests, console)
    rows = panel_use.write_backtests(Path(args.out), panel.id_column, ids, tests)
    _say(console, f"Backtest forecasts ({rows} rows) written to {args.out}")
    _say(console, f"Took {time.perf_counter() - started:.0f} s")
    return 0
