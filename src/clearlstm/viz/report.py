"""``clearlstm report``: one self-contained HTML file about what an LSTM keeps and forgets.

The file holds the explanation in words, the figures (inline SVG, or PNG in ``data:`` URLs),
the retention summary and the exact numbers of the trace in tables. It loads nothing from
the network: no scripts, fonts or stylesheets from elsewhere. Every number is read from the
:class:`~clearlstm.core.trace.Trace` of one traced call; table cells show six decimals and carry
the full-precision value in a ``data-v`` attribute.
"""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np

from clearlstm import __version__
from clearlstm.core.trace import Trace
from clearlstm.teach.explain import Walkthrough, explain_sequence, percent
from clearlstm.viz import figures
from clearlstm.viz.analysis_report import analysis_sections
from clearlstm.viz.cell_analysis import CellAnalysis
from clearlstm.viz.html import STYLE
from clearlstm.viz.html import Figures as _Figures
from clearlstm.viz.html import cell as _num
from clearlstm.viz.html import escape as _e
from clearlstm.viz.html import table as _table
from clearlstm.viz.subject import Subject

MAX_TABLE_UNITS = 8  # exact-number tables for the longest-memory units only, past this
MAX_TABLE_ROWS = 500
MAX_DIAGRAMS = 6  # unit diagrams for every step of short sequences; first and last otherwise


def _directions(trace: Trace) -> list[tuple[int, int, str]]:
    names = ["", " (reverse direction)"]
    return [
        (layer, d, f"layer {layer}{names[d] if trace.num_directions == 2 else ''}")
        for layer in range(trace.num_layers)
        for d in range(trace.num_directions)
    ]


def _walkthrough_section(subject: Subject, walk: Walkthrough) -> str:
    parts = []
    for t, step in enumerate(walk.steps, start=1):
        words = " ".join(step.sentences().values())
        parts.append(
            f"<p class='step'><strong>Step {t}, x = {step.x:.6g}.</strong> {_e(words)}</p>"
        )
    final = walk.steps[-1]
    parts.append(
        f"<p>Final output (the prediction): <strong>{final.h:.6f}</strong>. Memory half-life "
        f"on this sequence: <strong>{walk.half_life:.2f} steps</strong> (at its typical forget "
        "gate, half the long-term memory is left after that many steps).</p>"
    )
    if walk.note:
        parts.append(f"<p class='note'>{_e(walk.note)}</p>")
    return "".join(parts)


def _summary_sentences(trace: Trace) -> str:
    """Plain words about each layer-direction's memory, from the trace alone."""
    items = []
    for layer, direction, label in _directions(trace):
        summary = trace.memory_summary(layer, direction)
        longest, shortest = summary[0], summary[-1]
        f = trace[layer, direction].forget_gate[:, 0, :].double()  # (T, H)
        mean_f = f.nanmean(dim=1)  # (T,) how open the forget gates are at each step
        closed = int(mean_f.argmin())
        half_lives = np.array([m.half_life for m in summary])
        items.append(
            f"<li><strong>{_e(label.capitalize())}</strong> ({len(summary)} units): unit "
            f"{longest.unit} remembers longest, keeping {percent(longest.mean_forget_gate)} of "
            f"its long-term memory per step (half-life {longest.half_life:.3g} steps); unit "
            f"{shortest.unit} forgets fastest ({percent(shortest.mean_forget_gate)} per step, "
            f"half-life {shortest.half_life:.3g}). The median half-life is "
            f"{float(np.median(half_lives)):.3g} steps. The forget gates close most at step "
            f"{closed + 1}, where they keep {percent(float(mean_f[closed]))} on average.</li>"
        )
    return f"<ul class='sentences'>{''.join(items)}</ul>"


def _retention_section(trace: Trace) -> str:
    parts = []
    for layer, direction, label in _directions(trace):
        summary = trace.memory_summary(layer, direction)
        rows = [
            [f"<td>{m.unit}</td>", _num(m.mean_forget_gate), _num(m.half_life)] for m in summary
        ]
        parts.append(f"<h3>{_e(label.capitalize())}: units, longest memory first</h3>")
        parts.append(
            _table(
                ["unit", "typical forget gate (geometric mean)", "half-life (steps)"],
                rows,
                table_id=f"memory-l{layer}-d{direction}",
            )
        )
        kept = trace.retention(0, layer, direction)[:, 0, :].numpy()  # (T, H)
        units = [m.unit for m in summary[:MAX_TABLE_UNITS]]
        rows = [
            [f"<td>{t + 1}</td>", *(_num(kept[t, u]) for u in units)]
            for t in range(min(len(kept), MAX_TABLE_ROWS))
        ]
        parts.append(
            "<p>Fraction of the long-term memory held after step 1 that is still there "
            "after each step (the forget gates multiplied together):</p>"
        )
        parts.append(
            _table(
                ["step", *(f"unit {u}" for u in units)],
                rows,
                table_id=f"retention-l{layer}-d{direction}",
            )
        )
    return "".join(parts)


def _numbers_section(subject: Subject, trace: Trace, walk: Walkthrough | None) -> str:
    parts = []
    steps = min(trace.steps, MAX_TABLE_ROWS)
    if steps < trace.steps:
        parts.append(f"<p class='note'>Tables show the first {steps} of {trace.steps} steps.</p>")
    for layer, direction, label in _directions(trace):
        rec = trace[layer, direction]
        hidden = rec.forget_gate.shape[2]
        units = [m.unit for m in trace.memory_summary(layer, direction)][:MAX_TABLE_UNITS]
        if hidden > len(units):
            parts.append(
                f"<p>{_e(label.capitalize())}: the {len(units)} longest-memory units "
                f"of {hidden}.</p>"
            )
        inputs = subject.shown if layer == 0 and subject.shown.shape[1] <= 4 else None
        input_headers = [f"input {c}" for c in subject.columns] if inputs is not None else []
        same_h = rec.h.shape[2] == hidden  # with a projection h has other "units"
        for u in units:
            headers = [
                "step",
                *input_headers,
                "z input",
                "z forget",
                "z potential",
                "z output",
                "forget gate f",
                "input gate i",
                "potential memory g",
                "output gate o",
                "long-term memory c",
                *(["short-term memory h"] if same_h else []),
            ]
            rows = []
            for t in range(steps):
                z = rec.pre_activation[t, 0, :, u]
                cells = [f"<td>{t + 1}</td>"]
                if inputs is not None:
                    cells += [_num(v) for v in inputs[t]]
                cells += [_num(v) for v in z]
                cells += [
                    _num(getattr(rec, name)[t, 0, u])
                    for name in (
                        "forget_gate",
                        "input_gate",
                        "potential_memory",
                        "output_gate",
                        "c",
                    )
                ]
                if same_h:
                    cells.append(_num(rec.h[t, 0, u]))
                rows.append(cells)
            parts.append(f"<h3>{_e(label.capitalize())}, unit {u}</h3>")
            parts.append(_table(headers, rows, table_id=f"numbers-l{layer}-d{direction}-u{u}"))
    if walk is not None:
        headers = [
            "step",
            "x",
            "C before",
            "h before",
            "C·f retained",
            "i·g added",
            "new C",
            "tanh(C')",
            "new h (output)",
        ]
        rows = [
            [
                f"<td>{t}</td>",
                *(
                    _num(v)
                    for v in (s.x, s.c_prev, s.h_prev, s.retained, s.added, s.c, s.tanh_c, s.h)
                ),
            ]
            for t, s in enumerate(walk.steps, start=1)
        ]
        parts.append("<h3>The walkthrough's arithmetic</h3>")
        parts.append(_table(headers, rows, table_id="walkthrough"))
    return "".join(parts)


def _figures_section(
    subject: Subject, trace: Trace, walk: Walkthrough | None, embed: _Figures
) -> str:
    parts = []
    if walk is not None and subject.weights is not None:
        picks = list(range(len(walk.steps)))
        if len(picks) > MAX_DIAGRAMS:
            picks = [0, len(picks) - 1]
        diagrams = []
        for t in picks:
            fig = figures.unit_diagram(
                walk.steps[t], subject.weights, title=f"Step {t + 1} of the unit"
            )
            diagrams.append(embed.embed(fig, f"The unit at step {t + 1}, with its numbers."))
        parts.extend(diagrams)
    for layer, direction, label in _directions(trace):
        inputs = subject.shown if layer == 0 else None
        fig = figures.gate_heatmaps(
            trace, inputs, layer=layer, direction=direction, step_labels=subject.step_labels
        )
        parts.append(embed.embed(fig, f"Gates and memories of {label} at every step."))
        fig = figures.retention_curves(trace, 0, layer=layer, direction=direction)
        parts.append(embed.embed(fig, f"Retention of step 1's memory in {label}."))
    return "".join(parts)


def _glance(trace: Trace, walk: Walkthrough | None) -> str:
    """The few numbers a reader wants first."""
    longest = trace.memory_summary()[0]  # last layer, forward direction
    items = [
        ("steps", str(trace.steps)),
        (f"longest memory half-life (unit {longest.unit})", f"{longest.half_life:.3g} steps"),
        ("its forget gate keeps, per step", percent(longest.mean_forget_gate)),
    ]
    if walk is not None:
        items.append(("final output h (the prediction)", f"{walk.steps[-1].h:.6f}"))
    cells = "".join(f"<div>{_e(label)}<strong>{_e(value)}</strong></div>" for label, value in items)
    return f"<div class='glance'>{cells}</div>"


def _describe_sequence(subject: Subject) -> str:
    if subject.text is not None:
        shown = subject.text if len(subject.text) <= 200 else subject.text[:200] + "…"
        return f"Text ({subject.steps} characters): {shown!r}"
    columns = subject.columns if len(subject.columns) <= 4 else [*subject.columns[:4], "…"]
    values = ", ".join(f"{v:.6g}" for v in subject.shown[:12, 0])
    if subject.steps > 12 or subject.shown.shape[1] > 1:
        values += f" … ({subject.steps} steps × {subject.shown.shape[1]} column(s))"
    return f"Sequence ({', '.join(columns)}): {values}"


def build_report(
    subject: Subject, *, image_format: str = "svg", analysis: CellAnalysis | None = None
) -> str:
    """The whole report as one HTML document; with ``analysis`` (a saved model's), its
    ranked cells, gate saturation and attributions after the figures."""
    embed = _Figures(image_format)
    trace = subject.run()
    walk = None
    if subject.one_unit:
        values = subject.inputs[:, 0, 0].tolist()  # what the unit reads (scaled for a model)
        walk = explain_sequence(values, subject.c0, subject.h0, subject.lstm)
    lstm = subject.lstm
    shape = (
        f"{lstm.num_layers} layer(s) of {lstm.hidden_size} unit(s), input size "
        f"{lstm.input_size}" + (", bidirectional" if lstm.bidirectional else "")
    )
    sequence = _describe_sequence(subject)
    words = _walkthrough_section(subject, walk) if walk else _summary_sentences(trace)
    notes = "".join(f"<p class='note'>{_e(n)}</p>" for n in subject.notes)
    created = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>clearlstm report: {_e(subject.name)}</title><style>{STYLE}</style></head>
<body>
<h1>What {_e(subject.name)} keeps and forgets</h1>
<p>{_e(shape)}. {_e(sequence)}.
Starting memories: C = {subject.c0:g}, h = {subject.h0:g}.</p>
{_glance(trace, walk)}
{notes}
<h2 id="words">In words</h2>
{words}
<h2 id="figures">Figures</h2>
{_figures_section(subject, trace, walk, embed)}
{analysis_sections(analysis, embed) if analysis is not None else ""}
<h2 id="retention">Retention summary</h2>
{_retention_section(trace)}
<h2 id="numbers">Exact numbers</h2>
{_numbers_section(subject, trace, walk)}
<footer>Made by clearlstm {_e(__version__)} on {created}. Every number comes from one traced
call of the LSTM; each table cell carries its full-precision value in a data-v attribute.</footer>
</body></html>
"""
