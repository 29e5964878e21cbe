"""Series data is finite and small enough to square when read, the scaler never holds a
non-finite number, and the verdict after training is honest (ties, mixed results, constant
series)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clearlstm.cli.main import main
from clearlstm.errors import SeriesError
from clearlstm.tasks import baselines
from clearlstm.tasks.baselines import Scores
from clearlstm.tasks.series import Scaler, check_length, read_series

TINY = ["--epochs", "1", "--hidden-size", "4", "--window", "4", "--batch-size", "8"]


def csv_file(tmp_path: Path, values: list[str], name: str = "sales.csv") -> Path:
    path = tmp_path / name
    path.write_text("month,units\n" + "".join(f"{i},{v}\n" for i, v in enumerate(values)))
    return path


@pytest.mark.parametrize(
    ("cell", "message"),
    [
        ("1e309", "value 1e309 is not a finite number"),
        ("-inf", "value -inf is not a finite number"),
        ("1e300", "value 1e300 is too large"),
        ("-2e151", "value -2e151 is too large"),
    ],
)
def test_values_that_are_not_finite_or_too_large_name_their_line_and_column(
    tmp_path, cell, message
):
    path = csv_file(tmp_path, ["1", "2", cell, "4"])
    with pytest.raises(SeriesError) as error:
        read_series(path)
    assert f"sales.csv, line 4, column 'units': {message}" in str(error.value)


def test_the_largest_values_allowed_still_scale(tmp_path):
    series = read_series(csv_file(tmp_path, ["1e150", "-1e150", "0", "5e149"]))
    scaler = Scaler.fit(series.values)
    assert all(map(math.isfinite, [*scaler.mean, *scaler.std]))
    assert np.isfinite(scaler.transform(series.values)).all()


@pytest.mark.parametrize(("mean", "std"), [([0.0], [math.inf]), ([math.nan], [1.0]), ([0], [0])])
def test_a_scaler_never_holds_a_non_finite_number(mean, std):
    with pytest.raises(SeriesError, match="finite means and standard deviations above 0"):
        Scaler(mean, std)


def test_values_too_far_from_the_training_part_are_refused_when_scaled():
    scaler = Scaler([0.0, 5.0], [1.0, 2e-140])
    assert scaler.transform(np.array([[1e15, 5.0]])).tolist() == [[1e15, 0.0]]
    with pytest.raises(SeriesError, match=r"column 2 .*value 1e\+150 lies more than 1e\+15"):
        scaler.transform(np.array([[0.0, 5.0], [1.0, 1e150]]))


def test_huge_values_are_refused_before_training_and_nothing_is_written(tmp_path, capsys):
    path = csv_file(tmp_path, [f"{(i % 7) * 1e299:g}" for i in range(60)])
    assert main(["train", "--csv", str(path), *TINY, "--out", str(tmp_path / "m")]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "sales.csv, line 3, column 'units': value 1e+299 is too large" in err
    assert not (tmp_path / "m" / "settings.json").exists()


def test_a_window_far_too_long_is_refused_at_once(tmp_path):
    series = read_series(csv_file(tmp_path, [str(i) for i in range(50)]))
    started = time.perf_counter()
    with pytest.raises(SeriesError, match="so at least 1428571429 rows"):
        check_length(series, 10**9, 1, 0.15, 0.15)
    assert time.perf_counter() - started < 1


def test_a_season_longer_than_the_training_part_is_a_clear_error(tmp_path, capsys):
    out = str(tmp_path / "m")
    assert main(["train", "--dataset", "nile", "--season", "100000", *TINY, "--out", out]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "--season must be from 1 to 69 (shorter than the training part's 70 rows)" in err


def scores(mase: float, rmse: float, mae: float = 1.0) -> Scores:
    return Scores(mae, rmse, mase)


def test_a_tie_on_mase_is_no_win():
    # elnino, --seed 2: MASE 0.334 against 0.334 and a worse RMSE was called a win.
    verdict = baselines.verdict(
        "sst",
        {
            "LSTM": scores(0.3341, 0.52),
            "naive": scores(0.60, 0.90),
            "seasonal naive": scores(0.70, 1.00),
            "Holt-Winters (ETS)": scores(0.3338, 0.48),
        },
    )
    assert "beats every" not in verdict and "ties / is mixed" in verdict
    assert "against Holt-Winters (ETS) MASE a tie (0.334 vs 0.334) and RMSE worse" in verdict
    assert "it beats naive, seasonal naive on both" in verdict


def test_wins_and_losses_need_both_measures():
    base = {"naive": scores(1.0, 1.0), "seasonal naive": scores(0.9, 1.2)}
    win = baselines.verdict("y", {"LSTM": scores(0.5, 0.5), **base})
    assert win.startswith("y: the LSTM beats every baseline on MASE and RMSE (MASE 0.500")
    lose = baselines.verdict("y", {"LSTM": scores(1.5, 1.5), **base})
    assert lose.startswith("y: the LSTM LOSES to naive, seasonal naive on MASE and RMSE")
    mixed = baselines.verdict("y", {"LSTM": scores(0.5, 1.1), **base})
    assert "against naive MASE better (0.500 vs 1.000) and RMSE worse" in mixed


def test_the_table_marks_ties_best_prints_names_as_they_are_and_nan_as_na():
    from rich.console import Console

    from clearlstm.cli.train_report import evaluation_table
    from clearlstm.tasks.forecasting import Evaluation

    methods = {"LSTM": scores(0.3341, 0.5), "naive": scores(0.9, 1.0)}
    methods["Holt-Winters (ETS)"] = scores(0.3338, 0.49)
    console = Console(width=200, record=True)
    console.print(evaluation_table(Evaluation("[red]y:smile:", 12, 5, methods), 1))
    text = console.export_text()
    assert "[red]y:smile:" in text and text.count("(best)") == 2
    flat = {m: Scores(1.0 + i, 1.0, math.nan, 5.0, 5.0) for i, m in enumerate(methods)}
    console.print(evaluation_table(Evaluation("y", None, 5, flat), 1))
    assert console.export_text().count("n/a") == 3


def test_a_constant_series_gets_words_not_nan(tmp_path, capsys):
    path = csv_file(tmp_path, ["5"] * 60)
    assert main(["train", "--csv", str(path), *TINY, "--out", str(tmp_path / "m")]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "MASE is undefined: the training part of units is constant" in out
    assert "n/a" in out and "nan" not in out.lower().replace("naive", "")
    assert "beats every baseline" not in out


# CSV contents: a column of numbers (some huge, some constant runs), at times with one bad cell.
numbers = st.one_of(
    st.floats(-1e6, 1e6).map(lambda v: f"{v:.6g}"),
    st.floats(-1e150, 1e150).map(repr),
    st.sampled_from(["0", "1", "1e150", "-1e150"]),
)
bad = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["", "NA", "1e309", "-1e200", "abc", "1,5", '"2"', "0x1p3", " 7 "]),
)


@st.composite
def columns(draw: st.DrawFn) -> list[str]:
    column = draw(st.lists(numbers, min_size=1, max_size=60))
    column += draw(st.lists(st.sampled_from(["1", "2.5", "-3"]), max_size=40))
    if draw(st.booleans()):
        column.insert(draw(st.integers(0, len(column))), draw(bad))
    return column


COUNTS = {"tried": 0, "clean errors": 0, "trained": 0}


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(column=columns())
def test_fuzzed_csv_files_train_or_fail_cleanly(tmp_path_factory, capsys, column):
    folder = tmp_path_factory.mktemp("fuzz")
    path = folder / "data.csv"
    path.write_text("value\n" + "".join(f"{c}\n" for c in column))
    out = folder / "m"
    COUNTS["tried"] += 1
    code = main(["train", "--csv", str(path), *TINY, "--out", str(out)])
    captured = capsys.readouterr()
    if code != 0:
        assert code == 1
        lines = captured.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
        COUNTS["clean errors"] += 1
        return
    COUNTS["trained"] += 1
    document = json.loads((out / "settings.json").read_text())
    scaler = document["data"]["scaler"]
    assert all(math.isfinite(v) for v in scaler["mean"] + scaler["std"])
    assert "Infinity" not in (out / "settings.json").read_text()


def test_csv_fuzz_counts_are_reported(capsys):
    if COUNTS["tried"]:
        with capsys.disabled():
            print(f"\nCSV fuzz: {COUNTS}")
        assert COUNTS["clean errors"] + COUNTS["trained"] == COUNTS["tried"]


@pytest.mark.parametrize("cell", ["1e300", "inf", "abc"])
def test_bad_csv_cells_end_to_end_are_one_clean_line(tmp_path, cell):
    path = csv_file(tmp_path, [*map(str, range(30)), cell, *map(str, range(30))])
    result = subprocess.run(
        [sys.executable, "-m", "clearlstm", "train", "--csv", str(path), *TINY,
         "--out", str(tmp_path / "m")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 1 and "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and "sales.csv, line 32, column 'units'" in line
