"""The pieces behind `clearlstm train`: series checks, baselines, the model, checkpoints."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from clearlstm.tasks import baselines
from clearlstm.tasks.datasets import DATASETS, get_dataset
from clearlstm.tasks.forecast import future_labels, recursive_forecast
from clearlstm.tasks.models import Forecaster
from clearlstm.tasks.series import Scaler, SeriesError, _fill, check_length, read_series
from clearlstm.train import checkpoint


@pytest.mark.parametrize(
    ("name", "season"), [("co2", 12), ("sunspots", 11), ("nile", None), ("elnino", 12)]
)
def test_season_detected_on_the_training_part(name, season):
    d = get_dataset(name)
    series = read_series(d.path, [d.target], time_column=d.time_column)
    split = check_length(series, 24, 1, 0.15, 0.15)
    assert baselines.detect_season(series.values[: split.train, 0]) == season


def test_bundled_series_are_complete():
    for d in DATASETS.values():
        if d.kind == "series":
            series = read_series(d.path, [d.target], time_column=d.time_column)
            assert np.isfinite(series.values).all() and len(series) == d.length() >= 100


def test_naive_and_seasonal_naive_use_only_the_past():
    y = np.arange(20.0)[:, None]  # (N, K=1)
    starts = np.array([10, 15])
    assert baselines.naive(y, starts, 3)[:, :, 0].tolist() == [[9, 9, 9], [14, 14, 14]]
    seasonal = baselines.seasonal_naive(y, starts, 5, season=4)[:, :, 0]
    assert seasonal.tolist() == [[6, 7, 8, 9, 6], [11, 12, 13, 14, 11]]


def test_scores_and_mase():
    truth = np.array([[[1.0], [2.0]], [[3.0], [4.0]]])  # (S=2, H=2, K=1)
    forecast = truth + np.array([[[1.0], [-1.0]], [[1.0], [-3.0]]])
    scale = baselines.mase_scale(np.array([[0.0], [2.0], [4.0]]), None)  # naive MAE 2
    (s,) = baselines.score(forecast, truth, scale)
    assert (s.mae, s.rmse, s.mase) == (1.5, pytest.approx(3**0.5), 0.75)


def test_fill_previous_and_linear():
    v = np.array([[np.nan], [1.0], [np.nan], [3.0], [np.nan]])
    assert _fill(v, "previous")[:, 0].tolist() == [1, 1, 1, 3, 3]
    assert _fill(v, "linear")[:, 0].tolist() == [1, 1, 2, 3, 3]


def test_read_series_errors_name_the_file(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("a,a\n1,2\n")
    with pytest.raises(SeriesError, match=r"x\.csv: the header names column 'a' twice"):
        read_series(path)
    path.write_text("a,b\n1,2\n3\n")
    with pytest.raises(SeriesError, match=r"x\.csv, line 3: 1 fields; the header has 2"):
        read_series(path, ["a"])
    path.write_text("a,b\n1,2\n")
    with pytest.raises(SeriesError, match="say which column to forecast with --target"):
        read_series(path)


def test_scaler_round_trip():
    values = np.array([[1.0, 5.0], [3.0, 5.0]])
    scaler = Scaler.fit(values)
    assert scaler.std == [1.0, 1.0]  # a constant column keeps std 1
    np.testing.assert_allclose(scaler.inverse(scaler.transform(values)), values)


def test_forecaster_forecasts_changes_so_a_level_shift_shifts_the_forecast():
    torch.manual_seed(0)
    model = Forecaster(columns=2, targets=1, horizon=3, hidden_size=5, num_layers=2)
    x = torch.randn(4, 7, 2)  # (B, W, C)
    shifted = x.clone()
    shifted[..., 0] += 10.0
    torch.testing.assert_close(model(shifted), model(x) + 10.0)
    assert model(x).shape == (4, 3, 1)


def test_recursive_forecast_feeds_its_own_forecasts_back():
    torch.manual_seed(0)
    model = Forecaster(columns=1, targets=1, horizon=1, hidden_size=3, num_layers=1)
    rows = np.linspace(0, 1, 10)[:, None]
    out = recursive_forecast(model, rows, 10, 3, window=4)  # (3, 1)
    history = list(rows[:, 0])
    for step in range(3):
        x = torch.tensor(history[-4:], dtype=torch.float32).reshape(1, 4, 1)
        with torch.no_grad():
            expected = float(model(x)[0, 0, 0])
        assert out[step, 0] == pytest.approx(expected, abs=1e-6)
        history.append(out[step, 0])


def test_future_labels_continue_years_and_months():
    assert future_labels(["1969", "1970"], 2) == ["1971", "1972"]
    assert future_labels(["2001-11", "2001-12"], 2) == ["2002-01", "2002-02"]
    assert future_labels(["a", "b"], 1) == ["b +1"]


def test_atomic_write_keeps_the_old_file_when_the_write_fails(tmp_path, monkeypatch):
    path = tmp_path / "model.safetensors"
    checkpoint.atomic_write(path, b"old")

    def crash(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.atomic_write(path, b"new")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]


def test_saved_model_round_trip_and_shape_check(tmp_path):
    torch.manual_seed(0)
    model = Forecaster(1, 1, 2, 4, 1)
    checkpoint.save_model(tmp_path, model.state_dict(), {"kind": "forecaster"})
    other = Forecaster(1, 1, 2, 6, 1)
    with pytest.raises(checkpoint.CheckpointError, match="model of another shape"):
        checkpoint.load_weights(tmp_path, other.state_dict())
    loaded = checkpoint.load_weights(tmp_path, model.state_dict())
    for name, value in model.state_dict().items():
        assert torch.equal(loaded[name], value)
    assert checkpoint.load_settings(tmp_path)["format"] == "clearlstm"
