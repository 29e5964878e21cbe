"""The report's "What did it learn to remember?" part: ranked cells against chance, the top
cells over the text or the series, the gate saturation table, the forecast's attribution and
"why did it forget here?", from one :class:`~clearlstm.viz.cell_analysis.CellAnalysis`.

Every number cell carries its full-precision value in ``data-v``; the ranked-cells rows name
their feature, quantity and unit in ``data-feature``, ``data-quantity`` and ``data-unit``.
"""

from __future__ import annotations

import math

import numpy as np

from clearlstm.analysis import UnitScore
from clearlstm.viz import analysis_figures
from clearlstm.viz.cell_analysis import CellAnalysis
from clearlstm.viz.html import Figures, cell, escape, table

TOP_PER_FEATURE = 3  # ranked units listed per feature
MAX_SHOWN_CELLS = 4  # features whose best unit is drawn over the text or series
MAX_SHOWN_CHARS = 600


def _text_cell(text: str, css: str = "text") -> str:
    return f'<td class="{css}">{escape(text)}</td>'


def _name(score: UnitScore) -> str:
    return f"{score.quantity}{score.unit}"


def shown_features(analysis: CellAnalysis) -> list[UnitScore]:
    """The best unit of the features drawn: those beating chance first, then by |r|."""
    verdicts = analysis.verdicts()
    best = [units[0] for units in analysis.top_units.values()]
    best.sort(key=lambda s: (verdicts[s.feature] != "beats chance", -abs(s.r)))
    return best[:MAX_SHOWN_CELLS]


def _verdict_words(analysis: CellAnalysis) -> str:
    verdicts = analysis.verdicts()
    items = []
    for feature, units in analysis.top_units.items():
        s, verdict = units[0], verdicts[feature]
        css = "beats" if verdict == "beats chance" else "chance"
        items.append(
            f"<li><strong>{escape(feature)}</strong>: best unit {escape(_name(s))}, r = "
            f"{s.r:+.3f} against a chance max |r| of {s.chance_r_max:.3f} (p = {s.p_value:.3f});"
            f" all {escape(s.quantity)} units together: held-out R² {s.all_units_r2:.3f} against"
            f" chance {s.chance_all_units_r2:.3f}. <span class='{css}'>{escape(verdict)}</span>"
            "</li>"
        )
    winners = [f for f, v in verdicts.items() if v == "beats chance"]
    if winners:
        named = escape(", ".join(winners))
        head = f"<p>{len(winners)} of {len(verdicts)} features beat chance: {named}.</p>"
    else:
        head = (
            "<p class='note'><strong>Nothing beats chance.</strong> No unit tracks any of "
            "these features better than the same feature shifted in time does.</p>"
        )
    return head + f"<ul class='sentences'>{''.join(items)}</ul>"


def _cells_table(analysis: CellAnalysis) -> str:
    verdicts = analysis.verdicts()
    headers = [
        "feature",
        "unit",
        "r",
        "chance |r| (this unit)",
        "chance max |r| (best of all)",
        "p",
        "probe R² (this unit)",
        "chance probe R²",
        "all-units probe R²",
        "chance all-units R²",
        "verdict",
    ]
    rows = []
    for feature, units in analysis.top_units.items():
        for k, s in enumerate(units[:TOP_PER_FEATURE]):
            numbers = (
                s.r,
                s.chance_r,
                s.chance_r_max,
                s.p_value,
                s.probe_r2,
                s.chance_probe_r2,
                s.all_units_r2,
                s.chance_all_units_r2,
            )
            rows.append(
                f'<tr data-feature="{escape(feature)}" data-quantity="{escape(s.quantity)}" '
                f'data-unit="{s.unit}">{_text_cell(feature)}{_text_cell(_name(s))}'
                + "".join(cell(v) for v in numbers)
                + _text_cell(verdicts[feature] if k == 0 else "")
                + "</tr>"
            )
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    return f'<table id="cells"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _probes_table(analysis: CellAnalysis) -> str:
    rows = [
        [
            _text_cell(p.feature),
            _text_cell(p.quantity),
            cell(p.r2),
            cell(p.chance_r2),
            cell(p.p_value),
        ]
        for p in analysis.probes
    ]
    return table(["feature", "units of", "held-out R²", "chance R²", "p"], rows, table_id="probes")


def _colour(value: float, scale: float) -> str:
    alpha = 0.0 if scale <= 0 or not math.isfinite(value) else min(abs(value) / scale, 1.0)
    rgb = "192,57,43" if value >= 0 else "46,111,186"
    return f"rgba({rgb},{alpha * 0.85:.3f})"


def coloured_chars(text: str, values: np.ndarray, title: str) -> str:
    """``text`` with each character's background coloured by ``values (len(text),)``: red
    positive, blue negative, by |value| / max |value|; the value in each ``title``."""
    finite = np.abs(values[np.isfinite(values)])
    scale = float(finite.max()) if len(finite) else 0.0
    spans = []
    for ch, v in zip(text, values, strict=True):
        shown = "⏎\n" if ch == "\n" else ch
        spans.append(
            f'<span style="background:{_colour(float(v), scale)}" '
            f'title="{float(v):.4g}">{escape(shown)}</span>'
        )
    return f"<p>{escape(title)}</p><div class='chars'>{''.join(spans)}</div>"


def _cells_over_text(analysis: CellAnalysis) -> str:
    assert analysis.text is not None
    n = min(len(analysis.text), MAX_SHOWN_CHARS)
    parts = []
    verdicts = analysis.verdicts()
    for s in shown_features(analysis):
        values = analysis.states[s.quantity][:n, s.unit]
        parts.append(
            coloured_chars(
                analysis.text[:n],
                values,
                f"{s.feature}: unit {_name(s)} (r = {s.r:+.3f}, {verdicts[s.feature]}) over the "
                f"first {n} characters; red: positive, blue: negative",
            )
        )
    return "".join(parts)


def _cells_section(analysis: CellAnalysis, embed: Figures) -> str:
    what = "characters" if analysis.kind == "text" else "forecast origins"
    parts = [
        f"<p>Data: {escape(analysis.source)}, {analysis.steps} {what}. For every unit's long-term"
        " memory c and output h and every feature: the correlation r and the held-out R² of a "
        "linear probe (contiguous folds in time), and the same numbers for the feature shifted "
        "circularly by 200 random offsets: the chance level is their 99th percentile. A unit "
        "beats chance when its |r| clears the chance max |r| (the bar for the best of all "
        "units) and all units together predict the feature better than chance.</p>"
    ]
    if analysis.note:
        parts.append(f"<p class='note'>{escape(analysis.note)}</p>")
    if not analysis.scores:
        return "".join(parts)
    parts += [_verdict_words(analysis), _cells_table(analysis)]
    parts.append("<h3>All units of a quantity together (ridge probe)</h3>")
    parts.append(_probes_table(analysis))
    if analysis.kind == "series" and any(f.startswith("season") for f in analysis.features):
        parts.append(
            "<p class='note'>The seasonal phase is periodic: a shifted copy is the "
            "same season at another phase, so its chance level sits near the real "
            "score. That says any phase would do, not that there is no season.</p>"
        )
    parts.append("<h3>The top cells over the data</h3>")
    if analysis.kind == "text":
        parts.append(_cells_over_text(analysis))
    else:
        fig = analysis_figures.cells_over_series(
            analysis.values,
            shown_features(analysis),
            analysis.states,
            analysis.features,
            labels=analysis.labels,
            verdicts=analysis.verdicts(),
        )
        parts.append(embed.embed(fig, "The best unit of each feature over the series."))
    return "".join(parts)


def _gates_section(analysis: CellAnalysis, embed: Figures) -> str:
    g = analysis.gates
    sat = g.saturation
    hidden = len(g.half_life_median)
    remembers = int((sat["forget_gate"].right > 0.5).sum())
    forgets = int((sat["forget_gate"].left > 0.5).sum())
    dead = ", ".join(map(str, g.dead)) or "none"
    life = g.half_life_median.numpy()
    parts = [
        f"<p>Over {g.steps} steps: {remembers} of {hidden} units keep the forget gate above "
        f"{g.high} (right-saturated: remembering) on most steps, {forgets} keep it below "
        f"{g.low} (left-saturated: forgetting). The units' median per-step half-life is "
        f"{float(np.median(life)):.3g} steps (from {float(life.min()):.3g} to "
        f"{float(life.max()):.3g}). Dead units (c and h never change): {escape(dead)}.</p>"
    ]
    same_h = len(g.h_range) == hidden
    headers = ["unit"] + [
        f"{gate} {side}"
        for gate in ("input", "forget", "output")
        for side in (f"< {g.low}", f"> {g.high}")
    ]
    headers += ["half-life q1", "half-life median", "half-life q3", "c range"]
    headers += ["h range"] * same_h + ["dead"]
    rows = []
    for u in range(hidden):
        cells = [f"<td>{u}</td>"]
        for gate in ("input_gate", "forget_gate", "output_gate"):
            cells += [cell(sat[gate].left[u]), cell(sat[gate].right[u])]
        cells += [cell(g.half_life_q1[u]), cell(g.half_life_median[u]), cell(g.half_life_q3[u])]
        cells += [cell(g.c_range[u])] + ([cell(g.h_range[u])] if same_h else [])
        cells.append(_text_cell("dead" if u in g.dead else ""))
        rows.append(cells)
    parts.append(
        embed.embed(
            analysis_figures.half_life_histogram(g),
            "The distribution of the units' median half-lives.",
        )
    )
    parts.append("<p>Fraction of steps each gate is saturated, per unit:</p>")
    parts.append(table(headers, rows, table_id="saturation"))
    return "".join(parts)


def _check_table(
    result, scale: float, table_id: str, names: tuple[str, str], offset: float = 0.0
) -> str:
    """Output and baseline output (times ``scale`` plus ``offset``: the data's units), their
    difference, the attributions' sum and the relative error."""
    rows = [
        [_text_cell(names[0]), cell(result.output * scale + offset)],
        [_text_cell(names[1]), cell(result.baseline_output * scale + offset)],
        [
            _text_cell("difference (what the attributions must add up to)"),
            cell(result.delta * scale),
        ],
        [_text_cell("sum of the attributions"), cell(result.total * scale)],
        [
            _text_cell("relative error |sum - difference| / |difference|"),
            cell(result.relative_error),
        ],
        [_text_cell("trapezoid intervals"), f"<td>{result.steps}</td>"],
    ]
    return table(["completeness check", "value"], rows, table_id=table_id)


def _attribution_section(analysis: CellAnalysis, embed: Figures) -> str:
    result, std = analysis.forecast, analysis.target_std
    assert result is not None and analysis.forecast_window is not None
    per_step = result.per_step.numpy() * std
    labels = analysis.forgetting_labels
    ok = "within" if result.converged else "NOT within"
    parts = [
        "<p>Integrated gradients of the next-step forecast from "
        f"{escape(analysis.forgetting_context)} over the steps it read, in the target's "
        "units. Baseline: the same window flat at its "
        "last row. Completeness: the attributions add up to the forecast minus the baseline's "
        f"forecast with a relative error of {result.relative_error:.2e} ({ok} "
        f"{result.tolerance:.0%}).</p>",
        embed.embed(
            analysis_figures.attribution_bars(
                analysis.forecast_window,
                result,
                scale=std,
                offset=analysis.target_mean,
                labels=labels,
            ),
            "Integrated gradients of the forecast over the window it read.",
        ),
        _check_table(
            result,
            std,
            "attribution-check",
            ("forecast", "forecast from the flat window (baseline)"),
            analysis.target_mean,
        ),
    ]
    rows = [
        [f"<td>{t + 1}</td>", _text_cell(labels[t] if labels else ""), cell(v)]
        for t, v in enumerate(per_step)
    ]
    parts.append(table(["step", "row", "attribution"], rows, table_id="attribution-steps"))
    return "".join(parts)


def _forgetting_section(analysis: CellAnalysis, embed: Figures) -> str:
    result = analysis.forgetting
    assert result is not None
    labels = analysis.forgetting_labels or []
    per_step = result.per_step.numpy()
    read = result.step + 1 if analysis.kind == "text" else len(per_step)
    order = [int(k) for k in np.argsort(per_step[:read]) if per_step[k] < 0][:5]
    where = labels[result.step] if result.step < len(labels) else ""
    named = (
        "; ".join(
            f"step {k + 1} ({escape(repr(labels[k]) if analysis.kind == 'text' else labels[k])}): "
            f"{per_step[k]:+.4g}"
            for k in order
        )
        or "no input pushed it shut (every attribution is positive)"
    )
    parts = [
        f"<p>Unit {result.unit} (the longest median half-life) of layer {result.layer}, in "
        f"{escape(analysis.forgetting_context)}: its forget gate is lowest at step "
        f"{result.step + 1} ({escape(repr(where) if analysis.kind == 'text' else where)}): "
        f"f = {result.forget_gate:.4f}, pre-activation {result.pre_activation:+.4f}. "
        f"Integrated gradients of the pre-activation over the inputs it read (baseline: "
        f"{'a zero embedding' if analysis.kind == 'text' else 'every row at the training mean'}"
        f"); the inputs that pushed it shut most: {named}.</p>"
    ]
    if analysis.kind == "text":
        text = "".join(labels[:read])
        parts.append(
            coloured_chars(
                text,
                per_step[:read],
                "Attribution of each character "
                "to the forget gate's pre-activation (blue: pushed shut)",
            )
        )
    parts.append(
        _check_table(
            result.integrated,
            1.0,
            "forgetting-check",
            ("pre-activation", "baseline pre-activation"),
        )
    )
    return "".join(parts) + _forgetting_figure(analysis, embed, read)


def _forgetting_figure(analysis: CellAnalysis, embed: Figures, read: int) -> str:
    result = analysis.forgetting
    assert result is not None
    fig = analysis_figures.forgetting_bars(
        result, analysis.forgetting_gates[:read], analysis.forgetting_labels
    )
    return embed.embed(
        fig, f"What drove unit {result.unit}'s forget gate at step {result.step + 1}."
    )


def analysis_sections(analysis: CellAnalysis, embed: Figures) -> str:
    """The HTML of the analysis part of the report."""
    parts = [
        "<h2 id='cells'>What did it learn to remember? Ranked cells</h2>",
        _cells_section(analysis, embed),
        "<h2 id='gates'>Gate saturation and half-lives</h2>",
        _gates_section(analysis, embed),
    ]
    if analysis.forecast is not None:
        parts += [
            "<h2 id='attribution'>Why did it forecast that?</h2>",
            _attribution_section(analysis, embed),
        ]
    if analysis.forgetting is not None:
        parts += [
            "<h2 id='forgetting'>Why did it forget here?</h2>",
            _forgetting_section(analysis, embed),
        ]
    return "".join(parts)
