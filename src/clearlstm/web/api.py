"""The explorer's JSON API: what each endpoint computes, with its checks, and no HTTP.

Every number the web page shows comes from here (the library computes it; the page only
draws). Each handler takes the decoded JSON body (or None for GET) and returns a JSON-ready
dict, or raises :class:`ApiError` with a 4xx status and a message for the person or program
that sent the request. :mod:`clearlstm.web.app` routes HTTP requests to :data:`ROUTES`; the
analysis endpoints are in :mod:`clearlstm.web.analysis_api`, the shared checks in
:mod:`clearlstm.web.checks`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import torch

from clearlstm.errors import ApiError
from clearlstm.teach.explain import explain_sequence
from clearlstm.teach.seed import COMPANIES, ONE_STEP_INPUT
from clearlstm.teach.unit import GateWeights, UnitWeights, statquest_weights
from clearlstm.train.checkpoint import CheckpointError
from clearlstm.viz.figures import QUANTITIES
from clearlstm.viz.saved_models import ModelNotFound
from clearlstm.viz.subject import Subject, statquest_subject
from clearlstm.web.analysis_api import ANALYSIS_ROUTES
from clearlstm.web.checks import (
    VALUE_LIMITS,
    Context,
    json_type,
    model_subject,
    number,
    numbers,
    object_body,
    rounded,
)

# Accepted ranges. The page's sliders span less; the API accepts more, but not values whose
# gates saturate into meaningless exp overflow or sequences that would tie up a thread.
LIMITS: dict[str, tuple[float, float]] = {
    "x": (-100.0, 100.0),
    "c": (-100.0, 100.0),
    "h": (-100.0, 100.0),
    "weight": (-100.0, 100.0),
    "value": VALUE_LIMITS,  # sequence values of a saved model, in the data's units
}
SLIDERS: dict[str, tuple[float, float]] = {
    "x": (-10.0, 10.0),
    "c": (-5.0, 5.0),
    "h": (-1.0, 1.0),
    "weight": (-5.0, 5.0),
}
MAX_UNIT_STEPS = 1_000
MAX_HEATMAP_UNITS = 64
LOG = logging.getLogger("clearlstm.web")


def _weights(body: dict[str, Any]) -> UnitWeights:
    """``body["weights"]`` like :meth:`UnitWeights.to_dict`; missing numbers are the seed's."""
    given = body.get("weights", {})
    if not isinstance(given, dict):
        raise ApiError(422, f"'weights' must be an object; got {json_type(given)}")
    seed = statquest_weights().to_dict()
    unknown = set(given) - set(seed)
    if unknown:
        raise ApiError(
            422, f"unknown stage(s) {sorted(unknown)} in 'weights'; the stages are {sorted(seed)}"
        )
    stages = {}
    for stage, seeded in seed.items():
        part = given.get(stage, {})
        if not isinstance(part, dict):
            raise ApiError(422, f"'weights.{stage}' must be an object; got {json_type(part)}")
        extra = set(part) - set(seeded)
        if extra:
            raise ApiError(
                422,
                f"unknown key(s) {sorted(extra)} in 'weights.{stage}'; the keys "
                "are 'w_h', 'w_x' and 'b'",
            )
        stages[stage] = GateWeights(
            **{key: number(part, key, LIMITS["weight"], default) for key, default in seeded.items()}
        )
    return UnitWeights(**stages)


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def unit_info(_body: Any, _context: Context) -> dict[str, Any]:
    """GET /api/unit: the seed's weights, defaults, slider ranges and activation curves."""
    z = torch.linspace(-12, 12, 241, dtype=torch.float64)
    return {
        "weights": statquest_weights().to_dict(),
        "defaults": ONE_STEP_INPUT,
        "companies": COMPANIES,
        "sliders": SLIDERS,
        "limits": LIMITS,
        # Curves for the page to draw each stage's activation with the current point on it.
        "curves": {
            "z": z.tolist(),
            "sigmoid": torch.sigmoid(z).tolist(),
            "tanh": torch.tanh(z).tolist(),
        },
    }


def unit_step(body: Any, _context: Context) -> dict[str, Any]:
    """POST /api/unit/step ``{x, c, h, weights?}``: one step, every stage and its sentence."""
    body = object_body(body)
    x = number(body, "x", LIMITS["x"], ONE_STEP_INPUT["x"])
    c = number(body, "c", LIMITS["c"], ONE_STEP_INPUT["c"])
    h = number(body, "h", LIMITS["h"], ONE_STEP_INPUT["h"])
    weights = _weights(body)
    walk = explain_sequence([x], c, h, weights.to_lstm())
    step = walk.steps[0]
    return {"step": asdict(step), "sentences": step.sentences(), "weights": weights.to_dict()}


def unit_sequence(body: Any, _context: Context) -> dict[str, Any]:
    """POST /api/unit/sequence ``{inputs, c0?, h0?, weights?}``: every step of a sequence."""
    body = object_body(body)
    inputs = numbers(body, "inputs", MAX_UNIT_STEPS, LIMITS["x"])
    if inputs.shape[1] != 1:
        raise ApiError(422, "'inputs' must be a list of single numbers for the one-unit LSTM")
    c0 = number(body, "c0", LIMITS["c"], 0.0)
    h0 = number(body, "h0", LIMITS["h"], 0.0)
    subject = statquest_subject(inputs[:, 0].tolist(), c0, h0, weights=_weights(body))
    walk = explain_sequence(subject.shown[:, 0].tolist(), c0, h0, subject.lstm)
    kept = subject.run().retention(0)[:, 0, 0]  # (T,) of step 1's memory, from the trace
    return {
        "steps": [asdict(s) | {"sentences": s.sentences()} for s in walk.steps],
        "half_life": _finite_or_none(walk.half_life),
        "retention_from_step_1": kept.tolist(),
        "note": walk.note,
    }


def list_models(_body: Any, context: Context) -> dict[str, Any]:
    """GET /api/models: the saved models the server was given (``--models DIR``). A model that
    cannot be opened is listed as ``{"name", "error"}``; the others are listed as ever."""
    if context.models is None:
        return {"models": [], "folder": None}
    models = []
    for name in context.models.names():
        try:
            model = context.models.open(name)
            models.append(
                {
                    "name": name,
                    "reads": "text" if model.reads_text else "numbers",
                    "columns": model.columns,
                    "description": model.describe(),
                    "example": model.example,
                }
            )
        except ModelNotFound:  # gone since it was listed, or leads outside the folder
            continue
        except (CheckpointError, OSError, ValueError, RuntimeError) as error:
            models.append({"name": name, "error": str(error)})
        except Exception as error:  # a loader's bug: one entry, not a 500 for the whole list
            LOG.exception("model %r cannot be listed", name)
            models.append({"name": name, "error": f"cannot be opened: {type(error).__name__}"})
    return {"models": models, "folder": str(context.models.root)}


def model_trace(body: Any, context: Context) -> dict[str, Any]:
    """POST /api/models/trace ``{model, sequence | text}``: gate heatmap data per layer."""
    name, model, subject = model_subject(body, context)
    return _heatmaps(subject) | {"model": name, "description": model.describe()}


def _heatmaps(subject: Subject) -> dict[str, Any]:
    trace = subject.run()
    layers = []
    for layer in range(trace.num_layers):
        for direction in range(trace.num_directions):
            summary = trace.memory_summary(layer, direction)[:MAX_HEATMAP_UNITS]
            units = [m.unit for m in summary]
            rec = trace[layer, direction]
            quantities = {}
            for q in QUANTITIES:
                values = getattr(rec, q.field)[:, 0, :].double().numpy()  # (T, H or P)
                rows = units if values.shape[1] == rec.forget_gate.shape[2] else None
                picked = values[:, rows] if rows else values[:, :MAX_HEATMAP_UNITS]
                quantities[q.field] = {
                    "title": q.title,
                    "meaning": q.meaning,
                    "limits": q.limits,
                    "values": rounded(picked.T),
                }
            layers.append(
                {
                    "layer": layer,
                    "direction": direction,
                    "units": units,
                    "hidden_size": int(rec.forget_gate.shape[2]),
                    "half_lives": [_finite_or_none(m.half_life) for m in summary],
                    "quantities": quantities,
                }
            )
    return {
        "steps": subject.steps,
        "inputs": rounded(subject.shown[:, :8].T),
        "columns": subject.columns[:8],
        "step_labels": subject.step_labels,
        "layers": layers,
    }


Handler = Callable[[Any, Context], dict[str, Any]]
# (method, path) -> handler; the server answers 404 / 405 for anything else.
ROUTES: dict[tuple[str, str], Handler] = {
    ("GET", "/api/unit"): unit_info,
    ("POST", "/api/unit/step"): unit_step,
    ("POST", "/api/unit/sequence"): unit_sequence,
    ("GET", "/api/models"): list_models,
    ("POST", "/api/models/trace"): model_trace,
    **ANALYSIS_ROUTES,
}
