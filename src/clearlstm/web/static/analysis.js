// clearlstm explorer: span search and attributions on a saved model's sequence ("What did it
// learn to remember?"). Every number comes from the JSON API (clearlstm.analysis on the
// server); this file reads the controls, asks, and draws. Uses $, api, fmt and showError
// from app.js. Steps are shown from 1; the API counts them from 0, spans as [start, stop).
"use strict";

const view = { trace: null, model: null, body: null, selection: null, matches: [],
  window: null, dragFrom: null };
const STRIP = { width: 960, height: 130, left: 8, right: 8, top: 8, bottom: 20 };
// Charts are drawn at the width they are shown at, so their text is not stretched.
const chartWidth = () => Math.max(480, Math.round($("span-result").clientWidth) || 960);
const MAX_BARS = 120; // a longer attribution shows its last steps

const esc = (text) => String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const shown = (ch) => (ch === "\n" ? "↵" : ch === "\t" ? "⇥" : ch);
const signed = (v) => (v === null ? "—" : `${v >= 0 ? "+" : "−"}${Math.abs(v).toPrecision(4)}`);
const percent = (v) => `${Number((100 * v).toPrecision(2))}%`;

// A field as the API should get it: absent when empty, a number when it is one, else the
// text itself so the server names the problem.
function field(id, offset = 0) {
  const text = $(id).value.trim();
  if (!text) return undefined;
  const n = Number(text);
  return Number.isFinite(n) ? n + offset : text;
}

function showAnalysis(answer, model, body) {
  Object.assign(view, { trace: answer, model, body, selection: null, matches: [], window: null });
  $("analysis").hidden = false;
  $("span-result").innerHTML = "";
  $("attribution-result").innerHTML = "";
  const layers = answer.layers.map((l) => [`${l.layer}:${l.direction}`,
    `${l.layer}${l.direction ? " reverse" : ""}`]);
  $("span-layer").innerHTML = layers.map(([v, t]) => `<option value="${v}">${t}</option>`).join("");
  $("why-layer").innerHTML = answer.layers.filter((l) => !l.direction)
    .map((l) => `<option value="${l.layer}">${l.layer}</option>`).join("");
  $("forecast-tool").hidden = model.reads === "text";
  Object.assign($("attr-origin"), { max: answer.steps, value: answer.steps });
  const first = answer.layers[0];
  Object.assign($("why-unit"), { max: first.hidden_size - 1, value: first.units[0] });
  $("why-step").max = answer.steps;
  $("why-step").value = "";
  for (const id of ["span-start", "span-stop"]) $(id).max = answer.steps;
  drawStrip();
  // One forget-gate canvas per layer-direction, in the answer's order.
  document.querySelectorAll("#heatmaps canvas[data-field=forget_gate]").forEach((canvas, k) => {
    canvas.addEventListener("click", (event) => pickForgetCell(event, canvas, answer.layers[k]));
  });
}

/* ---------- the sequence strip: characters or a line chart, with the highlights ---------- */
function drawStrip() {
  const strip = $("sequence-strip");
  const { trace } = view;
  if (view.model.reads === "text") {
    strip.className = "strip text-strip";
    strip.innerHTML = trace.step_labels.map((ch, k) =>
      `<span class="ch" data-step="${k}" title="step ${k + 1}">${esc(shown(ch))}</span>`).join("");
  } else {
    strip.className = "strip series-strip";
    STRIP.width = chartWidth();
    strip.innerHTML = seriesSvg();
  }
  highlight();
}

function stepX(t) { // left edge of step t (0-based) on the series strip
  return STRIP.left + (t / view.trace.steps) * (STRIP.width - STRIP.left - STRIP.right);
}

function seriesSvg() {
  const { steps, inputs, columns } = view.trace;
  const values = inputs.flat().filter((v) => v !== null);
  const low = Math.min(...values), high = Math.max(...values);
  const span = high - low || 1;
  const y = (v) => STRIP.top + (1 - (v - low) / span) * (STRIP.height - STRIP.top - STRIP.bottom);
  const half = (stepX(1) - stepX(0)) / 2;
  const colours = ["#333", "#2471a3", "#1e8449", "#c0392b", "#8e44ad", "#d35400", "#7f8c8d", "#16a085"];
  let svg = `<svg viewBox="0 0 ${STRIP.width} ${STRIP.height}" preserveAspectRatio="none"><g class="bands"></g>`;
  inputs.forEach((column, k) => {
    const points = column.map((v, t) => (v === null ? null : `${(stepX(t) + half).toFixed(1)},${y(v).toFixed(1)}`));
    svg += `<polyline points="${points.filter(Boolean).join(" ")}" fill="none" stroke="${colours[k % 8]}" stroke-width="1.5"/>`;
  });
  const every = Math.max(1, Math.ceil(steps / 16));
  for (let t = 0; t < steps; t += every) {
    svg += `<text x="${(stepX(t) + half).toFixed(1)}" y="${STRIP.height - 5}" font-size="10" text-anchor="middle">${t + 1}</text>`;
  }
  svg += `<text x="${STRIP.width - 10}" y="16" font-size="11" text-anchor="end">${esc(columns.join(", "))}</text></svg>`;
  return svg;
}

// Selection (blue), span-search matches (yellow) and the attributed window (grey).
function highlight(focus = -1) {
  const inSpan = (t, s) => s && t >= s.start && t < s.stop;
  if (view.model.reads === "text") {
    for (const span of document.querySelectorAll("#sequence-strip .ch")) {
      const t = Number(span.dataset.step);
      const match = view.matches.findIndex((m) => inSpan(t, m));
      span.classList.toggle("sel", inSpan(t, view.selection));
      span.classList.toggle("match", match >= 0);
      span.classList.toggle("focus", match >= 0 && match === focus);
      span.classList.toggle("window", inSpan(t, view.window));
    }
    return;
  }
  const band = (s, cls) => `<rect class="${cls}" x="${stepX(s.start).toFixed(1)}" y="0" width="${(stepX(s.stop) - stepX(s.start)).toFixed(1)}" height="${STRIP.height - STRIP.bottom + 4}"/>`;
  let bands = view.window ? band(view.window, "window") : "";
  view.matches.forEach((m, k) => { bands += band(m, k === focus ? "match focus" : "match"); });
  if (view.selection) bands += band(view.selection, "sel");
  const group = document.querySelector("#sequence-strip .bands");
  if (group) group.innerHTML = bands;
}

function setSelection(a, b) {
  const start = Math.max(0, Math.min(a, b)), stop = Math.min(view.trace.steps, Math.max(a, b) + 1);
  view.selection = { start, stop };
  $("span-start").value = start + 1;
  $("span-stop").value = stop;
  highlight();
}

function stripStep(event) {
  const target = event.target.closest(".ch");
  if (target) return Number(target.dataset.step);
  const svg = event.target.closest("svg");
  if (!svg) return null;
  const rect = svg.getBoundingClientRect();
  const x = ((event.clientX - rect.left) / rect.width) * STRIP.width;
  const t = Math.floor(((x - STRIP.left) / (STRIP.width - STRIP.left - STRIP.right)) * view.trace.steps);
  return Math.max(0, Math.min(view.trace.steps - 1, t));
}

function startDrag(event) {
  const t = stripStep(event);
  if (t === null) return;
  event.preventDefault();
  view.dragFrom = t;
  setSelection(t, t);
}

function moveDrag(event) {
  if (view.dragFrom === null) return;
  const t = stripStep(event);
  if (t !== null) setSelection(view.dragFrom, t);
}

function typedSelection() {
  const a = Number($("span-start").value), b = Number($("span-stop").value);
  view.selection = Number.isInteger(a) && Number.isInteger(b) && a >= 1 && b >= a
    ? { start: a - 1, stop: b } : null;
  highlight();
}

/* ---------- span search ---------- */
async function findSpans() {
  const [layer, direction] = $("span-layer").value.split(":").map(Number);
  const start = field("span-start", -1);
  const stop = field("span-stop");
  const request = { ...view.body, start, stop, layer, direction, quantity: $("span-quantity").value,
    threshold: field("span-threshold"), min_shared: field("span-shared") };
  try {
    const answer = await api("/api/models/spans", request);
    showError(null);
    renderSpans(answer);
  } catch (error) { showError(error); }
}

function stepsText(start, stop) {
  return stop - start === 1 ? `step ${start + 1}` : `steps ${start + 1}–${stop}`;
}

function renderSpans(answer) {
  view.selection = { start: answer.start, stop: answer.stop };
  view.matches = answer.matches;
  const quoted = answer.text === undefined ? "" : ` (“${esc(answer.text.split("").map(shown).join(""))}”)`;
  const where = `${stepsText(answer.start, answer.stop)}${quoted}, ${answer.quantity} above ${answer.threshold}`;
  const box = $("span-result");
  if (!answer.units_total) {
    box.innerHTML = `<p class="summary" id="span-summary">No unit is on over every step of ${where}: lower the threshold or select fewer steps.</p>`;
    highlight();
    return;
  }
  const units = answer.units.map((u) => `u${u}`).join(", ") + (answer.units_total > answer.units.length ? ", …" : "");
  const count = answer.matches_total === 1 ? "1 match" : `${answer.matches_total} matches`;
  const listed = answer.matches_total > answer.matches.length ? ` (the best ${answer.matches.length} listed)` : "";
  let html = `<p class="summary" id="span-summary">${answer.units_total} unit${answer.units_total > 1 ? "s" : ""} on over ${where}: ${units}. ` +
    `${count} elsewhere where they are on together${listed}${answer.matches_total ? "" : ": none"}.</p>`;
  html += unitLines(answer);
  if (answer.matches.length) {
    const hasText = answer.matches[0].text !== undefined;
    html += `<table class="matches" id="span-matches"><thead><tr><th>#</th><th>steps</th>${hasText ? "<th>text</th>" : ""}` +
      `<th title="Jaccard index of the selected units and the units on over the match">score</th><th>units on</th></tr></thead><tbody>`;
    answer.matches.forEach((m, k) => {
      html += `<tr data-match="${k}"><td>${k + 1}</td><td>${m.start + 1}–${m.stop}</td>` +
        (hasText ? `<td class="text">${esc(m.text.split("").map(shown).join(""))}</td>` : "") +
        `<td>${m.score.toFixed(3)}</td><td>${m.units_on_total}</td></tr>`;
    });
    html += "</tbody></table>";
  }
  box.innerHTML = html;
  for (const row of box.querySelectorAll("tr[data-match]")) {
    row.addEventListener("mouseenter", () => highlight(Number(row.dataset.match)));
    row.addEventListener("mouseleave", () => highlight());
  }
  highlight();
}

// The selected units' values over the sequence, the threshold dashed, matches shaded.
function unitLines(answer) {
  const { units, values } = answer.unit_values;
  if (!units.length) return "";
  const W = chartWidth(), H = 150, top = 10, bottom = 18;
  const all = values.flat().filter((v) => v !== null).concat([answer.threshold]);
  const low = Math.min(...all), high = Math.max(...all), span = high - low || 1;
  const x = (t) => (t / answer.steps) * W;
  const y = (v) => top + (1 - (v - low) / span) * (H - top - bottom);
  let svg = `<svg class="unit-lines" viewBox="0 0 ${W} ${H}" aria-label="selected units over the sequence">`;
  for (const m of answer.matches) svg += `<rect class="match" x="${x(m.start)}" y="0" width="${x(m.stop) - x(m.start)}" height="${H - bottom}"/>`;
  svg += `<rect class="sel" x="${x(answer.start)}" y="0" width="${x(answer.stop) - x(answer.start)}" height="${H - bottom}"/>`;
  svg += `<line x1="0" x2="${W}" y1="${y(answer.threshold)}" y2="${y(answer.threshold)}" stroke="#c0392b" stroke-dasharray="5 3"/>`;
  values.forEach((row) => {
    const pts = row.map((v, t) => (v === null ? null : `${(x(t) + x(1) / 2).toFixed(1)},${y(v).toFixed(1)}`));
    svg += `<polyline points="${pts.filter(Boolean).join(" ")}" fill="none" stroke="#2471a3" stroke-opacity="0.7" stroke-width="1.2"/>`;
  });
  svg += `<text x="4" y="${H - 4}" font-size="11">${answer.quantity} of ${units.length === answer.units_total ? "the" : `${units.length} of the`} selected units; dashed: threshold ${answer.threshold}</text></svg>`;
  return svg;
}

/* ---------- attributions ---------- */
async function attributeForecast() {
  const request = { ...view.body, origin: field("attr-origin"), baseline: $("attr-baseline").value };
  try {
    const answer = await api("/api/models/attribution", request);
    showError(null);
    view.window = { start: answer.first_step, stop: answer.origin };
    highlight();
    const labels = answer.attributions.map((_, k) => String(answer.first_step + k + 1));
    $("attribution-result").innerHTML =
      `<h3>Integrated gradients of the forecast of ${esc(answer.target)} after step ${answer.origin}</h3>` +
      `<p class="summary" id="attribution-summary">Forecast ${fmt(answer.forecast)} for step ${answer.origin + 1}; ` +
      `from the baseline (${esc(answer.baseline_meaning)}) the model forecasts ${fmt(answer.baseline_forecast)}. ` +
      `Each bar: how much that step of the window (steps ${answer.first_step + 1}–${answer.origin}) moved ` +
      `the forecast, in ${esc(answer.target)}.</p>` +
      bars(answer.attributions, labels, { positive: "raised it", negative: "lowered it" }) +
      completeness(answer, "the forecast minus the baseline's forecast");
  } catch (error) { showError(error); }
}

async function whyForget() {
  const request = { ...view.body, layer: Number($("why-layer").value), unit: field("why-unit"),
    step: field("why-step", -1) };
  try {
    const answer = await api("/api/models/forgetting", request);
    showError(null);
    renderForgetting(answer);
  } catch (error) { showError(error); }
}

function renderForgetting(answer) {
  $("why-step").value = answer.step + 1;
  view.window = answer.read < answer.steps ? { start: 0, stop: answer.read } : null; // steps read
  highlight();
  const labels = view.trace.step_labels;
  const name = (k) => (labels ? `“${esc(shown(labels[k]))}” (step ${k + 1})` : `step ${k + 1}`);
  const from = Math.max(0, answer.read - MAX_BARS);
  const barLabels = [];
  for (let k = from; k < answer.read; k++) barLabels.push(labels ? shown(labels[k]) : String(k + 1));
  const shut = answer.pushed_shut.map((p) => `${name(p.step)} ${signed(p.value)}`).join(", ");
  const cut = from > 0 ? ` Showing the last ${MAX_BARS} of the ${answer.read} steps it read.` : "";
  $("attribution-result").innerHTML =
    `<h3>Why did unit ${answer.unit} (layer ${answer.layer}) forget at ${name(answer.step)}?</h3>` +
    `<p class="summary" id="forgetting-summary">Its forget gate keeps f = ${fmt(answer.forget_gate)} of the ` +
    `long-term memory there (pre-activation ${signed(answer.pre_activation)}; from the baseline, ` +
    `${esc(answer.baseline)}: ${signed(answer.baseline_pre_activation)}). Bars: what each step it read ` +
    `contributed to the pre-activation; red ones pushed the gate shut.${cut}` +
    (shut ? ` Pushed shut most by ${shut}.` : "") + "</p>" +
    bars(answer.attributions.slice(from, answer.read), barLabels,
      { positive: "held it open", negative: "pushed it shut", line: answer.forget_gates.slice(from, answer.read) }) +
    completeness(answer, "the pre-activation minus the baseline's");
}

// Bars over steps, zero in the middle; `line` (values in [0, 1], e.g. the forget gate) on top.
function bars(values, labels, { positive, negative, line }) {
  const W = chartWidth(), H = 210, top = 6, bottom = labels.length <= 80 ? 20 : 6;
  const n = values.length, w = W / n;
  const bound = Math.max(1e-12, ...values.filter((v) => v !== null).map(Math.abs));
  const mid = top + (H - top - bottom) / 2, scale = (H - top - bottom) / 2 / bound;
  let svg = `<svg class="bars" id="attribution-bars" viewBox="0 0 ${W} ${H}" aria-label="attribution per step">`;
  svg += `<line x1="0" x2="${W}" y1="${mid}" y2="${mid}" stroke="#999"/>`;
  values.forEach((v, k) => {
    if (v === null) return;
    const h = Math.abs(v) * scale;
    svg += `<rect class="bar ${v < 0 ? "neg" : "pos"}" x="${(k * w + w * 0.1).toFixed(1)}" width="${(w * 0.8).toFixed(1)}" ` +
      `y="${(v < 0 ? mid : mid - h).toFixed(1)}" height="${Math.max(0.5, h).toFixed(1)}"><title>${esc(labels[k])}: ${signed(v)}</title></rect>`;
  });
  if (line) {
    const pts = line.map((f, k) => (f === null ? null : `${(k * w + w / 2).toFixed(1)},${(top + (1 - f) * (H - top - bottom)).toFixed(1)}`));
    svg += `<polyline points="${pts.filter(Boolean).join(" ")}" fill="none" stroke="#555" stroke-width="1.3" stroke-dasharray="4 2"/>`;
  }
  if (labels.length <= 80) {
    labels.forEach((label, k) => { svg += `<text x="${(k * w + w / 2).toFixed(1)}" y="${H - 5}" font-size="10" text-anchor="middle">${esc(label)}</text>`; });
  }
  svg += "</svg>";
  const gate = line ? " · dashed: the unit's forget gate f, from 0 (bottom) to 1 (top)" : "";
  return `${svg}<p class="caption"><span class="up">▲ ${positive}</span> · ` +
    `<span class="down">▼ ${negative}</span> · largest bar ${bound.toPrecision(3)}${gate}</p>`;
}

function completeness(answer, difference) {
  const ok = answer.converged;
  const tolerance = percent(answer.tolerance);
  return `<p class="completeness ${ok ? "ok" : "warn"}" id="completeness" data-relative-error="${answer.relative_error}">` +
    `Completeness: the attributions add up to ${signed(answer.total)}; ${difference} is ${signed(answer.delta)}. ` +
    `Relative error <strong id="relative-error">${percent(answer.relative_error)}</strong> ` +
    `(${answer.intervals} trapezoid intervals) — ${ok ? `within ${tolerance} ✓` : `not within ${tolerance} at the cap of ${answer.max_intervals} intervals`}</p>`;
}

function pickForgetCell(event, canvas, layer) {
  if (!layer || layer.direction) return; // the reverse direction is not explained
  const rect = canvas.getBoundingClientRect();
  const t = Math.floor(((event.clientX - rect.left) / rect.width) * view.trace.steps);
  const r = Math.floor(((event.clientY - rect.top) / rect.height) * layer.units.length);
  if (t < 0 || t >= view.trace.steps || r < 0 || r >= layer.units.length) return;
  $("why-layer").value = layer.layer;
  $("why-unit").value = layer.units[r];
  $("why-step").value = t + 1;
  whyForget();
}

$("sequence-strip").addEventListener("mousedown", startDrag);
$("sequence-strip").addEventListener("mousemove", moveDrag);
document.addEventListener("mouseup", () => { view.dragFrom = null; });
for (const id of ["span-start", "span-stop"]) $(id).addEventListener("input", typedSelection);
$("find-spans").addEventListener("click", findSpans);
$("attribute-forecast").addEventListener("click", attributeForecast);
$("why-forget").addEventListener("click", whyForget);
