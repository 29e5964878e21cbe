"""`clearlstm train` backtests, refits and intervals, and `clearlstm backtest`, run as a user
would: subprocesses on the bundled Nile series with small settings."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
from test_train_cli import TINY, run, weights

from clearlstm.tasks.datasets import DATA_DIR
from clearlstm.tasks.transforms import Transform

SPLIT = ["--test-size", "20", "--val-size", "15", "--backtest-horizon", "3"]
METHODS = ["LSTM", "naive", "seasonal naive", "AutoETS", "AutoARIMA", "AutoTheta"]


def read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open() as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """The same training with the default refit and with --no-refit."""
    root = tmp_path_factory.mktemp("backtest")
    out = {}
    for name, extra in (("refit", []), ("kept", ["--no-refit"])):
        folder, table = root / name, root / f"{name}.csv"
        result = run(
            "train", "--dataset", "nile", *TINY, *SPLIT, *extra, "--out", str(folder),
            "--backtest-csv", str(table),
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        out[name] = {"dir": folder, "csv": table, "stdout": result.stdout}
    out["root"] = root
    return out


def test_the_backtest_csv_holds_every_origin_and_step_and_its_scores(runs):
    header, rows = read_rows(runs["refit"]["csv"])
    assert header == [
        "origin", "time", "step", "target", "truth", "LSTM", "lower_80", "upper_80",
        "lower_95", "upper_95", *METHODS[1:],
    ]  # fmt: skip
    origins = sorted({r["origin"] for r in rows})
    assert len(origins) == 20 - 3 + 1 and len(rows) == len(origins) * 3
    assert origins[0] == "1950" and rows[0]["time"] == "1951" and rows[2]["time"] == "1953"
    # Every score the command saved is recomputed from the file.
    flow = [float(r["flow"]) for r in csv.DictReader((DATA_DIR / "nile.csv").open())]
    scale = np.abs(np.diff(flow[:65])).mean()  # no season: the naive in-sample MAE
    saved = json.loads((runs["refit"]["dir"] / "settings.json").read_text())
    truth = np.array([float(r["truth"]) for r in rows])
    assert truth.tolist() == [flow[int(r["time"]) - 1871] for r in rows]
    for method in METHODS:
        error = np.array([float(r[method]) for r in rows]) - truth
        scores = saved["result"]["test"]["flow"][method]
        assert scores["mae"] == pytest.approx(np.abs(error).mean(), rel=1e-9)
        assert scores["rmse"] == pytest.approx(np.sqrt((error**2).mean()), rel=1e-9)
        assert scores["mase"] == pytest.approx(np.abs(error).mean() / scale, rel=1e-9)
    stdout = " ".join(runs["refit"]["stdout"].split())
    assert "18 forecast origins, 3 step(s) ahead" in stdout and "per horizon step" in stdout
    assert re.search(r"flow: the LSTM (LOSES to|ties / is mixed|beats every baseline)", stdout)


def test_intervals_are_ordered_and_their_printed_coverage_is_the_files(runs):
    _, rows = read_rows(runs["refit"]["csv"])
    ends = np.array([[float(r[c]) for c in ("lower_95", "lower_80", "LSTM", "upper_80",
                                              "upper_95")] for r in rows])  # fmt: skip
    assert (np.diff(ends, axis=1) >= 0).all() and (ends[:, 3] > ends[:, 1]).all()
    truth = np.array([float(r["truth"]) for r in rows])
    text = " ".join(runs["refit"]["stdout"].split())
    assert "from the LSTM's errors on 13 validation origins" in text  # 15 - 3 + 1
    for level, low, high in (("80", 1, 3), ("95", 0, 4)):
        covered = ((truth >= ends[:, low]) & (truth <= ends[:, high])).mean()
        assert f"{level}% nominal covers {100 * covered:.1f}% of the test part" in text


def test_train_refits_on_all_rows_unless_told_not_to(runs):
    refit = json.loads((runs["refit"]["dir"] / "settings.json").read_text())
    kept = json.loads((runs["kept"]["dir"] / "settings.json").read_text())
    assert refit["data"]["split"] == kept["data"]["split"] == {"train": 65, "val": 15, "test": 20}
    assert refit["fitted_rows"] == 100 and kept["fitted_rows"] == 65
    assert "Refitted on all 100 rows for" in runs["refit"]["stdout"]
    assert "validation-chosen one (--no-refit)" in runs["kept"]["stdout"]
    flow = np.array([float(r["flow"]) for r in csv.DictReader((DATA_DIR / "nile.csv").open())])
    # The scaler is fitted on the rows it saw, after the targets' transform (one choice).
    scaler = refit["data"]["scaler"]
    assert (scaler["transform"], scaler["lambdas"]) == (
        kept["data"]["scaler"]["transform"],
        kept["data"]["scaler"]["lambdas"],
    )
    moved = Transform(scaler["transform"], scaler["lambdas"] and tuple(scaler["lambdas"]))
    z = moved.forward(flow[:, None])[:, 0]
    assert scaler["mean"][0] == pytest.approx(np.mean(z))
    assert kept["data"]["scaler"]["mean"][0] == pytest.approx(np.mean(z[:65]))
    a, b = weights(runs["refit"]["dir"]), weights(runs["kept"]["dir"])
    assert any(not (a[k] == b[k]).all() for k in a)
    # The test scores are the validation-chosen model's in both.
    assert refit["result"]["test"] == kept["result"]["test"]
    assert set(refit["intervals"]) == {"80", "95"} and len(refit["intervals"]["80"]) == 24


def test_backtest_command_reproduces_trains_backtest_from_either_folder(runs):
    for name in ("refit", "kept"):
        out = runs["root"] / f"again-{name}.csv"
        folder = str(runs[name]["dir"])
        result = run("backtest", "--model", folder, "--horizon", "3", "--out", str(out))
        assert result.returncode == 0, result.stderr
        assert out.read_bytes() == runs["refit"]["csv"].read_bytes()
        assert ("training the validation-chosen model again" in result.stdout) == (name == "refit")


def test_refit_every_trains_again_before_the_origins(runs):
    plain, again = runs["root"] / "h1.csv", runs["root"] / "h1-refit.csv"
    folder = str(runs["kept"]["dir"])
    assert run("backtest", "--model", folder, "--horizon", "1", "--out", str(plain)).returncode == 0
    result = run(
        "backtest", "--model", folder, "--horizon", "1", "--refit-every", "10", "--out", str(again)
    )
    assert result.returncode == 0, result.stderr
    assert "trained again on all rows before every 10th origin" in " ".join(result.stdout.split())
    _, a = read_rows(plain)
    _, b = read_rows(again)
    assert len(a) == len(b) == 20
    assert [r["naive"] for r in a] == [r["naive"] for r in b]
    assert [r["LSTM"] for r in a] != [r["LSTM"] for r in b]


def test_forecast_writes_intervals_for_the_calibrated_steps(runs, tmp_path):
    out = tmp_path / "f.csv"
    folder = str(runs["refit"]["dir"])
    result = run("forecast", "--model", folder, "--steps", "26", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "refitted on all 100 rows" in result.stdout
    header, rows = read_rows(out)
    assert header == ["year", "flow", "flow_lower_80", "flow_upper_80", "flow_lower_95",
                      "flow_upper_95"]  # fmt: skip
    assert "intervals for the first 24 step(s)" in " ".join(result.stdout.split())
    for r in rows[:24]:
        columns = ("flow_lower_95", "flow_lower_80", "flow", "flow_upper_80", "flow_upper_95")
        low95, low80, mid, up80, up95 = (float(r[c]) for c in columns)
        assert low95 <= low80 < mid < up80 <= up95
    assert len(rows) == 26 and all(r["flow_lower_80"] == "" for r in rows[24:])
    width = [float(r["flow_upper_95"]) - float(r["flow_lower_95"]) for r in rows[:24]]
    assert max(width) > min(width)  # one width per step


def test_split_flags_are_checked_before_training(tmp_path):
    out = str(tmp_path / "m")
    late = run("train", "--dataset", "nile", "--test-start", "1850", "--out", out)
    assert late.returncode == 1
    assert (
        "--test-start '1850': no such time label" in late.stderr
        and "'1871' to '1970'" in late.stderr
    )
    zero = run("train", "--dataset", "nile", "--test-size", "0", "--out", out)
    assert zero.returncode == 1 and "--test-size must be an integer from 1" in zero.stderr
    both = run("train", "--dataset", "nile", "--test-size", "9", "--test-start", "1960")
    assert both.returncode == 2 and "not allowed with argument" in both.stderr
    text = run("train", "--dataset", "shakespeare", "--test-size", "9", "--out", out)
    assert text.returncode == 1 and "--test-size is for series" in text.stderr
    assert not (Path(out) / "settings.json").exists()


def test_test_start_by_label_and_a_constant_series(tmp_path):
    data = tmp_path / "flat.csv"
    data.write_text("year,y\n" + "".join(f"{1900 + i},7\n" for i in range(60)))
    result = run(
        "train", "--csv", str(data), *TINY, "--test-start", "1950", "--val-size", "10",
        "--out", str(tmp_path / "m"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    split = json.loads((tmp_path / "m" / "settings.json").read_text())["data"]["split"]
    assert split == {"train": 40, "val": 10, "test": 10}
    text = " ".join(result.stdout.split())
    assert "MASE is undefined: the training part of y is constant" in text
    assert re.search(r"\bnan\b", text, re.IGNORECASE) is None
