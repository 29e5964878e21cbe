"""The explorer's analysis endpoints over HTTP: span search, forecast attribution and "why did
it forget?" answer what :mod:`clearlstm.analysis` computes on the same sequence (with the
completeness check within 1%), and refuse bad parameters with a 4xx that names them."""

from __future__ import annotations

import http.client
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from clearlstm.analysis import find_spans
from clearlstm.errors import ApiError
from clearlstm.viz.saved_models import ModelFolder
from clearlstm.web import analysis_api
from clearlstm.web.checks import Context
from clearlstm.web.server import start_in_thread

TEXT = "to be or not to be that is the question"


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Two pytest workers on two busy cores: torch's own threads would only contend."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def server(models_folder: Path):
    running = start_in_thread("127.0.0.1", 0, models_folder)
    yield running
    running.shutdown()
    running.server_close()


@pytest.fixture(scope="module")
def folder(models_folder: Path) -> ModelFolder:
    return ModelFolder(models_folder)


@pytest.fixture(scope="module")
def wave(folder: ModelFolder) -> list[list[float]]:
    """Three windows' worth of the forecaster's own example, as the page sends it."""
    example = folder.open("wave").example
    return example + [[-v for v in row] for row in example] + example


def post(server, path: str, body) -> tuple[int, dict]:
    host, port = server.server_address[:2]
    connection = http.client.HTTPConnection(host, port, timeout=60)
    headers = {"Content-Type": "application/json"}
    connection.request("POST", path, body=json.dumps(body).encode(), headers=headers)
    response = connection.getresponse()
    answer = json.loads(response.read())
    connection.close()
    return response.status, answer


def test_span_search_returns_what_find_spans_finds(server, folder):
    body = {"model": "words", "text": TEXT, "quantity": "c", "start": 0, "stop": 2}
    status, answer = post(server, "/api/models/spans", body | {"threshold": 0.2})
    assert status == 200, answer
    trace = folder.open("words").subject_from_text(TEXT).run()
    expected = find_spans(trace[0, 0].c[:, 0, :], 0, 2, 0.2)
    assert answer["units"] == list(expected.units) and answer["units_total"] >= 1
    got = [(m["start"], m["stop"], m["score"]) for m in answer["matches"]]
    assert got == [(m.start, m.stop, pytest.approx(m.score, rel=1e-6)) for m in expected.matches]
    assert answer["matches_total"] == len(expected.matches) >= 1
    assert [m["text"] for m in answer["matches"]] == [
        TEXT[m.start : m.stop] for m in expected.matches
    ]
    assert answer["text"] == "to" and answer["steps"] == len(TEXT)
    lines = answer["unit_values"]
    assert lines["units"] == answer["units"][:16]
    assert np.allclose(lines["values"], trace[0, 0].c[:, 0, lines["units"]].T.numpy(), rtol=1e-6)
    assert all(m["units_on_total"] == len(m["units_on"]) for m in answer["matches"])


def test_span_search_with_no_unit_on_has_no_matches(server):
    body = {"model": "words", "text": TEXT, "start": 3, "stop": 9, "threshold": 0.99}
    status, answer = post(server, "/api/models/spans", body)
    assert status == 200, answer
    assert answer["units"] == [] and answer["matches"] == [] and answer["matches_total"] == 0


def test_span_search_on_a_series(server, wave):
    body = {"model": "wave", "sequence": wave, "start": 2, "stop": 4, "threshold": -1.0}
    status, answer = post(server, "/api/models/spans", body)
    assert status == 200, answer
    assert answer["units_total"] == 6 and "text" not in answer  # every h is above -1
    assert answer["matches"] == []  # ... at every step: one run, the query's own


def test_forecast_attribution_is_complete_and_in_data_units(server, folder, wave):
    body = {"model": "wave", "sequence": wave, "origin": 13}
    status, answer = post(server, "/api/models/attribution", body)
    assert status == 200, answer
    model = folder.open("wave")
    window = model.settings.data.window
    assert (answer["window"], answer["first_step"], answer["origin"]) == (window, 13 - window, 13)
    assert len(answer["attributions"]) == window and answer["target"] == "y"
    assert answer["converged"] and answer["relative_error"] < 0.01
    assert answer["total"] == pytest.approx(answer["delta"], rel=0.01)
    assert sum(answer["attributions"]) == pytest.approx(answer["total"], rel=1e-5, abs=1e-9)
    assert answer["attributions"][-1] == 0.0  # the flat baseline is the last row itself
    scaler = model.settings.data.scaler.to_scaler()
    rows = torch.tensor(scaler.transform(np.asarray(wave)[13 - window : 13]))[None]
    copy = analysis_api._float64(model)  # the cached model stays float32
    with torch.no_grad():
        scaled = copy(rows)[0, 0].numpy()
    assert answer["forecast"] == pytest.approx(float(scaler.inverse(scaled)[0]), rel=1e-6)
    by_column = np.asarray(answer["by_column"]["values"])
    assert by_column.shape == (1, window)


def test_forecast_attribution_from_the_training_mean(server, wave):
    body = {"model": "wave", "sequence": wave, "baseline": "mean", "max_intervals": 64}
    status, answer = post(server, "/api/models/attribution", body)
    assert status == 200, answer
    assert answer["origin"] == len(wave) and answer["max_intervals"] == 64
    assert answer["relative_error"] < 0.01 and answer["attributions"][-1] != 0.0


def test_why_forget_on_text_matches_the_trace(server, folder):
    body = {"model": "words", "text": TEXT, "unit": 2}
    status, answer = post(server, "/api/models/forgetting", body)
    assert status == 200, answer
    gates = folder.open("words").subject_from_text(TEXT).run()[0, 0].forget_gate[:, 0, 2]
    step = int(gates.argmin())  # no step given: where the unit's gate is lowest
    assert answer["step"] == step and answer["label"] == TEXT[step] and answer["read"] == step + 1
    assert answer["forget_gate"] == pytest.approx(float(gates[step]), abs=1e-5)
    assert np.allclose(answer["forget_gates"], gates.numpy(), atol=1e-6)
    assert len(answer["attributions"]) == len(TEXT)
    assert all(v == 0.0 for v in answer["attributions"][step + 1 :])  # not read yet
    assert answer["relative_error"] < 0.01 and answer["converged"]
    assert answer["total"] == pytest.approx(answer["delta"], rel=0.01)
    shut = answer["pushed_shut"]
    assert all(p["value"] < 0 for p in shut) and shut == sorted(shut, key=lambda p: p["value"])


def test_why_forget_on_a_forecaster_reads_every_step(server, wave):
    body = {"model": "wave", "sequence": wave, "unit": 1, "step": 5}
    status, answer = post(server, "/api/models/forgetting", body)
    assert status == 200, answer
    assert (answer["step"], answer["read"], answer["label"]) == (5, len(wave), None)
    assert answer["relative_error"] < 0.01 and len(answer["attributions"]) == len(wave)


W = {"model": "wave", "sequence": [[0.1]] * 10}
T = {"model": "words", "text": TEXT}
BAD = [
    # (path, body, status, message fragment)
    ("spans", [1], 400, "must be a JSON object"),
    ("spans", {"model": "nope"}, 404, "no model named 'nope'"),
    ("spans", T | {"stop": 2}, 422, "'start' is missing: send an integer in [0, 38]"),
    ("spans", T | {"start": -1, "stop": 2}, 422, "'start' must be an integer in [0, 38]"),
    ("spans", T | {"start": 39, "stop": 40}, 422, "the sequence has 39"),
    ("spans", T | {"start": True, "stop": 2}, 422, "got true/false"),
    ("spans", T | {"start": 1.5, "stop": 2}, 422, "got float"),
    ("spans", T | {"start": 4, "stop": 4}, 422, "'stop' must be an integer in [5, 39]"),
    ("spans", T | {"start": 4, "stop": 40}, 422, "'stop' must be an integer in [5, 39]"),
    ("spans", T | {"start": 0, "stop": 2, "threshold": "a"}, 422, "'threshold' must be a number"),
    ("spans", T | {"start": 0, "stop": 2, "threshold": 1e9}, 422, "finite number in [-1000"),
    ("spans", T | {"start": 0, "stop": 2, "quantity": "f"}, 422, "'quantity' must be one of"),
    ("spans", T | {"start": 0, "stop": 2, "layer": 1}, 422, "'layer' must be an integer in [0, 0]"),
    ("spans", T | {"start": 0, "stop": 2, "direction": 1}, 422, "'direction' must be"),
    ("spans", T | {"start": 0, "stop": 2, "min_shared": 0}, 422, "'min_shared' must be"),
    ("spans", T | {"start": 0, "stop": 2, "min_length": 0}, 422, "'min_length' must be"),
    ("spans", {"model": "words", "text": "to " * 700}, 413, "at most 2000"),
    ("attribution", T, 422, "reads text: forecast attribution is for forecasters"),
    ("attribution", W | {"sequence": [[0.1]] * 3}, 422, "reads windows of 8 steps"),
    ("attribution", W | {"origin": 7}, 422, "'origin' must be an integer in [8, 10]"),
    ("attribution", W | {"origin": 11}, 422, "'origin' must be an integer in [8, 10]"),
    ("attribution", W | {"target": 1}, 422, "'target' must be an integer in [0, 0]"),
    ("attribution", W | {"baseline": "zero"}, 422, "'baseline' must be one of 'flat', 'mean'"),
    ("attribution", W | {"max_intervals": 8}, 422, "'max_intervals' must be an integer in [16"),
    ("attribution", W | {"max_intervals": 4096}, 422, "in [16, 512]"),
    ("attribution", W | {"sequence": [["x"]] * 9}, 422, "'sequence[0]' must be a number"),
    ("forgetting", T, 422, "'unit' is missing: send an integer in [0, 7]"),
    ("forgetting", T | {"unit": 8}, 422, "'unit' must be an integer in [0, 7]"),
    ("forgetting", T | {"unit": "1"}, 422, "got a string"),
    ("forgetting", T | {"unit": 1, "step": 39}, 422, "'step' must be an integer in [0, 38]"),
    ("forgetting", T | {"unit": 1, "step": None}, 422, "'step' must be an integer in [0, 38]"),
    ("forgetting", T | {"unit": 1, "layer": -1}, 422, "'layer' must be an integer in [0, 0]"),
    ("forgetting", T | {"unit": 1, "max_intervals": 0}, 422, "'max_intervals'"),
    ("forgetting", {"model": "words", "text": "zq%", "unit": 1}, 422, "never saw"),
]


@pytest.mark.parametrize(("path", "body", "status", "message"), BAD)
def test_bad_parameters_get_a_clear_4xx(server, path, body, status, message):
    got, answer = post(server, f"/api/models/{path}", body)
    assert got == status, answer
    assert message in answer["error"], answer["error"]


def test_non_finite_threshold_is_refused(server):
    host, port = server.server_address[:2]
    connection = http.client.HTTPConnection(host, port, timeout=30)
    raw = b'{"model": "words", "text": "to be", "start": 0, "stop": 2, "threshold": NaN}'
    connection.request("POST", "/api/models/spans", raw, {"Content-Type": "application/json"})
    response = connection.getresponse()
    assert response.status == 422 and "NaN is not a number" in json.loads(response.read())["error"]
    connection.close()


def test_an_attribution_over_the_work_budget_is_refused(folder, monkeypatch):
    monkeypatch.setattr(analysis_api, "MAX_IG_WORK", 1e5)
    with pytest.raises(ApiError) as refused:
        body = {"model": "words", "text": TEXT, "unit": 0, "step": 30}
        analysis_api.why_forget(body, Context(folder))
    assert refused.value.status == 413
    assert "would take too long" in refused.value.message and "31 steps" in refused.value.message


def test_the_work_budget_cuts_the_intervals(folder, monkeypatch):
    model = folder.open("words")
    weights = sum(p.numel() for p in model.lstm.parameters())
    monkeypatch.setattr(analysis_api, "MAX_IG_WORK", 40 * 10 * weights)  # 38 intervals at most
    answer = analysis_api.why_forget(
        {"model": "words", "text": TEXT, "unit": 0, "step": 9}, Context(folder)
    )
    assert answer["max_intervals"] == 32 and answer["intervals"] <= 32
