"""``clearlstm explain``: the seed's walkthrough of one LSTM unit, computed by the library.

Every number comes from a traced call of :class:`clearlstm.LSTM` (float64); this module only
reads the trace, puts the seed's words beside the numbers and renders them as a terminal
table or JSON. A unit with peepholes (``LSTM(1, 1, peephole=True)``, Gers & Schmidhuber 2000)
is explained too: each gate's x-axis value then holds one more term, ``p_i * C`` (input gate)
and ``p_f * C`` (forget gate) on the old long-term memory, ``p_o * C'`` (output gate) on the
new one, and :class:`PeepholeStep` shows each term with its numbers.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch
from rich.console import Console
from rich.table import Table

from clearlstm.nn.lstm import LSTM
from clearlstm.nn.variants import DEFAULTS
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


class PeepholeTerm(NamedTuple):
    """One gate's peephole term ``weight * memory = value``, inside its x-axis value."""

    name: str  # p_i, p_f or p_o
    weight: float
    memory_name: str  # C (the old long-term memory) or C' (the new one)
    memory: float
    value: float
    x_axis: float  # the gate's whole x-axis value

    @property
    def formula(self) -> str:
        return f"{self.name} * {self.memory_name}"


@dataclass(frozen=True)
class PeepholeStep(StepExplanation):
    """A step of a unit with peepholes: the three terms inside the gates' x-axis values."""

    peephole_weights: tuple[float, float, float]  # p_i, p_f, p_o
    input_peephole: float  # p_i * c_prev, inside input_x_axis
    forget_peephole: float  # p_f * c_prev, inside forget_x_axis
    output_peephole: float  # p_o * c (the new memory), inside output_x_axis

    def peephole_terms(self) -> dict[str, PeepholeTerm]:
        """Gate (forget, input, output) -> its peephole term."""
        p_i, p_f, p_o = self.peephole_weights
        return {
            "forget": PeepholeTerm("p_f", p_f, "C", self.c_prev, self.forget_peephole,
                                   self.forget_x_axis),
            "input": PeepholeTerm("p_i", p_i, "C", self.c_prev, self.input_peephole,
                                  self.input_x_axis),
            "output": PeepholeTerm("p_o", p_o, "C'", self.c, self.output_peephole,
                                   self.output_x_axis),
        }  # fmt: skip

    def sentences(self) -> dict[str, str]:
        words = super().sentences()
        for gate, t in self.peephole_terms().items():
            words[gate] += (
                f" Its peephole reads the {'new ' if gate == 'output' else ''}long-term memory: "
                f"{t.formula} = {t.weight:.4g} * {t.memory:.4g} = {t.value:.4g} is part of its "
                f"x-axis value {t.x_axis:.4g}."
            )
        return words


@dataclass(frozen=True)
class Walkthrough:
    """A whole explained run: the inputs, every step, and how long the unit remembers."""

    inputs: list[float]
    c0: float
    h0: float
    steps: list[StepExplanation]
    half_life: float  # steps until the unit's typical retention halves its memory (Trace)
    peephole: tuple[float, float, float] | None = None  # p_i, p_f, p_o of a peephole unit

    @property
    def series(self) -> dict[str, str] | None:
        """The series' own rounded numbers, where the inputs are the series' single step."""
        if self.peephole is not None:
            return None  # the series' unit has no peepholes
        one_step = len(self.inputs) == 1 and {"x": self.inputs[0], "c": self.c0, "h": self.h0}
        return SERIES_ONE_STEP if one_step == ONE_STEP_INPUT else None

    @property
    def note(self) -> str:
        """Why the series' numbers differ from the exact ones, where this is its example."""
        if self.peephole is not None:
            return PEEPHOLE_NOTE
        if self.series:
            return SERIES_ROUNDING_NOTE
        if self.c0 == 0 and self.h0 == 0 and self.inputs in COMPANIES.values():
            return SERIES_COMPANIES_NOTE
        return ""


PEEPHOLE_NOTE = (
    "Peepholes are not in the series: the numbers it quotes are those of the plain unit "
    "(clearlstm explain without --peephole)."
)


def percent(fraction: float) -> str:
    """``0.997401 -> '99.7%'``; tiny fractions keep two significant digits."""
    value = 100 * fraction
    if 0.1 <= value <= 99.9 or value in (0.0, 100.0):
        return f"{value:.1f}%"
    if value > 99.9:
        return f"{value:.3f}%"
    return f"{value:.2g}%"


def cell_explained(lstm: LSTM) -> bool:
    """Whether the walkthrough's arithmetic is ``lstm``'s: the plain cell or one with peepholes
    (the initial biases' arguments change no arithmetic; other variants are not explained)."""
    config = lstm.variant_config()
    shown = ("forget_bias", "init", "chrono_max_steps", "peephole")
    return all(config[k] == DEFAULTS[k] for k in DEFAULTS if k not in shown)


def explain_sequence(
    inputs: list[float], c0: float, h0: float, lstm: LSTM | None = None
) -> Walkthrough:
    """Run a one-unit LSTM (StatQuest's by default; plain or with peepholes) over ``inputs``
    and explain each step."""
    lstm = statquest_lstm() if lstm is None else lstm
    if lstm.input_size != 1 or lstm.hidden_size != 1 or lstm.num_layers != 1:
        raise ValueError(
            "explain: the walkthrough explains a single unit with one input "
            f"(LSTM(1, 1)); got {lstm}"
        )
    if not cell_explained(lstm):
        raise ValueError(
            f"explain: the walkthrough explains the plain unit or one with peepholes; got {lstm}"
        )
    peephole = None
    if lstm.peephole:
        peephole = tuple(float(v) for v in lstm.weight_peephole_l0.detach()[:, 0])  # (3,)
    dtype = lstm.weight_ih_l0.dtype
    x = torch.tensor(inputs, dtype=dtype).reshape(-1, 1, 1)  # (T, B=1, I=1)
    x = x.transpose(0, 1) if lstm.batch_first else x  # a trained model's LSTM: (B, T, I)
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
        numbers = dict(
            x=x_t, c_prev=c_prev, h_prev=h_prev,
            forget_x_axis=z_f, forget_gate=f, retained=c_prev * f,
            potential_x_axis=z_g, potential_memory=g,
            input_x_axis=z_i, input_gate=i, added=i * g,
            c=c, tanh_c=math.tanh(c), output_x_axis=z_o, output_gate=o, h=h,
        )  # fmt: skip
        if peephole is None:
            steps.append(StepExplanation(**numbers))
        else:
            p_i, p_f, p_o = peephole
            steps.append(PeepholeStep(
                **numbers, peephole_weights=peephole, input_peephole=p_i * c_prev,
                forget_peephole=p_f * c_prev, output_peephole=p_o * c,
            ))  # fmt: skip
        c_prev, h_prev = c, h
    half_life = float(trace.half_life()[0])
    return Walkthrough(list(inputs), c0, h0, steps, half_life, peephole)


def to_json(walk: Walkthrough) -> str:
    """Full-precision JSON of the explanation, for machines."""
    weights: dict[str, list] = STATQUEST_WEIGHTS
    if walk.peephole is not None:  # rows p_i, p_f, p_o
        weights = weights | {"weight_peephole_l0": [[p] for p in walk.peephole]}
    document = {
        "unit": "StatQuest" + (" with peepholes" if walk.peephole is not None else ""),
        "weights": weights,
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


# A peephole unit's extra quantities, each listed before the x-axis value that holds it.
_PEEPHOLE_QUANTITIES = {
    "forget_x_axis": ("forget_peephole", "forget gate peephole term p_f * C"),
    "input_x_axis": ("input_peephole", "input gate peephole term p_i * C"),
    "output_x_axis": ("output_peephole", "output gate peephole term p_o * C'"),
}


def _peephole_table(step: PeepholeStep) -> Table:
    table = Table(title="Peepholes: x-axis value = w_h * h + w_x * x + b + peephole term")
    for column in ("gate", "w_h * h + w_x * x + b", "peephole term", "x-axis value"):
        table.add_column(column, justify="left" if column == "gate" else "right")
    for gate, t in step.peephole_terms().items():
        shown = f"{t.formula} = {t.weight:g} * {t.memory:.6f} = {t.value:.6f}"
        table.add_row(f"{gate} gate", f"{t.x_axis - t.value:.6f}", shown, f"{t.x_axis:.6f}")
    return table


def _exact_table(step: StepExplanation, series: dict[str, str] | None) -> Table:
    table = Table(title="Exact values" + (" beside the series' rounded ones" if series else ""))
    table.add_column("quantity")
    table.add_column("exact", justify="right")
    if series:
        table.add_column("the series writes", justify="right")
    quantities = _QUANTITIES
    if isinstance(step, PeepholeStep):
        quantities = []
        for key, label in _QUANTITIES:
            if key in _PEEPHOLE_QUANTITIES:
                quantities.append(_PEEPHOLE_QUANTITIES[key])
            quantities.append((key, label))
    for key, label in quantities:
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
        if isinstance(steps[0], PeepholeStep):
            console.print(_peephole_table(steps[0]))
        console.print(_exact_table(steps[0], walk.series))
    else:
        console.print(_sequence_table(steps))
        for t, s in enumerate(steps, start=1):
            console.print(f"step {t} (x = {s.x:g}): {s.sentences()['forget']}")
            if isinstance(s, PeepholeStep):
                terms = [f"{p.formula} = {p.value:.6f}" for p in s.peephole_terms().values()]
                console.print("  peephole terms: " + ", ".join(terms))
        console.print(f"Final output (prediction): {steps[-1].h:.6f}")
        console.print(
            f"Memory half-life on this sequence: {walk.half_life:.2f} steps "
            "(at its typical forget gate, half the long-term memory is left after that many steps)."
        )
    if walk.note:
        console.print(f"Note: {walk.note}")
