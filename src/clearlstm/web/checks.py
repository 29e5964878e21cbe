"""What a request body may hold: the checks the explorer's endpoints share, and the saved
model and sequence a body names.

Each check takes the decoded JSON body and a key, and returns the value or raises
:class:`ApiError` (422, naming the key, what it accepts and what came), so
:mod:`clearlstm.web.api` and :mod:`clearlstm.web.analysis_api` refuse alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from clearlstm.errors import ApiError, CheckpointError, ModelNotFound
from clearlstm.viz.saved_models import ModelFolder, SavedModel
from clearlstm.viz.subject import Subject

MAX_MODEL_STEPS = 2_000
MAX_TEXT_CHARS = 2_000
VALUE_LIMITS = (-1e9, 1e9)  # sequence values of a saved model, in the data's units


@dataclass
class Context:
    """What the handlers share: the models folder (None when the server has none)."""

    models: ModelFolder | None = None


def json_type(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "true/false"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def object_body(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ApiError(400, 'the request body must be a JSON object, e.g. {"x": 1}')
    return body


def number(body: dict[str, Any], key: str, limits: tuple[float, float], default: float) -> float:
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ApiError(422, f"{key!r} must be a number; got {json_type(value)}")
    value = float(value)
    low, high = limits
    if not math.isfinite(value) or not low <= value <= high:
        raise ApiError(
            422, f"{key!r} must be a finite number in [{low:g}, {high:g}]; got {value!r}"
        )
    return value


def integer(
    body: dict[str, Any],
    key: str,
    low: int,
    high: int,
    default: int | None = None,
    *,
    note: str = "",
) -> int:
    """``body[key]``, a JSON integer in ``[low, high]``; ``default`` when absent (None:
    required). ``note`` ends the refusal, e.g. how steps are counted."""
    value = body.get(key, default)  # an explicit null is refused below, not defaulted
    wanted = f"an integer in [{low}, {high}]" + (f" {note}" if note else "")
    if key not in body and value is None:
        raise ApiError(422, f"{key!r} is missing: send {wanted}")
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(422, f"{key!r} must be {wanted}; got {json_type(value)}")
    if not low <= value <= high:
        raise ApiError(422, f"{key!r} must be {wanted}; got {value}")
    return value


def choice(body: dict[str, Any], key: str, options: tuple[str, ...], default: str) -> str:
    value = body.get(key, default)
    if value not in options:
        shown = repr(value) if isinstance(value, str) else json_type(value)
        raise ApiError(422, f"{key!r} must be one of {', '.join(map(repr, options))}; got {shown}")
    return value


def numbers(body: dict[str, Any], key: str, limit: int, bounds: tuple[float, float]) -> np.ndarray:
    """``body[key]``: a non-empty list of numbers (or of equal-length lists) as ``(T, C)``."""
    values = body.get(key)
    if not isinstance(values, list) or not values:
        raise ApiError(422, f"{key!r} must be a non-empty list of numbers; got {json_type(values)}")
    if len(values) > limit:
        raise ApiError(413, f"{key!r} has {len(values)} steps; at most {limit} are accepted")
    rows = [v if isinstance(v, list) else [v] for v in values]
    width = len(rows[0])
    out = np.empty((len(rows), width))
    for t, row in enumerate(rows):
        if len(row) != width:
            raise ApiError(422, f"{key!r}: step {t + 1} has {len(row)} values, step 1 has {width}")
        for k, v in enumerate(row):
            name = f"{key}[{t}]" + (f"[{k}]" if width > 1 else "")
            out[t, k] = number({name: v}, name, bounds, 0.0)
    return out


def rounded(values: np.ndarray) -> list:
    """Rows (or one row) of float32-precision numbers, NaN/inf as null: that is what the
    models compute in; more digits would only add bytes."""
    if np.ndim(values) == 1:
        return [None if not math.isfinite(v) else float(f"{v:.7g}") for v in values]
    return [rounded(row) for row in values]


def open_model(body: dict[str, Any], context: Context) -> tuple[str, SavedModel]:
    """The saved model ``body["model"]`` names, from the server's models folder."""
    if context.models is None:
        raise ApiError(404, "this server has no models folder; start it with --models DIR")
    name = body.get("model")
    if not isinstance(name, str):
        raise ApiError(422, f"'model' must be a model name (a string); got {json_type(name)}")
    try:
        return name, context.models.open(name)
    except ModelNotFound as error:
        raise ApiError(404, str(error)) from None
    except (CheckpointError, OSError, ValueError, RuntimeError) as error:
        raise ApiError(422, f"model {name!r} cannot be opened: {error}") from None


def model_subject(body: Any, context: Context) -> tuple[str, SavedModel, Subject]:
    """The model a body names and the sequence it sends (``text`` for a text model,
    ``sequence`` of numbers for a forecaster), as the model's LSTM reads it."""
    body = object_body(body)
    name, model = open_model(body, context)
    try:
        if model.reads_text:
            text = body.get("text")
            if not isinstance(text, str) or not text:
                raise ApiError(422, f"model {name!r} reads text: send a non-empty 'text' string")
            if len(text) > MAX_TEXT_CHARS:
                raise ApiError(
                    413, f"'text' has {len(text)} characters; at most {MAX_TEXT_CHARS} are accepted"
                )
            return name, model, model.subject_from_text(text)
        values = numbers(body, "sequence", MAX_MODEL_STEPS, VALUE_LIMITS)
        return name, model, model.subject_from_numbers(values)
    except ValueError as error:
        raise ApiError(422, str(error)) from None
