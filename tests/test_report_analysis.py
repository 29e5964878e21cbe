"""`clearlstm report --model` on a trained forecaster and a trained char model: the ranked
cells, the saturation table, the attributions with their completeness check, and every
number equal to what the analysis library computes from the same model and data."""

from __future__ import annotations

import contextlib
import copy
import io
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from model_factory import make_forecaster, make_text_model

from clearlstm.analysis import (
    beats_chance,
    gate_statistics,
    integrated_gradients,
    rank_units,
    series_features,
    states_from_trace,
    text_features,
)
from clearlstm.cli.main import main
from clearlstm.tasks.series import read_series
from clearlstm.tasks.text import encode
from clearlstm.viz.saved_models import load_saved_model

# Quotes, brackets, punctuation and speeches: features that vary in the text.
PLAY = (
    "HAMLET.\nTo be, or not to be (that is the question).\n"
    'He said "whether tis nobler" and went on.\n\n'
    "OPHELIA.\nGood my lord, how does your honour [for this many a day]?\n\n"
) * 12


def run_report(*args: str) -> tuple[str, str]:
    """The HTML written and what was printed."""
    out = Path(args[args.index("--out") + 1])
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["report", *args]) == 0
    return out.read_text(encoding="utf-8"), printed.getvalue()


def cell_rows(document: str) -> dict[tuple[str, str, int], tuple[list[float], str]]:
    """The ranked-cells table: (feature, quantity, unit) -> (numbers, verdict cell)."""
    table = re.search(r'<table id="cells">(.*?)</table>', document, re.S).group(1)
    rows = {}
    for m in re.finditer(
        r'<tr data-feature="([^"]+)" data-quantity="(\w)" data-unit="(\d+)">'
        r"(.*?)</tr>",
        table,
        re.S,
    ):
        numbers = [float(v) for v in re.findall(r'data-v="([^"]+)"', m.group(4))]
        verdict = re.findall(r'<td class="text">([^<]*)</td>', m.group(4))[-1]
        rows[(m.group(1), m.group(2), int(m.group(3)))] = (numbers, verdict)
    return rows


def table_numbers(document: str, table_id: str) -> list[list[float]]:
    table = re.search(rf'<table id="{table_id}">(.*?)</table>', document, re.S).group(1)
    return [
        [float(v) for v in re.findall(r'data-v="([^"]+)"', row)]
        for row in re.findall(r"<tr>(.*?)</tr>", table, re.S)
        if "<td" in row
    ]


def check(document: str, table_id: str) -> dict[str, float]:
    """A completeness-check table: output, baseline, difference, sum, relative error."""
    rows = table_numbers(document, table_id)
    names = ("output", "baseline", "delta", "total", "relative_error")
    return {name: row[0] for name, row in zip(names, rows, strict=False)}


@pytest.fixture(scope="module")
def forecaster(tmp_path_factory):
    folder = tmp_path_factory.mktemp("forecaster")
    model = make_forecaster(folder)
    out = folder / "wave.html"
    document, printed = run_report(
        "--model", str(model), "--csv", str(folder / "wave.csv"), "--out", str(out)
    )
    return model, folder / "wave.csv", document, printed


@pytest.fixture(scope="module")
def text_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("text")
    model = make_text_model(folder, "play", PLAY)
    out = folder / "play.html"
    document, printed = run_report(
        "--model", str(model), "--text", str(folder / "play.txt"), "--out", str(out)
    )
    return model, PLAY, document, printed


def forecaster_states(model_dir: Path, csv: Path):
    model = load_saved_model(model_dir)
    data = model.settings.data
    rows = read_series(csv, list(data.targets)).values
    scaled = data.scaler.to_scaler().transform(rows)
    origins = np.arange(data.window, len(rows) + 1)
    x = torch.tensor(np.stack([scaled[t - data.window : t] for t in origins]), dtype=torch.float32)
    trace = model.module.trace(x)
    states = {k: getattr(trace[-1, 0], k)[-1].double().numpy() for k in ("c", "h")}
    features = {k: v[origins - 1] for k, v in series_features(rows[:, 0], data.season).items()}
    return model, x, trace, states, features


def assert_cells_equal_library(document: str, states, features) -> None:
    def varies(v: np.ndarray) -> bool:  # defined on two steps per fold, and not constant
        finite = v[np.isfinite(v)]
        return len(finite) >= 10 and finite.min() < finite.max()

    features = {k: v for k, v in features.items() if varies(v)}
    scores = rank_units(states, features)
    expected = {(s.feature, s.quantity, s.unit): s for s in scores}
    rows = cell_rows(document)
    assert {f for f, _, _ in rows} == set(features)
    assert len(rows) == 3 * len(features)  # the top 3 units of each feature
    for key, (numbers, _) in rows.items():
        s = expected[key]
        want = [
            s.r,
            s.chance_r,
            s.chance_r_max,
            s.p_value,
            s.probe_r2,
            s.chance_probe_r2,
            s.all_units_r2,
            s.chance_all_units_r2,
        ]
        np.testing.assert_allclose(numbers, want, rtol=1e-12, atol=1e-15, err_msg=str(key))
    # Each feature's first row is its best unit, and its verdict is the library's.
    for feature in features:
        best = next(s for s in scores if s.feature == feature)
        numbers, verdict = rows[(feature, best.quantity, best.unit)]
        if np.isnan(best.all_units_r2):
            assert verdict == "constant"
        else:
            assert verdict == ("beats chance" if beats_chance(best) else "no better than chance")
    none = not any(beats_chance(next(s for s in scores if s.feature == f)) for f in features)
    assert ("Nothing beats chance." in document) == none


def assert_saturation_equal_library(document: str, trace) -> None:
    stats = gate_statistics(trace)
    rows = np.array(table_numbers(document, "saturation"))
    hidden = len(stats.half_life_median)
    assert rows.shape[0] == hidden
    table = re.search(r'<table id="saturation">(.*?)</table>', document, re.S).group(1)
    units = [int(u) for u in re.findall(r"<tr><td>(\d+)</td>", table)]
    assert units == list(range(hidden))
    expected = np.column_stack(
        [
            v
            for gate in ("input_gate", "forget_gate", "output_gate")
            for v in (stats.saturation[gate].left, stats.saturation[gate].right)
        ]
        + [
            stats.half_life_q1,
            stats.half_life_median,
            stats.half_life_q3,
            stats.c_range,
            stats.h_range,
        ]
    )
    np.testing.assert_array_equal(rows, expected)
    assert ((rows[:, :6] >= 0) & (rows[:, :6] <= 1)).all()


def test_forecaster_report_ranks_cells_as_the_library_does(forecaster):
    model_dir, csv, document, _ = forecaster
    _, _, _, states, features = forecaster_states(model_dir, csv)
    assert "What did it learn to remember?" in document
    assert_cells_equal_library(document, states, features)


def test_forecaster_report_saturation_table_is_gate_statistics(forecaster):
    model_dir, csv, document, _ = forecaster
    _, _, trace, _, _ = forecaster_states(model_dir, csv)
    assert_saturation_equal_library(document, trace)
    assert "median half-lives" in document  # the half-life histogram's caption


def test_forecaster_report_attribution_is_complete_and_the_library_s(forecaster):
    model_dir, csv, document, _ = forecaster
    model, x, _, _, _ = forecaster_states(model_dir, csv)
    got = check(document, "attribution-check")
    assert got["relative_error"] <= 0.01
    assert abs(got["total"] - got["delta"]) <= 0.01 * abs(got["delta"])
    module = copy.deepcopy(model.module).double().eval()
    window = x[-1].double()
    result = integrated_gradients(
        lambda w: module(w)[:, 0, 0], window, window[-1:].expand_as(window).clone()
    )
    std = model.settings.data.scaler.std[0]
    np.testing.assert_allclose(got["total"], result.total * std, rtol=1e-9)
    np.testing.assert_allclose(got["delta"], result.delta * std, rtol=1e-9)
    mean = model.settings.data.scaler.mean[0]
    np.testing.assert_allclose(got["output"], result.output * std + mean, rtol=1e-9)
    np.testing.assert_allclose(got["baseline"], result.baseline_output * std + mean, rtol=1e-9)
    steps = np.array(table_numbers(document, "attribution-steps"))[:, 0]
    np.testing.assert_allclose(steps, result.per_step.numpy() * std, rtol=1e-9, atol=1e-15)
    assert "Integrated gradients of the forecast over the window it read." in document
    forget = check(document, "forgetting-check")
    assert forget["relative_error"] <= 0.01
    assert abs(forget["total"] - forget["delta"]) <= 0.01 * abs(forget["delta"]) + 1e-12


def test_forecaster_report_prints_the_findings(forecaster):
    printed = forecaster[3]
    assert "What did it learn to remember? the rows given, 73 forecast origins" in printed
    for feature in ("level", "trend", "since_peak"):
        assert re.search(rf"^{feature}\s.*(beats chance|no better than chance)", printed, re.M)
    assert "forecast attribution: sum" in printed and "relative error" in printed


def test_text_report_ranks_cells_colours_characters_and_explains_forgetting(text_model):
    model_dir, text, document, printed = text_model
    model = load_saved_model(model_dir)
    piece = model.settings.data.seq_len
    used = text[: len(text) // piece * piece]
    ids = encode(used, model.settings.vocabulary).view(-1, piece)
    trace = model.module.trace(ids)
    assert_cells_equal_library(document, states_from_trace(trace), text_features(used))
    assert_saturation_equal_library(document, trace)
    # The top cells over the text: one coloured span per character shown.
    blocks = re.findall(r"<div class='chars'>(.*?)</div>", document, re.S)
    assert len(blocks) >= 2  # the cells' and the forgetting's
    assert blocks[0].count("<span") == min(len(used), 600)
    forget = check(document, "forgetting-check")
    assert forget["relative_error"] <= 0.01
    assert abs(forget["total"] - forget["delta"]) <= 0.01 * abs(forget["delta"])
    assert "Why did it forget here?" in document and "attribution-check" not in document
    assert f"What did it learn to remember? the text given, {len(used)} characters" in printed


def test_forecaster_without_its_series_still_attributes(tmp_path):
    model_dir = make_forecaster(tmp_path)  # its CSV lies outside the folder: not opened
    document, printed = run_report("--model", str(model_dir), "--out", str(tmp_path / "r.html"))
    assert "cells not ranked" in printed and '<table id="cells">' not in document
    got = check(document, "attribution-check")
    assert got["relative_error"] <= 0.01
    assert '<table id="saturation">' in document


def test_features_the_units_cannot_know_are_reported_as_chance():
    """Noise features, independent of what the LSTM read: the report says nothing beats
    chance, and each feature's verdict says so."""
    from clearlstm import LSTM
    from clearlstm.analysis import probe_all_units
    from clearlstm.viz.analysis_report import analysis_sections
    from clearlstm.viz.cell_analysis import CellAnalysis
    from clearlstm.viz.html import Figures

    torch.manual_seed(0)
    lstm = LSTM(1, 5)
    with torch.no_grad():
        _, _, trace = lstm(torch.randn(400, 1, 1), trace=True)
    states = states_from_trace(trace)
    rng = np.random.default_rng(1)
    features = {f"noise{k}": rng.standard_normal(400) for k in range(3)}
    scores = rank_units(states, features)
    analysis = CellAnalysis(
        "series",
        "noise",
        400,
        states,
        features,
        scores,
        probe_all_units(states, features),
        gate_statistics(trace),
        None,
        np.zeros(400),
        None,
        None,
        "",
        None,
        None,
        None,
        None,
        1.0,
        0.0,
    )
    assert not any(beats_chance(s) for s in scores)
    document = analysis_sections(analysis, Figures("png"))
    assert "Nothing beats chance." in document
    assert set(analysis.verdicts().values()) == {"no better than chance"}
    assert [v for _, v in cell_rows(document).values() if v] == ["no better than chance"] * 3
