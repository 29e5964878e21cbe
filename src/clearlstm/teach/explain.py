"""``clearlstm explain``: the seed's walkthrough of one LSTM unit, computed by the library.

Every number comes from a traced call of :class:`clearlstm.LSTM` (float64); this module only
reads the trace, puts the seed's words beside the numbers and renders them as a terminal
table or JSON.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass

import torch
from rich.console import Console
from rich.table import Table

from clearlstm.nn.lstm import LSTM
from clearlstm.teach.seed import (
    COMPANIES,
    ONE_STEP_INPUT,
    SERIES_COMPANIES_NOTE,
    SERIES_ONE_STEP,
    SERIES_ROUNDING_NOTE,
    STATQUEST_WEIGHTS,
    statquest_lstm,
)


@dataclass(frozen=True)
class StepExplanation:
    """One step of a one-unit LSTM, every stage's x-axis value and activation."""

    x: float
    c_prev: float  # long-term memory before the step
    h_prev: float  # short-term memory before the step
    forget_x_axis: float
    forget_gate: float  # fraction of the long-term memory retained
    retained: float  # c_prev * forget_gate
    potential_x_axis: float
    potential_memory: float  # tanh: the potential long-term memory
    input_x_axis: float
    input_gate: float  # fraction of the potential memory added
    added: float  # input_gate * potential_memory
    c: float  # new long-term memory
    tanh_c: float  # potential short-term memory
    output_x_axis: float
    output_gate: float  # fraction of the potential short-term memory kept
    h: float  # new short-term memory, the output

    def sentences(self) -> dict[str, str]:
        """The seed's plain words for each stage."""
        forget = (
            f"The forget gate keeps {percent(self.forget_gate)} of the long-term memory: "
            f"{self.c_prev:.4g} becomes {self.retained:.4g}."
        )
        if self.forget_gate < 0.01:
            forget += " The long-term memory is essentially forgotten."
        return {
            "forget": forget,
            "potential": (
                f"The short-term memory and the input make a potential long-term memory of "
                f"{self.potential_memory:.4g}."
            ),
            "input": (
                f"The input gate adds {percent(self.input_gate)} of it: "
                f"{self.added:.4g} joins the long-term memory."
            ),
            "long_term": (
                f"New long-term memory: {self.retained:.4g} + {self.added:.4g} = {self.c:.4g}."
            ),
            "output": (
                f"The output gate passes {percent(self.output_gate)} of tanh(C') = "
                f"{self.tanh_c:.4g}: the new short-term memory (the output) is {self.h:.4g}."
            ),
        }


@dataclass(frozen=True)
class Walkthrough:
    """A whole explained run: the inputs, every step, and how long the unit remembers."""

    inputs: list[float]
    c0: float
    h0: float
    steps: list[StepExplanation]
    half_life: float  # steps until the unit's typical retention halves its memory (Trace)

    @property
    def series(self) -> dict[str, str] | None:
        """The series' own rounded numbers, where the inputs are the series' single step."""
        one_step = len(self.inputs) == 1 and {"x": self.inputs[0], "c": self.c0, "h": self.h0}
        return SERIES_ONE_STEP if one_step == ONE_STEP_INPUT else None

    @property
    def note(self) -> str:
        """Why the series' numbers differ from the exact ones, where this is its example."""
        if self.series:
            return SERIES_ROUNDING_NOTE
        if self.c0 == 0 and self.h0 == 0 and self.inputs in COMPANIES.values():
            return SERIES_COMPANIES_NOTE
        return ""


def percent(fraction: float) -> str:
    """``0.997401 -> '99.7%'``; tiny fractions keep two significant digits."""
    value = 100 * fraction
    if 0.1 <= value <= 99.9 or value in (0.0, 100.0):
        return f"{value:.1f}%"
    if value > 99.9:
        return f"{value:.3f}%"
    return f"{value:.2g}%"


def explain_sequence(
    inputs: list[float], c0: float, h0: float, lstm: LSTM | None = None
) -> Walkthrough:
    """Run a one-unit LSTM (StatQuest's by default) over ``inputs`` and explain each step."""
    lstm = statquest_lstm() if lstm is None else lstm
    if lstm.input_size != 1 or lstm.hidden_size != 1 or lstm.num_layers != 1:
        raise ValueError(
            "explain: the walkthrough explains a single unit with one input "
            f"(LSTM(1, 1)); got {lstm}"
        )
    dtype = lstm.weight_ih_l0.dtype
    x = torch.tensor(inputs, dtype=dtype).reshape(-1, 1, 1)  # (T, B=1, I=1)
    hx = (torch.tensor([[[h0]]], dtype=dtype), torch.tensor([[[c0]]], dtype=dtype))
    with torch.no_grad():
        _, _, trace = lstm(x, hx, trace=True)
    rec = trace[0, 0]
    steps, c_prev, h_prev = [], c0, h0
    for t, x_t in enumerate(inputs):
        z_i, z_f, z_g, z_o = (float(v) for v in rec.pre_activation[t, 0, :, 0])
        f, i = float(rec.forget_gate[t, 0, 0]), float(rec.input_gate[t, 0, 0])
        g, o = float(rec.potential_memory[t, 0, 0]), float(rec.output_gate[t, 0, 0])
        c, h = float(rec.c[t, 0, 0]), float(rec.h[t, 0, 0])
        step = StepExplanation(
            x=x_t, c_prev=c_prev, h_prev=h_prev,
            forget_x_axis=z_f, forget_gate=f, retained=c_prev * f,
            potential_x_axis=z_g, potential_memory=g,
            input_x_axis=z_i, input_gate=i, added=i * g,
            c=c, tanh_c=math.tanh(c), output_x_axis=z_o, output_gate=o, h=h,
        )  # fmt: skip
        steps.append(step)
        c_prev, h_prev = c, h
    return Walkthrough(list(inputs), c0, h0, steps, float(trace.half_life()[0]))


def to_json(walk: Walkthrough) -> str:
    """Full-precision JSON of the explanation, for machines."""
    document = {
        "unit": "StatQuest",
        "weights": STATQUEST_WEIGHTS,
        "initial": {"long_term_memory": walk.c0, "short_term_memory": walk.h0},
        "steps": [asdict(s) | {"sentences": s.sentences()} for s in walk.steps],
        "half_life_steps": walk.half_life if math.isfinite(walk.half_life) else None,
        "series": walk.series,
        "note": walk.note,
    }
    return json.dumps(document, indent=2, allow_nan=False)  # strict JSON, as promised


def _stage_table(step: StepExplanation) -> Table:
    words = step.sentences()
    table = Table(title=f"x = {step.x:g}, C = {step.c_prev:g}, h = {step.h_prev:g}")
    for column in ("stage", "x-axis value", "activation", "in plain words"):
        table.add_column(column, justify="right" if column[0] in "xa" else "left")
    table.add_row(
        "forget gate", f"{step.forget_x_axis:.6f}", f"{step.forget_gate:.6f}", words["forget"]
    )
    table.add_row(
        "potential memory",
        f"{step.potential_x_axis:.6f}",
        f"{step.potential_memory:.6f}",
        words["potential"],
    )
    table.add_row(
        "input gate", f"{step.input_x_axis:.6f}", f"{step.input_gate:.6f}", words["input"]
    )
    table.add_row("long-term memory C'", "", f"{step.c:.6f}", words["long_term"])
    table.add_row(
        "output gate", f"{step.output_x_axis:.6f}", f"{step.output_gate:.6f}", words["output"]
    )
    return table  # fmt: skip


_QUANTITIES = [
    ("forget_x_axis", "forget gate x-axis value"),
    ("forget_gate", "forget gate (sigmoid)"),
    ("retained", "C * f"),
    ("potential_x_axis", "potential memory x-axis value"),
    ("potential_memory", "potential memory (tanh)"),
    ("input_x_axis", "input gate x-axis value"),
    ("input_gate", "input gate (sigmoid)"),
    ("added", "amount added to C"),
    ("c", "new long-term memory C'"),
    ("tanh_c", "tanh(C') (potential short-term memory)"),
    ("output_x_axis", "output gate x-axis value"),
    ("output_gate", "output gate (sigmoid)"),
    ("h", "new short-term memory h' = output"),
]


def _exact_table(step: StepExplanation, series: dict[str, str] | None) -> Table:
    table = Table(title="Exact values" + (" beside the series' rounded ones" if series else ""))
    table.add_column("quantity")
    table.add_column("exact", justify="right")
    if series:
        table.add_column("the series writes", justify="right")
    for key, label in _QUANTITIES:
        row = [label, f"{getattr(step, key):.6f}"]
        table.add_row(*row, *([series.get(key, "(not stated)")] if series else []))
    return table


def _sequence_table(steps: list[StepExplanation]) -> Table:
    table = Table(title="Step by step (C and h carried from one step to the next)")
    for column in ("step", "x", "forget", "input", "potential", "output", "C", "h", "retained"):
        table.add_column(column, justify="right")
    for t, s in enumerate(steps, start=1):
        cells = (s.x, s.forget_gate, s.input_gate, s.potential_memory, s.output_gate, s.c, s.h)
        table.add_row(str(t), *(f"{v:.6f}" for v in cells), percent(s.forget_gate))
    return table


def render(walk: Walkthrough, console: Console) -> None:
    """Print the explanation as rich tables and sentences."""
    steps = walk.steps
    if len(steps) == 1:
        console.print(_stage_table(steps[0]))
        console.print(_exact_table(steps[0], walk.series))
    else:
        console.print(_sequence_table(steps))
        for t, s in enumerate(steps, start=1):
            console.print(f"step {t} (x = {s.x:g}): {s.sentences()['forget']}")
        console.print(f"Final output (prediction): {steps[-1].h:.6f}")
        console.print(
            f"Memory half-life on this sequence: {walk.half_life:.2f} steps "
            "(at its typical forget gate, half the long-term memory is left after that many steps)."
        )
    if walk.note:
        console.print(f"Note: {walk.note}")
