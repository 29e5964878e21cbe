"""Pictures of what a trained model's cells track and where its forecasts come from.

- :func:`cells_over_series`: the series, then each chosen unit's state beside the feature it
  tracks, both standardised, at every forecast origin.
- :func:`half_life_histogram`: the units' median per-step memory half-lives.
- :func:`attribution_bars`: integrated gradients of a forecast, one bar per step read, under
  the values of that window; the completeness check in the title.
- :func:`forgetting_bars`: what pushed one forget gate shut, one bar per step read.

Built without pyplot, like :mod:`clearlstm.viz.figures`; steps are labelled from 1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from clearlstm.analysis import Attribution, ForgetAttribution, GateStatistics, UnitScore

POSITIVE, NEGATIVE = "#c0392b", "#2e6fba"


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _standardised(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values)
    if not finite.any():
        return values
    centred = values - values[finite].mean()
    spread = centred[finite].std()
    return centred / spread if spread > 0 else centred


def _ticks(ax, labels: Sequence[str] | None, count: int) -> None:
    ax.xaxis.set_major_locator(MaxNLocator(nbins=10, integer=True))
    if labels:
        positions = [p for p in ax.get_xticks() if 1 <= p <= count and float(p).is_integer()]
        ax.set_xticks(positions, [labels[int(p) - 1] for p in positions], fontsize=7)


def cells_over_series(
    values: np.ndarray,
    top: Sequence[UnitScore],
    states: dict[str, np.ndarray],
    features: dict[str, np.ndarray],
    *,
    labels: Sequence[str] | None = None,
    verdicts: dict[str, str] | None = None,
) -> Figure:
    """``values (N,)`` the series at each origin; for each score in ``top`` its unit's
    ``states[quantity] (N, H)`` column against ``features[feature] (N,)``."""
    n = len(values)
    fig = _figure(9.0, 1.9 * (len(top) + 1))
    axes = fig.subplots(len(top) + 1, 1, sharex=True, squeeze=False)[:, 0]
    t = np.arange(1, n + 1)
    axes[0].plot(t, values, color="black", linewidth=1.2)
    axes[0].set_ylabel("series", fontsize=8)
    axes[0].set_title(
        "The series at each forecast origin and the units that track a feature", fontsize=10
    )
    for ax, score in zip(axes[1:], top, strict=True):
        unit = states[score.quantity][:, score.unit]
        feature = features[score.feature]
        sign = 1.0 if score.r >= 0 else -1.0  # draw an anti-correlated unit flipped
        ax.plot(t, _standardised(feature), color="#888888", linewidth=1.0, label=score.feature)
        ax.plot(
            t,
            sign * _standardised(unit),
            color=POSITIVE,
            linewidth=1.2,
            label=f"{'-' if sign < 0 else ''}{score.quantity}{score.unit}",
        )
        verdict = (verdicts or {}).get(score.feature, "")
        title = (
            f"{score.feature}: {score.quantity}{score.unit}, r = {score.r:+.3f} "
            f"(chance max |r| {score.chance_r_max:.3f}) {verdict}"
        )
        ax.set_title(title, fontsize=8)
        ax.legend(fontsize=7, loc="upper left")
        ax.set_ylabel("std units", fontsize=8)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("forecast origin")
    _ticks(axes[-1], labels, n)
    return fig


def half_life_histogram(gates: GateStatistics) -> Figure:
    """Histogram of the units' median per-step half-lives (log steps); never-forgetting
    units (infinite half-life) counted in the title."""
    life = gates.half_life_median.numpy()
    finite = life[np.isfinite(life) & (life > 0)]
    fig = _figure(7.5, 3.2)
    ax = fig.add_subplot()
    if len(finite):
        low, high = math.log10(finite.min()), math.log10(finite.max())
        bins = np.logspace(low - 0.05, high + 0.05, 25)
        ax.hist(finite, bins=bins, color="#4c72b0", edgecolor="white")
        ax.set_xscale("log")
    ax.set_xlabel("median per-step half-life (steps, log scale)")
    ax.set_ylabel("units")
    never = int(np.isinf(life).sum())
    ax.set_title(
        f"Memory half-lives of {len(life)} units over {gates.steps} steps"
        f"{f'; {never} never forget' if never else ''}",
        fontsize=10,
    )
    ax.grid(alpha=0.3)
    return fig


def _bars(ax, values: np.ndarray) -> None:
    t = np.arange(1, len(values) + 1)
    colours = [POSITIVE if v >= 0 else NEGATIVE for v in values]
    ax.bar(t, values, color=colours, width=0.8)
    ax.axhline(0, color="black", linewidth=0.6)
    ax.grid(alpha=0.3, axis="y")


def attribution_bars(
    window: np.ndarray,
    result: Attribution,
    *,
    scale: float = 1.0,
    offset: float = 0.0,
    labels: Sequence[str] | None = None,
    target: str = "target",
) -> Figure:
    """``window (W,)`` the target's values read; bars: ``result.per_step * scale`` (the
    target's units); forecasts in the title: ``output * scale + offset``."""
    fig = _figure(9.0, 5.0)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[1, 1.4])
    t = np.arange(1, len(window) + 1)
    top.plot(t, window, color="black", marker="o", markersize=3, linewidth=1.2)
    top.set_ylabel(target, fontsize=8)
    top.grid(alpha=0.3)
    _bars(bottom, result.per_step.numpy() * scale)
    bottom.set_ylabel(f"attribution ({target} units)", fontsize=8)
    bottom.set_xlabel("step of the window read")
    _ticks(bottom, labels, len(window))
    fig.suptitle(
        f"Integrated gradients of the forecast {result.output * scale + offset:.6g} (from a "
        f"flat window: {result.baseline_output * scale + offset:.6g})\ncompleteness: sum "
        f"{result.total * scale:+.6g} vs difference {result.delta * scale:+.6g}, relative "
        f"error {result.relative_error:.2e} ({result.steps} intervals)",
        fontsize=10,
    )
    return fig


def forgetting_bars(
    result: ForgetAttribution, forget_gates: np.ndarray, labels: Sequence[str] | None = None
) -> Figure:
    """Bars: integrated gradients of the forget gate's pre-activation over the steps read
    (negative pushed it shut); above them ``forget_gates (T,)``, the unit's gate."""
    read = len(forget_gates)
    fig = _figure(9.0, 4.6)
    top, bottom = fig.subplots(2, 1, sharex=True)
    t = np.arange(1, read + 1)
    top.plot(t, forget_gates, color="black", linewidth=1.0)
    top.plot([result.step + 1], [result.forget_gate], marker="v", color=NEGATIVE, markersize=8)
    top.set_ylim(-0.05, 1.05)
    top.set_ylabel(f"forget gate, unit {result.unit}", fontsize=8)
    top.grid(alpha=0.3)
    _bars(bottom, result.per_step.numpy()[:read])
    bottom.set_ylabel("attribution to the gate's\npre-activation", fontsize=8)
    bottom.set_xlabel("step")
    _ticks(bottom, labels if labels and read <= 40 else None, read)
    check = result.integrated
    fig.suptitle(
        f"Why did unit {result.unit} forget at step {result.step + 1} (f = "
        f"{result.forget_gate:.3f})? Blue bars pushed the gate shut.\ncompleteness: sum "
        f"{check.total:+.6g} vs difference {check.delta:+.6g}, relative error "
        f"{check.relative_error:.2e}",
        fontsize=10,
    )
    return fig
