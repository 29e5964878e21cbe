"""The side-by-side benchmark scripts run end to end (``--quick``) and write their tables."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_quick(script: str, tmp_path: Path) -> tuple[Path, list[list[list[str]]]]:
    """Run ``script --quick`` from an empty folder; each table's rows (header and rule left
    out), split into cells."""
    out, cwd = tmp_path / "table.md", tmp_path / "cwd"
    cwd.mkdir()
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--quick", "--out", str(out)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, f"{script} --quick\n{result.stdout}\n{result.stderr}"
    text = out.read_text(encoding="utf-8")
    assert text in result.stdout  # printed as written
    tables: list[list[list[str]]] = []
    lines = text.splitlines()
    for above, line in zip(["", *lines], lines, strict=False):
        if line.startswith("|---"):
            tables.append([])  # ``above`` was the header
        elif line.startswith("| ") and tables and above.startswith("|"):
            tables[-1].append([cell.strip() for cell in line.split("|")[1:-1]])
    return cwd, tables


@pytest.mark.slow
def test_peer_forecasters_quick(tmp_path):
    pytest.importorskip("darts")
    pytest.importorskip("neuralforecast")
    cwd, (rows,) = run_quick("peer_forecasters.py", tmp_path)
    assert list(cwd.iterdir()) == []  # Lightning wrote no logs or checkpoints here
    methods = {row[1]: row for row in rows if row[0] == "nile"}
    peers = ["clearlstm LSTM", "Darts RNNModel (LSTM)", "NeuralForecast LSTM"]
    assert set(peers) | {"naive", "AutoETS", "AutoARIMA", "AutoTheta"} <= set(methods)
    for name, row in methods.items():
        mase, rmse = float(row[2]), float(row[3])
        assert math.isfinite(mase) and mase > 0 and math.isfinite(rmse) and rmse > 0, name
        assert (name in peers) == (row[4] != "")  # training seconds for the LSTMs only
    assert methods["clearlstm LSTM"][5] == "1.00"


@pytest.mark.slow
def test_char_model_vs_torch_quick(tmp_path):
    _, (epochs, steps) = run_quick("char_model_vs_torch.py", tmp_path)
    by_model = {row[0]: row for row in epochs}
    assert set(by_model) == {"clearlstm", "torch.nn.LSTM"}
    bits = {name: float(row[1]) for name, row in by_model.items()}
    # The same weights, data and steps: only rounding differs between the two LSTMs.
    assert bits["clearlstm"] == pytest.approx(bits["torch.nn.LSTM"], rel=1e-3)
    assert 0 < bits["clearlstm"] < math.log2(100)
    assert float(by_model["torch.nn.LSTM"][4]) == 1.0
    by_model = {row[0]: row for row in steps}
    assert set(by_model) == {"clearlstm", "torch.nn.LSTM"}
    assert float(by_model["torch.nn.LSTM"][4]) == 1.0
    assert all(float(cell) > 0 for cell in by_model["clearlstm"][1:3])  # ms per step, batch
