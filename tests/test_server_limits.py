"""The explorer's limits on 127.0.0.1: idle and trickling clients hold no threads and do not
slow a normal request; slow clients are cut off; wrong Host headers, connections over the
cap and bodies over the limit are refused; a model that cannot be opened is one error entry."""

from __future__ import annotations

import http.client
import json
import os
import select
import shutil
import socket
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from clearlstm.viz.saved_models import ModelFolder
from clearlstm.web.api import Context, list_models
from clearlstm.web.app import Explorer, allowed_hosts
from clearlstm.web.server import MAX_BODY_BYTES, WORKERS, start_in_thread

IDLE, HEAD_TRICKLERS, BODY_TRICKLERS = 200, 10, 10


@pytest.fixture(scope="module")
def models(models_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """wave and words, a model without its "model" settings, one of impossible sizes, one whose
    weights are a FIFO, and a symlink that points at itself."""
    folder = tmp_path_factory.mktemp("limits") / "models"
    shutil.copytree(models_folder, folder)
    settings = json.loads((folder / "wave" / "settings.json").read_text())
    for name, edit in (
        ("nomodel", lambda s: s.pop("model")),
        ("huge", lambda s: s["model"].update(hidden_size=10**12, num_layers=10**6)),
    ):
        shutil.copytree(folder / "wave", folder / name)
        changed = json.loads(json.dumps(settings))
        edit(changed)
        (folder / name / "settings.json").write_text(json.dumps(changed))
    (folder / "loop").symlink_to(folder / "loop")
    shutil.copytree(folder / "wave", folder / "pipe")  # weights that would block a read
    (folder / "pipe" / "model.safetensors").unlink()
    os.mkfifo(folder / "pipe" / "model.safetensors")
    return folder


@pytest.fixture(scope="module")
def server(models: Path):
    running = start_in_thread("127.0.0.1", 0, models)
    yield running
    running.shutdown()
    running.server_close()


def get(server, path: str, host: str | None = None) -> tuple[int, dict]:
    connection = http.client.HTTPConnection(*server.server_address[:2], timeout=30)
    headers = {} if host is None else {"Host": host}
    connection.request("GET", path, headers=headers)
    response = connection.getresponse()
    answer = json.loads(response.read())
    connection.close()
    return response.status, answer


def os_threads() -> int:
    status = Path("/proc/self/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("Threads")))


def still_open(sock: socket.socket) -> bool:
    """Not closed by the server (nor answered: these clients have not finished a request)."""
    poll = select.poll()  # not select(): a thousand clients have descriptors past 1024
    poll.register(sock, select.POLLIN | select.POLLHUP)
    return not poll.poll(0)


def host_line(server) -> bytes:
    host, port = server.server_address[:2]
    return f"Host: {host}:{port}\r\n".encode()


def hold_clients(server, idle: int, head: int, body: int, seconds: int = 5) -> dict:
    """Hold ``idle`` silent connections, ``head`` sending a request line and ``body`` a body a
    byte a second, for ``seconds``, timing one normal GET /api/models each second; the
    connections still open and the thread counts before and during."""
    assert get(server, "/api/models")[0] == 200  # models loaded, torch's threads started
    assert get(server, "/api/unit")[0] == 200
    before = threading.active_count(), os_threads()
    address = server.server_address[:2]
    held: list[socket.socket] = []
    try:
        for _ in range(idle):
            held.append(socket.create_connection(address, timeout=10))
        tricklers = []
        for k in range(head + body):
            sock = socket.create_connection(address, timeout=10)
            if k < head:  # a request line sent a byte at a time
                pending = b"GET /api/unit HTTP/1.1\r\n" + host_line(server)
            else:  # a whole head, then the body a byte at a time
                sock.sendall(
                    b"POST /api/unit/step HTTP/1.1\r\n" + host_line(server) + b"Content-Length: "
                    b"40\r\nContent-Type: application/json\r\n\r\n"
                )
                pending = b'{"x": 1' + b" " * 32 + b"}"
            held.append(sock)
            tricklers.append([sock, pending])
        timings = []
        for _ in range(seconds):  # a byte a second from each trickler, one normal GET
            for entry in tricklers:
                entry[0].sendall(entry[1][:1])
                entry[1] = entry[1][1:]
            started = time.perf_counter()
            status, listing = get(server, "/api/models")
            timings.append(time.perf_counter() - started)
            assert status == 200 and "wave" in {m["name"] for m in listing["models"]}
            time.sleep(1)
        during = threading.active_count(), os_threads()
        open_now = sum(still_open(sock) for sock in held)
    finally:
        for sock in held:
            sock.close()
    print(
        f"\nheld {open_now} connections ({idle} idle, {head} trickling a head, {body} a body); "
        f"GET /api/models took {', '.join(f'{t * 1000:.1f}' for t in timings)} ms; Python "
        f"threads {before[0]} -> {during[0]}, OS threads {before[1]} -> {during[1]}"
    )
    return {"open": open_now, "timings": timings, "before": before, "during": during}


def check_held(seen: dict, clients: int) -> None:
    before, during, timings = seen["before"], seen["during"], seen["timings"]
    assert seen["open"] >= clients
    assert statistics.median(timings) < 0.1 and max(timings) < 1.0, timings
    assert during[0] <= before[0] + 1 and during[1] <= before[1] + 2, (before, during)


def test_idle_and_trickling_clients_hold_no_threads_and_a_normal_request_answers_fast(
    models_folder: Path,
):
    server = start_in_thread("127.0.0.1", 0, models_folder)
    try:
        seen = hold_clients(server, IDLE, HEAD_TRICKLERS, BODY_TRICKLERS)
    finally:
        server.shutdown()
        server.server_close()
    check_held(seen, IDLE + HEAD_TRICKLERS + BODY_TRICKLERS)


@pytest.mark.slow
def test_a_thousand_slow_clients_hold_no_threads_either(models_folder: Path):
    """The finding: 1000 idle connections gave 936 threads. With the cap raised to hold them
    all (the default, 256, refuses the rest as they arrive): 900 idle, 50 trickling a head
    and 50 a body, and the thread count does not move."""
    # The deadline is not what this test measures: opening 1000 connections on a loaded
    # machine can take longer than the default 15 s, which would close the first ones.
    server = start_in_thread("127.0.0.1", 0, models_folder, max_connections=1100, deadline=120)
    try:
        seen = hold_clients(server, 900, 50, 50)
    finally:
        server.shutdown()
        server.server_close()
    check_held(seen, 1000)


def test_slow_clients_are_cut_off_within_the_deadline(models: Path):
    """Deadline 1.5 s: an idle client, a request line and a body sent a byte a second."""
    running = start_in_thread("127.0.0.1", 0, models, deadline=1.5)
    address = running.server_address[:2]
    try:
        clients = {"idle": b"", "head": b"GET /api/unit HTTP/1.1\r\n"}
        socks = {name: socket.create_connection(address, timeout=10) for name in (*clients, "body")}
        socks["body"].sendall(
            b"POST /api/unit/step HTTP/1.1\r\n" + host_line(running) + b"Content-Length: 20\r\n"
            b"Content-Type: application/json\r\n\r\n{"
        )
        clients["body"] = b'"x": 1' + b" " * 13 + b"}"
        started, ended, answers = time.monotonic(), {}, {name: b"" for name in socks}
        while len(ended) < len(socks) and time.monotonic() - started < 10:
            for name, sock in socks.items():
                if name in ended:
                    continue
                if clients[name]:
                    try:
                        sock.sendall(clients[name][:1])
                        clients[name] = clients[name][1:]
                    except OSError:  # the server has closed it
                        pass
                while select.select([sock], [], [], 0)[0]:
                    try:
                        chunk = sock.recv(65536)
                    except ConnectionResetError:
                        chunk = b""
                    answers[name] += chunk
                    if not chunk:
                        ended[name] = time.monotonic() - started
                        break
            time.sleep(1)
    finally:
        running.shutdown()
        running.server_close()
    print(f"\ncut off after (s): {ended}")
    assert set(ended) == set(socks) and max(ended.values()) < 6, ended
    assert answers["idle"] == b""
    for name in ("head", "body"):
        assert answers[name].startswith(b"HTTP/1.1 408 "), answers[name]
        assert b"within 1.5 s" in answers[name] or b"within 2.5 s" in answers[name]


@pytest.mark.parametrize(
    ("host", "status"),
    [
        ("localhost:{port}", 200),
        ("127.0.0.1:{port}", 200),
        ("[::1]:{port}", 200),
        ("LOCALHOST:{port}", 200),
        ("evil.example:{port}", 421),
        ("evil.example", 421),
        ("localhost", 421),
        ("127.0.0.1:{other}", 421),
        ("localhost.evil.example:{port}", 421),
    ],
)
def test_a_host_header_that_is_not_this_server_is_refused(server, host, status):
    port = server.server_address[1]
    name = host.format(port=port, other=port + 1)
    got, answer = get(server, "/api/unit", host=name)
    assert got == status, answer
    if status == 421:
        assert f"Host {name!r} is not a name of this server" in answer["error"]
        assert f"localhost:{port}" in answer["error"] and "--host" in answer["error"]


def test_a_request_without_host_is_refused(server):
    with socket.create_connection(server.server_address[:2], timeout=10) as sock:
        sock.sendall(b"GET /api/unit HTTP/1.0\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 421 ") and b"no Host header" in answer


def test_host_widens_with_the_bound_address(models: Path):
    """127.0.0.2 is loopback too, but not one of the default names: --host adds it."""
    running = start_in_thread("127.0.0.2", 0, models)
    try:
        port = running.server_address[1]
        assert get(running, "/api/unit", host=f"127.0.0.2:{port}")[0] == 200
        assert get(running, "/api/unit", host=f"localhost:{port}")[0] == 200
        assert get(running, "/api/unit", host=f"evil.example:{port}")[0] == 421
    finally:
        running.shutdown()
        running.server_close()
    assert allowed_hosts("::1", 80) == ("localhost:80", "127.0.0.1:80", "[::1]:80",
                                        "localhost", "127.0.0.1", "[::1]")  # fmt: skip
    # Bound to every address: any IP address with the port (DNS rebinding sends a name).
    wide = Explorer(Context(), host="0.0.0.0", port=8765, deadline=1, workers=1, max_body_bytes=1)
    try:
        assert wide.host_refusal("192.168.1.20:8765") is None
        assert wide.host_refusal("[fe80::1]:8765") is None
        assert wide.host_refusal("192.168.1.20:8766") is not None
        assert wide.host_refusal("rebound.example:8765") is not None
    finally:
        wide.close()


def test_a_body_over_the_limit_is_refused_before_it_is_sent(server):
    """With ``Expect: 100-continue`` the first answer is the 413: the body is never asked for."""
    with socket.create_connection(server.server_address[:2], timeout=10) as sock:
        sock.sendall(
            b"POST /api/unit/step HTTP/1.1\r\n" + host_line(server) + b"Content-Type: "
            b"application/json\r\nContent-Length: 100000000\r\nExpect: 100-continue\r\n\r\n"
        )
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413 "), head
    assert b"connection: close" in head.lower()
    assert json.loads(body)["error"] == (
        f"the body has 100000000 bytes; at most {MAX_BODY_BYTES} are accepted"
    )


def test_connections_over_the_cap_are_refused_and_served_again_after(models: Path):
    running = start_in_thread("127.0.0.1", 0, models, max_connections=8)
    address = running.server_address[:2]
    idle = [socket.create_connection(address, timeout=10) for _ in range(8)]
    try:
        time.sleep(0.3)  # the server has accepted them
        with socket.create_connection(address, timeout=10) as sock:
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 503 ") and b"8 connections open" in answer
    finally:
        for sock in idle:
            sock.close()
    try:
        deadline = time.monotonic() + 5
        while len(running._server.server_state.connections) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert get(running, "/api/unit")[0] == 200
    finally:
        running.shutdown()
        running.server_close()


def test_one_bad_model_is_an_error_entry_and_the_others_are_listed(server):
    status, listing = get(server, "/api/models")
    assert status == 200
    entries = {m["name"]: m for m in listing["models"]}
    assert set(entries) == {"wave", "words", "nomodel", "huge", "pipe"}  # the loop: nowhere
    assert entries["wave"]["reads"] == "numbers" and entries["words"]["reads"] == "text"
    assert entries["nomodel"] == {"name": "nomodel", "error": entries["nomodel"]["error"]}
    assert "model is missing" in entries["nomodel"]["error"]
    assert "hidden_size" in entries["huge"]["error"]
    assert "is a FIFO (named pipe); expected a regular file" in entries["pipe"]["error"]


def test_listing_a_model_whose_weights_are_a_fifo_leaks_no_thread(server):
    """The finding: every GET /api/models blocked one thread for good on the FIFO."""
    get(server, "/api/models")
    before = threading.active_count(), os_threads()
    for _ in range(20):
        started = time.perf_counter()
        status, listing = get(server, "/api/models")
        assert status == 200 and time.perf_counter() - started < 10
        assert "FIFO" in {m["name"]: m for m in listing["models"]}["pipe"]["error"]
    after = threading.active_count(), os_threads()
    # at most the computation pool's threads, started as needed; 20 leaked before
    assert after[0] <= before[0] + WORKERS and after[1] <= before[1] + WORKERS, (before, after)


def test_an_unexpected_loader_error_is_one_entry_too(models: Path, monkeypatch):
    folder = ModelFolder(models)
    opened = folder.open

    def open_or_fail(name: str):
        if name == "words":
            raise RuntimeError("a loader bug")
        return opened(name)

    monkeypatch.setattr(folder, "open", open_or_fail)
    monkeypatch.setattr(folder, "names", lambda: ["wave", "words"])
    listing = list_models(None, Context(folder))
    assert listing["models"][0]["name"] == "wave" and "reads" in listing["models"][0]
    assert listing["models"][1] == {"name": "words", "error": "a loader bug"}


def test_the_pool_bounds_the_threads_of_a_burst(server):
    """24 model traces at once from 24 client threads: the server adds at most its 3."""
    get(server, "/api/models")

    def names() -> list[str]:
        return [t.name for t in threading.enumerate() if t.name.startswith("clearlstm-api")]

    barrier = threading.Barrier(24, timeout=30)
    seen: list[int] = []

    def one(_: int) -> int:
        barrier.wait()
        connection = http.client.HTTPConnection(*server.server_address[:2], timeout=60)
        body = json.dumps({"model": "wave", "sequence": [0.1] * 500})
        connection.request("POST", "/api/models/trace", body, {"Content-Type": "application/json"})
        status = connection.getresponse().status
        seen.append(len(names()))
        connection.close()
        return status

    with ThreadPoolExecutor(max_workers=24) as pool:
        statuses = list(pool.map(one, range(24), timeout=120))
    assert statuses == [200] * 24 and max(seen) <= 3, (statuses, seen)
