"""The explorer's analysis endpoints: span search, forecast attribution, "why did it forget?".

Each takes the body of ``/api/models/trace`` (``model`` and its ``sequence`` or ``text``)
plus its own parameters, runs :mod:`clearlstm.analysis` on the sequence, and returns JSON.
Steps are counted from 0 and spans are half-open ``[start, stop)``, as in the library; the
page shows them from 1. Integrated gradients run in float64 on a copy of the model (the
cached one is shared by the server's threads) and are held to a work budget, so one request
stays within the request deadline on the server's pool.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from clearlstm.analysis.attribution import Attribution, explain_forgetting, integrated_gradients
from clearlstm.analysis.spans import find_spans
from clearlstm.errors import ApiError
from clearlstm.viz.saved_models import SavedModel
from clearlstm.viz.subject import Subject
from clearlstm.web.checks import Context, choice, integer, model_subject, number, rounded

THRESHOLD_LIMITS = (-1e3, 1e3)
MAX_MATCHES = 100  # matches listed, best first; the total is given too
MAX_UNITS_LISTED = 64
MAX_UNIT_LINES = 16  # selected units whose values come back, for the page's line chart
FIRST_INTERVALS = 16  # trapezoid intervals integrated gradients start from
MAX_INTERVALS = 512
DEFAULT_INTERVALS = 256
# Path points x steps read x LSTM weights that one attribution may cost: about 1 s on one
# core here, 4 s on a busy one (fused kernels, float64, forward and backward).
MAX_IG_WORK = 1.5e9
TOLERANCE = 0.01  # completeness: |sum - (f(x) - f(x'))| within 1% of |f(x) - f(x')|


def _value(x: float) -> float | None:
    return float(f"{x:.7g}") if math.isfinite(x) else None


def _layer_direction(body: dict[str, Any], subject: Subject) -> tuple[int, int]:
    lstm = subject.lstm
    layer = integer(body, "layer", 0, lstm.num_layers - 1, 0)
    direction = integer(body, "direction", 0, lstm.num_directions - 1, 0)
    return layer, direction


def span_search(body: Any, context: Context) -> dict[str, Any]:
    """POST /api/models/spans ``{model, sequence | text, start, stop, threshold, quantity?,
    layer?, direction?, min_length?, min_shared?}``: the units above ``threshold`` over every
    step of ``[start, stop)`` and the other runs where they are on together, best first."""
    name, _, subject = model_subject(body, context)
    layer, direction = _layer_direction(body, subject)
    steps = subject.steps
    where = f"(steps counted from 0; the sequence has {steps})"
    quantity = choice(body, "quantity", ("h", "c"), "h")
    start = integer(body, "start", 0, steps - 1, note=where)
    stop = integer(body, "stop", start + 1, steps, note=f"(after 'start' {start}) {where}")
    threshold = number(body, "threshold", THRESHOLD_LIMITS, 0.3)
    min_length = integer(body, "min_length", 1, steps, stop - start)
    min_shared = number(body, "min_shared", (0.01, 1.0), 1.0)
    states = getattr(subject.run()[layer, direction], quantity)[:, 0, :].double().numpy()
    search = find_spans(
        states, start, stop, threshold, min_length=min_length, min_shared=min_shared
    )
    text = subject.text
    matches = [
        {
            "start": m.start,
            "stop": m.stop,
            "length": m.length,
            "score": _value(m.score),
            "units_on": list(m.units_on[:MAX_UNITS_LISTED]),
            "units_on_total": len(m.units_on),
        }
        | ({"text": text[m.start : m.stop]} if text is not None else {})
        for m in search.matches[:MAX_MATCHES]
    ]
    lines = list(search.units[:MAX_UNIT_LINES])
    return {
        "model": name,
        "quantity": quantity,
        "layer": layer,
        "direction": direction,
        "steps": steps,
        "start": start,
        "stop": stop,
        "threshold": threshold,
        "min_length": min_length,
        "min_shared": min_shared,
        "units": list(search.units[:MAX_UNITS_LISTED]),
        "units_total": len(search.units),
        "unit_values": {"units": lines, "values": rounded(states[:, lines].T)},
        "matches": matches,
        "matches_total": len(search.matches),
    } | ({"text": text[start:stop]} if text is not None else {})


def _float64(model: SavedModel) -> nn.Module:
    """A float64 copy of the model's module: gradients of our own, no shared dtype change."""
    return copy.deepcopy(model.module).double().eval()


def _intervals(body: dict[str, Any], lstm: nn.Module, read: int) -> int:
    """The most trapezoid intervals this request may use: ``max_intervals`` (a doubling of
    16), cut to the work budget; 413 when even 16 would be over it."""
    wanted = integer(body, "max_intervals", FIRST_INTERVALS, MAX_INTERVALS, DEFAULT_INTERVALS)
    weights = sum(p.numel() for p in lstm.parameters())
    affordable = int(MAX_IG_WORK // (read * weights)) - 2  # + the two ends (and grad x input)
    if affordable < FIRST_INTERVALS:
        most = max(1, int(MAX_IG_WORK // ((FIRST_INTERVALS + 2) * weights)))
        raise ApiError(
            413,
            f"attributing over {read} steps of this model ({weights} LSTM weights) would take "
            f"too long; at most {most} steps can be read: choose an earlier step or send a "
            "shorter sequence",
        )
    cap = FIRST_INTERVALS
    while 2 * cap <= min(wanted, affordable):
        cap *= 2
    return cap


def _completeness(result: Attribution, scale: float = 1.0) -> dict[str, Any]:
    """Sum of the attributions against the output difference they must add up to."""
    return {
        "total": _value(result.total * scale),
        "delta": _value(result.delta * scale),
        "relative_error": _value(result.relative_error),
        "intervals": result.steps,
        "tolerance": result.tolerance,
        "converged": result.converged,
    }


def _scaled_rows(model: SavedModel, subject: Subject) -> Tensor:
    """``(T, C)`` the sequence scaled with the training scaler, before the model's features."""
    scaler = model.settings.data.scaler.to_scaler()
    return torch.as_tensor(scaler.transform(subject.shown), dtype=torch.float64)


def forecast_attribution(body: Any, context: Context) -> dict[str, Any]:
    """POST /api/models/attribution ``{model, sequence, origin?, target?, baseline?,
    max_intervals?}``: integrated gradients of a forecaster's first forecast step made after
    the window ``[origin - window, origin)``, per step of that window, in the target's
    units, with the completeness check."""
    name, model, subject = model_subject(body, context)
    if model.reads_text or model.settings.kind != "forecaster":
        raise ApiError(
            422,
            f"model {name!r} reads {'text' if model.reads_text else 'no forecast'}: forecast "
            "attribution is for forecasters; ask /api/models/forgetting why one of its units "
            "forgot",
        )
    settings = model.settings
    window, columns = settings.data.window, model.columns
    # A model with future covariates reads them on the H rows after the origin too.
    h = settings.model.horizon if settings.model.future else 0
    steps = subject.steps
    if steps < window + h:
        message = f"model {name!r} reads windows of {window} steps: send at least {window}"
        if h:
            message += f" and the {h} rows after it (the future covariates read there)"
        raise ApiError(422, f"'sequence' has {steps} steps; {message}")
    note = f"(the window is the {window} steps before it; the sequence has {steps})"
    origin = integer(body, "origin", window, steps - h, steps - h, note=note)
    target = integer(body, "target", 0, len(settings.data.targets) - 1, 0)
    baseline = choice(body, "baseline", ("flat", "mean"), "flat")
    module = _float64(model)
    cap = _intervals(body, module.lstm, window)
    scaled = _scaled_rows(model, subject)
    x, later = scaled[origin - window : origin], scaled[origin : origin + h]  # (W, C), (H, C)
    base = x[-1:].expand_as(x).clone() if baseline == "flat" else torch.zeros_like(x)

    def forecast(windows: Tensor) -> Tensor:
        return module(module.join(windows, later) if h else windows)[:, 0, target]

    result = integrated_gradients(
        forecast, x, base, tolerance=TOLERANCE, first_steps=FIRST_INTERVALS, max_steps=cap
    )
    scaler = settings.data.scaler
    std, mean = scaler.std[target], scaler.mean[target]
    by_column = result.attributions.T.numpy() * std  # (C, W) in the target's units
    meaning = {
        "flat": "every step of the window at its last row's value",
        "mean": "every step at the training mean",
    }
    return {
        "model": name,
        "target": columns[target],
        "origin": origin,
        "window": window,
        "first_step": origin - window,
        "baseline": baseline,
        "baseline_meaning": meaning[baseline],
        "forecast": _value(result.output * std + mean),
        "baseline_forecast": _value(result.baseline_output * std + mean),
        "attributions": rounded(result.per_step.numpy() * std),
        "by_column": {"columns": columns, "values": rounded(by_column)},
        "max_intervals": cap,
    } | _completeness(result, std)


def _prepared(model: SavedModel, module: nn.Module, subject: Subject, step: int):
    """What ``explain_forgetting`` reads: ``x``, its ``prepare``, the steps read, the
    baseline's meaning."""
    if model.reads_text:
        x = subject.inputs[:, 0, :].double()  # (T, E) embeddings
        return x, None, step + 1, "a zero embedding at every step"
    if model.settings.kind != "forecaster":
        raise ApiError(422, f"model {model.name!r}: a {model.settings.kind} model is not explained")
    features: Callable[[Tensor], Tensor] = module.features
    x = _scaled_rows(model, subject)
    return x, features, x.shape[0], "every step at the training mean"


def why_forget(body: Any, context: Context) -> dict[str, Any]:
    """POST /api/models/forgetting ``{model, sequence | text, unit, step?, layer?,
    max_intervals?}``: integrated gradients of the forget gate's pre-activation of ``unit`` at
    ``step`` (default: where that unit's gate is lowest) over the steps it read; a negative
    attribution is an input that pushed the gate shut."""
    name, model, subject = model_subject(body, context)
    lstm = subject.lstm
    layer, direction = _layer_direction(body, subject)
    if direction != 0:
        raise ApiError(422, "'direction' must be 0: only the forward direction is explained")
    unit = integer(body, "unit", 0, lstm.hidden_size - 1)
    gates = subject.run()[layer, 0].forget_gate[:, 0, unit].double().numpy()  # (T,)
    lowest = int(np.nanargmin(gates)) if np.isfinite(gates).any() else 0
    steps = subject.steps
    step = integer(body, "step", 0, steps - 1, lowest, note="(counted from 0)")
    module = _float64(model)
    x, prepare, read, baseline = _prepared(model, module, subject, step)
    cap = _intervals(body, module.lstm, read)
    try:
        result = explain_forgetting(
            module.lstm,
            x,
            step,
            unit,
            layer=layer,
            prepare=prepare,
            tolerance=TOLERANCE,
            max_steps=cap,
        )
    except ValueError as error:  # a variant cell the formula does not cover
        raise ApiError(422, str(error)) from None
    per_step = result.per_step.numpy()
    labels = subject.step_labels
    order = [int(k) for k in np.argsort(per_step[:read]) if per_step[k] < 0][:5]
    return {
        "model": name,
        "layer": layer,
        "unit": unit,
        "step": step,
        "steps": steps,
        "read": read,
        "label": labels[step] if labels else None,
        "forget_gate": _value(result.forget_gate),
        "pre_activation": _value(result.pre_activation),
        "baseline_pre_activation": _value(result.integrated.baseline_output),
        "baseline": baseline,
        "forget_gates": rounded(gates),
        "attributions": rounded(per_step),
        "gradient_x_input": rounded(result.gradient_x_input.sum(-1).numpy()),
        "pushed_shut": [
            {"step": k, "value": _value(float(per_step[k]))}
            | ({"label": labels[k]} if labels else {})
            for k in order
        ],
        "max_intervals": cap,
    } | _completeness(result.integrated)


ANALYSIS_ROUTES = {
    ("POST", "/api/models/spans"): span_search,
    ("POST", "/api/models/attribution"): forecast_attribution,
    ("POST", "/api/models/forgetting"): why_forget,
}
