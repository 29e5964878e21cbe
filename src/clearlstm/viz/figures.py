"""Pictures of what an LSTM keeps and forgets, drawn with matplotlib (Agg, PNG and SVG).

- :func:`gate_heatmaps`: every gate and memory of one layer-direction, units × steps, one
  panel each, the input sequence drawn above; units sorted by memory half-life.
- :func:`retention_curves`: how much of the long-term memory held after one step is left
  after each later step, per unit, with each unit's half-life marked.
- :func:`unit_diagram`: the seed's single-unit diagram with one step's numbers written on it.

Each function reads a :class:`~clearlstm.core.trace.Trace` (or one explained step) and returns a
:class:`matplotlib.figure.Figure`; :func:`save_figure` writes it as PNG or SVG atomically.
Figures are built without pyplot, so no global state is shared between threads or calls.
Steps are labelled from 1 (the first input), as in the series' "day 1"; function arguments
that select a step count from 0, as :meth:`Trace.retention` does.

The heatmaps are drawn in :mod:`clearlstm.viz.heatmaps` and the unit diagram in
:mod:`clearlstm.viz.unit_stages`; every name stays importable from here.
"""

from __future__ import annotations

import base64
import io
import math
import os
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from clearlstm.core.trace import Trace
from clearlstm.files import write_atomically
from clearlstm.teach.explain import percent
from clearlstm.viz.heatmaps import QUANTITIES, Quantity, gate_heatmaps, short_number, unit_order
from clearlstm.viz.unit_stages import unit_diagram

__all__ = [
    "FORMATS",
    "QUANTITIES",
    "Quantity",
    "figure_bytes",
    "figure_png_base64",
    "figure_svg",
    "gate_heatmaps",
    "retention_curves",
    "save_figure",
    "unit_diagram",
    "unit_order",
]

FORMATS = ("png", "svg")


def retention_curves(
    trace: Trace,
    start: int = 0,
    *,
    layer: int = -1,
    direction: int = 0,
    batch: int = 0,
    max_units: int = 10,
    title: str | None = None,
) -> Figure:
    """Retention of the memory held after step ``start`` (0-based), per unit.

    Solid lines are :meth:`Trace.retention`; dotted lines extend each unit's typical
    retention per step (geometric mean of its forget gate) to its half-life, marked where
    the line crosses one half.
    """
    kept = trace.retention(start, layer, direction)[:, batch, :].cpu().numpy()  # (T, H)
    steps, hidden = kept.shape
    summary = trace.memory_summary(layer, direction)[:max_units]
    fig = Figure(figsize=(8.5, 4.8), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    colours = matplotlib.colormaps["tab10"]
    # Show the decay, not hundreds of steps of nothing: a few half-lives past ``start``.
    finite = [m.half_life for m in summary if math.isfinite(m.half_life)]
    longest = max(finite) if len(finite) == len(summary) and finite else math.inf
    horizon = steps if math.isinf(longest) else min(steps, start + max(8, math.ceil(6 * longest)))
    for k, memory in enumerate(summary):
        colour = colours(k % 10)
        t = np.arange(start, min(horizon, steps))  # the trace ends at ``steps``, the axis may not
        ax.plot(
            t + 1,
            kept[t, memory.unit],
            color=colour,
            linewidth=1.8,
            marker="o" if horizon - start <= 40 else None,
            markersize=3,
            label=f"unit {memory.unit}: t½ = {short_number(memory.half_life)} steps, "
            f"keeps {percent(memory.mean_forget_gate)} per step",
        )
        half_life = memory.half_life
        if math.isfinite(half_life) and half_life <= 4 * max(steps, 1):
            end = start + half_life
            horizon = max(horizon, math.ceil(end + 1))
            typical = np.linspace(0.0, half_life, 64)
            ax.plot(
                start + 1 + typical,
                memory.mean_forget_gate**typical,
                linestyle=":",
                color=colour,
                linewidth=1.2,
            )
            ax.plot(
                [end + 1],
                [0.5],
                marker="X",
                markersize=9,
                color=colour,
                markeredgecolor="black",
                markeredgewidth=0.6,
            )
            ax.axvline(end + 1, color=colour, linewidth=0.6, alpha=0.5)
    ax.axhline(0.5, color="black", linestyle="--", linewidth=0.8)
    ax.text(start + 1, 0.515, " half the memory", fontsize=8, va="bottom")
    ax.set_xlim(start + 0.8, horizon + 0.2)
    ax.set_ylim(0, 1.05)
    ax.xaxis.set_major_locator(MaxNLocator(nbins=12, integer=True))
    order = "steps read (reverse direction)" if direction == 1 else "step"
    ax.set_xlabel(order)
    ax.set_ylabel(f"fraction of step {start + 1}'s memory left")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper right" if steps - start > 2 else "lower left")
    shown = f"{len(summary)} longest-memory units of {hidden}" if hidden > max_units else ""
    heading = title or f"Retention of the long-term memory held after step {start + 1}"
    fig.suptitle(
        f"{heading}\nsolid: the trace; dotted: typical retention per step, "
        f"extended to the half-life (✕){'; ' + shown if shown else ''}",
        fontsize=10,
    )
    return fig


def figure_bytes(fig: Figure, fmt: str, *, dpi: int = 110) -> bytes:
    """The figure as PNG or SVG bytes (SVG text embeds its fonts as paths: self-contained)."""
    if fmt not in FORMATS:
        raise ValueError(f"figures: format must be one of {FORMATS}; got {fmt!r}")
    buffer = io.BytesIO()
    # A fixed salt and no date keep SVG output identical from run to run.
    with matplotlib.rc_context({"svg.hashsalt": "clearlstm"}):
        metadata = {"Date": None} if fmt == "svg" else {"Software": "clearlstm"}
        fig.savefig(buffer, format=fmt, dpi=dpi, metadata=metadata)
    return buffer.getvalue()


def figure_svg(fig: Figure) -> str:
    """Inline SVG markup (no XML prologue) for embedding in HTML."""
    text = figure_bytes(fig, "svg").decode("utf-8")
    return text[text.index("<svg") :]


def figure_png_base64(fig: Figure, *, dpi: int = 110) -> str:
    return base64.b64encode(figure_bytes(fig, "png", dpi=dpi)).decode("ascii")


def save_figure(fig: Figure, path: str | os.PathLike, *, dpi: int = 130) -> Path:
    """Write ``fig`` to ``path`` (format from its suffix, .png or .svg) atomically.

    The bytes go to a temporary file in the same folder first, then replace ``path``, so
    a crash never leaves a half-written picture behind.
    """
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise ValueError(
            f"save_figure: {path} must end in .png or .svg; got suffix {path.suffix!r}"
        )
    return write_atomically(path, figure_bytes(fig, fmt, dpi=dpi))
