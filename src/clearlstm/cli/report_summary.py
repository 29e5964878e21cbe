"""What ``clearlstm report --model`` prints: the top findings of the analysis in a few lines
(the HTML report holds the rest). Every string is printed as plain text, never as markup."""

from __future__ import annotations

import numpy as np
from rich.console import Console
from rich.table import Table
from rich.text import Text

from clearlstm.viz.cell_analysis import CellAnalysis


def _line(console: Console, text: str) -> None:
    console.print(Text(text), highlight=False)


def print_summary(console: Console, analysis: CellAnalysis) -> None:
    """Each feature's best unit against chance, the gates, and the attributions' checks."""
    what = "characters" if analysis.kind == "text" else "forecast origins"
    _line(console, f"What did it learn to remember? {analysis.source}, {analysis.steps} {what}")
    if analysis.note:
        _line(console, f"note: {analysis.note}")
    verdicts = analysis.verdicts()
    if analysis.scores:
        table = Table(show_edge=False, pad_edge=False)
        for name in ("feature", "best unit", "r", "chance max |r|", "all-units R²", "chance R²"):
            table.add_column(Text(name), justify="left" if name == "feature" else "right")
        table.add_column(Text("verdict"))
        for feature, units in analysis.top_units.items():
            s = units[0]
            cells = (
                feature,
                f"{s.quantity}{s.unit}",
                f"{s.r:+.3f}",
                f"{s.chance_r_max:.3f}",
                f"{s.all_units_r2:.3f}",
                f"{s.chance_all_units_r2:.3f}",
                verdicts[feature],
            )
            table.add_row(*(Text(c) for c in cells))
        console.print(table)
        winners = [f for f, v in verdicts.items() if v == "beats chance"]
        if winners:
            _line(console, f"beats chance: {', '.join(winners)}")
        else:
            _line(
                console,
                "nothing beats chance: no unit tracks these features better than "
                "the same features shifted in time",
            )
    g = analysis.gates
    forget = g.saturation["forget_gate"]
    life = g.half_life_median.numpy()
    _line(
        console,
        f"gates: {int((forget.right > 0.5).sum())} of {len(life)} units keep the forget gate "
        f"> {g.high} on most steps, {int((forget.left > 0.5).sum())} keep it < {g.low}; "
        f"median half-life {float(np.median(life)):.3g} steps; dead units: "
        f"{', '.join(map(str, g.dead)) or 'none'}",
    )
    if analysis.forecast is not None:
        r, std = analysis.forecast, analysis.target_std
        _line(
            console,
            f"forecast attribution: sum {r.total * std:+.6g} vs difference {r.delta * std:+.6g}"
            f" (relative error {r.relative_error:.1e}, {r.steps} intervals)",
        )
    if analysis.forgetting is not None:
        f = analysis.forgetting
        _line(
            console,
            f"why did unit {f.unit} forget at step {f.step + 1} (f = {f.forget_gate:.3f})? "
            f"completeness relative error {f.integrated.relative_error:.1e}",
        )
