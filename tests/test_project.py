"""The project's own promises: lint-clean, CI runs the README's test command, every module's
doctests hold."""

from __future__ import annotations

import doctest
import importlib
import importlib.util
import pkgutil
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("command", [["check", "."], ["format", "--check", "."]])
def test_ruff_is_clean(command):
    ruff = shutil.which("ruff")
    assert ruff, "ruff is a test dependency: pip install -e '.[test]'"
    result = subprocess.run([ruff, *command], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def readme_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    setup = readme.split("## Set-up", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", setup)


def test_readme_has_two_setup_commands_and_ci_runs_the_test_one():
    main_job, tests = readme_commands()
    assert main_job.startswith("python -m pip install torch==2.13.0")
    assert tests.startswith("python -m pip install torch==2.13.0")
    assert tests in (ROOT / ".ci" / "run").read_text()


def modules_with_examples() -> list[str]:
    """Every module of the package whose source holds a ``>>>`` prompt, found by walking it."""
    import clearlstm

    found = []
    for info in pkgutil.walk_packages(clearlstm.__path__, "clearlstm."):
        source = Path(importlib.util.find_spec(info.name).origin).read_text()
        if any(line.lstrip().startswith(">>>") for line in source.splitlines()):
            found.append(info.name)
    return found


def test_the_walk_finds_the_reference_cells_examples():
    assert "clearlstm.core.cell" in modules_with_examples()


@pytest.mark.parametrize("module", modules_with_examples())
def test_docstring_examples_run(module):
    mod = importlib.import_module(module)
    source = Path(mod.__file__).read_text()
    prompts = sum(line.lstrip().startswith(">>>") for line in source.splitlines())
    finder, runner = doctest.DocTestFinder(), doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    report: list[str] = []
    for test in finder.find(mod):
        runner.run(test, out=report.append)
    # Every >>> in the file is an example doctest runs: none sits where doctest cannot see it.
    assert runner.tries == prompts, f"{module}: {prompts} >>> lines, {runner.tries} run"
    assert runner.failures == 0, "".join(report)
