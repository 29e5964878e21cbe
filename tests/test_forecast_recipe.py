"""The forecaster's recipe: transforms, per-window normalisation, the linear part, the seed
ensemble, their settings, and the CLI flags that set them."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from test_settings import forecaster

from clearlstm.errors import SeriesError
from clearlstm.tasks import recipe, transforms
from clearlstm.tasks import settings as S
from clearlstm.tasks.models import NORMALISE, Forecaster, median
from clearlstm.tasks.series import Scaler
from clearlstm.tasks.transforms import Transform


def test_transforms_invert_exactly():
    rng = np.random.default_rng(0)
    y = rng.uniform(0.1, 50, size=(40, 2))
    for lambdas in [(0.0, 0.0), (0.5, -0.7), (1.3, 2.0)]:
        t = Transform("boxcox", lambdas)
        assert np.allclose(t.inverse(t.forward(y)), y, rtol=1e-10)
        assert not np.allclose(t.forward(y), y)
    assert Transform("none").forward(y) is y


def test_box_cox_lambda_recovers_the_one_that_made_the_data():
    rng = np.random.default_rng(1)
    for lam in (0.0, 0.5):
        z = 3 + 0.3 * rng.standard_normal(4000)
        y = transforms.inverse_boxcox(z, lam)
        assert abs(transforms.mle_lambda(y) - lam) < 0.1


def test_auto_chooses_log_or_box_cox_for_multiplicative_seasonality_on_validation():
    steps = np.arange(240)
    rng = np.random.default_rng(2)
    y = np.exp(
        0.01 * steps + 0.5 * np.sin(2 * np.pi * steps / 12) + 0.02 * rng.standard_normal(240)
    )
    chosen, errors = transforms.choose(y[:, None], 168, 36, 12)
    assert chosen.name in ("log", "boxcox") and errors[chosen.name] < errors["none"]
    # a series with zeros has no log or Box-Cox to try
    chosen, errors = transforms.choose(np.abs(np.sin(steps))[:, None], 168, 36, None)
    assert chosen.name == "none" and list(errors) == ["none"]


@pytest.mark.parametrize("name", ["log", "boxcox"])
def test_log_and_box_cox_refuse_values_at_or_below_zero(name):
    with pytest.raises(SeriesError, match=rf"--transform {name} needs values above 0.*-2"):
        transforms.make(name, np.array([[3.0], [0.5], [-2.0]]))
    scaler = Scaler.fit(np.array([[1.0], [2.0], [4.0]]), transforms.make(name, np.ones((3, 1))))
    with pytest.raises(SeriesError, match="above 0"):
        scaler.transform(np.array([[1.0], [0.0]]))


def test_scaler_with_a_transform_round_trips_and_leaves_covariates_alone():
    values = np.column_stack([np.linspace(1, 9, 30), np.linspace(-5, 5, 30)])
    scaler = Scaler.fit(values, transforms.make("log", values[:, :1]))
    scaled = scaler.transform(values)
    assert np.allclose(scaled.mean(axis=0), 0) and np.allclose(scaler.inverse(scaled), values)
    assert np.allclose(scaled[:, 1], (values[:, 1] - values[:, 1].mean()) / values[:, 1].std())
    again = S.ScalerSettings.of(scaler).to_scaler()
    assert np.allclose(again.transform(values), scaled)


def test_median_of_members():
    each = torch.tensor([[[1.0], [5.0], [2.0]], [[0.0], [-1.0], [9.0]]])  # (B=2, N=3, 1)
    assert median(each).tolist() == [[2.0], [0.0]]
    assert median(each[:, :2]).tolist() == [[3.0], [-0.5]]  # even: the middle two's mean


def test_ensemble_members_stay_independent_and_the_forecast_is_their_median():
    torch.manual_seed(0)
    model = Forecaster(2, 1, 4, 3, 2, "mean", members=3, linear_window=6)
    x = torch.randn(5, 6, 2)
    each = model(x, members=True)
    assert each.shape == (5, 3, 4, 1) and model(x).shape == (5, 4, 1)
    assert torch.equal(model(x), each.median(dim=1).values)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    for _ in range(3):
        optimizer.zero_grad()
        model(x, members=True).square().sum().backward()
        optimizer.step()
    model.check_blocks()  # the weights between members are still zero
    # member 0's forecast does not depend on member 1's weights
    before = model(x, members=True)[:, 0]
    with torch.no_grad():
        model.head.weight[4:8] += 1.0
    assert torch.equal(model(x, members=True)[:, 0], before)
    with torch.no_grad():
        model.lstm.weight_hh_l0[0, 5] = 1.0  # member 0's gate reading member 1's unit
    with pytest.raises(ValueError, match="weights between members"):
        model.check_blocks()


def test_bases_of_each_normalisation():
    x = torch.arange(30.0).reshape(1, 15, 2) ** 1.5  # (B, W, C): target and a covariate
    y = x[0, :, 0]
    for normalise, want in [
        ("last", [y[-1]] * 3),
        ("mean", [y.mean()] * 3),
        ("none", [0.0] * 3),
        ("seasonal", [y[15 - 4 + h % 4] + (h // 4 + 1) * (y[-1] - y[-5]) for h in range(3)]),
    ]:
        model = Forecaster(2, 1, 3, 4, 1, normalise, season=4)
        assert torch.allclose(model.base(x)[0, :, 0], torch.tensor(want))
        with torch.no_grad():
            model.head.weight.zero_()
            model.head.bias.zero_()
        assert torch.allclose(model(x)[0, :, 0], torch.tensor(want))  # direct: H at once
    with pytest.raises(ValueError, match="season of at least 2"):
        Forecaster(1, 1, 1, 4, 1, "seasonal")


def test_linear_part_starts_at_the_least_squares_fit_of_an_autoregression():
    rng = np.random.default_rng(3)
    # A series whose steps follow an AR(2): the linear part reads the window relative to its
    # level, so its forecasts are level plus a weighted sum of the window's changes.
    d = np.zeros(400)
    for t in range(2, 400):
        d[t] = 1.2 * d[t - 1] - 0.5 * d[t - 2] + 0.1 * rng.standard_normal()
    y = np.cumsum(d)
    x = torch.as_tensor(np.stack([y[t - 5 : t] for t in range(5, 400)]))[..., None].float()
    truth = torch.as_tensor(y[5:400])[:, None, None].float()
    model = Forecaster(1, 1, 1, 4, 1, linear_window=5)
    said = recipe.start_linear(model, (x[:300], truth[:300]), (x[300:], truth[300:]))
    assert "normalise" in said and "ridge penalty" in said
    with torch.no_grad():
        guess = model(x[300:])
    error = float(((guess - truth[300:]) ** 2).mean())
    assert error < 0.013  # the noise variance is 0.01; persistence errs far more
    assert error < 0.5 * float(((x[300:, -1:, :] - truth[300:]) ** 2).mean())


def test_a_refit_keeps_the_penalty_that_validation_chose(monkeypatch):
    """On all rows there is no validation part: choosing the penalty on the rows it fits
    would always take the smallest (an overfitted linear part in every refitted model)."""
    rng = np.random.default_rng(4)
    y = np.cumsum(rng.standard_normal(200))
    x = torch.as_tensor(np.stack([y[t - 5 : t] for t in range(5, 200)]))[..., None].float()
    truth = torch.as_tensor(y[5:200])[:, None, None].float()
    all_rows = (x, truth)
    chosen = Forecaster(1, 1, 1, 4, 1, linear_window=5)
    recipe.start_linear(chosen, all_rows, all_rows)
    assert chosen.ridge_penalty == min(recipe.RIDGE), "in-sample, the smallest penalty wins"
    kept = Forecaster(1, 1, 1, 4, 1, linear_window=5)
    said = recipe.start_linear(kept, all_rows, all_rows, penalty=100.0)
    assert kept.ridge_penalty == 100.0 and "ridge penalty 100" in said
    _, _, coef = recipe.ridge(kept, all_rows, all_rows, (100.0,))
    assert torch.allclose(kept.linear.weight, torch.as_tensor(coef[:-1].T).float())

    from clearlstm.tasks import refit

    seen = []

    def start(model, train, val, normalise, penalty=None):
        seen.append(penalty)
        raise InterruptedError  # enough: the refit's choice is known

    monkeypatch.setattr(refit.recipe, "start_linear", start)
    base = forecaster()
    shape = S.ForecasterShape(1, 1, 1, 4, 1, normalise="mean", linear_window=5,
                              ridge_penalty=10.0)  # fmt: skip
    settings = dataclasses.replace(base, model=shape)
    with pytest.raises(InterruptedError):
        refit.fit_epochs(settings, all_rows, 1)
    assert seen == [10.0]


def test_window_choice():
    assert recipe.window(None, 300, 1) == 36
    assert recipe.window(None, 60, 1) == 24
    assert recipe.window(12, 300, 1) == 12


def test_new_settings_round_trip_and_old_folders_still_load():
    base = forecaster()
    model = S.ForecasterShape(3, 2, 4, 5, 2, normalise="seasonal", members=3, season=4,
                              linear_window=8)  # fmt: skip
    scaler = S.ScalerSettings((1.0, 2.0, 3.0), (0.5, 1.0, 2.0), "boxcox", (0.5, -0.25))
    data = S.DataSettings(**{**vars(base.data), "scaler": scaler})
    result = S.ForecasterResult(**{**vars(base.result), "choices": "window 8; transform boxcox"})
    new = S.ForecasterSettings(model=model, data=data, train=base.train, result=result)
    again = S.ForecasterSettings.from_json(json.loads(json.dumps(new.to_json())))
    assert json.dumps(again.to_json()) == json.dumps(new.to_json())  # NaN scores: no ==
    assert again.weight_shapes()["head.weight"] == (3 * 4 * 2, 15)
    assert again.weight_shapes()["linear.weight"] == (8, 16)
    old = base.to_json()
    for key in ("normalise", "members", "season", "linear_window"):
        assert key not in old["model"]  # written as older folders were
    assert "transform" not in old["data"]["scaler"] and "choices" not in old["result"]
    loaded = S.ForecasterSettings.from_json(old)
    assert (loaded.model.normalise, loaded.model.members, loaded.data.scaler.transform) == (
        "last",
        1,
        "none",
    )
    bad = json.loads(json.dumps(new.to_json()))
    bad["data"]["scaler"]["lambdas"] = [0.5]
    with pytest.raises(S.CheckpointError, match=r"scaler.lambdas.*2 numbers"):
        S.ForecasterSettings.from_json(bad)


def run(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "clearlstm.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def test_cli_trains_with_the_recipe_prints_and_saves_its_choices(tmp_path):
    out = tmp_path / "nile"
    small = ["--hidden-size", "4", "--epochs", "3", "--ensemble", "3"]
    result = run("train", "--dataset", "nile", *small, "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "Chosen: window 36" in result.stdout and "3 member(s)" in result.stdout
    saved = json.loads((out / "settings.json").read_text())
    assert saved["model"]["members"] == 3 and saved["model"]["linear_window"] == 36
    assert saved["result"]["choices"].startswith("window 36; transform")
    assert saved["model"]["normalise"] == recipe.AUTO_NORMALISE
    assert saved["model"]["ridge_penalty"] in recipe.RIDGE  # what validation chose
    forecast = run(
        "forecast", "--model", str(out), "--steps", "5", "--out", str(tmp_path / "f.csv")
    )
    assert forecast.returncode == 0, forecast.stderr
    rows = (tmp_path / "f.csv").read_text().splitlines()
    assert len(rows) == 6 and all(math.isfinite(float(r.split(",")[1])) for r in rows[1:])
    asked = ["--transform", "log", "--normalise", "last", "--linear", "off", "--window", "12"]
    result = run("train", "--dataset", "nile", *small, *asked, "--out", str(tmp_path / "b"))
    assert result.returncode == 0, result.stderr
    assert "transform log (as asked)" in result.stdout and "no linear part" in result.stdout
    saved = json.loads((tmp_path / "b" / "settings.json").read_text())
    assert saved["data"]["scaler"]["transform"] == "log" and "linear_window" not in saved["model"]


def test_cli_refuses_log_of_zeros_and_recipe_flags_on_text(tmp_path):
    result = run("train", "--dataset", "sunspots", "--transform", "log", "--epochs", "1",
                 "--out", str(tmp_path / "s"))  # fmt: skip
    assert result.returncode == 1 and "--transform log needs values above 0" in result.stderr
    result = run("train", "--dataset", "shakespeare", "--ensemble", "3", "--out", str(tmp_path))
    assert result.returncode == 1 and "--ensemble is for series" in result.stderr
    result = run("train", "--dataset", "nile", "--ensemble", "0", "--out", str(tmp_path))
    assert result.returncode != 0 and "--ensemble" in result.stderr


def test_cli_constants_match_the_library():
    from clearlstm.cli import main as cli

    assert cli.MAX_MEMBERS == S.MAX_MEMBERS
    assert cli.TRANSFORMS == transforms.TRANSFORMS
    assert ("auto", *NORMALISE) == cli.NORMALISE


def test_the_linear_part_refuses_a_window_of_another_length():
    """The linear part reads exactly ``linear_window`` steps: a shorter or longer window is a
    clear error naming both, never a shape error from inside torch."""
    model = Forecaster(1, 1, 1, 4, 1, "last", 1, None, 8)
    assert model(torch.randn(2, 8, 1)).shape == (2, 1, 1)
    for steps in (5, 9):
        with pytest.raises(ValueError, match=f"exactly 8 steps; got {steps}"):
            model(torch.randn(2, steps, 1))
