"""Every command and Python example in README.md, run as printed.

- Each ```python block is a doctest (``>>>`` lines and their real output) and runs on its
  own, in a fresh namespace and a temporary folder: a block that forgets an import fails.
- Each ```bash block outside "## Set-up" (whose two commands .ci/run runs) is split into
  commands, run with the installed ``clearlstm`` script (or this Python for ``python -m``) in
  a temporary folder holding a copy of ``examples/``. Commands that read or write the same
  ``runs/NAME`` form one chain and run in README order in one folder (train, then forecast).
- Training is cut short: every ``clearlstm train`` command gets ``TINY_TRAIN`` appended
  (argparse keeps the last value of a repeated option), so it trains for seconds, not minutes.
  Nothing else is changed.
- ``clearlstm serve`` is started, asked for its page and stopped with Ctrl-C (SIGINT);
  ``clearlstm diagnose`` runs once ``clearlstm diagnose --help`` exits 0 (skipped until then).
- The benchmark scripts run for minutes: only their ``--help`` runs here (they import
  everything they time).
"""

from __future__ import annotations

import doctest
import importlib.util
import itertools
import json
import os
import re
import select
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
TINY_TRAIN = ["--epochs", "2", "--hidden-size", "8"]
TIMEOUT_S = 180
DOCTEST_FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


# ---- reading the README --------------------------------------------------------------------


def readme_without_setup() -> str:
    text = README.read_text()
    before, rest = text.split("## Set-up", 1)
    return before + "\n## " + rest.split("\n## ", 1)[1]


def python_blocks() -> list[tuple[int, str]]:
    """(line number, code) of every ```python block in the README."""
    text = README.read_text()
    return [
        (text[: m.start()].count("\n") + 2, m.group(1))
        for m in re.finditer(r"```python\n(.*?)```", text, re.S)
    ]


def bash_commands() -> list[str]:
    """Every command of the README's bash blocks but Set-up's, continuation lines joined."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", readme_without_setup(), re.S):
        commands += [c.strip() for c in block.replace("\\\n", " ").splitlines() if c.strip()]
    return commands


def argv(command: str) -> list[str]:
    return shlex.split(command, comments=True)


def subcommand(words: list[str]) -> str | None:
    """``train`` for ``clearlstm train ...`` or ``python -m clearlstm train ...``."""
    if words[0] == "clearlstm":
        return words[1]
    if words[:3] == ["python", "-m", "clearlstm"]:
        return words[3]
    return None


def kind(command: str) -> str:
    """How the test runs it: 'chain', 'serve', 'diagnose' or 'benchmark'."""
    words = argv(command)
    if any(w.startswith("benchmarks/") for w in words):
        return "benchmark"
    if (sub := subcommand(words)) is not None:
        return sub if sub in ("serve", "diagnose") else "chain"
    raise AssertionError(f"README command {command!r}: tests/test_readme.py cannot run it")


def trains(command: str) -> bool:
    return subcommand(argv(command)) == "train"


def run_folder(command: str) -> str | None:
    """The ``runs/NAME`` a command writes (--out) or reads (--model), if any."""
    words = argv(command)
    for option, value in itertools.pairwise(words):
        if option in ("--out", "--model") and value.startswith("runs/"):
            return value
    return None


def chains() -> list[list[str]]:
    """The chain commands, grouped by the run folder they share, in README order."""
    grouped: dict[str, list[str]] = {}
    for command in bash_commands():
        if kind(command) == "chain":
            grouped.setdefault(run_folder(command) or command, []).append(command)
    return list(grouped.values())


# ---- running commands ----------------------------------------------------------------------


def executable(words: list[str]) -> list[str]:
    """The command as a user's shell would run it: the installed script, this Python."""
    if words[0] == "python":
        return [sys.executable, *words[1:]]
    script = shutil.which(words[0])
    assert script, f"{words[0]} is not on PATH: install the package (pip install -e .)"
    return [script, *words[1:]]


def as_run(command: str) -> list[str]:
    words = argv(command)
    return executable(words + TINY_TRAIN if trains(command) else words)


def run(command: str, cwd: Path) -> subprocess.CompletedProcess:
    result = subprocess.run(
        as_run(command), cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT_S
    )
    assert result.returncode == 0, f"{command}\nexit {result.returncode}\n{result.stderr}"
    return result


def check_output(command: str, result: subprocess.CompletedProcess, cwd: Path) -> None:
    """What the command promises: the files it names exist, JSON parses, it says something."""
    words = argv(command)
    for option, value in itertools.pairwise(words):
        if option in ("--out", "--plot"):
            path = cwd / value
            assert path.exists(), f"{command}: wrote no {value}"
            assert path.is_dir() or path.stat().st_size > 0, f"{command}: {value} is empty"
    if "--json" in words:
        json.loads(result.stdout)
    assert result.stdout.strip(), f"{command}: printed nothing"


@pytest.fixture
def user_folder(tmp_path: Path) -> Path:
    """A fresh folder holding what a user who cloned the repository has: examples/."""
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    return tmp_path


def of_kind(name: str) -> list[str]:
    return [c for c in bash_commands() if kind(c) == name]


def chain_params() -> list:
    return [
        pytest.param(
            chain,
            id=run_folder(chain[0]) or " ".join(argv(chain[0])),
            marks=[pytest.mark.slow] if any(trains(c) for c in chain) else [],
        )
        for chain in chains()
    ]


# ---- the tests -----------------------------------------------------------------------------


def test_every_readme_command_is_run_here():
    commands = bash_commands()
    assert len(commands) >= 20, commands
    for command in commands:
        kind(command)  # raises for a command nothing here runs
    chained = [c for chain in chains() for c in chain]
    assert all(c in chained for c in commands if kind(c) == "chain")
    # Every model a command reads is trained by an earlier command of its chain.
    for chain in chains():
        trained = set()
        for command in chain:
            if trains(command):
                trained.add(run_folder(command))
            elif "--model" in argv(command):
                assert run_folder(command) in trained, f"{command}: nothing trains that model"


@pytest.mark.parametrize("chain", chain_params())
def test_readme_commands(chain, user_folder):
    for command in chain:
        check_output(command, run(command, user_folder), user_folder)


def _read_until(process: subprocess.Popen, pattern: str, timeout_s: float) -> re.Match:
    seen, deadline = "", time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], 0.5)
        if ready:
            line = process.stdout.readline()
            if not line and process.poll() is not None:
                break
            seen += line
            if match := re.search(pattern, seen):
                return match
    process.kill()
    raise AssertionError(f"no {pattern!r} in the output: {seen!r}{process.stderr.read()}")


@pytest.mark.parametrize("command", of_kind("serve"), ids=lambda c: " ".join(argv(c)))
def test_readme_serve_starts_answers_and_stops_on_ctrl_c(command, user_folder):
    words = argv(command)
    if "--models" in words:
        (user_folder / words[words.index("--models") + 1]).mkdir()
    if "--port" not in words:  # the default port: skip rather than fight another server
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", 8765)) == 0:
                pytest.skip("port 8765 is in use on this machine; `--port 0` is tested")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # a terminal sees each line at once
    process = subprocess.Popen(
        executable(words), cwd=user_folder, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        url = _read_until(process, r"http://127\.0\.0\.1:\d+/", 60).group(0)
        with urllib.request.urlopen(url, timeout=10) as page:
            assert page.status == 200 and b"<html" in page.read().lower()
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 0, process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.parametrize("command", of_kind("diagnose"), ids=lambda c: " ".join(argv(c)))
def test_readme_diagnose(command, user_folder):
    words = argv(command)
    probe = subprocess.run(
        executable([*words, "--help"]), capture_output=True, text=True, timeout=60
    )
    if probe.returncode != 0:
        pytest.skip(f"`clearlstm diagnose --help` exits {probe.returncode}: not added yet")
    check_output(command, run(command, user_folder), user_folder)


@pytest.mark.parametrize("command", of_kind("benchmark"), ids=lambda c: " ".join(argv(c)))
def test_readme_benchmark_scripts_start(command):
    words = argv(command)
    script = next(w for w in words if w.startswith("benchmarks/"))
    result = subprocess.run(
        [sys.executable, script, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, f"{script} --help\n{result.stderr}"


def run_doctest(code: str, name: str, lineno: int, cwd: Path) -> tuple[doctest.TestResults, str]:
    """Run one block as a doctest in ``cwd``: (failures, attempts) and the failure report."""
    test = doctest.DocTestParser().get_doctest(code, {}, name, str(README), lineno)
    runner = doctest.DocTestRunner(optionflags=DOCTEST_FLAGS)
    report: list[str] = []
    old = Path.cwd()
    os.chdir(cwd)
    try:
        runner.run(test, out=report.append)
    finally:
        os.chdir(old)
    return doctest.TestResults(runner.failures, runner.tries), "".join(report)


@pytest.mark.parametrize(
    ("lineno", "code"), [pytest.param(n, c, id=f"line {n}") for n, c in python_blocks()]
)
def test_readme_python_block(lineno, code, tmp_path):
    assert ">>>" in code, f"README.md line {lineno}: a Python block without >>> checks nothing"
    (failed, attempted), report = run_doctest(code, f"README.md:{lineno}", lineno, tmp_path)
    assert attempted > 0 and failed == 0, report
    for name in re.findall(r"\"([\w-]+\.(?:png|svg))\"", code):  # the figures it saves
        assert (tmp_path / name).stat().st_size > 0, name


def test_the_doctest_runner_catches_a_wrong_output(tmp_path):
    (failed, attempted), report = run_doctest(">>> 1 + 1\n3\n", "wrong", 1, tmp_path)
    assert (failed, attempted) == (1, 1) and "Expected" in report


def test_readme_python_blocks_exist():
    assert len(python_blocks()) >= 3


def test_example_files_are_what_their_generator_writes():
    path = ROOT / "examples" / "make_examples.py"
    spec = importlib.util.spec_from_file_location("make_examples", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for name, text in module.files().items():
        assert (ROOT / "examples" / name).read_text() == text, "rerun examples/make_examples.py"


def test_readme_names_only_files_that_exist():
    text = README.read_text()
    for path in set(re.findall(r"\b((?:src|examples|benchmarks|docs|tests)/[\w./-]+\w)", text)):
        assert (ROOT / path).exists(), f"README.md names {path}, which is not in the repository"
    layout = text.split("## Layout", 1)[1]
    package = ROOT / "src" / "clearlstm"
    for path in set(re.findall(r"`([\w/]+(?:\.py|\.md|/))`", layout)) - {"src/clearlstm/"}:
        assert (package / path).exists(), f"README.md's layout names {path}, not in {package}"
