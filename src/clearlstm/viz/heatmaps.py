"""Heatmaps of every gate and memory of one layer-direction, units × steps, one panel each.

The input sequence is drawn above; units are sorted by memory half-life, longest first.
Public entry points are re-exported by :mod:`clearlstm.viz.figures`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import matplotlib
import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from clearlstm.core.trace import Trace


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
            label += f" · t½ {short_number(half_lives[unit])}"
        labels.append(label)
    ax.set_yticks(positions)
    ax.set_yticklabels(labels, fontsize=6 if len(units) > 12 else 7)
    ax.set_ylabel("unit", fontsize=8)


def short_number(value: float) -> str:
    """A half-life as the figures print it: three significant digits, or ∞."""
    return "∞" if math.isinf(value) else f"{value:.3g}"
