"""Many series in one long-format file (`clearlstm train --id-column`): one global model,
scores per series and over all, forecasts and backtests per series, run as a user would
(subprocesses with small settings), and the pooled windows that never mix two series."""

from __future__ import annotations

import datetime as dt
import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
from test_backtest_cli import read_rows
from test_train_cli import run

from clearlstm.tasks.panel import MAX_SERIES, read_panel
from clearlstm.tasks.panel_settings import PanelForecasterSettings
from clearlstm.tasks.panel_train import pooled_windows
from clearlstm.tasks.panel_use import load_panel_model
from clearlstm.tasks.series import Split, origins

SMALL = ["--window", "8", "--hidden-size", "8", "--epochs", "3", "--ensemble", "1"]
SMALL += ["--batch-size", "16", "--transform", "none"]
LEVELS = {"north": 50.0, "south": 120.0, "east": 300.0}
DAYS = 84
METHODS = ["LSTM", "naive", "seasonal naive", "AutoETS", "AutoARIMA", "AutoTheta"]


def write_stores(path: Path, days: dict[str, int] | None = None, shuffle: bool = True) -> Path:
    """``store,date,sales``: a weekly pattern at each store's level, rows in shuffled order
    (grouping and sorting by date is the reader's job)."""
    rng = random.Random(0)
    rows = []
    for store, level in LEVELS.items():
        for t in range((days or {}).get(store, DAYS)):
            day = dt.date(2024, 1, 1) + dt.timedelta(days=t)
            value = level * (1 + 0.2 * math.sin(2 * math.pi * t / 7)) + rng.gauss(0, level / 20)
            rows.append(f"{store},{day.isoformat()},{value:.2f}")
    if shuffle:
        rng.shuffle(rows)
    path.write_text("store,date,sales\n" + "\n".join(rows) + "\n")
    return path


def train_args(data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "train", "--csv", str(data), "--id-column", "store", "--time-column", "date",
        "--target", "sales", *SMALL, "--out", str(out), *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("stores")
    data, out, tested = write_stores(root / "stores.csv"), root / "model", root / "train-bt.csv"
    result = run(*train_args(data, out, "--backtest-csv", str(tested)))
    assert result.returncode == 0, result.stderr
    return {"root": root, "data": data, "out": out, "stdout": result.stdout, "tested": tested}


def series_values(data: Path) -> dict[str, np.ndarray]:
    """Each store's sales in date order, read independently of clearlstm."""
    _, rows = read_rows(data)
    out = {}
    for store in LEVELS:
        mine = sorted((r["date"], float(r["sales"])) for r in rows if r["store"] == store)
        out[store] = np.array([v for _, v in mine])
    return out


def table_rows(stdout: str) -> dict[str, list[str]]:
    """The per-series table's rows: first cell -> the other cells."""
    rows = {}
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.strip().strip("│").split("│")]
        if line.startswith("│") and len(cells) == 11:
            rows[cells[0]] = cells[1:]
    return rows


def test_train_prints_a_row_per_series_and_an_all_series_row(trained):
    text = " ".join(trained["stdout"].split())
    assert "Backtest per series: sales (all series), 39 forecast origins over 3 series" in text
    rows = table_rows(trained["stdout"])
    assert list(rows) == [*LEVELS, "all series"]
    document = json.loads((trained["out"] / "settings.json").read_text())
    total = document["result"]["test"]["sales"]
    for name, series in zip(LEVELS, document["panel"]["series"], strict=True):
        cells = rows[name]
        assert cells[0] == "13"  # test origins
        for method, cell in zip(METHODS, cells[1:7], strict=True):
            assert cell == f"{series['test']['sales'][method]['mase']:.3f}"
        assert cells[9] in ("beats all", "mixed") or cells[9].startswith("loses to ")
    cells = rows["all series"]
    assert cells[0] == "39" and cells[1] == f"{total['LSTM']['mase']:.3f}"
    assert cells[7] == f"{total['LSTM']['rmse']:.4g}"
    for word in ("AutoETS", "AutoARIMA", "AutoTheta", "RMSE", "outcome"):
        assert word in text, word
    assert "mean MASE over the series, RMSE pooled over every test forecast" in text
    assert "sales (all series): the LSTM" in text  # the verdict over all series
    assert "season per series: 7 for 3" in text
    assert "Refitted on all 252 rows of the 3 series" in text


def test_settings_hold_each_series_its_scaler_and_the_aggregate(trained):
    document = json.loads((trained["out"] / "settings.json").read_text())
    assert document["kind"] == "panel_forecaster"
    panel = document["panel"]
    assert panel["id_column"] == "store"
    assert [s["id"] for s in panel["series"]] == list(LEVELS)  # order of first appearance
    values = series_values(trained["data"])
    for s in panel["series"]:
        assert s["split"] == {"train": 58, "val": 13, "test": 13}
        assert s["season"] == 7 and s["fitted_rows"] == DAYS
        # Refitted: each series scaled by its own rows (all of them after the refit).
        y = values[s["id"]]
        assert s["scaler"]["mean"][0] == pytest.approx(y.mean())
        assert s["scaler"]["std"][0] == pytest.approx(y.std())
        assert set(s["test"]["sales"]) == set(METHODS)
    total = document["result"]["test"]["sales"]
    for method in METHODS:
        mases = [s["test"]["sales"][method]["mase"] for s in panel["series"]]
        assert total[method]["mase"] == pytest.approx(np.mean(mases))
    # Pooled RMSE, recomputed from every test forecast in the backtest file.
    header, rows = read_rows(trained["tested"])
    assert header[:4] == ["store", "origin", "time", "step"]
    assert {r["store"] for r in rows} == set(LEVELS) and len(rows) == 3 * 13
    errors = np.array([float(r["LSTM"]) - float(r["truth"]) for r in rows])
    assert total["LSTM"]["rmse"] == pytest.approx(np.sqrt((errors**2).mean()))
    assert document["data"]["rows"] == 3 * DAYS and document["fitted_rows"] == 3 * DAYS


def test_settings_round_trip_and_each_series_view(trained):
    document = json.loads((trained["out"] / "settings.json").read_text())
    settings = PanelForecasterSettings.from_json(document)
    assert settings.to_json() == document
    model, loaded, _ = load_panel_model(trained["out"])
    assert loaded == settings and model.columns == 1
    view = settings.for_series(settings.panel.index("east"))
    assert view.kind == "forecaster" and view.data.scaler == settings.panel.series[2].scaler
    assert view.data.rows == DAYS and view.intervals == settings.panel.series[2].intervals
    with pytest.raises(ValueError, match=r"--id 'west': the model has no such series; its ids"):
        settings.panel.index("west")


def test_a_tampered_series_is_refused_on_loading(trained):
    document = json.loads((trained["out"] / "settings.json").read_text())
    document["panel"]["series"][1]["id"] = "north"
    with pytest.raises(ValueError, match=r"panel.series\[1\].id: the id 'north' appears twice"):
        PanelForecasterSettings.from_json(document)
    document = json.loads((trained["out"] / "settings.json").read_text())
    document["panel"]["series"][0]["rows"] += 1
    with pytest.raises(ValueError, match=r"panel.series\[0\].split must be parts adding up"):
        PanelForecasterSettings.from_json(document)


def test_forecast_writes_every_series_or_one_in_long_format(trained):
    out, root = trained["out"], trained["root"]
    every, one = root / "all.csv", root / "one.csv"
    base = ["forecast", "--model", str(out), "--csv", str(trained["data"]), "--steps", "5"]
    result = run(*base, "--out", str(every))
    assert result.returncode == 0, result.stderr
    assert "past the end of 3 series" in result.stdout
    header, rows = read_rows(every)
    assert header == [
        "store", "date", "sales", "sales_lower_80", "sales_upper_80", "sales_lower_95",
        "sales_upper_95",
    ]  # fmt: skip
    assert [r["store"] for r in rows] == [s for s in LEVELS for _ in range(5)]
    assert [r["date"] for r in rows[:5]] == [f"2024-03-24 +{i}" for i in range(1, 6)]
    for r in rows:  # each series at its own level
        assert abs(float(r["sales"]) - LEVELS[r["store"]]) < 0.5 * LEVELS[r["store"]]
        assert float(r["sales_lower_95"]) <= float(r["sales_lower_80"]) <= float(r["sales"])
    result = run(*base, "--id", "south", "--out", str(one))
    assert result.returncode == 0, result.stderr
    _, alone = read_rows(one)
    assert alone == [r for r in rows if r["store"] == "south"]
    result = run(*base, "--id", "west", "--out", str(one))
    assert result.returncode == 1 and "--id 'west': the model has no such series" in result.stderr


def test_forecast_needs_the_data_file_named_again(trained):
    result = run("forecast", "--model", str(trained["out"]), "--out", str(trained["root"] / "x"))
    assert result.returncode == 1
    assert "outside its folder" in result.stderr and "pass --csv" in result.stderr


def test_backtest_trains_the_validation_chosen_model_again_and_matches_train(trained):
    table = trained["root"] / "bt.csv"
    result = run(
        "backtest", "--model", str(trained["out"]), "--csv", str(trained["data"]),
        "--out", str(table),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "all series" in result.stdout and "training the validation-chosen model" in result.stdout
    _, rows = read_rows(table)
    _, want = read_rows(trained["tested"])
    assert rows == want  # the same weights, bit for bit, and the same baselines


def test_read_panel_groups_and_sorts_each_series_by_time(tmp_path):
    data = write_stores(tmp_path / "s.csv")
    panel = read_panel(data, "store", ["sales"], None, "date")
    assert panel.ids == list(LEVELS)
    for series in panel.series:
        assert series.time == sorted(series.time) and len(series) == DAYS
    values = series_values(data)
    for name, series in zip(panel.ids, panel.series, strict=True):
        np.testing.assert_allclose(series.values[:, 0], values[name])
    numeric = tmp_path / "n.csv"
    numeric.write_text("id,t,y\na,10,3\na,9,2\na,1,1\nb,2,5\nb,1,4\n")
    panel = read_panel(numeric, "id", None, None, "t")
    assert panel.series[0].time == ["1", "9", "10"]  # as numbers, not as text
    assert panel.series[0].values[:, 0].tolist() == [1, 2, 3]


def test_pooled_windows_never_cross_from_one_series_into_another():
    # Series i's rows are 1000 * i + t: a window reaching into another series would show it.
    lengths, window, horizon = [30, 45, 26], 5, 3
    scaled = [
        np.stack([1000.0 * i + np.arange(n), -1000.0 * i - np.arange(n)], axis=1)
        for i, n in enumerate(lengths)
    ]
    splits = [Split(n - 12, 6, 6) for n in lengths]
    for part in ("train", "val", "test"):
        x, y, owner = pooled_windows(scaled, splits, part, window, horizon, 1)
        pairs = zip(splits, lengths, strict=True)
        counts = [len(origins(s, part, n, window, horizon)) for s, n in pairs]
        assert x.shape == (sum(counts), window, 2) and y.shape == (sum(counts), horizon, 1)
        assert np.bincount(owner).tolist() == counts
        for xs, ys, i in zip(x, y, owner, strict=True):
            steps = np.concatenate([xs[:, 0], ys[:, 0]]) - 1000 * i
            assert steps.tolist() == list(range(int(steps[0]), int(steps[0]) + window + horizon))
            assert steps[0] >= 0 and steps[-1] < lengths[i]  # inside series i only
            np.testing.assert_array_equal(xs[:, 1], -xs[:, 0])


def test_missing_id_column_is_a_clear_error(tmp_path):
    data = write_stores(tmp_path / "s.csv")
    args = train_args(data, tmp_path / "m")
    args[args.index("store")] = "shop"
    result = run(*args)
    assert result.returncode == 1
    assert "--id-column 'shop': no such column; the columns are store, date, sales" in result.stderr


def test_one_series_too_short_names_it_and_the_rows_needed(tmp_path):
    data = write_stores(tmp_path / "s.csv", days={"south": 12})
    result = run(*train_args(data, tmp_path / "m"))
    assert result.returncode == 1
    assert "store 'south': 12 rows are too few for --window 8" in result.stderr
    assert "so at least" in result.stderr and not (tmp_path / "m" / "settings.json").exists()


def test_two_rows_of_one_series_at_one_time_are_refused(tmp_path):
    data = write_stores(tmp_path / "s.csv", shuffle=False)
    data.write_text(data.read_text() + "east,2024-01-05,301.0\n")
    result = run(*train_args(data, tmp_path / "m"))
    assert result.returncode == 1
    assert "store 'east': two rows at time '2024-01-05'" in result.stderr
    assert f"and {3 * DAYS + 2})" in result.stderr  # the added line is named


def test_too_many_series_or_an_empty_id_is_refused(tmp_path):
    many = tmp_path / "many.csv"
    many.write_text("id,y\n" + "".join(f"s{i},1\n" for i in range(MAX_SERIES + 1)))
    result = run("train", "--csv", str(many), "--id-column", "id", "--out", str(tmp_path / "m"))
    assert result.returncode == 1
    assert f"line {MAX_SERIES + 2}: more than {MAX_SERIES} series" in result.stderr
    empty = tmp_path / "empty.csv"
    empty.write_text("id,y\na,1\n ,2\n")
    result = run("train", "--csv", str(empty), "--id-column", "id", "--out", str(tmp_path / "m"))
    assert result.returncode == 1 and "line 3, column 'id': the id is empty" in result.stderr
    long = tmp_path / "long.csv"
    long.write_text("id,y\n" + "x" * 101 + ",1\n")
    result = run("train", "--csv", str(long), "--id-column", "id", "--out", str(tmp_path / "m"))
    assert result.returncode == 1 and "the id has 101 characters; ids may have at most 100" in (
        result.stderr
    )


def test_id_column_goes_with_a_csv_file_only(tmp_path):
    result = run("train", "--dataset", "nile", "--id-column", "x", "--out", str(tmp_path / "m"))
    assert result.returncode == 1 and "--id-column needs --csv FILE" in result.stderr


def test_future_covariates_are_refused_for_many_series(tmp_path):
    data = write_stores(tmp_path / "s.csv")
    result = run(*train_args(data, tmp_path / "m", "--future-covariates", "sales"))
    assert result.returncode == 1
    assert "--future-covariates is not supported with --id-column" in result.stderr
    assert not (tmp_path / "m" / "settings.json").exists()


def test_id_is_refused_for_a_model_of_one_series(models_folder, tmp_path):
    out = tmp_path / "f.csv"
    result = run("forecast", "--model", str(models_folder / "wave"), "--id", "a", "--out", str(out))
    assert result.returncode == 1 and "holds a model of one series" in result.stderr


def test_no_refit_keeps_the_validation_chosen_model_and_backtests_it_as_it_is(tmp_path):
    data, out = write_stores(tmp_path / "s.csv"), tmp_path / "m"
    tested, again = tmp_path / "train-bt.csv", tmp_path / "bt.csv"
    extra = ["--no-refit", "--horizon", "2", "--backtest-csv", str(tested)]
    result = run(*train_args(data, out, *extra))
    assert result.returncode == 0, result.stderr
    assert "The saved model is the validation-chosen one (--no-refit)" in result.stdout
    document = json.loads((out / "settings.json").read_text())
    assert document["fitted_rows"] == 3 * 58 and document["model"]["horizon"] == 2
    values = series_values(data)
    for s in document["panel"]["series"]:  # each scaled by its own training part
        assert s["fitted_rows"] == 58
        assert s["scaler"]["mean"][0] == pytest.approx(values[s["id"]][:58].mean())
    result = run("backtest", "--model", str(out), "--csv", str(data), "--out", str(again))
    assert result.returncode == 0, result.stderr
    assert "training the validation-chosen model" not in result.stdout
    assert read_rows(again) == read_rows(tested)
    _, rows = read_rows(again)
    assert {r["step"] for r in rows} == {"1", "2"}


def test_fill_stays_within_each_series(tmp_path):
    data = tmp_path / "gaps.csv"
    data.write_text("id,t,y\na,1,\na,2,5\na,3,6\nb,1,100\nb,2,\nb,3,102\n")
    panel = read_panel(data, "id", None, None, "t", "previous")
    assert panel.series[0].values[:, 0].tolist() == [5, 5, 6]  # a's own first value, not b's
    assert panel.series[1].values[:, 0].tolist() == [100, 100, 102]
    with pytest.raises(ValueError, match=r"id 'a', column 'y': 1 missing value\(s\) on line"):
        read_panel(data, "id", None, None, "t")
