"""The house rules of the layout: imports point down only (import-linter's contract in
pyproject.toml), no import circle anywhere (not even for type annotations or inside
functions), each package says what it owns, and no Python file over 400 lines."""

from __future__ import annotations

import ast
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "clearlstm"
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the clearlstm modules it imports, from every import statement in its file."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: resolve against this package
                    parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                    base = f"{parent}.{base}" if base else parent
                # "from pkg import mod" imports the module pkg.mod when there is one
                targets = [
                    f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                    for a in node.names
                ]
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_circles() -> None:
    graph = import_graph()
    assert len(graph) > 40, "the graph should hold every module"
    assert cycles(graph) == []


def test_cycle_finder_finds_a_planted_circle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]


def test_layer_contract_holds() -> None:
    lint = shutil.which("lint-imports")
    assert lint, "import-linter is a test dependency: pip install -e '.[test]'"
    result = subprocess.run([lint], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_layer_contract_breaks_on_an_upward_import(tmp_path: Path) -> None:
    """The contract can fail: a core module importing the CLI breaks it."""
    lint = shutil.which("lint-imports")
    assert lint
    copy = tmp_path / "src"
    shutil.copytree(PACKAGE, copy / "clearlstm", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    records = copy / "clearlstm" / "core" / "records.py"
    records.write_text(records.read_text() + "\nfrom clearlstm.cli import main  # noqa\n")
    env = {"PYTHONPATH": str(copy), "PATH": str(Path(lint).parent)}
    result = subprocess.run([lint], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert result.returncode != 0, result.stdout
    assert "clearlstm.core.records -> clearlstm.cli" in result.stdout


@pytest.mark.parametrize(
    "package", sorted(p.parent.name for p in PACKAGE.glob("*/__init__.py")), ids=str
)
def test_each_package_says_what_it_owns_and_may_import(package: str) -> None:
    doc = ast.get_docstring(ast.parse((PACKAGE / package / "__init__.py").read_text()))
    assert doc, f"clearlstm.{package} has no docstring"
    assert "import" in doc.lower(), (
        f"clearlstm.{package}'s docstring does not say what it may import"
    )


def test_no_python_file_over_400_lines() -> None:
    files = [p for d in ("src", "tests", "benchmarks") for p in (ROOT / d).rglob("*.py")]
    long = {
        str(p.relative_to(ROOT)): n
        for p in files
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}
