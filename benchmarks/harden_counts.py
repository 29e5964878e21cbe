"""The counts issue 13 asks for, measured: crafted model folders through the CLI and the
explorer's listing (clean errors / tracebacks / hangs / leaks), bad command lines (clean
errors), and the explorer holding idle and trickling connections while a normal request
answers (its times beside the same request on an idle server, and the thread counts).

    PYTHONPATH=src python benchmarks/harden_counts.py      # about 2 minutes

Everything runs in this process (the CLI through ``main``), in a temporary folder.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import shutil
import signal
import socket
import statistics
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from crafted_folders import data_edits, file_edits, setting_edits, size_claims, weight_edits

SECRET = "SECRET-7f3a: never shown"  # in files outside the model folders
HANG_SECONDS = 20


class Hang(Exception):
    pass


def _alarm(*_: Any) -> None:
    raise Hang


def cli(argv: list[str]) -> tuple[str, str]:
    """``clearlstm ARGV`` in this process: its outcome and everything it printed."""
    from clearlstm.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(HANG_SECONDS)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as stop:  # argparse's usage errors
                code = stop.code
    except Hang:
        return "hang", out.getvalue() + err.getvalue()
    except BaseException as error:  # escaped main: a traceback for the user
        return "traceback", f"{type(error).__name__}: {error}"
    finally:
        signal.alarm(0)
    printed = out.getvalue() + err.getvalue()
    lines = err.getvalue().strip().splitlines()
    if code == 0:
        return "ran", printed
    clean = code in (1, 2) and len(lines) == 1 and lines[0].startswith("error: ")
    return ("clean error" if clean and "Traceback" not in printed else "traceback"), printed


# ---- crafted model folders ----------------------------------------------------------------


def crafted_folders(models: Path, work: Path) -> Counter:
    from clearlstm.viz.saved_models import ModelFolder
    from clearlstm.web.api import Context, list_models

    outside = work / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text(f"y\n{SECRET}\n" * 20)
    counts: Counter = Counter()
    for name, field in (("wave", "csv"), ("words", "text")):
        document = json.loads((models / name / "settings.json").read_text())
        edits = setting_edits(document) + weight_edits() + file_edits(outside)
        edits += data_edits(outside, field)
        edits += size_claims()
        for label, edit in edits:
            root = work / "crafted" / f"{name}-{counts['tried']}"
            folder = root / name
            shutil.copytree(models / name, folder)
            edit(folder)
            counts["tried"] += 1
            outcome, printed = cli(["explain", "--model", str(folder)])
            counts[f"cli {outcome}"] += 1
            signal.alarm(HANG_SECONDS)
            try:
                listed = json.dumps(list_models(None, Context(ModelFolder(root))))
                counts["listing ok"] += 1
            except Hang:
                listed, outcome = "", "hang"
                counts["listing hang"] += 1
            except Exception as error:  # would be a 500 for the whole list
                listed, outcome = "", "traceback"
                counts["listing traceback"] += 1
                print(f"  listing {name} / {label}: {type(error).__name__}: {error}")
            finally:
                signal.alarm(0)
            if SECRET in printed or SECRET in listed:
                counts["leaks"] += 1
            if outcome in ("traceback", "hang"):
                print(f"  {outcome}: {name} / {label}: {printed[-300:]}")
            shutil.rmtree(root, ignore_errors=True)
    return counts


# ---- bad command lines ----------------------------------------------------------------

NUMERIC = {
    "train": ["--window", "--horizon", "--season", "--hidden-size", "--layers", "--epochs",
              "--patience", "--batch-size", "--lr", "--clip", "--seed", "--threads"],
    "forecast --model m": ["--steps"],
    "generate --model m": ["--temperature", "--length", "--seed"],
    "figure heatmap": ["--step", "--start", "--layer", "--direction", "--input"],
    "explain": ["--input", "--long-term", "--short-term"],
    "serve": ["--port"],
}  # fmt: skip
BAD_NUMBERS = ["nan", "inf", "-inf", "1e309", "-1e400", "abc", "", "0x10", "1,5", "٣",
               "99999999999999999999999999", "-99999999999999999999999999", "1e200"]  # fmt: skip


def bad_command_lines(models: Path, work: Path) -> Counter:
    from clearlstm.cli.main import build_parser

    counts: Counter = Counter()
    for command, flag_names in NUMERIC.items():
        for flag in flag_names:
            for value in BAD_NUMBERS:
                argv = [*command.split(), flag, value]
                try:
                    with contextlib.redirect_stderr(io.StringIO()):
                        build_parser().parse_args(argv)
                    counts["numbers accepted (in range, not run)"] += 1
                    continue
                except (SystemExit, Exception):  # FlagError, argparse usage errors
                    pass
                counts["tried"] += 1
                counts[cli(argv)[0]] += 1
    d = work / "inputs"
    d.mkdir()
    csvs = {"nan": "y\n1\nnan\n", "inf": "y\n1\ninf\n", "1e309": "y\n1\n1e309\n",
            "1e300": "y\n" + "1e300\n" * 60, "empty": "", "header only": "y\n",
            "one row": "y\n1\n", "word": "y\n1\nabc\n", "two columns": "y,y\n1,2\n",
            "1e151 last": "y\n" + "1\n" * 59 + "1e151\n"}  # fmt: skip
    for label, text in csvs.items():
        (d / f"{label}.csv").write_text(text)
    (d / "latin1.csv").write_bytes(b"y\n\xe9\n")
    (d / "empty.txt").write_text("")
    (d / "latin1.txt").write_bytes(b"\xe9t\xe9\n" * 10)
    wave, words = str(models / "wave"), str(models / "words")
    runs = [["train", "--csv", str(d / f"{label}.csv"), "--out", str(d / "m")] for label in csvs]
    runs += [
        ["train", "--csv", str(d / "latin1.csv"), "--out", str(d / "m")],
        ["train", "--csv", str(d / "no such.csv"), "--out", str(d / "m")],
        ["train", "--csv", str(d / "a[/]b[red]:thumbs_up:.csv"), "--out", str(d / "m")],
        ["train", "--csv", str(d), "--out", str(d / "m")],
        ["train", "--text", str(d / "empty.txt"), "--out", str(d / "m")],
        ["train", "--text", str(d / "latin1.txt"), "--out", str(d / "m")],
        ["train", "--dataset", "nile", "--season", "100000", "--out", str(d / "m")],
        ["train", "--dataset", "nile", "--window", "100000", "--out", str(d / "m")],
        ["train", "--dataset", "no-such-dataset", "--out", str(d / "m")],
        ["train", "--dataset", "nile", "--target", "nope", "--out", str(d / "m")],
        ["train", "--dataset", "nile", "--out", str(d / "1e300.csv")],
        ["train", "--dataset", "nile", "--out", wave],  # a finished model, no --overwrite
        ["forecast", "--model", str(d / "no such"), "--out", str(d / "f.csv")],
        ["forecast", "--model", str(d / "1e300.csv"), "--out", str(d / "f.csv")],
        ["forecast", "--model", words, "--out", str(d / "f.csv")],
        ["forecast", "--model", wave, "--out", str(d / "no" / "such" / "f.csv")],
        ["generate", "--model", wave],
        ["generate", "--model", words, "--prompt", "\u2603 not in the vocabulary"],
        ["explain", "--sequence", "1,nan"],
        ["explain", "--model", wave, "--sequence", "a,b"],
        ["explain", "--model", wave, "--text", "abc"],
        ["figure", "retention", "--model", wave, "--sequence", "1e200", "--out", str(d / "r.png")],
        ["figure", "heatmap", "--out", str(d / "h.gif")],
        ["figure", "unit", "--step", "99", "--out", str(d / "u.png")],
        ["report", "--model", words, "--text", str(d / "no such.txt"), "--out", str(d / "r.html")],
        ["report", "--out", str(d / "no" / "r.html")],
        ["report", "--csv", str(d / "nan.csv"), "--out", str(d / "r.html")],
        ["serve", "--models", str(d / "no such")],
    ]  # fmt: skip
    for argv in runs:
        counts["tried"] += 1
        outcome, printed = cli(argv)
        counts[outcome] += 1
        if outcome != "clean error":
            print(f"  {outcome}: clearlstm {' '.join(argv)}: {printed[-300:]}")
    return counts


# ---- the explorer under idle and trickling clients ----------------------------------------


def os_threads() -> int:
    status = Path("/proc/self/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("Threads")))


def timed_get(address: tuple) -> float:
    import http.client

    started = time.perf_counter()
    connection = http.client.HTTPConnection(*address, timeout=30)
    connection.request("GET", "/api/models")
    response = connection.getresponse()
    listing = json.loads(response.read())
    connection.close()
    assert response.status == 200 and listing["models"], listing
    return time.perf_counter() - started


def slow_clients(models: Path, idle: int = 900, head: int = 50, body: int = 50) -> dict:
    from clearlstm.web.server import start_in_thread

    server = start_in_thread("127.0.0.1", 0, models, max_connections=idle + head + body + 100)
    address = server.server_address[:2]
    host = f"Host: {address[0]}:{address[1]}\r\n".encode()
    for _ in range(5):
        timed_get(address)  # models loaded, torch's threads started
    before = threading.active_count(), os_threads()
    quiet = []
    for _ in range(30):  # the same request on the idle server
        time.sleep(0.2)
        quiet.append(timed_get(address))
    held, tricklers = [], []
    try:
        held = [socket.create_connection(address, timeout=10) for _ in range(idle)]
        for k in range(head + body):
            sock = socket.create_connection(address, timeout=10)
            if k < head:
                pending = b"GET /api/unit HTTP/1.1\r\n" + host
            else:
                sock.sendall(b"POST /api/unit/step HTTP/1.1\r\n" + host + b"Content-Length: 40"
                             b"\r\nContent-Type: application/json\r\n\r\n")  # fmt: skip
                pending = b'{"x": 1' + b" " * 32 + b"}"
            held.append(sock)
            tricklers.append([sock, pending])
        loaded = []
        for tick in range(30):  # 6 s: a byte a second from each trickler, a GET every 0.2 s
            if tick % 5 == 0:
                for entry in tricklers:
                    entry[0].sendall(entry[1][:1])
                    entry[1] = entry[1][1:]
            time.sleep(0.2)
            loaded.append(timed_get(address))
        during = threading.active_count(), os_threads()
    finally:
        for sock in held:
            sock.close()
    time.sleep(1)
    after = threading.active_count(), os_threads()
    server.shutdown()
    server.server_close()
    return {"idle": idle, "head": head, "body": body, "held": len(held), "quiet": quiet,
            "loaded": loaded, "before": before, "during": during, "after": after}  # fmt: skip


def main() -> None:
    import resource

    from clearlstm.cli.main import main as clearlstm

    resource.setrlimit(resource.RLIMIT_AS, (16 * 2**30, resource.RLIM_INFINITY))
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "wave.csv").write_text(
            "y\n" + "".join(f"{math.sin(t / 4):.4f}\n" for t in range(80))
        )
        (work / "words.txt").write_text("to be or not to be that is the question\n" * 30)
        tiny = ["train", "--epochs", "1", "--seed", "0", "--hidden-size", "6"]
        with contextlib.redirect_stdout(io.StringIO()):
            assert clearlstm([*tiny, "--csv", str(work / "wave.csv"), "--window", "8",
                              "--out", str(work / "models" / "wave")]) == 0  # fmt: skip
            assert clearlstm([*tiny, "--text", str(work / "words.txt"),
                              "--out", str(work / "models" / "words")]) == 0  # fmt: skip
        models = work / "models"
        folders = crafted_folders(models, work)
        print(
            f"crafted model folders: {folders['tried']} tried (CLI explain --model and the "
            f"explorer's listing); CLI: {folders['cli clean error']} clean errors, "
            f"{folders['cli ran']} ran (edits that keep the model valid), "
            f"{folders['cli traceback']} tracebacks, {folders['cli hang']} hangs; listing: "
            f"{folders['listing ok']} answered, {folders['listing traceback']} tracebacks, "
            f"{folders['listing hang']} hangs; secrets shown: {folders['leaks']}"
        )
        lines = bad_command_lines(models, work)
        print(
            f"bad command lines: {lines['tried']} tried, {lines['clean error']} clean errors, "
            f"{lines['traceback']} tracebacks, {lines['hang']} hangs, {lines['ran']} ran; "
            f"{lines['numbers accepted (in range, not run)']} fuzzed numbers parsed in range"
        )
        s = slow_clients(models)
    quiet, loaded = statistics.median(s["quiet"]), statistics.median(s["loaded"])
    print(
        f"explorer: {s['held']} connections held ({s['idle']} idle, {s['head']} trickling a "
        f"request line, {s['body']} a body); GET /api/models median {loaded * 1e3:.1f} ms, max "
        f"{max(s['loaded']) * 1e3:.1f} ms, beside {quiet * 1e3:.1f} ms (max "
        f"{max(s['quiet']) * 1e3:.1f}) with none held: ratio {loaded / quiet:.2f}; threads "
        f"(Python/OS) before {s['before']}, during {s['during']}, after {s['after']}"
    )
    print(f"({time.perf_counter() - began:.0f} s)")


if __name__ == "__main__":
    main()
