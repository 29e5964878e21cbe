"""Hypothesis features: exact values on small texts and series, and their checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from clearlstm.analysis import series_features, text_features, user_features

PLAY = '\nHam.\nTo be, or not.\n"Hi" (a [b]) x\n\nIAGO.\nNo'


def row(values: np.ndarray) -> str:
    """One character per step: the value's last digit, ``x`` for NaN."""
    return "".join("x" if math.isnan(v) else str(int(v))[-1] for v in values)


def test_text_features_step_by_step() -> None:
    f = text_features(PLAY)
    assert all(v.shape == (len(PLAY),) and v.dtype == np.float64 for v in f.values())
    # |Ham.|To be, or not.|"Hi" (a [b]) x||IAGO.|No
    expected = {
        "inside_quotes": "000000000000000000000111000000000000000000000",
        "position_in_line": "001234012345678901234012345678901234001234501",
        "bracket_depth": "000000000000000000000000001112210000000000000",
        "line_start": "110000100000000000000100000000000000110000010",
        "speaker_line": "011111000000000000000000000000000000011111100",
        "chars_into_speech": "xxxxxx012345678901234567890123456789012345601",
        "after_punctuation": "000001100000110000001100000000000000000000110",
    }
    assert {name: row(values) for name, values in f.items()} == expected


def test_speakers_are_names_after_a_blank_line() -> None:
    text = "ACT I.\n\nFirst Witch:\nWhen shall we three meet again\nIn thunder.\n"
    speaker = text_features(text)["speaker_line"]
    lines = text.split("\n")
    start = len(lines[0]) + 2  # "First Witch:" starts after "ACT I.\n\n"
    assert speaker[:start].sum() == 0  # "ACT I." is no speaker
    assert speaker[start : start + 13].tolist() == [1.0] * 13  # the name and its newline
    assert speaker[start + 13 :].sum() == 0
    # A name-like line inside a speech (no blank line before it) is no speaker either.
    assert text_features("Ham.\nNo.\n")["speaker_line"].tolist() == [1.0] * 5 + [0.0] * 4


def test_unbalanced_brackets_never_go_below_zero() -> None:
    assert text_features("))(")["bracket_depth"].tolist() == [0.0, 0.0, 1.0]


def test_series_features() -> None:
    t = np.arange(48)
    values = np.sin(2 * np.pi * t / 12) + 0.1 * t
    f = series_features(values, season=12)
    assert list(f) == ["season_sin", "season_cos", "level", "trend", "since_peak"]
    np.testing.assert_allclose(f["season_sin"], np.sin(2 * np.pi * t / 12))
    np.testing.assert_allclose(f["season_cos"][::12], 1.0)
    # Over a whole season the sine averages out: level and trend see the linear part.
    np.testing.assert_allclose(f["level"][11:], 0.1 * (t[11:] - 5.5), atol=1e-12)
    np.testing.assert_allclose(f["trend"][22:], 0.1, atol=1e-12)  # no seasonal swing left
    assert np.isnan(f["level"][:11]).all() and np.isnan(f["trend"][:22]).all()
    peaks = np.flatnonzero(f["since_peak"] == 0)
    assert np.all(np.diff(peaks) == 12)  # one peak a season
    assert np.all(np.isnan(f["since_peak"][: peaks[0]]))
    assert f["since_peak"][peaks[0] + 5] == 5


def test_series_without_season_and_from_torch() -> None:
    f = series_features(torch.arange(30.0), window=4)
    assert list(f) == ["level", "trend", "since_peak"]
    np.testing.assert_allclose(f["trend"][6:], 1.0)
    assert f["level"][10] == pytest.approx(8.5) and np.isnan(f["trend"][5])
    with pytest.raises(ValueError, match="windows of 4 needs at least 7 values; got 6"):
        series_features(np.arange(6.0), window=4)


def test_user_features() -> None:
    cols = user_features({"a": [1, 2, 3], "b": torch.zeros(3)}, steps=3)
    assert cols["a"].dtype == np.float64 and cols["b"].tolist() == [0.0] * 3
    with pytest.raises(ValueError, match="column 'a' must have 4 values; got 3"):
        user_features({"a": [1, 2, 3]}, steps=4)
    with pytest.raises(ValueError, match=r"column 'm' must be a 1-d array .* got shape \(2, 2\)"):
        user_features({"m": np.zeros((2, 2))})
    with pytest.raises(TypeError, match="columns must be a dict"):
        user_features([1, 2])


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: text_features(""), ValueError, "text must be a non-empty str"),
        (lambda: series_features([1.0]), ValueError, "at least 2 steps"),
        (lambda: series_features([1.0, 2.0], season=1), ValueError, "season must be at least 2"),
        (lambda: series_features([1.0, 2.0], season=2.5), TypeError, "season must be an int"),
    ],
)
def test_errors_name_the_argument(call, error, message) -> None:
    with pytest.raises(error, match=message):
        call()
