"""Hypothesis features: what a unit might be tracking, one float64 value per step.

A feature is a ``(T,)`` array aligned with the states of the same ``T`` steps (step ``t``'s
state has read input ``t``). NaN marks steps where a feature is undefined (a slope before
two values, steps before the first peak); :func:`clearlstm.analysis.cells.rank_units`
leaves them out. Built in: text features from the characters (:func:`text_features`),
series features from the values (:func:`series_features`); any other hypothesis is a
user column (:func:`user_features`).

>>> f = text_features('a(b"c")\\nd')
>>> f["bracket_depth"].tolist()
[0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0]
>>> f["inside_quotes"].tolist()
[0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

import numpy as np
import torch

Features = dict[str, np.ndarray]

OPENING, CLOSING = "([{", ")]}"
PUNCTUATION = frozenset(".,;:!?")
# A speaker's line in the bundled plays: "Ham.", "OTHELLO.", "SIR TOBY.", "First Witch:".
_SPEAKER = re.compile(r"[A-Z][A-Za-z' ]{0,29}[.:]")
_NOT_SPEAKER = ("ACT ", "SCENE", "PERSONS", "DRAMATIS")


def _speaker_lines(lines: list[str]) -> list[bool]:
    """A line is a speaker's name when it is one name ending in . or : after a blank line."""
    flags = []
    for k, line in enumerate(lines):
        blank_before = k == 0 or not lines[k - 1].strip()
        flags.append(
            blank_before
            and _SPEAKER.fullmatch(line.rstrip()) is not None
            and not line.startswith(_NOT_SPEAKER)
        )
    return flags


def text_features(text: str) -> Features:
    """Built-in features of a text, one value per character (the state after reading it).

    - ``inside_quotes``: 1 after an opening ``"`` up to (not including) its closing one.
    - ``position_in_line``: characters since the line began (0 at its first character).
    - ``bracket_depth``: open ``( [ {`` after reading the character (never below 0).
    - ``line_start``: 1 at the first character of each line.
    - ``speaker_line``: 1 on a speaker's name line (a speech starts: ``Ham.``, ``IAGO.``
      alone on a line after a blank line), its newline included.
    - ``chars_into_speech``: characters since the current speech's name line ended
      (NaN before the first speech).
    - ``after_punctuation``: 1 where the last non-space character before this one is one
      of ``. , ; : ! ?``.
    """
    if not isinstance(text, str) or not text:
        raise ValueError(f"text_features: text must be a non-empty str; got {text!r:.40}")
    n = len(text)
    quotes, position, depth = np.zeros(n), np.zeros(n), np.zeros(n)
    line_start, speaker, into, after = np.zeros(n), np.zeros(n), np.full(n, np.nan), np.zeros(n)
    lines = text.split("\n")
    flags = _speaker_lines(lines)
    inside, level, column, since = False, 0, 0, math.nan
    last_mark = False  # is the last non-space character punctuation?
    t = 0
    for number, (line, is_speaker) in enumerate(zip(lines, flags, strict=True)):
        for k, ch in enumerate(line + ("\n" if number < len(lines) - 1 else "")):
            if ch == '"':
                inside = not inside
                quotes[t] = 1.0 if inside else 0.0
            else:
                quotes[t] = float(inside)
            if ch in OPENING:
                level += 1
            elif ch in CLOSING:
                level = max(level - 1, 0)
            depth[t] = level
            position[t] = column = 0 if k == 0 else column + 1
            line_start[t] = float(k == 0)
            speaker[t] = float(is_speaker)
            after[t] = float(last_mark)
            if not ch.isspace():
                last_mark = ch in PUNCTUATION
            into[t] = since
            since = since + 1
            t += 1
        if is_speaker:
            since = 0.0  # the speech's first character is the next line's first
    return {
        "inside_quotes": quotes,
        "position_in_line": position,
        "bracket_depth": depth,
        "line_start": line_start,
        "speaker_line": speaker,
        "chars_into_speech": into,
        "after_punctuation": after,
    }


def _values(owner: str, name: str, values: object) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().double().numpy()
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or len(array) < 2:
        raise ValueError(
            f"{owner}: {name} must be a 1-d array of at least 2 steps; got shape {array.shape}"
        )
    return array


def _rolling_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Mean of the last ``window`` values at each step; NaN before the first full window."""
    out = np.full(len(values), np.nan)
    if len(values) >= window:
        sums = np.cumsum(np.concatenate([[0.0], values]))
        out[window - 1 :] = (sums[window:] - sums[:-window]) / window
    return out


def _rolling_slope(values: np.ndarray, window: int) -> np.ndarray:
    """Least-squares slope of the last ``window`` values; NaN where any of them is NaN."""
    out = np.full(len(values), np.nan)
    steps = np.arange(window) - (window - 1) / 2
    for t in range(window - 1, len(values)):
        piece = values[t - window + 1 : t + 1]
        out[t] = steps @ (piece - piece.mean()) / (steps @ steps)
    return out


def _since_peak(values: np.ndarray, half_width: int) -> np.ndarray:
    """Steps since the last peak: a value that is the highest within ``half_width`` steps
    either side (ties go to the first). NaN before the first peak."""
    n, out, last = len(values), np.full(len(values), np.nan), None
    for t in range(n):
        around = values[max(0, t - half_width) : t + half_width + 1]
        first_max = max(0, t - half_width) + int(np.argmax(around))
        if first_max == t:
            last = t
        if last is not None:
            out[t] = t - last
    return out


def series_features(
    values: object, season: int | None = None, *, window: int | None = None
) -> Features:
    """Built-in features of a series ``values (T,)``.

    - ``season_sin``, ``season_cos``: the seasonal phase ``2π t / season`` (only with
      ``season``; ``t`` counts from the first value).
    - ``level``: mean of the last ``window`` values (default: the season, else 12); NaN
      before the first full window.
    - ``trend``: least-squares slope of the level over the last ``window`` steps: the
      slope of the values themselves would swing with the season (a sine's slope over
      one period is not zero), the level's does not.
    - ``since_peak``: steps since the last peak (highest within half a season either side).

    Level and trend look back only, as the network does; ``since_peak`` needs the values
    after a peak to call it one, so it is a description of the data, not a causal input.
    """
    x = _values("series_features", "values", values)
    for name, value, low in (("season", season, 2), ("window", window, 2)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise TypeError(f"series_features: {name} must be an int or None; got {value!r}")
        if value is not None and value < low:
            raise ValueError(f"series_features: {name} must be at least {low}; got {value}")
    window = window or season or 12
    if len(x) < 2 * window - 1:
        raise ValueError(
            f"series_features: a trend over windows of {window} needs at least "
            f"{2 * window - 1} values; got {len(x)}"
        )
    features: Features = {}
    if season:
        phase = 2 * math.pi * np.arange(len(x)) / season
        features |= {"season_sin": np.sin(phase), "season_cos": np.cos(phase)}
    level = _rolling_mean(x, window)
    features |= {"level": level, "trend": _rolling_slope(level, window)}
    features["since_peak"] = _since_peak(x, max(1, (season or 2) // 2))
    return features


def user_features(columns: Mapping[str, object], steps: int | None = None) -> Features:
    """User columns ``name -> (T,)`` as float64 arrays, checked to have ``steps`` values."""
    if not isinstance(columns, Mapping):
        raise TypeError(
            f"user_features: columns must be a dict name -> (T,) array; got {columns!r:.60}"
        )
    out: Features = {}
    for name, values in columns.items():
        if not isinstance(name, str):
            raise TypeError(f"user_features: column names must be str; got {name!r}")
        array = _values("user_features", f"column {name!r}", values)
        if steps is not None and len(array) != steps:
            raise ValueError(
                f"user_features: column {name!r} must have {steps} values; got {len(array)}"
            )
        out[name] = array
    return out
