"""Which forecaster recipe earns its place: LSTM variants against AutoETS, AutoARIMA and Theta.

Every method makes one-step forecasts (the default ``--horizon 1``) from each origin of the
test part of the four bundled series (70/15/15 split), from the data before the origin only;
the classical models (statsforecast) are fitted once on the training and validation rows and
then run forward with those parameters, as the LSTM is trained once. Scores are MASE (scale:
the training part's in-sample seasonal-naive MAE) and RMSE; seconds are each method's own,
measured in this process. Run: ``python benchmarks/forecast_experiments.py [--variants a b]``
(needs ``pip install statsforecast``); ``--list`` names the variants.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from clearlstm.tasks import baselines, forecasting
from clearlstm.tasks.datasets import get_dataset
from clearlstm.tasks.forecasting import SeriesOptions
from clearlstm.tasks.series import check_length, origins, read_series
from clearlstm.train.loop import TrainConfig

SERIES = ("co2", "nile", "sunspots", "elnino")
# name -> SeriesOptions overrides; "defaults" is whatever train_series does by default.
VARIANTS: dict[str, dict] = {
    "defaults": {},
    "old recipe": {
        "window": 24,
        "transform": "none",
        "normalise": "last",
        "members": 1,
        "linear": False,
    },
    "no linear part": {"linear": False},
    "1 member": {"members": 1},
    "9 members": {"members": 9},
    "window 24": {"window": 24},
    "normalise last": {"normalise": "last"},
    "normalise mean": {"normalise": "mean"},
    "normalise seasonal": {"normalise": "seasonal"},
    "transform none": {"transform": "none"},
    "transform log": {"transform": "log"},
    "transform boxcox": {"transform": "boxcox"},
    "200 epochs, patience 20": {"train_epochs": 200, "train_patience": 20},
    "patience 25": {"train_patience": 25},
    "lr 0.001": {"train_lr": 1e-3},
    "hidden 64": {"hidden_size": 64},
}


def classical(name: str) -> dict[str, tuple[float, float, float]]:
    """method -> (MASE, RMSE, seconds) of the statsforecast models and Holt-Winters."""
    from statsforecast.models import AutoARIMA, AutoETS, Theta

    dataset = get_dataset(name)
    series = read_series(dataset.path, [dataset.target], None, dataset.time_column)
    split = check_length(series, 24, 1, 0.15, 0.15)
    y = series.values[:, 0]
    season = baselines.detect_season(y[: split.train])
    starts = origins(split, "test", len(y), 24, 1)
    truth = y[starts]
    scale = float(baselines.mase_scale(y[: split.train, None], season)[0])
    m = season or 1
    out = {}
    makers = {
        "AutoETS": lambda: AutoETS(season_length=m),
        "AutoARIMA": lambda: AutoARIMA(season_length=m),
        "Theta": lambda: Theta(season_length=m),
    }
    for method, make in makers.items():
        started = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = make().fit(y[: split.test_start])
            guess = np.array([model.forward(y=y[:t], h=1)["mean"][0] for t in starts])
        out[method] = _scores(guess, truth, scale, time.perf_counter() - started)
    started = time.perf_counter()
    hw = baselines.holt_winters(y[:, None], split.test_start, starts, 1, season)[:, 0, 0]
    out["Holt-Winters"] = _scores(hw, truth, scale, time.perf_counter() - started)
    return out


def _scores(guess: np.ndarray, truth: np.ndarray, scale: float, seconds: float) -> tuple:
    error = guess - truth
    return float(np.abs(error).mean() / scale), float(np.sqrt((error**2).mean())), seconds


def lstm(name: str, overrides: dict, seed: int = 0) -> tuple[float, float, float, str]:
    """(MASE, RMSE, seconds, choices) of ``train_series`` with ``overrides`` on ``name``."""
    train = {k[6:]: v for k, v in overrides.items() if k.startswith("train_")}
    options = SeriesOptions(
        dataset=name, **{k: v for k, v in overrides.items() if k[:6] != "train_"}
    )
    config = TrainConfig(seed=seed, **train)
    with tempfile.TemporaryDirectory() as out, contextlib.redirect_stdout(io.StringIO()):
        started = time.perf_counter()
        run = forecasting.train_series(options, config, Path(out) / "m")
        seconds = time.perf_counter() - started
    scores = run.evaluations[0].scores["LSTM"]
    choices = f"{run.choices}; best epoch {run.fit.best_epoch}/{run.fit.epochs_run}"
    return scores.mase, scores.rmse, seconds, choices


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", nargs="+", default=list(SERIES))
    parser.add_argument("--variants", nargs="+", default=["defaults"])
    parser.add_argument("--seeds", type=int, default=1, help="seeds per LSTM variant (median)")
    parser.add_argument("--list", action="store_true")
    args = parser.parse_args()
    if args.list:
        print("\n".join(f"{k}: {v}" for k, v in VARIANTS.items()))
        return
    torch.set_num_threads(1)
    print("| series | method | MASE | RMSE | seconds | choices |")
    print("|---|---|---|---|---|---|")
    for name in args.series:
        rows = classical(name)
        best = min(("AutoETS", "AutoARIMA", "Theta"), key=lambda k: rows[k][0])
        for method, (mase, rmse, sec) in rows.items():
            mark = " (best)" if method == best else ""
            print(
                f"| {name} | {method}{mark} | {mase:.3f} | {rmse:.4g} | {sec:.1f} | |", flush=True
            )
        for variant in args.variants:
            try:
                runs = [lstm(name, VARIANTS[variant], seed) for seed in range(args.seeds)]
            except ValueError as error:  # e.g. log of a series with zeros
                print(f"| {name} | LSTM {variant} | refused: {error} | | | |")
                continue
            mase = float(np.median([r[0] for r in runs]))
            rmse = float(np.median([r[1] for r in runs]))
            sec = float(np.median([r[2] for r in runs]))
            ratio = mase / rows[best][0]
            low, high = min(r[0] for r in runs), max(r[0] for r in runs)
            spread = f" (seeds {low:.3f}-{high:.3f})" if args.seeds > 1 else ""
            print(
                f"| {name} | LSTM {variant} | {mase:.3f} ({ratio:.2f}x best){spread} "
                f"| {rmse:.4g} | {sec:.1f} | {runs[0][3]} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
