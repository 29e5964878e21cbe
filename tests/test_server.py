"""The explorer's HTTP server on 127.0.0.1: right answers, clear 4xx refusals, no crash, and a
bounded concurrent burst with every answer checked."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from clearlstm.teach.explain import explain_sequence
from clearlstm.teach.seed import COMPANIES
from clearlstm.viz.saved_models import load_saved_model
from clearlstm.viz.subject import statquest_subject
from clearlstm.web.server import MAX_BODY_BYTES, start_in_thread


@pytest.fixture(scope="module")
def models(models_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The two trained models, a broken one, and a symlink that points outside the folder."""
    root = tmp_path_factory.mktemp("server")
    folder = root / "models"
    shutil.copytree(models_folder, folder)
    outside = root / "outside"
    shutil.copytree(models_folder / "wave", outside)
    (folder / "escape").symlink_to(outside, target_is_directory=True)
    (folder / "broken").mkdir()
    (folder / "broken" / "settings.json").write_text("{ not json")
    (folder / "broken" / "model.safetensors").write_bytes(b"\x00" * 10)
    return folder


@pytest.fixture(scope="module")
def server(models: Path):
    running = start_in_thread("127.0.0.1", 0, models)
    yield running
    running.shutdown()
    running.server_close()


@pytest.fixture(scope="module")
def bare_server():
    running = start_in_thread("127.0.0.1", 0)
    yield running
    running.shutdown()
    running.server_close()


def request(server, method: str, path: str, body=None, headers=None, raw: bytes | None = None):
    host, port = server.server_address[:2]
    connection = http.client.HTTPConnection(host, port, timeout=30)
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    sent = {"Content-Type": "application/json"} if data is not None else {}
    connection.request(method, path, body=data, headers=sent | (headers or {}))
    response = connection.getresponse()
    payload = response.read()
    connection.close()
    kind = response.getheader("Content-Type", "")
    return response.status, (json.loads(payload) if "json" in kind else payload), kind


def raw_exchange(server, data: bytes, half_close: bool = False) -> tuple[int, dict]:
    """Send bytes as they are (HOST: the server's own Host line); the status line and JSON body
    of the answer."""
    host, port = server.server_address[:2]
    with socket.create_connection((host, port), timeout=30) as sock:
        sock.sendall(data.replace(b"HOST", f"Host: {host}:{port}".encode()))
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def test_page_and_static_files(server):
    status, page, kind = request(server, "GET", "/")
    assert status == 200 and kind.startswith("text/html") and b"clearlstm explorer" in page
    for name, kind_expected in (("app.js", "text/javascript"), ("style.css", "text/css")):
        status, _, kind = request(server, "GET", f"/static/{name}")
        assert status == 200 and kind.startswith(kind_expected)


def test_unit_step_equals_the_library(server):
    status, answer, _ = request(server, "POST", "/api/unit/step", {"x": -10, "c": 2, "h": 1})
    assert status == 200
    step = explain_sequence([-10.0], 2.0, 1.0).steps[0]
    assert answer["step"]["forget_gate"] == step.forget_gate < 0.01
    assert answer["sentences"] == step.sentences()
    assert "essentially forgotten" in answer["sentences"]["forget"]


def test_unit_step_with_other_weights(server):
    weights = {"forget": {"w_h": 0.0, "w_x": 0.0, "b": 0.0}}
    status, answer, _ = request(server, "POST", "/api/unit/step", {"weights": weights})
    assert status == 200
    assert answer["step"]["forget_gate"] == 0.5  # sigmoid(0): z = 0 whatever x and h
    assert answer["weights"]["input"] == {"w_h": 2.0, "w_x": 1.65, "b": 0.62}  # the seed's


def test_unit_sequence_reproduces_part_7(server):
    status, answer, _ = request(server, "POST", "/api/unit/sequence", {"inputs": [0, 0.5, 0.25, 1]})
    assert status == 200
    assert [round(s["h"], 6) for s in answer["steps"]] == [
        -0.127755,
        -0.096522,
        -0.166218,
        0.006393,
    ]
    assert answer["half_life"] == pytest.approx(5.40, abs=0.01)
    kept = statquest_subject(COMPANIES["A"]).run().retention(0)[:, 0, 0]
    assert answer["retention_from_step_1"] == kept.tolist()
    assert [round(k, 3) for k in kept.tolist()] == [1, 0.890, 0.760, 0.717]  # README


def test_unit_info_and_models_list(server, bare_server):
    status, info, _ = request(server, "GET", "/api/unit")
    assert status == 200 and info["companies"]["B"] == [1.0, 0.5, 0.25, 1.0]
    assert len(info["curves"]["z"]) == len(info["curves"]["sigmoid"]) == len(info["curves"]["tanh"])
    status, listing, _ = request(server, "GET", "/api/models")
    names = {m["name"]: m for m in listing["models"]}
    assert set(names) == {"wave", "words", "broken"}  # not "escape": it leads outside
    assert names["wave"]["reads"] == "numbers" and len(names["wave"]["example"]) == 8
    assert names["words"]["reads"] == "text"
    assert "error" in names["broken"]
    assert request(bare_server, "GET", "/api/models")[1] == {"models": [], "folder": None}


def test_model_trace_numbers_equal_the_trace(server, models: Path):
    sequence = [0.2, -0.4, 0.9, 0.1]
    status, answer, _ = request(server, "POST", "/api/models/trace",
                                {"model": "wave", "sequence": sequence})  # fmt: skip
    assert status == 200
    trace = load_saved_model(models / "wave").subject_from_numbers(sequence).run()
    (layer,) = answer["layers"]
    assert layer["units"] == [m.unit for m in trace.memory_summary()]
    forget = trace[0, 0].forget_gate[:, 0, layer["units"]].T.double().numpy()
    np.testing.assert_allclose(layer["quantities"]["forget_gate"]["values"], forget, rtol=1e-6)
    assert answer["inputs"] == [sequence]

    status, text, _ = request(
        server, "POST", "/api/models/trace", {"model": "words", "text": "to be"}
    )
    assert status == 200 and text["step_labels"] == list("to be") and text["steps"] == 5


BIG = [0.5] * 1001
BAD_REQUESTS = [
    # (method, path, json body, status, message fragment)
    ("GET", "/api/nope", None, 404, "no such endpoint"),
    ("GET", "/nope.html", None, 404, "no such page"),
    ("GET", "/static/../server.py", None, 404, "no such page"),
    ("GET", "/static/%2e%2e/server.py", None, 404, "no such page"),
    ("POST", "/api/unit", {}, 405, "takes GET"),
    ("GET", "/api/unit/step", None, 405, "takes POST"),
    ("DELETE", "/api/unit", None, 405, "not allowed"),
    ("POST", "/api/unit/step", [1, 2], 400, "must be a JSON object"),
    ("POST", "/api/unit/step", {"x": "a"}, 422, "'x' must be a number; got a string"),
    ("POST", "/api/unit/step", {"x": True}, 422, "'x' must be a number"),
    ("POST", "/api/unit/step", {"x": None}, 422, "got null"),
    ("POST", "/api/unit/step", {"x": 1000}, 422, "'x' must be a finite number in [-100, 100]"),
    ("POST", "/api/unit/step", {"h": -1e300}, 422, "'h' must be a finite number"),
    ("POST", "/api/unit/step", {"weights": []}, 422, "'weights' must be an object"),
    ("POST", "/api/unit/step", {"weights": {"fgt": {}}}, 422, "unknown stage(s) ['fgt']"),
    ("POST", "/api/unit/step", {"weights": {"forget": 3}}, 422, "'weights.forget' must be"),
    ("POST", "/api/unit/step", {"weights": {"forget": {"wh": 1}}}, 422, "unknown key(s) ['wh']"),
    ("POST", "/api/unit/step", {"weights": {"input": {"b": "x"}}}, 422, "'b' must be a number"),
    ("POST", "/api/unit/step", {"weights": {"output": {"w_x": 101}}}, 422, "[-100, 100]"),
    ("POST", "/api/unit/sequence", {"inputs": []}, 422, "non-empty list"),
    ("POST", "/api/unit/sequence", {"inputs": "1,2"}, 422, "non-empty list of numbers"),
    ("POST", "/api/unit/sequence", {"inputs": [1, "x"]}, 422, "'inputs[1]' must be a number"),
    ("POST", "/api/unit/sequence", {"inputs": [[1, 2]]}, 422, "single numbers"),
    ("POST", "/api/unit/sequence", {"inputs": [[1], [1, 2]]}, 422, "step 2 has 2 values"),
    ("POST", "/api/unit/sequence", {"inputs": BIG}, 413, "at most 1000"),
    ("POST", "/api/unit/sequence", {"inputs": [1], "c0": "0"}, 422, "'c0' must be a number"),
    ("POST", "/api/models/trace", {"model": "../wave"}, 404, "is not a model name"),
    ("POST", "/api/models/trace", {"model": "wave/../words"}, 404, "is not a model name"),
    ("POST", "/api/models/trace", {"model": "/etc"}, 404, "is not a model name"),
    ("POST", "/api/models/trace", {"model": "escape", "sequence": [1]}, 404, "outside the models"),
    ("POST", "/api/models/trace", {"model": "nope"}, 404, "no model named 'nope'"),
    ("POST", "/api/models/trace", {"model": 3}, 422, "'model' must be a model name"),
    ("POST", "/api/models/trace", {"model": "broken", "sequence": [1]}, 422, "cannot be opened"),
    ("POST", "/api/models/trace", {"model": "wave", "text": "ab"}, 422, "'sequence' must be"),
    ("POST", "/api/models/trace", {"model": "wave", "sequence": [[1, 2]]}, 422, "reads 1 column"),
    ("POST", "/api/models/trace", {"model": "wave", "sequence": [2e9]}, 422, "[-1e+09, 1e+09]"),
    ("POST", "/api/models/trace", {"model": "words", "sequence": [1]}, 422, "reads text"),
    ("POST", "/api/models/trace", {"model": "words", "text": "zq%"}, 422, "never saw"),
    ("POST", "/api/models/trace", {"model": "words", "text": "to " * 700}, 413, "at most 2000"),
]


@pytest.mark.parametrize(("method", "path", "body", "status", "message"), BAD_REQUESTS)
def test_bad_request_gets_a_clear_4xx(server, method, path, body, status, message):
    got, answer, kind = request(server, method, path, body)
    assert (got, kind) == (status, "application/json; charset=utf-8"), answer
    assert message in answer["error"]


@pytest.mark.parametrize(
    ("raw", "headers", "status", "message"),
    [
        (b"{", {}, 400, "not valid JSON"),
        (b'{"x": NaN}', {}, 422, "NaN is not a number"),
        (b'{"x": 1e999}', {}, 422, "finite number"),
        (b'{"x": ' + b"1" * 5000 + b"}", {}, 400, "not valid JSON"),
        (b"[" * 100_000, {}, 400, "not valid JSON"),
        (b'{"x": "\xff"}', {}, 400, "not valid JSON"),
        (b'{"x": 1}', {"Content-Type": "text/plain"}, 415, "send JSON"),
        (b"x" * (MAX_BODY_BYTES + 1), {}, 413, "at most 262144"),
    ],
)
def test_malformed_or_oversized_body(server, raw, headers, status, message):
    got, answer, _ = request(server, "POST", "/api/unit/step", raw=raw, headers=headers)
    assert got == status and message in answer["error"]


@pytest.mark.parametrize(
    ("data", "status", "message"),
    [
        (b"POST /api/unit/step HTTP/1.1\r\nHOST\r\n\r\n", 411, "Content-Length"),
        (b"POST /api/unit/step HTTP/1.1\r\nHOST\r\nTransfer-Encoding: chunked\r\n\r\n"
         b"1\r\n{\r\n0\r\n\r\n", 411, "not chunked"),
        (b"POST /api/unit/step HTTP/1.1\r\nHOST\r\nContent-Length: abc\r\n\r\n", 400,
         "bad Content-Length"),
        (b"POST /api/unit/step HTTP/1.1\r\nHOST\r\nContent-Length: 99999999999\r\n\r\n", 413,
         "at most"),
        (b"POST /api/unit/step HTTP/1.1\r\nHOST\r\nContent-Length: 50\r\n\r\n{\"x\": 1", 400,
         "the body ended after 7 of 50 bytes"),
        (b"GARBAGE\r\n\r\n", 400, "Bad request"),
        (b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n", 414, ""),
    ],
)  # fmt: skip
def test_broken_http_is_refused_with_json(server, data, status, message):
    got, answer = raw_exchange(server, data, half_close=True)
    assert got == status and message in answer["error"]


def test_server_survives_every_bad_request(server):
    status, answer, _ = request(server, "POST", "/api/unit/step", {"x": 1})
    assert status == 200 and round(answer["step"]["h"], 6) == 0.986229


def test_concurrent_burst_every_answer_checked(server):
    """128 requests from 16 threads at once: steps, sequences, model traces and refusals."""
    xs = np.linspace(-10, 10, 32).tolist()
    expected = {x: explain_sequence([x], 2.0, 1.0).steps[0].h for x in xs}
    model_h = load_saved_model(server.context.models.root / "wave").subject_from_numbers([0.3, 0.6])

    def one(k: int) -> bool:
        kind = k % 4
        if kind == 0:
            x = xs[k % len(xs)]
            status, answer, _ = request(server, "POST", "/api/unit/step", {"x": x})
            return status == 200 and answer["step"]["h"] == expected[x]
        if kind == 1:
            status, answer, _ = request(
                server, "POST", "/api/unit/sequence", {"inputs": [1, 0.5, 0.25, 1]}
            )
            return status == 200 and round(answer["steps"][-1]["h"], 6) == 0.969393
        if kind == 2:
            status, answer, _ = request(server, "POST", "/api/models/trace",
                                        {"model": "wave", "sequence": [0.3, 0.6]})  # fmt: skip
            unit = answer["layers"][0]["units"][0]
            h = float(model_h.run()[0, 0].h[-1, 0, unit])
            return status == 200 and answer["layers"][0]["quantities"]["h"]["values"][0][
                -1
            ] == pytest.approx(h, rel=1e-6)
        status, answer, _ = request(server, "POST", "/api/unit/step", {"x": "oops"})
        return status == 422 and "'x' must be a number" in answer["error"]

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(one, range(128), timeout=120))
    assert all(results), [k for k, ok in enumerate(results) if not ok]
    assert time.monotonic() - started < 120


def test_a_client_that_resets_its_connection_prints_nothing(capsys):
    """A browser closing a kept-alive connection is no error: no traceback on the console."""
    running = start_in_thread("127.0.0.1", 0)
    try:
        for _ in range(3):
            sock = socket.create_connection(running.server_address[:2], timeout=10)
            sock.sendall(b"GET /api/unit HTTP/1.1\r\nHost: localhost\r\n\r\n")
            sock.recv(1)  # answered: the handler now waits for the next request
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()  # with unread data and no linger: a reset
        time.sleep(0.5)  # the handler threads see the resets
    finally:
        running.shutdown()
        running.server_close()
    assert "Traceback" not in capsys.readouterr().err


def test_serve_command_prints_its_url_and_stops_cleanly_on_ctrl_c(models: Path):
    process = subprocess.Popen(
        [sys.executable, "-m", "clearlstm.cli", "serve", "--port", "0", "--models", str(models)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ | {"COLUMNS": "200"},
    )
    try:
        line = process.stdout.readline()
        assert line.startswith("clearlstm explorer: http://127.0.0.1:"), line
        url = line.split()[2]
        host, port = url.removeprefix("http://").rstrip("/").split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        connection.request("GET", "/api/unit")
        assert connection.getresponse().status == 200
        connection.close()
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err
    assert "stopped" in out and "Traceback" not in err


def test_serve_command_refuses_a_missing_models_folder(tmp_path: Path):
    result = subprocess.run(
        [sys.executable, "-m", "clearlstm.cli", "serve", "--models", str(tmp_path / "nope")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1
    assert "does not exist or is not a folder" in result.stderr
