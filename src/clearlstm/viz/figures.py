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
"""

from __future__ import annotations

import base64
import io
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Circle, FancyBboxPatch, Rectangle
from matplotlib.ticker import MaxNLocator

from clearlstm.core.trace import Trace
from clearlstm.files import write_atomically
from clearlstm.teach.explain import StepExplanation, percent
from clearlstm.teach.unit import GateWeights, UnitWeights

FORMATS = ("png", "svg")


@dataclass(frozen=True)
class Quantity:
    """One recorded value of the trace, as a heatmap panel shows it."""

    field: str  # LayerRecord field
    title: str
    meaning: str
    cmap: str
    limits: tuple[float, float] | None  # None: symmetric around 0, from the data


# The order: the three gates, then what they act on.
QUANTITIES: tuple[Quantity, ...] = (
    Quantity(
        "forget_gate", "forget gate f", "fraction of long-term memory kept", "viridis", (0.0, 1.0)
    ),
    Quantity(
        "input_gate", "input gate i", "fraction of potential memory added", "viridis", (0.0, 1.0)
    ),
    Quantity(
        "output_gate", "output gate o", "fraction of tanh(c) passed on", "viridis", (0.0, 1.0)
    ),
    Quantity(
        "potential_memory",
        "potential memory g",
        "candidate long-term memory",
        "RdBu_r",
        (-1.0, 1.0),
    ),
    Quantity("c", "long-term memory c", "cell state after the step", "RdBu_r", None),
    Quantity(
        "h",
        "short-term memory h",
        "hidden state after the step (the output)",
        "RdBu_r",
        (-1.0, 1.0),
    ),
)
QUANTITY_NAMES: tuple[str, ...] = tuple(q.field for q in QUANTITIES)


def unit_order(trace: Trace, layer: int = -1, direction: int = 0) -> list[int]:
    """Units of one layer-direction, longest memory half-life first."""
    return [m.unit for m in trace.memory_summary(layer, direction)]


def _as_steps(inputs: object, batch: int) -> np.ndarray:
    """Inputs as ``(T, I)`` float64, from ``(T,)``, ``(T, I)`` or ``(T, B, I)``."""
    values = torch.as_tensor(inputs).detach().double().cpu().numpy()
    if values.ndim == 1:
        return values[:, None]
    if values.ndim == 3:
        return values[:, batch, :]
    if values.ndim == 2:
        return values
    raise ValueError(
        f"figures: inputs must have shape (T,), (T, I) or (T, B, I); got {values.shape}"
    )


def _step_axis(ax, steps: int, labels: Sequence[str] | None) -> None:
    """Step ticks: every label for short sequences, a readable handful for long ones."""
    if labels is not None and steps <= 80:
        ax.set_xticks(range(1, steps + 1))
        ax.set_xticklabels([repr(s)[1:-1] or " " for s in labels], fontsize=7)
    else:
        ax.xaxis.set_major_locator(MaxNLocator(nbins=12, integer=True, min_n_ticks=1))


def _draw_inputs(ax, x: np.ndarray, labels: Sequence[str] | None) -> None:
    steps, features = x.shape
    t = np.arange(1, steps + 1)
    if features <= 6:
        marker = "o" if steps <= 60 else None
        for k in range(features):
            name = "x" if features == 1 else f"x[{k}]"
            ax.plot(t, x[:, k], marker=marker, markersize=3, linewidth=1.2, label=name)
        if features > 1:
            ax.legend(loc="upper left", fontsize=7, ncol=features, frameon=False)
        ax.set_ylabel("input", fontsize=8)
    else:  # many features (one-hot text, covariates): a small heatmap reads better
        ax.imshow(
            x.T,
            aspect="auto",
            interpolation="nearest",
            cmap="Greys",
            extent=(0.5, steps + 0.5, features - 0.5, -0.5),
        )
        ax.set_ylabel(f"input\n({features} features)", fontsize=8)
    ax.set_xlim(0.5, steps + 0.5)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    ax.set_title("input sequence", loc="left", fontsize=9)


def gate_heatmaps(
    trace: Trace,
    inputs: object | None = None,
    *,
    layer: int = -1,
    direction: int = 0,
    batch: int = 0,
    max_units: int = 48,
    step_labels: Sequence[str] | None = None,
    title: str | None = None,
) -> Figure:
    """Every gate and memory of one layer-direction as units × steps heatmaps.

    Units are sorted by memory half-life (longest first); with more than ``max_units``
    units only the longest-memory ones are drawn and the title says so. ``inputs`` (shape
    ``(T,)``, ``(T, I)`` or ``(T, B, I)``) is drawn above; ``step_labels`` (e.g. the
    characters of a text) label the steps of short sequences. Padded steps are grey.
    """
    rec = trace[layer, direction]
    steps, _, hidden = rec.forget_gate.shape
    order = unit_order(trace, layer, direction)
    half_lives = {m.unit: m.half_life for m in trace.memory_summary(layer, direction)}
    shown = order[:max_units]
    rows = len(shown)

    panel_height = min(max(0.22 * rows, 0.7), 3.2)
    width = min(max(6.0 + 0.12 * steps, 8.0), 16.0)
    has_inputs = inputs is not None
    heights = ([1.2] if has_inputs else []) + [panel_height] * len(QUANTITIES)
    fig = Figure(figsize=(width, sum(heights) + 0.55 * len(heights) + 0.8), layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(len(heights), 2, height_ratios=heights, width_ratios=[60, 1])

    first = None
    if has_inputs:
        first = fig.add_subplot(grid[0, 0])
        _draw_inputs(first, _as_steps(inputs, batch), step_labels)
        _step_axis(first, steps, step_labels)
    layer_index = layer % trace.num_layers
    for k, quantity in enumerate(QUANTITIES):
        row = k + int(has_inputs)
        ax = fig.add_subplot(grid[row, 0], sharex=first)
        first = first or ax
        values = getattr(rec, quantity.field)[:, batch, :].detach().double().cpu().numpy()
        # h has P rows with a projection; its units are not the cell's, so keep their order.
        units = shown if values.shape[1] == hidden else list(range(values.shape[1]))[:max_units]
        data = values[:, units].T  # (units, T)
        if quantity.limits is None:
            bound = float(np.nanmax(np.abs(data))) if np.isfinite(data).any() else 1.0
            limits = (-max(bound, 1e-12), max(bound, 1e-12))
        else:
            limits = quantity.limits
        cmap = matplotlib.colormaps[quantity.cmap].with_extremes(bad="#d0d0d0")
        image = ax.imshow(
            data,
            aspect="auto",
            interpolation="nearest",
            cmap=cmap,
            vmin=limits[0],
            vmax=limits[1],
            extent=(0.5, steps + 0.5, len(units) - 0.5, -0.5),
        )
        ax.set_title(f"{quantity.title} — {quantity.meaning}", loc="left", fontsize=9)
        _unit_ticks(ax, units, half_lives if units is shown else None)
        _step_axis(ax, steps, step_labels)
        if data.size <= 120:  # few cells: write the exact numbers on them
            _write_values(ax, data, image)
        if k < len(QUANTITIES) - 1:
            ax.tick_params(labelbottom=False)
        ax.tick_params(labelsize=7)
        fig.colorbar(image, cax=fig.add_subplot(grid[row, 1])).ax.tick_params(labelsize=7)
    first.set_xlim(0.5, steps + 0.5)
    ax.set_xlabel("step")

    heading = title or (
        f"Gates and memories over time — layer {layer_index}"
        + (", reverse direction" if direction == 1 else "")
    )
    note = f"units sorted by memory half-life, longest first ({rows} of {hidden} shown)"
    fig.suptitle(f"{heading}\n{note}", fontsize=10)
    return fig


def _write_values(ax, data: np.ndarray, image) -> None:
    for (row, column), value in np.ndenumerate(data):
        if not math.isfinite(value):
            continue
        red, green, blue, _ = image.cmap(image.norm(value))
        dark = 0.299 * red + 0.587 * green + 0.114 * blue < 0.5
        ax.text(
            column + 1,
            row,
            f"{value:.4g}",
            ha="center",
            va="center",
            fontsize=7,
            color="white" if dark else "black",
        )


def _unit_ticks(ax, units: list[int], half_lives: dict[int, float] | None) -> None:
    if len(units) <= 24:
        positions = list(range(len(units)))
    else:  # about a dozen labels: every one would overlap
        stride = math.ceil(len(units) / 12)
        positions = list(range(0, len(units), stride))
    labels = []
    for p in positions:
        unit = units[p]
        label = f"u{unit}"
        if half_lives is not None and len(units) <= 24:
            label += f" · t½ {_short(half_lives[unit])}"
        labels.append(label)
    ax.set_yticks(positions)
    ax.set_yticklabels(labels, fontsize=6 if len(units) > 12 else 7)
    ax.set_ylabel("unit", fontsize=8)


def _short(value: float) -> str:
    return "∞" if math.isinf(value) else f"{value:.3g}"


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
    horizon = min(steps, start + max(8, math.ceil(6 * longest))) if finite else steps
    for k, memory in enumerate(summary):
        colour = colours(k % 10)
        t = np.arange(start, horizon)
        ax.plot(
            t + 1,
            kept[start:horizon, memory.unit],
            color=colour,
            linewidth=1.8,
            marker="o" if horizon - start <= 40 else None,
            markersize=3,
            label=f"unit {memory.unit}: t½ = {_short(memory.half_life)} steps, "
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


# Layout of the unit diagram, in data coordinates of a 20 × 12 canvas.
_LONG_Y, _SHORT_Y, _X_Y, _BOX_Y = 9.4, 1.9, 0.8, 4.6
_BOX_W, _BOX_H = 3.5, 2.3
_STAGE_FILL = {"forget": "#fde8e8", "input": "#e6f0fb", "output": "#e9f6e6"}


def _weighted_sum(g: GateWeights) -> str:
    def number(value: float) -> str:  # the series' two decimals, unless that hides it
        return f"{value:.2f}" if value == 0 or 0.01 <= abs(value) < 1e4 else f"{value:.3g}"

    def term(value: float, name: str) -> str:
        return f" {'−' if value < 0 else '+'} {number(abs(value))}{name}"

    first = ("−" if g.w_h < 0 else "") + number(abs(g.w_h))
    return f"z = {first}h" + term(g.w_x, "x") + term(g.b, "")


def _box(ax, x: float, label: str, gate: GateWeights, z: float, value: float, name: str):
    ax.add_patch(
        FancyBboxPatch(
            (x - _BOX_W / 2, _BOX_Y - _BOX_H / 2),
            _BOX_W,
            _BOX_H,
            boxstyle="round,pad=0.08",
            facecolor="white",
            edgecolor="#333333",
            linewidth=1.2,
        )
    )
    text = f"{label}\n{_weighted_sum(gate)}\n  = {z:.4g}  (x-axis value)\n{name} = {value:.4g}"
    ax.text(x, _BOX_Y, text, ha="center", va="center", fontsize=7.6, linespacing=1.35)
    # Both memories and the input feed every stage.
    ax.annotate(
        "",
        (x, _BOX_Y - _BOX_H / 2 - 0.08),
        (x, _X_Y),
        arrowprops={"arrowstyle": "->", "color": "#555555"},
    )
    ax.plot([x], [_SHORT_Y], marker="o", markersize=3, color="#555555")
    ax.plot([x], [_X_Y], marker="o", markersize=3, color="#555555")


def _op(ax, x: float, y: float, symbol: str) -> None:
    ax.add_patch(Circle((x, y), 0.42, facecolor="#fff7d6", edgecolor="#333333", linewidth=1.2))
    ax.text(x, y, symbol, ha="center", va="center", fontsize=13)


def _arrow(ax, start: tuple[float, float], end: tuple[float, float], colour="#333333") -> None:
    ax.annotate("", end, start, arrowprops={"arrowstyle": "->", "color": colour, "lw": 1.3})


def unit_diagram(step: StepExplanation, weights: UnitWeights, *, title: str | None = None):
    """The seed's one-unit diagram with ``step``'s numbers written on it.

    ``step`` comes from :func:`clearlstm.teach.explain.explain_sequence` run with the unit whose
    numbers ``weights`` holds (e.g. ``UnitWeights.from_lstm(lstm)``). The three stages read
    left to right: forget gate, input gate with the potential memory, output.
    """
    fig = Figure(figsize=(12.5, 8.4), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set_xlim(-0.2, 20.2)
    ax.set_ylim(-1.9, 11.6)
    ax.set_aspect("equal")  # round circles
    ax.set_axis_off()

    stages = (("forget", 0.2, 4.9), ("input", 5.1, 12.9), ("output", 13.1, 19.8))
    for name, left, right in stages:
        ax.add_patch(
            Rectangle(
                (left, 0.1),
                right - left,
                11.0,
                facecolor=_STAGE_FILL[name],
                edgecolor="none",
                zorder=-2,
            )
        )
    words = step.sentences()
    headings = {
        "forget": f"1 · forget-gate stage\nkeeps {percent(step.forget_gate)} of C",
        "input": f"2 · input-gate stage\nadds {percent(step.input_gate)} of "
        f"g = {step.potential_memory:.4g}",
        "output": f"3 · output stage\npasses {percent(step.output_gate)} of tanh(C')",
    }
    for name, left, right in stages:
        ax.text(
            (left + right) / 2,
            10.75,
            headings[name],
            ha="center",
            va="center",
            fontsize=9,
            fontweight="bold",
        )

    # Long-term memory (top line): C -> x f -> + i*g -> C'.
    fx, px, ix, ox = 2.55, 7.1, 10.9, 15.0
    plus_x, tanh_x = 9.0, 18.0
    ax.text(0.35, _LONG_Y + 0.45, f"C = {step.c_prev:.4g}", fontsize=9, fontweight="bold")
    _arrow(ax, (0.3, _LONG_Y), (fx - 0.45, _LONG_Y))
    _op(ax, fx, _LONG_Y, "×")
    ax.text(fx + 0.55, _LONG_Y + 0.5, f"C·f = {step.retained:.4g}", fontsize=8)
    _arrow(ax, (fx + 0.45, _LONG_Y), (plus_x - 0.45, _LONG_Y))
    _op(ax, plus_x, _LONG_Y, "+")
    _arrow(ax, (plus_x + 0.45, _LONG_Y), (19.9, _LONG_Y))
    ax.text(16.4, _LONG_Y + 0.45, f"C' = {step.c:.4g}", fontsize=9, fontweight="bold")

    # Short-term memory and input (bottom lines) feed every stage.
    ax.plot([0.3, ox], [_SHORT_Y, _SHORT_Y], color="#555555", linewidth=1.3)
    ax.plot([0.3, ox], [_X_Y, _X_Y], color="#555555", linewidth=1.3)
    ax.text(0.35, _SHORT_Y + 0.2, f"h = {step.h_prev:.4g}", fontsize=9, fontweight="bold")
    ax.text(0.35, _X_Y - 0.6, f"x = {step.x:.4g}", fontsize=9, fontweight="bold")

    # Stage 1: the forget gate scales the long-term memory.
    _box(ax, fx, "forget gate  σ", weights.forget, step.forget_x_axis, step.forget_gate, "f")
    _arrow(ax, (fx, _BOX_Y + _BOX_H / 2 + 0.1), (fx, _LONG_Y - 0.45))
    # Stage 2: the input gate admits part of the potential memory.
    _box(ax, ix, "input gate  σ", weights.input, step.input_x_axis, step.input_gate, "i")
    _box(
        ax,
        px,
        "potential memory  tanh",
        weights.potential,
        step.potential_x_axis,
        step.potential_memory,
        "g",
    )
    mul_y = 7.4
    _op(ax, plus_x, mul_y, "×")
    _arrow(ax, (px, _BOX_Y + _BOX_H / 2 + 0.1), (plus_x - 0.35, mul_y - 0.25))
    _arrow(ax, (ix, _BOX_Y + _BOX_H / 2 + 0.1), (plus_x + 0.35, mul_y - 0.25))
    _arrow(ax, (plus_x, mul_y + 0.42), (plus_x, _LONG_Y - 0.45))
    ax.text(plus_x + 0.55, mul_y + 0.75, f"i·g = {step.added:.4g}", fontsize=8)
    # Stage 3: the output gate passes part of tanh(C') on as the new short-term memory.
    _box(ax, ox, "output gate  σ", weights.output, step.output_x_axis, step.output_gate, "o")
    ax.add_patch(
        FancyBboxPatch(
            (tanh_x - 0.9, 6.9),
            1.8,
            1.0,
            boxstyle="round,pad=0.06",
            facecolor="white",
            edgecolor="#333333",
        )
    )
    ax.text(tanh_x, 7.4, f"tanh(C')\n= {step.tanh_c:.4g}", ha="center", va="center", fontsize=7.6)
    _arrow(ax, (tanh_x, _LONG_Y), (tanh_x, 7.95))
    _op(ax, tanh_x, _BOX_Y, "×")
    _arrow(ax, (tanh_x, 6.85), (tanh_x, _BOX_Y + 0.45))
    _arrow(ax, (ox + _BOX_W / 2 + 0.1, _BOX_Y), (tanh_x - 0.45, _BOX_Y))
    _arrow(ax, (tanh_x, _BOX_Y - 0.45), (tanh_x, _SHORT_Y + 0.1))
    ax.text(
        tanh_x + 0.15,
        _SHORT_Y - 0.15,
        f"h' = {step.h:.4g}\n(output)",
        fontsize=9,
        fontweight="bold",
        va="top",
        ha="center",
    )

    sentences = [words["forget"], words["input"], words["output"]]
    ax.text(0.2, -0.5, "\n".join(sentences), fontsize=8.5, va="top", ha="left", wrap=True)
    fig.suptitle(
        title
        or f"One step of the unit: x = {step.x:.4g}, C = {step.c_prev:.4g}, h = {step.h_prev:.4g}",
        fontsize=11,
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
