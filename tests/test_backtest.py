"""Backtests in the library: forecasts from many origins against the one-origin reference,
scores per step, conformal widths, the baselines' use of the past only, and the split flags
checked against the data."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from clearlstm.errors import SeriesError
from clearlstm.tasks import baselines
from clearlstm.tasks.backtest import conformal_widths, forecast_from, forecast_origins
from clearlstm.tasks.forecast import recursive_forecast
from clearlstm.tasks.models import Forecaster
from clearlstm.tasks.series import Scaler, Series, choose_split
from clearlstm.tasks.settings import ScalerSettings


class _Data:
    """The two fields of settings.data that forecasts read."""

    def __init__(self, scaler: Scaler, window: int) -> None:
        self.scaler, self.window = ScalerSettings.of(scaler), window


class _Settings:
    def __init__(self, scaler: Scaler, window: int) -> None:
        self.data = _Data(scaler, window)


@pytest.mark.parametrize(("columns", "horizon"), [(1, 1), (2, 2)])
def test_forecasts_from_many_origins_match_the_one_origin_reference(columns, horizon):
    torch.manual_seed(0)
    model = Forecaster(columns, 1, horizon, hidden_size=5, num_layers=1).eval()
    rng = np.random.default_rng(0)
    values = rng.normal(10, 3, size=(40, columns))  # data units; column 1 a covariate
    scaler = Scaler.fit(values[:20])
    settings = _Settings(scaler, window=6)
    starts = np.array([6, 11, 30])
    out = forecast_origins(model, settings, values, starts, 5)  # (S, 5, 1)
    scaled = scaler.transform(values)
    for s, t in enumerate(starts):
        reference = scaler.inverse(recursive_forecast(model, scaled, int(t), 5, window=6))
        np.testing.assert_allclose(out[s], reference, rtol=1e-6, atol=1e-6)
    future = values[30:35, 1:] if columns > 1 else None
    alone = forecast_from(model, settings, values[:30], 5, future)
    np.testing.assert_allclose(alone, out[2], rtol=1e-9)


def test_a_covariate_model_needs_the_covariates_of_the_forecast_rows_it_reads_back():
    model = Forecaster(2, 1, 1, hidden_size=3, num_layers=1).eval()
    values = np.arange(40.0).reshape(20, 2)
    settings = _Settings(Scaler.fit(values), window=4)
    assert forecast_origins(model, settings, values, np.array([18]), 3).shape == (1, 3, 1)
    with pytest.raises(ValueError, match=r"past covariate.*at most 3 step\(s\); got 4"):
        forecast_origins(model, settings, values, np.array([18]), 4)


def test_scores_per_step_smape_and_mape_by_their_definitions():
    truth = np.array([[[2.0], [4.0]], [[1.0], [5.0]]])  # (S=2, H=2, K=1)
    forecast = np.array([[[3.0], [4.0]], [[0.0], [6.0]]])
    [s] = baselines.score(forecast, truth, np.array([0.5]))
    assert s.mae == pytest.approx(3 / 4) and s.mase == pytest.approx(1.5)
    assert s.rmse == pytest.approx(math.sqrt(3 / 4))
    assert s.smape == pytest.approx(100 * (2 / 5 + 0 + 2 / 1 + 2 / 11) / 4)
    assert s.mape == pytest.approx(100 * (1 / 2 + 0 + 1 + 1 / 5) / 4)
    [step2] = baselines.score(forecast[:, 1], truth[:, 1], np.array([0.5]), axis=(0,))
    assert step2.mae == pytest.approx(0.5)
    truth[0, 0, 0] = 0.0  # MAPE is undefined with a true zero; sMAPE still defined
    [z] = baselines.score(forecast, truth, np.array([0.5]))
    assert math.isnan(z.mape) and math.isfinite(z.smape)


def test_conformal_widths_are_the_corrected_quantile_per_step():
    rng = np.random.default_rng(1)
    residuals = rng.normal(size=(99, 3, 2)) * np.array([1.0, 2.0, 3.0])[None, :, None]
    widths, guaranteed = conformal_widths(residuals, 0.8)
    assert guaranteed and widths.shape == (3, 2)
    k = math.ceil(100 * 0.8)  # the 80th smallest absolute residual of 99
    expected = np.sort(np.abs(residuals), axis=0)[k - 1]
    np.testing.assert_array_equal(widths, expected)
    assert (np.diff(widths[:, 0]) > 0).all()  # wider where errors are larger
    few, ok = conformal_widths(residuals[:10], 0.95)
    assert not ok
    np.testing.assert_array_equal(few, np.abs(residuals[:10]).max(axis=0))


def test_every_baseline_reads_only_the_rows_before_its_origin():
    rng = np.random.default_rng(2)
    t = np.arange(120)
    y = (10 + 0.05 * t + np.sin(2 * np.pi * t / 12) + rng.normal(0, 0.1, 120))[:, None]
    starts = np.array([100, 108])
    before, skipped = baselines.classical(y, 96, starts, 4, 12)
    assert skipped == {}
    changed = y.copy()
    changed[108:] += 50.0  # the future of the last origin
    after, _ = baselines.classical(changed, 96, starts, 4, 12)
    for name in baselines.CLASSICAL:
        assert before[name].shape == (2, 4, 1)
        np.testing.assert_allclose(after[name], before[name], rtol=1e-9)
        error = np.abs(before[name][:, :, 0] - y[np.add.outer(starts, np.arange(4)), 0])
        assert error.mean() < 0.5, name  # they follow trend and season
    flat, _ = baselines.classical(np.full((60, 1), 3.0), 40, np.array([45]), 2, None)
    for name in baselines.CLASSICAL:
        np.testing.assert_array_equal(flat[name], np.full((1, 2, 1), 3.0))
    few, skipped = baselines.classical(y[:12], 6, np.array([8]), 1, None)
    assert "AutoETS" not in few and "tiny datasets" in skipped["AutoETS"]


def _series(n: int, time: list[str] | None = None) -> Series:
    return Series("s.csv", ["y"], [], np.arange(float(n))[:, None], time, "year" if time else None)


def test_split_flags_checked_against_the_data():
    years = [str(1900 + i) for i in range(100)]
    split = choose_split(_series(100, years), 8, 1, test_start="1980")
    assert (split.train, split.val, split.test) == (65, 15, 20)
    split = choose_split(_series(100), 8, 2, val_size=10, test_size=30)
    assert (split.train, split.val, split.test) == (60, 10, 30)
    split = choose_split(_series(100), 8, 1, test_start="90")  # a row number: no time column
    assert split.test == 10
    with pytest.raises(
        SeriesError, match=r"--test-start '1850': no such time label.*'1900' to '1999'"
    ):
        choose_split(_series(100, years), 8, 1, test_start="1850")
    with pytest.raises(
        SeriesError,
        match=r"--test-size: the test part has 2 row\(s\); it needs at least --horizon \(3\)",
    ):
        choose_split(_series(100), 8, 3, test_size=2)
    with pytest.raises(
        SeriesError, match=r"leave 5 for training .* at least window \+ horizon \(9\)"
    ):
        choose_split(_series(100), 8, 1, val_size=15, test_size=80)
    with pytest.raises(
        SeriesError, match=r"--val-size must be at least --horizon \(4\) rows .*; got 2"
    ):
        choose_split(_series(100), 8, 4, val_size=2)


def test_future_intervals_use_every_origin_whose_step_is_known():
    from clearlstm.tasks.backtest import future_intervals
    from clearlstm.tasks.series import Split

    torch.manual_seed(0)
    model = Forecaster(1, 1, 1, hidden_size=4, num_layers=1).eval()
    values = np.cumsum(np.random.default_rng(3).normal(size=60))[:, None]
    settings = _Settings(Scaler.fit(values[:40]), window=5)
    series = Series("s.csv", ["y"], [], values, None)
    out = future_intervals(model, settings, series, Split(40, 10, 10), 30)
    assert set(out) == {"80", "95"} and len(out["80"]) == 20  # origins 40..59 reach 20 steps
    one = forecast_origins(model, settings, values, np.arange(40, 60), 1)[:, 0] - values[40:60]
    assert out["80"][0] == tuple(conformal_widths(one[:, None], 0.8)[0][0])
    last = forecast_origins(model, settings, values, np.array([40]), 20)[0, -1] - values[59]
    assert out["95"][-1] == (abs(float(last[0])),)  # one origin reaches step 20
