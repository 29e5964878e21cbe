"""What the training commands print: tables, the progress bar and the memory summary (rich).

Only the command line calls these; the library itself prints nothing.
"""

from __future__ import annotations

import math

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from clearlstm.core.trace import Trace, UnitMemory
from clearlstm.tasks.backtest import Backtest, Evaluation
from clearlstm.tasks.baselines import compare
from clearlstm.tasks.datasets import DATASETS
from clearlstm.train.loop import EpochReport


def datasets_table() -> Table:
    table = Table(title="Bundled datasets (clearlstm/data, see SOURCES.md there)")
    for column in ("name", "kind", "length", "what", "source", "licence"):
        table.add_column(column, justify="right" if column == "length" else "left")
    for d in DATASETS.values():
        unit = "rows" if d.kind == "series" else "chars"
        table.add_row(d.name, d.kind, f"{d.length():,} {unit}", d.description, d.source, d.licence)
    return table


def evaluation_table(evaluation: Evaluation, horizon: int) -> Table:
    """Every method's test scores; MASE shows "n/a" where it has no scale (a constant
    training part), and "(best)" marks the lowest MASE (MAE then) and its ties."""
    season = f"season {evaluation.season}" if evaluation.season else "no season found"
    title = (
        f"Backtest on the test part: {evaluation.target}, {evaluation.origins} forecast "
        f"origins, {horizon} step(s) ahead from each ({season})"
    )
    table = Table(title=Text(title))  # Text: a column named "[red]" is no markup
    table.add_column("method")
    for column in ("MAE", "RMSE", "MASE", "sMAPE %", "MAPE %"):
        table.add_column(column, justify="right")
    scores = evaluation.scores.values()
    key = "mase" if all(math.isfinite(s.mase) for s in scores) else "mae"
    best = min(getattr(s, key) for s in scores)
    for method, s in evaluation.scores.items():
        mark = " (best)" if compare(getattr(s, key), best) == 0 else ""  # ties share it
        name = Text(method + mark, style="bold" if method == "LSTM" else "")
        mase = f"{s.mase:.3f}" if math.isfinite(s.mase) else "n/a"
        smape, mape = (f"{x:.2f}" if math.isfinite(x) else "n/a" for x in (s.smape, s.mape))
        table.add_row(name, f"{s.mae:.4g}", f"{s.rmse:.4g}", mase, smape, mape)
    table.caption = "Lower is better; MAPE is undefined where a true value is 0."
    return table


def steps_table(backtest: Backtest, j: int) -> Table:
    """Target ``j``'s scores per horizon step: the LSTM's, the best baseline's (by MASE, MAE
    where MASE has no scale) and the intervals' coverage."""
    name = backtest.targets[j]
    table = Table(title=Text(f"{name} per horizon step (test part)"))
    for column in ("step", "LSTM MAE", "LSTM RMSE", "LSTM MASE", "best baseline", "its MASE"):
        table.add_column(column, justify="left" if column == "best baseline" else "right")
    levels = sorted(backtest.widths)
    for level in levels:
        table.add_column(f"{level:.0%} covers", justify="right")
    per_step = {m: backtest.step_scores(m) for m in backtest.forecasts}
    inside = {lv: _inside(backtest, lv) for lv in levels}
    for h in range(backtest.horizon):
        lstm = per_step["LSTM"][h][j]
        key = "mase" if math.isfinite(lstm.mase) else "mae"
        others = {m: s[h][j] for m, s in per_step.items() if m != "LSTM"}
        best = min(others, key=lambda m: getattr(others[m], key))
        cells = [f"{lstm.mae:.4g}", f"{lstm.rmse:.4g}", _mase(lstm.mase), best]
        cells.append(_mase(others[best].mase))
        cells += [f"{inside[lv][:, h, j].mean():.0%}" for lv in levels]
        table.add_row(str(h + 1), *cells)
    return table


def _mase(x: float) -> str:
    return f"{x:.3f}" if math.isfinite(x) else "n/a"


def _inside(backtest: Backtest, level: float):
    low, high = backtest.bounds(level)
    return (backtest.truth >= low) & (backtest.truth <= high)


def intervals_sentence(backtest: Backtest) -> str:
    """The intervals' empirical coverage on the test part beside their nominal level."""
    if not backtest.widths:
        return (
            "No intervals: the validation part holds no whole horizon to calibrate them on; "
            "use a larger --val-size or a shorter --backtest-horizon."
        )
    covered = "; ".join(
        f"{level:.0%} nominal covers {_coverage(backtest.coverage(level))} of the test part"
        for level in sorted(backtest.widths)
    )
    text = (
        f"Prediction intervals (split conformal per horizon step, from the LSTM's errors on "
        f"{backtest.calibration} validation origins): {covered}."
    )
    short = [f"{lv:.0%}" for lv in sorted(backtest.widths) if not backtest.guaranteed[lv]]
    if short:
        text += (
            f" Too few validation origins for the {' and '.join(short)} level: the largest "
            "error is used, so expect less coverage there."
        )
    return text


def _coverage(fractions) -> str:
    return ", ".join(f"{100 * f:.1f}%" for f in fractions)


def memory_table(
    memory: list[UnitMemory], where: str = "on the test part", shown: int = 10
) -> Table:
    layer = memory[0].layer if memory else 0
    table = Table(
        title=f"What the trained model remembers (layer {layer}, {where}): units by half-life"
    )
    for column in ("unit", "typical forget gate", "kept per step", "half-life (steps)"):
        table.add_column(column, justify="right")
    for m in memory[:shown]:
        half = "forever" if math.isinf(m.half_life) else f"{m.half_life:.1f}"
        table.add_row(
            str(m.unit), f"{m.mean_forget_gate:.4f}", f"{100 * m.mean_forget_gate:.1f}%", half
        )
    if len(memory) > shown:
        table.caption = f"{shown} of {len(memory)} units shown; the rest remember less."
    return table


def memory_sentence(memory: list[UnitMemory]) -> str:
    """The summary in words: longest, median and shortest half-life."""
    lives = sorted(m.half_life for m in memory)
    median = lives[len(lives) // 2]
    return (
        f"Longest memory: unit {memory[0].unit}, half of its long-term memory is left after "
        f"{memory[0].half_life:.1f} steps; median unit {median:.1f} steps; shortest "
        f"{lives[0]:.1f} steps."
    )


class ProgressReporter:
    """A rich progress bar: epoch, training loss, validation loss (or bits per char), time left."""

    def __init__(self, console: Console, val_label: str = "val loss", val_scale: float = 1.0):
        self.val_label, self.val_scale = val_label, val_scale
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("left"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self.task = self.progress.add_task("training", total=1)
        self.val = "-"
        self.lines: list[str] = []

    def __enter__(self) -> ProgressReporter:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def start(self, total_batches: int, done_batches: int) -> None:
        self.progress.update(self.task, total=total_batches, completed=done_batches)

    def batch(self, epoch: int, loss: float) -> None:
        self.progress.update(
            self.task,
            advance=1,
            description=f"epoch {epoch}  loss {loss:.4f}  {self.val_label} {self.val}",
        )

    def epoch(self, report: EpochReport) -> None:
        self.val = f"{report.val_loss * self.val_scale:.4f}"
        mark = " (best)" if report.improved else ""
        self.progress.update(
            self.task,
            description=(
                f"epoch {report.epoch}/{report.epochs}  loss {report.train_loss:.4f}  "
                f"{self.val_label} {self.val}{mark}"
            ),
        )


def gates_table(trace: Trace, inputs: list[str], units: int = 6) -> Table:
    """Each step's forget / input / output gates for the longest-memory units of the last
    layer (all of them when there are few)."""
    record = trace[-1, 0]
    order = [m.unit for m in trace.memory_summary()][:units]
    hidden = record.forget_gate.shape[-1]
    title = "Gates step by step (f forget, i input, o output; last layer"
    title += ")" if hidden <= units else f", the {units} longest-memory units of {hidden})"
    table = Table(title=title)
    table.add_column("step", justify="right")
    table.add_column("input", justify="right")
    for u in order:
        table.add_column(f"unit {u}\n f    i    o", justify="right")
    for t, x in enumerate(inputs):
        cells = []
        for u in order:
            f = float(record.forget_gate[t, 0, u])
            i = float(record.input_gate[t, 0, u])
            o = float(record.output_gate[t, 0, u])
            cells.append(f"{f:.2f} {i:.2f} {o:.2f}")
        table.add_row(str(t + 1), Text(x), *cells)  # the user's characters, as they are
    return table
