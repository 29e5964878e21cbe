"""The seed's single-unit diagram with one step's numbers written on it.

Three stages read left to right: forget gate, input gate with the potential memory, output.
A unit with peepholes shows each gate's extra term (``p_f C``, ``p_i C``, ``p_o C'``) in its box.
:func:`unit_diagram` is re-exported by :mod:`clearlstm.viz.figures`.
"""

from __future__ import annotations

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Circle, FancyBboxPatch, Rectangle

from clearlstm.teach.explain import PeepholeStep, StepExplanation, percent
from clearlstm.teach.unit import GateWeights, UnitWeights

# Layout of the unit diagram, in data coordinates of a 20 × 12 canvas.
_LONG_Y, _SHORT_Y, _X_Y, _BOX_Y = 9.4, 1.9, 0.8, 4.6
_BOX_W, _BOX_H = 3.5, 2.3
_STAGE_FILL = {"forget": "#fde8e8", "input": "#e6f0fb", "output": "#e9f6e6"}


def _weighted_sum(g: GateWeights, peephole: tuple[float, str] | None = None) -> str:
    def number(value: float) -> str:  # the series' two decimals, unless that hides it
        return f"{value:.2f}" if value == 0 or 0.01 <= abs(value) < 1e4 else f"{value:.3g}"

    def term(value: float, name: str) -> str:
        return f" {'−' if value < 0 else '+'} {number(abs(value))}{name}"

    first = ("−" if g.w_h < 0 else "") + number(abs(g.w_h))
    extra = term(*peephole) if peephole is not None else ""  # (p, the memory it reads)
    return f"z = {first}h" + term(g.w_x, "x") + term(g.b, "") + extra


def _box(
    ax,
    x: float,
    label: str,
    gate: GateWeights,
    z: float,
    value: float,
    name: str,
    peephole: tuple[float, str] | None = None,
):
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
    total = f"{_weighted_sum(gate, peephole)}\n  = {z:.4g}  (x-axis value)"
    text = f"{label}\n{total}\n{name} = {value:.4g}"
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


def unit_diagram(
    step: StepExplanation, weights: UnitWeights, *, title: str | None = None
) -> Figure:
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
    peep: dict = {}  # gate -> (p, the memory it reads)
    if isinstance(step, PeepholeStep):
        peep = {gate: (t.weight, t.memory_name) for gate, t in step.peephole_terms().items()}
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
    _box(
        ax,
        fx,
        "forget gate  σ",
        weights.forget,
        step.forget_x_axis,
        step.forget_gate,
        "f",
        peep.get("forget"),
    )
    _arrow(ax, (fx, _BOX_Y + _BOX_H / 2 + 0.1), (fx, _LONG_Y - 0.45))
    # Stage 2: the input gate admits part of the potential memory.
    _box(
        ax,
        ix,
        "input gate  σ",
        weights.input,
        step.input_x_axis,
        step.input_gate,
        "i",
        peep.get("input"),
    )
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
    _box(
        ax,
        ox,
        "output gate  σ",
        weights.output,
        step.output_x_axis,
        step.output_gate,
        "o",
        peep.get("output"),
    )
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
