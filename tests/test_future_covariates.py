"""Past-only and future-known covariates: `clearlstm train --future-covariates`, a forecast
from a CSV file whose last rows hold the future covariates with empty targets, backtests that
read the true future covariates and never the targets' future, settings that round-trip,
and one clear message for each mistake.

The data: ``y = 20 + 6 * promo + noise``, where ``promo`` is a promotion calendar drawn at
random (so its past says nothing of its future) and known in advance. A model that reads it
on the forecast rows must beat the same model reading it as a past-only covariate."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from clearlstm.cli.main import main
from clearlstm.errors import CheckpointError
from clearlstm.tasks import settings as S
from clearlstm.tasks.backtest import call_offsets, forecast_origins
from clearlstm.tasks.covariates import model_windows
from clearlstm.tasks.forecasting import load_forecaster
from clearlstm.tasks.models import Forecaster
from clearlstm.tasks.series import Scaler, read_series

ROWS = 300
SMALL = ["--window", "8", "--horizon", "2", "--hidden-size", "8", "--ensemble", "1"]
SMALL += ["--epochs", "3", "--no-refit", "--seed", "0"]


def write_series(path: Path, rows: int = ROWS, ahead: int = 0, seed: int = 0) -> Path:
    """``day,y,promo``: ``rows`` rows, then ``ahead`` (up to 50) rows with ``promo`` and no
    ``y``; the same ``rows`` for any ``ahead``."""
    rng = np.random.default_rng(seed)
    promo = (rng.random(rows + 50) < 0.3).astype(int)
    y = 20 + 6 * promo[:rows] + rng.normal(0, 0.5, rows)
    lines = ["day,y,promo"]
    lines += [f"{t + 1},{y[t]:.3f},{promo[t]}" for t in range(rows)]
    lines += [f"{t + 1},,{promo[t]}" for t in range(rows, rows + ahead)]
    path.write_text("\n".join(lines) + "\n")
    return path


def train(csv_path: Path, out: Path, *flags: str) -> dict:
    assert main(["train", "--csv", str(csv_path), "--target", "y", *SMALL, *flags,
                 "--out", str(out)]) == 0  # fmt: skip
    return json.loads((out / "settings.json").read_text())


def error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith("error: "), err
    return " ".join(err.split())


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """The same data and settings, ``promo`` read as a future and as a past covariate; the
    future model's file ends with 6 rows of ``promo`` and empty ``y`` (not trained on)."""
    folder = tmp_path_factory.mktemp("covariates")
    data = write_series(folder / "promo.csv", ahead=6)
    known = write_series(folder / "known.csv")
    future, past = folder / "future", folder / "past"
    train(data, future, "--future-covariates", "promo")
    train(known, past, "--covariates", "promo")
    return {"csv": data, "known": known, "future": future, "past": past}


def lstm_mase(model: Path) -> float:
    settings = json.loads((model / "settings.json").read_text())
    return settings["result"]["test"]["y"]["LSTM"]["mase"]


def test_a_model_reading_the_future_covariate_beats_one_reading_it_as_past_only(models):
    future, past = lstm_mase(models["future"]), lstm_mase(models["past"])
    print(f"test MASE: future covariate {future:.3f}, past-only covariate {past:.3f}")
    assert future < 0.5 * past, (future, past)
    naive = json.loads((models["future"] / "settings.json").read_text())
    assert future < 0.5 * naive["result"]["test"]["y"]["naive"]["mase"]


def test_the_settings_say_which_covariates_are_known_ahead_and_round_trip(models):
    document = json.loads((models["future"] / "settings.json").read_text())
    assert document["data"]["future_covariates"] == ["promo"]
    assert document["data"]["covariates"] == [] and document["model"]["future"] == 1
    assert document["data"]["rows"] == ROWS  # the 6 rows ahead are not training rows
    settings = S.ForecasterSettings.from_json(document)
    assert settings.data.columns == ("y", "promo") and settings.to_json() == document
    past = json.loads((models["past"] / "settings.json").read_text())
    assert "future_covariates" not in past["data"] and "future" not in past["model"]
    assert S.ForecasterSettings.from_json(past).data.future_covariates == ()
    model, loaded, _ = load_forecaster(models["future"])
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert loaded.weight_shapes() == shapes
    assert shapes["head.weight"] == (2, 8 + 2) and shapes["linear.weight"] == (2, 8 + 2)


@pytest.mark.parametrize(
    ("path", "value", "match"),
    [
        ("model.future", 0, r"model\.future must be 1 \(the number of data\.future_covariates\)"),
        ("data.future_covariates", ["y"], r"data\.future_covariates names the column 'y' twice"),
        ("data.future_covariates", "promo", r"data\.future_covariates must be a list"),
    ],
)
def test_crafted_future_covariate_settings_are_refused(models, tmp_path, path, value, match):
    document = json.loads((models["future"] / "settings.json").read_text())
    part, key = path.split(".")
    document[part][key] = value
    with pytest.raises(CheckpointError, match=match):
        S.ForecasterSettings.from_json(document)


def test_forecast_fills_the_rows_that_hold_future_covariates(models, tmp_path, capsys):
    out = tmp_path / "forecast.csv"
    assert main(["forecast", "--model", str(models["future"]), "--csv", str(models["csv"]),
                 "--out", str(out)]) == 0  # fmt: skip
    assert "6 step(s) forecast past" in capsys.readouterr().out
    rows = list(csv.DictReader(out.open()))
    assert [r["day"] for r in rows] == [str(t) for t in range(ROWS + 1, ROWS + 7)]
    # The forecast follows the promotion calendar it was given.
    promo = [int(r["promo"]) for r in csv.DictReader(models["csv"].open())][ROWS:]
    y = np.array([float(r["y"]) for r in rows])
    assert len(set(promo)) == 2, promo
    lift = y[np.array(promo) == 1].mean() - y[np.array(promo) == 0].mean()
    assert 3 < lift < 9, (y, promo)
    assert main(["forecast", "--model", str(models["future"]), "--csv", str(models["csv"]),
                 "--steps", "3", "--out", str(out)]) == 0  # fmt: skip
    assert len(list(csv.DictReader(out.open()))) == 3


def test_more_steps_than_future_rows_is_an_error_naming_the_column(models, tmp_path, capsys):
    out = tmp_path / "f.csv"
    assert main(["forecast", "--model", str(models["future"]), "--csv", str(models["csv"]),
                 "--steps", "8", "--out", str(out)]) == 1  # fmt: skip
    message = error(capsys)
    assert "--steps 8" in message and "'promo'" in message
    assert "has 6 row(s) after the last target value (lines 302 to 307)" in message
    assert "add 2 more" in message and "--steps 6" in message and not out.exists()


@pytest.mark.parametrize("ahead", [0, 1])
def test_fewer_future_rows_than_the_horizon_is_an_error(models, tmp_path, capsys, ahead):
    data = write_series(tmp_path / "short.csv", ahead=ahead)
    assert main(["forecast", "--model", str(models["future"]), "--csv", str(data),
                 "--out", str(tmp_path / "f.csv")]) == 1  # fmt: skip
    message = error(capsys)
    assert "forecasts 2 row(s) at once and reads the future covariate(s) 'promo'" in message
    assert "at least 2 row(s) after the last value of 'y'" in message
    assert f"it has {ahead}" in message


def test_an_empty_target_in_the_middle_is_a_missing_value(models, tmp_path, capsys):
    data = write_series(tmp_path / "gap.csv", ahead=4)
    lines = data.read_text().splitlines()
    day, _, promo = lines[49].split(",")
    lines[49] = f"{day},,{promo}"  # line 50 of the file
    data.write_text("\n".join(lines) + "\n")
    assert main(["forecast", "--model", str(models["future"]), "--csv", str(data),
                 "--out", str(tmp_path / "f.csv")]) == 1  # fmt: skip
    assert "column 'y': 1 missing value(s) on line(s) 50" in error(capsys)


def test_an_empty_future_covariate_ahead_is_an_error_naming_its_line(models, tmp_path, capsys):
    data = write_series(tmp_path / "hole.csv", ahead=4)
    lines = data.read_text().splitlines()
    lines[-2] = lines[-2].rsplit(",", 1)[0] + ","
    data.write_text("\n".join(lines) + "\n")
    assert main(["forecast", "--model", str(models["future"]), "--csv", str(data),
                 "--out", str(tmp_path / "f.csv")]) == 1  # fmt: skip
    assert f"line {ROWS + 4}, column 'promo': empty on a row after the last value" in error(capsys)


def test_empty_targets_without_future_covariates_stay_missing_values(tmp_path, capsys):
    data = write_series(tmp_path / "plain.csv")
    plain = tmp_path / "plain"
    train(data, plain)  # no covariates
    write_series(tmp_path / "ahead.csv", ahead=3)
    assert main(["forecast", "--model", str(plain), "--csv", str(tmp_path / "ahead.csv"),
                 "--out", str(tmp_path / "f.csv")]) == 1  # fmt: skip
    assert "column 'y': 3 missing value(s) on line(s) 302, 303, 304" in error(capsys)


def test_a_past_covariate_model_forecasts_at_most_its_horizon(models, tmp_path, capsys):
    out = tmp_path / "f.csv"
    base = ["forecast", "--model", str(models["past"]), "--csv", str(models["known"])]
    assert main([*base, "--out", str(out)]) == 0  # default: the horizon
    assert len(list(csv.DictReader(out.open()))) == 2
    capsys.readouterr()
    assert main([*base, "--steps", "3", "--out", str(tmp_path / "g.csv")]) == 1
    message = error(capsys)
    assert "reads the past covariate(s) 'promo', known up to the forecast origin only" in message
    assert "at most its horizon of 2 step(s)" in message and "--future-covariates" in message


def test_a_column_named_as_past_and_future_covariate_is_refused(tmp_path, capsys):
    data = write_series(tmp_path / "d.csv", rows=60)
    assert main(["train", "--csv", str(data), "--covariates", "promo", "--future-covariates",
                 "promo", "--out", str(tmp_path / "m")]) == 1  # fmt: skip
    message = error(capsys)
    assert "'promo' is named in both --covariates and --future-covariates" in message
    assert main(["train", "--csv", str(data), "--target", "y", "--future-covariates", "y",
                 "--out", str(tmp_path / "m")]) == 1  # fmt: skip
    assert "column 'y' is used twice" in error(capsys)


def test_a_text_model_refuses_future_covariates(tmp_path, capsys):
    text = tmp_path / "t.txt"
    text.write_text("to be or not to be\n" * 20)
    assert main(["train", "--text", str(text), "--future-covariates", "x",
                 "--out", str(tmp_path / "m")]) == 1  # fmt: skip
    assert "--future-covariates is for series" in error(capsys)


# ---- the library: what a forecast reads ----------------------------------------------------


class _Data:
    def __init__(self, scaler: Scaler, window: int) -> None:
        self.scaler, self.window = S.ScalerSettings.of(scaler), window


class _Settings:
    def __init__(self, scaler: Scaler, window: int) -> None:
        self.data = _Data(scaler, window)


def _future_model(horizon: int = 3) -> tuple[Forecaster, _Settings, np.ndarray]:
    """A forecaster of column 0 with a past covariate (1) and a future one (2), untrained."""
    torch.manual_seed(0)
    model = Forecaster(3, 1, horizon, 5, 1, linear_window=6, future=1).eval()
    values = np.random.default_rng(0).normal(10, 3, size=(40, 3))
    return model, _Settings(Scaler.fit(values[:20]), 6), values


def test_forecasts_read_the_future_covariates_and_never_the_targets_future():
    model, settings, values = _future_model()
    rng = np.random.default_rng(1)
    for t in (10, 20, 30):
        before = forecast_origins(model, settings, values, np.array([t]), 7)  # 3 model calls
        other = values.copy()
        other[t:, 0] = rng.normal(0, 50, size=40 - t)  # the targets' future
        np.testing.assert_array_equal(forecast_origins(model, settings, other, [t], 7), before)
        other[t + 1, 2] += 5.0  # the future covariate on the second forecast row
        assert not np.allclose(forecast_origins(model, settings, other, [t], 7), before)


def test_one_model_call_reads_the_window_and_the_rows_ahead():
    model, settings, values = _future_model()
    scaler = settings.data.scaler.to_scaler()
    scaled = scaler.transform(values)
    x, _ = model_windows(scaled, np.array([12]), 6, 3, 1, 1)  # (1, 9, 3)
    assert x.shape == (1, 9, 3) and not x[0, 6:, :2].any()
    np.testing.assert_array_equal(x[0, 6:, 2], scaled[12:15, 2])
    with torch.no_grad():
        direct = model(torch.as_tensor(x, dtype=torch.float32)).double().numpy()
    out = forecast_origins(model, settings, values, np.array([12]), 3)
    np.testing.assert_allclose(out[0], scaler.inverse(direct[0]), rtol=1e-6)


def test_past_the_end_the_future_covariates_come_from_the_rows_ahead():
    model, settings, values = _future_model()
    ahead = values[30:35, 2:]  # the future covariate on the 5 rows after row 30
    inside = forecast_origins(model, settings, values, np.array([30]), 3)
    outside = forecast_origins(model, settings, values[:30], np.array([30]), 3, ahead)
    np.testing.assert_array_equal(outside, inside)
    # Beyond its horizon a recursive forecast reads the past covariate on the rows it
    # forecast, where it is unknown past the end of the data.
    with pytest.raises(ValueError, match=r"past covariate.*at most 3 step\(s\); got 5"):
        forecast_origins(model, settings, values[:30], np.array([30]), 5, ahead)
    # Without past covariates 5 steps need the future covariate on 5 rows, no more: the last
    # call of a 3-step model starts at step 2 and reads its own forecast of step 2.
    assert call_offsets(5, 3, True) == [0, 2] and call_offsets(5, 3, False) == [0, 3]
    torch.manual_seed(0)
    no_past = Forecaster(2, 1, 3, 5, 1, linear_window=6, future=1).eval()
    two = np.delete(values, 1, axis=1)
    settings = _Settings(Scaler.fit(two[:20]), 6)
    inside = forecast_origins(no_past, settings, two, np.array([30]), 5)
    outside = forecast_origins(no_past, settings, two[:30], np.array([30]), 5, two[30:35, 1:])
    np.testing.assert_array_equal(outside, inside)
    with pytest.raises(ValueError, match=r"future covariate column\(s\).*known on 34"):
        forecast_origins(no_past, settings, two[:30], np.array([30]), 5, two[30:34, 1:])


def test_series_with_rows_ahead_reads_them_apart(tmp_path):
    data = write_series(tmp_path / "d.csv", rows=50, ahead=3)
    series = read_series(data, ["y"], None, None, None, ["promo"])
    assert len(series) == 50 and series.columns == ["y", "promo"]
    assert series.ahead is not None and series.ahead.values.shape == (3, 1)
    assert series.ahead.time == ["51", "52", "53"] and series.ahead.lines == [52, 53, 54]
    assert read_series(tmp_path / "d.csv", ["y"], None, None, "previous").values.shape[0] == 53
