"""Frozen dataclasses to and from JSON, every field checked on the way in.

A settings file may come from someone else or be cut short, so :func:`from_json` checks every
field before the caller allocates anything from it: its type (a bool is not an int, ``8.0`` is
not an int, floats are finite), its range and length (:func:`limits` in the field's
metadata), the element type of lists and that no key is missing or unknown. Each failure is a
:class:`~clearlstm.errors.CheckpointError` naming the file, the field path
(``settings.json: model.hidden_size``), what was expected and what was found.

Supported field types: ``bool``, ``int``, ``float``, ``str``, ``Literal[...]``, ``X | None``,
``tuple[X, ...]``, ``list[X]``, ``dict[str, X]`` and nested dataclasses.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

from clearlstm.errors import CheckpointError

T = TypeVar("T")
S = TypeVar("S", bound="JsonSettings")
_UNIONS = (typing.Union, types.UnionType)
_NONE = type(None)


@dataclass(frozen=True)
class Limits:
    """What a field accepts beyond its type; numbers bound the value (or each item of a
    sequence), ``length`` the length of a string or sequence."""

    low: float | None = None  # value >= low
    high: float | None = None  # value <= high
    above: float | None = None  # value > above
    below: float | None = None  # value < below
    finite: bool = True  # floats: refuse NaN and infinities
    length: tuple[int, int] | None = None  # (fewest, most) characters or items
    optional: bool = False  # may be missing (files older than the field): its default is taken


def limits(**kwargs: Any) -> dict[str, Limits]:
    """Field metadata: ``field(metadata=limits(low=1, high=65_536))``."""
    return {"json": Limits(**kwargs)}


def limits_of(cls: type, name: str) -> Limits:
    """The :class:`Limits` of field ``name`` of dataclass ``cls``."""
    field = next(f for f in dataclasses.fields(cls) if f.name == name)
    return field.metadata.get("json", Limits())


class JsonSettings:
    """``to_json`` / ``from_json`` for a frozen dataclass; ``check_json`` adds checks that
    involve several fields."""

    def to_json(self) -> dict[str, Any]:
        return to_json(self)

    @classmethod
    def from_json(cls: type[S], document: Any, file: str | Path = "settings.json") -> S:
        return from_json(cls, document, file)

    def check_json(self, file: str, where: str) -> None:
        """Raise :func:`invalid` when fields disagree with each other (none by default)."""


def to_json(value: Any) -> Any:
    """Dataclasses as objects and tuples as lists: what :func:`json.dumps` writes."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: to_json(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if not (_optional(f) and getattr(value, f.name) == f.default)  # as older files
        }
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    return value


def from_json(cls: type[T], value: Any, file: str | Path, where: str = "") -> T:
    """An instance of dataclass ``cls`` from the parsed JSON ``value``, checked field by field.

    ``file`` and ``where`` (the path of ``value`` inside the file) only name the place in
    error messages.
    """
    return _decode(cls, value, str(file), where, Limits(), False)


def invalid(file: str, where: str, expected: str, found: Any) -> CheckpointError:
    """The error for a field holding ``found`` where ``expected`` (a phrase) belongs."""
    place = f"{file}: {where}" if where else file
    return CheckpointError(f"{place} must be {expected}; found {describe(found)}")


def describe(value: Any) -> str:
    """A short account of a JSON value for an error message."""
    if isinstance(value, bool):
        return f"{json.dumps(value)} (a boolean)"
    if isinstance(value, float) and not math.isfinite(value):
        return json.dumps(value)  # NaN, Infinity, -Infinity
    if isinstance(value, int) and abs(value) >= 10**60:  # no 4000-digit error messages
        return f"an integer of {len(str(abs(value)))} digits"
    if isinstance(value, (int, float)):
        return f"{value!r} (a number)"
    if isinstance(value, str):
        shown = value if len(value) <= 60 else value[:57] + "..."
        return f"{json.dumps(shown)} (a string)"
    if value is None:
        return "null"
    if isinstance(value, (list, tuple)):
        return f"a list of {len(value)} item(s)"
    if isinstance(value, dict):
        keys = ", ".join(k if k.isidentifier() else json.dumps(k) for k in list(value)[:8])
        keys = keys or "none"
        return f"an object (keys: {keys})"
    return type(value).__name__


def expected(kind: Any, lim: Limits = Limits()) -> str:
    """What a field of type ``kind`` with ``lim`` accepts, as a phrase."""
    origin, args = get_origin(kind), get_args(kind)
    if origin in _UNIONS:
        return " or ".join(expected(a, lim) for a in args if a is not _NONE) + " or null"
    if origin is Literal:
        return " or ".join(json.dumps(a) for a in args)
    if origin in (tuple, list):
        size = f"{lim.length[0]} to {lim.length[1]} " if lim.length else ""
        item = expected(args[0], dataclasses.replace(lim, length=None))
        return f"a list of {size}items, each {item}"
    if origin is dict:
        return f"an object whose values are each {expected(args[1], lim)}"
    if dataclasses.is_dataclass(kind):
        return f"an object with the keys {', '.join(_fields(kind))}"
    if kind is bool:
        return "true or false"
    if kind is str:
        return (
            f"a string of {lim.length[0]} to {lim.length[1]} characters"
            if lim.length
            else "a string"
        )
    name = {int: "an integer", float: "a finite number" if lim.finite else "a number"}[kind]
    return name + _range(lim)


def _range(lim: Limits) -> str:
    if lim.low is not None and lim.high is not None:
        return f" from {_number(lim.low)} to {_number(lim.high)}"
    bounds = [("of at least", lim.low), ("greater than", lim.above)]
    bounds += [("less than", lim.below), ("of at most", lim.high)]
    words = [f"{word} {_number(bound)}" for word, bound in bounds if bound is not None]
    return " " + " and ".join(words) if words else ""


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


@functools.cache
def _fields(cls: type) -> dict[str, tuple[Any, Limits]]:
    hints = typing.get_type_hints(cls)
    return {
        f.name: (hints[f.name], f.metadata.get("json", Limits()))
        for f in dataclasses.fields(cls)
        if f.init
    }


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _optional(field: dataclasses.Field) -> bool:
    return field.metadata.get("json", Limits()).optional


def _decode(kind: Any, value: Any, file: str, where: str, lim: Limits, nullable: bool) -> Any:
    def fail() -> CheckpointError:
        return invalid(file, where, expected(kind, lim) + " or null" * nullable, value)

    origin, args = get_origin(kind), get_args(kind)
    if origin in _UNIONS:
        inner = [a for a in args if a is not _NONE]
        if value is None and _NONE in args:
            return None
        if len(inner) != 1:
            raise TypeError(f"from_json: only X | None unions are supported; got {kind!r}")
        return _decode(inner[0], value, file, where, lim, _NONE in args)
    if origin is Literal:
        if not any(type(value) is type(a) and value == a for a in args):
            raise fail()
        return value
    if origin in (tuple, list):
        if type(value) is not list or (lim.length and not _within(len(value), lim.length)):
            raise fail()
        item = dataclasses.replace(lim, length=None)
        out = [_decode(args[0], v, file, f"{where}[{i}]", item, False) for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if type(value) is not dict:
            raise fail()
        return {
            k: _decode(args[1], v, file, f"{where}[{json.dumps(k)}]", lim, False)
            for k, v in value.items()
        }
    if dataclasses.is_dataclass(kind):
        return _decode_object(kind, value, file, where, fail)
    if kind is bool:
        if type(value) is not bool:
            raise fail()
        return value
    if kind is str:
        if type(value) is not str or (lim.length and not _within(len(value), lim.length)):
            raise fail()
        return value
    if kind is int:
        if type(value) is not int or not _in_range(value, lim):
            raise fail()
        return value
    if kind is float:
        if type(value) not in (int, float):
            raise fail()
        try:
            number = float(value)
        except OverflowError:
            raise fail() from None
        if (lim.finite and not math.isfinite(number)) or not _in_range(number, lim):
            raise fail()
        return number
    raise TypeError(f"from_json: unsupported field type {kind!r} at {where or 'the top'}")


def _decode_object(kind: type, value: Any, file: str, where: str, fail: Any) -> Any:
    if type(value) is not dict:
        raise fail()
    known = _fields(kind)
    for key in value:
        if key not in known:
            shown = key if key.isidentifier() else json.dumps(key)  # no raw control characters
            raise CheckpointError(
                f"{file}: {_join(where, shown)} is not a setting clearlstm knows; "
                f"{where or 'the file'} holds the keys {', '.join(known)}"
            )
    out = {}
    for name, (hint, lim) in known.items():
        path = _join(where, name)
        if name not in value and lim.optional:
            continue  # the dataclass's default
        if name not in value:
            raise CheckpointError(f"{file}: {path} is missing; expected {expected(hint, lim)}")
        out[name] = _decode(hint, value[name], file, path, lim, False)
    obj = kind(**out)
    if isinstance(obj, JsonSettings):
        obj.check_json(file, where)
    return obj


def _within(size: int, bounds: tuple[int, int]) -> bool:
    return bounds[0] <= size <= bounds[1]


def _in_range(v: float, lim: Limits) -> bool:
    if isinstance(v, float) and math.isnan(v):  # an int of 400 digits has no float
        return True  # only reached where NaN is allowed
    return not (
        (lim.low is not None and v < lim.low)
        or (lim.high is not None and v > lim.high)
        or (lim.above is not None and v <= lim.above)
        or (lim.below is not None and v >= lim.below)
    )
