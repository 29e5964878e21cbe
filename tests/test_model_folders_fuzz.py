"""Crafted model folders (garbled settings, lying safetensors headers, links out, FIFOs,
folders where files belong) through the library loader and the CLI: always a clean error or a
correct result, never a traceback, a hang or a write outside the output folder."""

from __future__ import annotations

import contextlib
import io
import json
import os
import resource
import shutil
import signal
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from folder_tools import listing
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from clearlstm.cli.main import main
from clearlstm.errors import ClearLSTMError
from clearlstm.viz.saved_models import load_saved_model

COUNTS: Counter = Counter()
SECONDS = 30  # per call; a FIFO read would block for ever
FILES = ("settings.json", "model.safetensors")
SECRET = "y\n" + "1.2345\n" * 40  # a CSV and a text: neither may ever be shown


class Hang(Exception):
    pass


@contextlib.contextmanager
def deadline(seconds: float):
    def alarm(*_: Any) -> None:
        raise Hang

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path inside a parsed settings.json."""
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, inner in value.items():
            found += paths(inner, (*prefix, key))
    if isinstance(value, list):
        for key, inner in list(enumerate(value))[:3]:
            found += paths(inner, (*prefix, key))
    return found


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=8,
)
file_kinds = st.sampled_from(["missing", "folder", "fifo", "dev zero", "outside", "inside", "loop"])
settings_edits = st.one_of(
    st.tuples(st.just("set"), st.integers(0, 10**6), json_values),
    st.tuples(st.just("delete"), st.integers(0, 10**6), st.none()),
    st.tuples(st.just("huge number"), st.integers(0, 10**6), st.integers(300, 6000)),
    st.tuples(st.just("unknown key"), st.integers(0, 10**6), st.text(min_size=1, max_size=8)),
)
raw_settings = st.one_of(
    st.tuples(st.just("bytes"), st.binary(max_size=300)),
    st.tuples(st.just("truncate"), st.floats(0, 1)),
    st.tuples(st.just("not utf-8"), st.floats(0, 1)),
    st.tuples(st.just("nesting"), st.integers(50, 200_000)),
)
weight_edits = st.one_of(
    st.tuples(st.just("header length"), st.integers(0, 2**64 - 1)),
    st.tuples(st.just("header bytes"), st.binary(min_size=1, max_size=200)),
    st.tuples(st.just("dtype"), st.sampled_from(["I32", "F64", "BOOL", "U8", "F16", "XX", "I64"])),
    st.tuples(st.just("shape"), st.lists(st.integers(-2, 2**40), max_size=3)),
    st.tuples(st.just("offsets"), st.lists(st.integers(-2, 2**40), max_size=3)),
    st.tuples(st.just("truncate"), st.floats(0, 1)),
    st.tuples(st.just("flip"), st.floats(0, 1)),
)
data_edits = st.tuples(
    st.sampled_from(["outside", "fifo", "dev zero", "folder", "gone", "inside"]), st.booleans()
)
edits = st.lists(
    st.one_of(
        st.tuples(st.just("settings"), settings_edits),
        st.tuples(st.just("raw settings"), raw_settings),
        st.tuples(st.just("weights"), weight_edits),
        st.tuples(st.just("file"), st.tuples(st.sampled_from(FILES), file_kinds)),
        st.tuples(st.just("data"), data_edits),
        st.tuples(st.just("old folder"), st.none()),
    ),
    min_size=1,
    max_size=3,
)


def edit_document(folder: Path, change: Any) -> None:
    path = folder / "settings.json"
    if not path.is_file():
        return  # a FIFO, a device or a folder by an earlier change: opening it would block
    try:
        document = json.loads(path.read_bytes())
    except (ValueError, OSError, RecursionError):
        return  # already garbled or not a file
    if not isinstance(document, dict):
        return
    marker = None
    if change[0] in ("set", "delete", "huge number", "unknown key"):
        places = paths(document)
        place = places[change[1] % len(places)]
        parent = document
        for key in place[:-1]:
            parent = parent[key]
        key = place[-1]
        if change[0] == "set":
            parent[key] = change[2]
        elif change[0] == "delete":
            del parent[key]
        elif change[0] == "huge number":
            parent[key], marker = "@huge@", "9" * change[2]
        elif isinstance(parent, dict):
            parent[change[2]] = 1
    if change[0] == "old":
        document.pop("weights_sha256", None)
        document.pop("example", None)
    text = json.dumps(document)
    path.write_text(text.replace('"@huge@"', marker) if marker else text)


def edit_raw_settings(folder: Path, change: Any) -> None:
    path = folder / "settings.json"
    if path.is_symlink() or (path.exists() and not path.is_file()):
        return  # writing into a FIFO would block, through a link loop raise ELOOP
    if change[0] == "bytes":
        path.write_bytes(change[1])
    elif change[0] == "nesting":
        path.write_text("[" * change[1] + "]" * change[1])
    elif path.is_file():
        data = path.read_bytes()
        cut = int(len(data) * change[1])
        path.write_bytes(
            data[:cut] if change[0] == "truncate" else data[:cut] + b"\xff\xfe" + data[cut:]
        )


def edit_weights(folder: Path, change: Any) -> None:
    path = folder / "model.safetensors"
    if not path.is_file() or path.is_symlink():
        return
    data = path.read_bytes()
    n = min(int.from_bytes(data[:8], "little"), max(len(data) - 8, 0))  # a lying length
    header, rest = data[8 : 8 + n], data[8 + n :]
    kind, value = change
    if kind == "header length":
        data = value.to_bytes(8, "little") + data[8:]
    elif kind == "header bytes":
        data = data[:8] + (value * n)[:n] + rest
    elif kind in ("dtype", "shape", "offsets"):
        try:
            parsed = json.loads(header)
            name = sorted(k for k in parsed if k != "__metadata__")[0]
        except (ValueError, TypeError, IndexError, RecursionError):
            return  # the header is garbled already
        field = {"dtype": "dtype", "shape": "shape", "offsets": "data_offsets"}[kind]
        parsed[name][field] = value
        new = json.dumps(parsed).encode()
        data = len(new).to_bytes(8, "little") + new + rest
    elif kind == "truncate":
        data = data[: int(len(data) * value)]
    elif data:  # flip a bit (an empty file, truncated earlier, has none)
        at = min(len(data) - 1, 8 + n + int(len(rest) * value))
        data = data[:at] + bytes([data[at] ^ 0x40]) + data[at + 1 :]
    path.write_bytes(data)


def make_kind(path: Path, kind: str, outside: Path) -> None:
    """Replace ``path`` by a missing file, a folder, a FIFO or a link."""
    keep = outside / f"real-{path.name}"
    if path.is_file() and not path.is_symlink():
        shutil.copy(path, keep)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
    if kind == "folder":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "dev zero":
        path.symlink_to("/dev/zero")
    elif kind == "outside" and keep.exists():
        path.symlink_to(keep)
    elif kind == "inside" and keep.exists():
        shutil.copy(keep, path.with_name("inner-" + path.name))
        path.symlink_to("inner-" + path.name)
    elif kind == "loop":
        path.symlink_to(path.name)


def edit_data(folder: Path, change: Any, outside: Path) -> None:
    where, old = change
    key = "csv" if (folder / "settings.json").is_file() and "csv" in _data(folder) else "text"
    target = {
        "outside": outside / "secret.txt",
        "fifo": folder / "pipe",
        "dev zero": Path("/dev/zero"),
        "folder": folder,
        "gone": folder / "gone.csv",
        "inside": folder / "data.txt",
    }[where]
    (outside / "secret.txt").write_text(SECRET)
    if where == "fifo" and not target.exists():
        os.mkfifo(target)
    if where == "inside" and not target.is_symlink():
        target.write_text("y\n" + "2.5\n" * 40 if key == "csv" else "to be or not\n" * 20)
    edit_document(folder, ("old",) if old else ("none",))
    path = folder / "settings.json"
    if not path.is_file():
        return
    with contextlib.suppress(ValueError, OSError, TypeError, LookupError, RecursionError):
        document = json.loads(path.read_bytes())
        document["data"][key], document["data"]["dataset"] = str(target), None
        path.write_text(json.dumps(document))


def _data(folder: Path) -> dict:
    with contextlib.suppress(ValueError, OSError, TypeError, KeyError, LookupError, RecursionError):
        return json.loads((folder / "settings.json").read_bytes())["data"]
    return {}


def craft(base: Path, root: Path, changes: list) -> Path:
    outside = root / "outside"
    outside.mkdir()
    folder = shutil.copytree(base, root / "models" / "m")
    for kind, change in changes:
        if kind == "settings":
            edit_document(folder, change)
        elif kind == "raw settings":
            edit_raw_settings(folder, change)
        elif kind == "weights":
            edit_weights(folder, change)
        elif kind == "file":
            make_kind(folder / change[0], change[1], outside)
        elif kind == "data":
            edit_data(folder, change, outside)
        else:
            edit_document(folder, ("old",))
    return folder


def library(folder: Path) -> str:
    try:
        with deadline(SECONDS):
            model = load_saved_model(folder)
            model.describe()
            example = model.example
            assert "1.2345" not in repr(example), "a data file outside the folder was read"
            if model.reads_text:
                subject = model.subject_from_text(example or model.settings.vocabulary[:3])
            else:
                subject = model.subject_from_numbers([[1.0] * len(model.columns)] * 3)
            subject.run()
    except Hang:
        return "hang"
    except (ClearLSTMError, ValueError):
        return "clean error"
    except Exception:
        COUNTS["traceback"] += 1
        raise
    return "result"


def cli(args: list[str]) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    try:
        with deadline(SECONDS), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(args)
    except Hang:
        return "hang", ""
    except BaseException:
        COUNTS["traceback"] += 1
        raise
    message = err.getvalue().strip()
    if code == 0:
        return "result", message
    lines = message.splitlines()
    assert code == 1 and len(lines) == 1 and lines[0].startswith("error:"), (code, message)
    return "clean error", message


def _virtual_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    return 0


@pytest.fixture(scope="module", autouse=True)
def report_counts():
    # A crafted folder that made clearlstm allocate without bound fails here (MemoryError)
    # rather than bringing the machine down.
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if _virtual_bytes():
        resource.setrlimit(resource.RLIMIT_AS, (_virtual_bytes() + 8 * 2**30, hard))
    yield
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    print(f"\ncrafted model folders: {dict(COUNTS)}")
    if os.environ.get("CLEARLSTM_FUZZ_COUNTS"):
        Path(os.environ["CLEARLSTM_FUZZ_COUNTS"]).write_text(json.dumps(dict(COUNTS)))


# Found by hypothesis in the helpers above: a settings.json link loop, then raw bytes
# written to it; a weights file truncated to nothing, then a bit flipped in it.
@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(base=st.sampled_from(["wave", "words"]), changes=edits)
@example(
    base="wave", changes=[("file", ("settings.json", "loop")), ("raw settings", ("bytes", b""))]
)
@example(base="wave", changes=[("weights", ("truncate", 0.0)), ("weights", ("flip", 0.0))])
def test_crafted_folders_give_a_clean_error_or_a_result(models_folder, base, changes):
    with tempfile.TemporaryDirectory() as temporary:
        root = Path(temporary)
        folder = craft(models_folder / base, root, changes)
        (root / "out").mkdir()
        before = listing(root)
        COUNTS["folders"] += 1
        outcomes = [library(folder)]
        forecast = ["forecast", "--model", str(folder), "--steps", "2"]
        for args in ([*forecast, "--out", str(root / "out" / "f.csv")],
                     ["explain", "--model", str(folder), "--sequence", "1,2,3"]):  # fmt: skip
            outcome, message = cli(args)
            assert "1.2345" not in message, message
            outcomes.append(outcome)
        for outcome in outcomes:
            COUNTS[outcome] += 1
        after = listing(root)
        changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
        assert all(k.startswith("out") for k in changed), changed  # nothing written elsewhere
        assert "hang" not in outcomes, (changes, outcomes)
