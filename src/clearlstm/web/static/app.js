// clearlstm explorer. Every number shown here comes from the server's JSON API (the clearlstm
// library); this file only reads controls, asks, and draws. No LSTM math lives here.
"use strict";

const STAGES = ["forget", "input", "potential", "output"];
const STAGE_NAMES = { forget: "Forget gate", input: "Input gate", potential: "Potential memory",
  output: "Output gate" };
const WEIGHT_NAMES = { w_h: "weight on h", w_x: "weight on x", b: "bias" };
const state = { info: null, latest: 0, inFlight: false, again: false, playback: null, timer: null,
  models: null };

const $ = (id) => document.getElementById(id);

async function api(path, body) {
  const options = body === undefined ? {} : {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
  const response = await fetch(path, options);
  const payload = await response.json();
  if (!response.ok) throw new Error(payload.error || `${response.status} ${response.statusText}`);
  return payload;
}

function showError(error) { $("status").textContent = error ? String(error.message || error) : ""; }

// Numbers as text: six decimals, or scientific notation for tiny ones (a closed gate).
function fmt(value) {
  if (value === null || value === undefined) return "—";
  if (value !== 0 && Math.abs(value) < 1e-3) return value.toExponential(3);
  return value.toFixed(6);
}

/* ---------- tabs ---------- */
function selectTab(name) {
  for (const tab of ["step", "sequence", "model"]) {
    const on = tab === name;
    $(`tab-${tab}`).setAttribute("aria-selected", String(on));
    $(`panel-${tab}`).hidden = !on;
  }
  if (name === "model" && state.models === null) loadModels();
}

/* ---------- one step ---------- */
function sliderRow(id, label, range, value, step) {
  const row = document.createElement("div");
  row.className = "slider";
  row.innerHTML = `<label for="${id}">${label}</label><input type="range" id="${id}">` +
    `<output id="out-${id}"></output>`;
  const input = row.querySelector("input");
  Object.assign(input, { min: range[0], max: range[1], step, value });
  return row;
}

function buildWeightSliders(info) {
  const box = $("weight-sliders");
  box.className = "weights";
  for (const stage of STAGES) {
    const set = document.createElement("fieldset");
    set.className = stage;
    set.innerHTML = `<legend>${STAGE_NAMES[stage]}</legend>`;
    for (const key of ["w_h", "w_x", "b"]) {
      set.append(sliderRow(`w-${stage}-${key}`, WEIGHT_NAMES[key], info.sliders.weight,
        info.weights[stage][key], 0.01));
    }
    box.append(set);
  }
}

function readUnit() {
  const number = (id) => Number($(id).value);
  const weights = {};
  for (const stage of STAGES) {
    weights[stage] = {};
    for (const key of ["w_h", "w_x", "b"]) weights[stage][key] = number(`w-${stage}-${key}`);
  }
  return { x: number("slider-x"), c: number("slider-c"), h: number("slider-h"), weights };
}

function showSliderValues() {
  for (const input of document.querySelectorAll("#controls input[type=range]")) {
    const out = input.id.startsWith("slider-") ? $(`out-${input.name}`) : $(`out-${input.id}`);
    if (out) out.textContent = Number(input.value).toFixed(2);
  }
}

// Coalesce fast slider moves: at most one request in flight, and the last position always wins.
async function updateStep() {
  showSliderValues();
  if (state.inFlight) { state.again = true; return; }
  state.inFlight = true;
  try {
    const answer = await api("/api/unit/step", readUnit());
    showError(null);
    renderStep(answer);
  } catch (error) {
    showError(error);
  } finally {
    state.inFlight = false;
    if (state.again) { state.again = false; updateStep(); }
  }
}

function renderStep({ step, sentences }) {
  $("forget-z").textContent = fmt(step.forget_x_axis);
  $("forget-gate").textContent = fmt(step.forget_gate);
  $("forget-retained").textContent = fmt(step.retained);
  $("potential-z").textContent = fmt(step.potential_x_axis);
  $("potential-memory").textContent = fmt(step.potential_memory);
  $("input-z").textContent = fmt(step.input_x_axis);
  $("input-gate").textContent = fmt(step.input_gate);
  $("input-added").textContent = fmt(step.added);
  $("output-z").textContent = fmt(step.output_x_axis);
  $("output-gate").textContent = fmt(step.output_gate);
  $("output-tanh").textContent = fmt(step.tanh_c);
  $("new-c").textContent = fmt(step.c);
  $("new-h").textContent = fmt(step.h);
  $("headline").textContent = sentences.forget;
  for (const key of ["forget", "potential", "input", "output"]) {
    $(`sentence-${key}`).textContent = sentences[key];
  }
  $("sentence-long-term").textContent = sentences.long_term;
  drawCurve("curve-forget", "sigmoid", step.forget_x_axis, step.forget_gate, "#c0392b");
  drawCurve("curve-potential", "tanh", step.potential_x_axis, step.potential_memory, "#2471a3");
  drawCurve("curve-input", "sigmoid", step.input_x_axis, step.input_gate, "#2471a3");
  drawCurve("curve-output", "sigmoid", step.output_x_axis, step.output_gate, "#1e8449");
}

// The activation curve (sampled by the server) with this step's point on it.
function drawCurve(id, kind, z, value, colour) {
  const { z: zs } = state.info.curves;
  const ys = state.info.curves[kind];
  const low = kind === "tanh" ? -1 : 0;
  const px = (v) => 10 + ((Math.max(-12, Math.min(12, v)) + 12) / 24) * 180;
  const py = (v) => 100 - ((v - low) / (1 - low)) * 88;
  const points = zs.map((v, k) => `${px(v).toFixed(1)},${py(ys[k]).toFixed(1)}`).join(" ");
  const outside = Math.abs(z) > 12 ? (z > 0 ? " →" : " ←") : "";
  $(id).innerHTML =
    `<line x1="10" x2="190" y1="${py(low)}" y2="${py(low)}" stroke="#bbb"/>` +
    `<line x1="100" x2="100" y1="8" y2="102" stroke="#bbb"/>` +
    `<polyline points="${points}" fill="none" stroke="#555" stroke-width="1.5"/>` +
    `<line x1="${px(z)}" x2="${px(z)}" y1="${py(low)}" y2="${py(value)}" stroke="${colour}" stroke-dasharray="3 2"/>` +
    `<circle cx="${px(z)}" cy="${py(value)}" r="4.5" fill="${colour}"/>` +
    `<text x="12" y="18" font-size="10" fill="#444">z = ${fmt(z)}${outside}</text>`;
}

function resetUnit() {
  const info = state.info;
  $("slider-x").value = info.defaults.x;
  $("slider-c").value = info.defaults.c;
  $("slider-h").value = info.defaults.h;
  for (const stage of STAGES) {
    for (const key of ["w_h", "w_x", "b"]) $(`w-${stage}-${key}`).value = info.weights[stage][key];
  }
  updateStep();
}

/* ---------- sequence playback ---------- */
function parseList(text) {
  // Tokens that are not numbers go to the server as they are, so it names the problem.
  return text.split(/[\s,;]+/).filter((t) => t.length).map((t) => {
    const n = Number(t);
    return Number.isFinite(n) ? n : t;
  });
}

async function loadPlayback() {
  const { weights } = readUnit();
  const c0 = Number($("seq-c0").value), h0 = Number($("seq-h0").value);
  const [a, b] = await Promise.all(["seq-a", "seq-b"].map((id) =>
    api("/api/unit/sequence", { inputs: parseList($(id).value), c0, h0, weights })));
  state.playback = { a, b, shown: 0, days: Math.max(a.steps.length, b.steps.length) };
  for (const key of ["a", "b"]) {
    $(`rows-${key}`).innerHTML = "";
    $(`prediction-${key}`).textContent = "";
    $(`sentence-${key}`).textContent = "";
  }
}

function revealNext() {
  const play = state.playback;
  if (!play || play.shown >= play.days) return false;
  const day = play.shown;
  for (const key of ["a", "b"]) {
    const run = play[key];
    const s = run.steps[day];
    const body = $(`rows-${key}`);
    for (const row of body.querySelectorAll("tr")) row.classList.remove("current");
    if (!s) continue;
    const kept = day === 0 ? "100%" : `${(100 * run.retention_from_step_1[day]).toFixed(1)}%`;
    const row = document.createElement("tr");
    row.className = "current";
    row.innerHTML = [day + 1, s.x, s.forget_gate, s.input_gate, s.potential_memory, s.output_gate,
      s.c, s.h].map((v, k) => `<td>${k < 2 ? v : fmt(v)}</td>`).join("") + `<td>${kept}</td>`;
    body.append(row);
    $(`sentence-${key}`).textContent = `Day ${day + 1}: ${s.sentences.forget} ${s.sentences.output}`;
    if (day + 1 === run.steps.length) {
      $(`prediction-${key}`).textContent = `Prediction for day ${day + 2}: ${fmt(s.h)}`;
    }
  }
  play.shown += 1;
  $("playback-day").textContent = play.shown === play.days
    ? `Day ${play.shown} of ${play.days}: done.` : `Day ${play.shown} of ${play.days}`;
  drawMemoryChart();
  return play.shown < play.days;
}

function drawMemoryChart() {
  const play = state.playback;
  const series = [];
  for (const [key, dash] of [["a", ""], ["b", "6 3"]]) {
    const steps = play[key].steps.slice(0, play.shown);
    series.push({ label: `C (${key.toUpperCase()})`, colour: "#c0392b", dash, values: steps.map((s) => s.c) });
    series.push({ label: `h (${key.toUpperCase()})`, colour: "#1e8449", dash, values: steps.map((s) => s.h) });
  }
  const all = series.flatMap((s) => s.values).concat([0]);
  const low = Math.min(...all), high = Math.max(...all);
  const span = high - low || 1;
  const px = (t) => 50 + (play.days > 1 ? (t / (play.days - 1)) * 560 : 280);
  const py = (v) => 195 - ((v - low) / span) * 170;
  let svg = `<line x1="50" x2="610" y1="${py(0)}" y2="${py(0)}" stroke="#aaa"/>` +
    `<text x="4" y="${py(high) + 4}" font-size="11">${high.toFixed(2)}</text>` +
    `<text x="4" y="${py(low) + 4}" font-size="11">${low.toFixed(2)}</text>`;
  series.forEach((s, k) => {
    const pts = s.values.map((v, t) => `${px(t)},${py(v)}`).join(" ");
    svg += `<polyline points="${pts}" fill="none" stroke="${s.colour}" stroke-width="2" stroke-dasharray="${s.dash}"/>`;
    s.values.forEach((v, t) => { svg += `<circle cx="${px(t)}" cy="${py(v)}" r="3" fill="${s.colour}"/>`; });
    svg += `<text x="${70 + k * 130}" y="14" font-size="11" fill="${s.colour}">${s.dash ? "- - " : "—— "}${s.label}</text>`;
  });
  for (let t = 0; t < play.days; t++) svg += `<text x="${px(t) - 12}" y="214" font-size="11">day ${t + 1}</text>`;
  $("memory-chart").innerHTML = svg;
}

async function play() {
  clearInterval(state.timer);
  try {
    await loadPlayback();
    showError(null);
  } catch (error) { showError(error); return; }
  revealNext();
  state.timer = setInterval(() => { if (!revealNext()) clearInterval(state.timer); }, 700);
}

async function stepOnce() {
  clearInterval(state.timer);
  try {
    if (!state.playback || state.playback.shown >= state.playback.days) await loadPlayback();
    showError(null);
    revealNext();
  } catch (error) { showError(error); }
}

function rewind() {
  clearInterval(state.timer);
  state.playback = null;
  for (const key of ["a", "b"]) {
    for (const part of ["rows", "prediction", "sentence"]) $(`${part}-${key}`).textContent = "";
  }
  $("memory-chart").innerHTML = "";
  $("playback-day").textContent = "Press Play.";
}

/* ---------- saved model heatmaps ---------- */
async function loadModels() {
  try {
    const answer = await api("/api/models");
    state.models = answer.models;
    const select = $("model-select");
    select.innerHTML = "";
    for (const m of answer.models) {
      const option = document.createElement("option");
      option.value = m.name;
      option.textContent = m.error ? `${m.name} (cannot be opened)` : m.name;
      select.append(option);
    }
    $("model-hint").textContent = answer.folder === null
      ? "Start the server with --models DIR (a folder of `clearlstm train --out` directories) to look inside a saved model."
      : answer.models.length ? `Models from ${answer.folder}.` : `No models in ${answer.folder} yet.`;
    describeModel();
  } catch (error) { showError(error); }
}

function describeModel() {
  const model = (state.models || []).find((m) => m.name === $("model-select").value);
  const text = $("model-sequence");
  if (!model) { $("model-description").textContent = ""; return; }
  // A model that cannot be opened is listed with its error and nothing else.
  $("model-description").textContent = model.error ? `cannot be opened: ${model.error}` : model.description;
  $("model-description").classList.toggle("error", Boolean(model.error));
  $("show-model").disabled = Boolean(model.error);
  if (model.error) return;
  // Start from the model's own example (the end of its training data), when it has one.
  if (model.example && (!text.value || text.dataset.example === "true")) {
    text.value = typeof model.example === "string" ? model.example
      : model.example.map((row) => row.join(", ")).join(model.columns.length > 1 ? "\n" : ", ");
    text.dataset.example = "true";
  }
  text.placeholder = model.reads === "text" ? "text to read"
    : `one row per line: ${model.columns.join(", ")} (or numbers separated by commas for one column)`;
}

function readModelSequence(model) {
  const text = $("model-sequence").value;
  $("model-sequence").dataset.example = "false";
  if (model && model.reads === "text") return { text };
  if (model && (model.columns || []).length > 1) {
    return { sequence: text.split(/\n|;/).map((l) => l.trim()).filter((l) => l).map(parseList) };
  }
  return { sequence: parseList(text) };
}

async function showModel() {
  const name = $("model-select").value;
  const model = (state.models || []).find((m) => m.name === name);
  try {
    const body = { model: name, ...readModelSequence(model) };
    const answer = await api("/api/models/trace", body);
    showError(null);
    renderHeatmaps(answer);
    showAnalysis(answer, model, body); // analysis.js: span search and attributions
  } catch (error) { showError(error); }
}

const VIRIDIS = ["#440154", "#3b528b", "#21918c", "#5ec962", "#fde725"];
const RDBU = ["#2166ac", "#92c5de", "#f7f7f7", "#f4a582", "#b2182b"];

function colour(stops, fraction) {
  const f = Math.max(0, Math.min(1, fraction)) * (stops.length - 1);
  const k = Math.min(stops.length - 2, Math.floor(f));
  const mix = f - k;
  const rgb = (hex) => [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
  const [a, b] = [rgb(stops[k]), rgb(stops[k + 1])];
  return `rgb(${a.map((v, i) => Math.round(v + (b[i] - v) * mix)).join(",")})`;
}

function renderHeatmaps(answer) {
  const box = $("heatmaps");
  box.innerHTML = "";
  const steps = answer.steps;
  const cellW = Math.max(1, Math.min(60, Math.floor(960 / steps)));
  for (const layer of answer.layers) {
    const title = document.createElement("h2");
    title.className = "layer-title";
    const shown = layer.units.length < layer.hidden_size ? ` (${layer.units.length} of ${layer.hidden_size} units)` : "";
    title.textContent = `Layer ${layer.layer}${layer.direction ? ", reverse direction" : ""} — units sorted by memory half-life, longest first${shown}`;
    box.append(title);
    for (const [field, q] of Object.entries(layer.quantities)) {
      const rows = q.values.length;
      const cellH = Math.max(3, Math.min(24, Math.floor(240 / rows)));
      const wrap = document.createElement("div");
      wrap.className = "heatmap";
      wrap.innerHTML = `<h3>${q.title} <span>— ${q.meaning}</span></h3>`;
      const canvas = document.createElement("canvas");
      canvas.width = steps * cellW;
      canvas.height = rows * cellH;
      canvas.style.maxWidth = `${steps * cellW}px`;
      canvas.dataset.field = field;
      canvas.dataset.layer = layer.layer;
      const ctx = canvas.getContext("2d");
      const flat = q.values.flat().filter((v) => v !== null);
      const bound = Math.max(1e-12, ...flat.map(Math.abs));
      const [low, high] = q.limits || [-bound, bound];
      const stops = low < 0 ? RDBU : VIRIDIS;
      q.values.forEach((row, r) => row.forEach((v, t) => {
        ctx.fillStyle = v === null ? "#d0d0d0" : colour(stops, (v - low) / (high - low));
        ctx.fillRect(t * cellW, r * cellH, cellW, cellH);
      }));
      canvas.addEventListener("mousemove", (event) => hover(event, canvas, q, layer, answer));
      canvas.addEventListener("mouseleave", () => { $("tooltip").hidden = true; });
      wrap.append(canvas);
      box.append(wrap);
    }
  }
}

function hover(event, canvas, q, layer, answer) {
  const rect = canvas.getBoundingClientRect();
  const t = Math.floor(((event.clientX - rect.left) / rect.width) * answer.steps);
  const r = Math.floor(((event.clientY - rect.top) / rect.height) * q.values.length);
  if (t < 0 || t >= answer.steps || r < 0 || r >= q.values.length) return;
  const unit = q.values.length === layer.units.length ? layer.units[r] : r;
  const label = answer.step_labels ? ` (${JSON.stringify(answer.step_labels[t])})` : "";
  const tip = $("tooltip");
  tip.textContent = `${q.title}: unit ${unit}, step ${t + 1}${label} = ${fmt(q.values[r][t])}`;
  tip.dataset.value = q.values[r][t];
  tip.hidden = false;
  tip.style.left = `${event.clientX + 14}px`;
  tip.style.top = `${event.clientY + 14}px`;
}

/* ---------- start ---------- */
async function start() {
  for (const tab of ["step", "sequence", "model"]) $(`tab-${tab}`).addEventListener("click", () => selectTab(tab));
  try {
    state.info = await api("/api/unit");
  } catch (error) { showError(error); return; }
  const info = state.info;
  for (const key of ["x", "c", "h"]) {
    Object.assign($(`slider-${key}`), { min: info.sliders[key][0], max: info.sliders[key][1],
      step: 0.01, value: info.defaults[key] });
  }
  buildWeightSliders(info);
  $("controls").addEventListener("input", updateStep);
  $("reset-unit").addEventListener("click", resetUnit);
  $("play").addEventListener("click", play);
  $("step-once").addEventListener("click", stepOnce);
  $("rewind").addEventListener("click", rewind);
  $("model-select").addEventListener("change", describeModel);
  $("show-model").addEventListener("click", showModel);
  await updateStep();
  const wanted = location.hash.slice(1);
  if (["step", "sequence", "model"].includes(wanted)) selectTab(wanted);
  document.body.dataset.ready = "true";
}

start();
