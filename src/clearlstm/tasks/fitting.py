"""The steps of training a forecaster that one series (:mod:`clearlstm.tasks.forecasting`)
and many (:mod:`clearlstm.tasks.panel_train`) share: fitting with early stopping, the test
part's backtest and intervals, and the scores as ``settings.json`` records them. Shapes:
``S`` windows, ``W`` window, ``C`` columns, ``H`` horizon, ``K`` targets.
"""

from __future__ import annotations

from pathlib import Path

from torch import Tensor

from clearlstm.tasks.backtest import (
    FUTURE_STEPS,
    Backtest,
    Evaluation,
    backtest_model,
    future_intervals,
    tested_evaluations,
)
from clearlstm.tasks.models import Forecaster, forecast_loss
from clearlstm.tasks.series import Series, Split
from clearlstm.tasks.settings import (
    ForecasterResult,
    ForecasterSettings,
    MethodScores,
    finite_or_none,
)
from clearlstm.train.distributed import Distributed
from clearlstm.train.loop import FitResult, Reporter, TrainConfig, fit


def fit_forecaster(
    model: Forecaster,
    data: dict[str, tuple[Tensor, Tensor]],
    config: TrainConfig,
    out_dir: Path,
    fingerprint: dict,
    resume: bool,
    reporter: Reporter | None,
    context: Distributed,
) -> tuple[FitResult, ForecasterResult] | None:
    """Train ``model`` on ``data["train"]`` with early stopping on ``data["val"]`` (inputs
    ``(S, W, C)``, truths ``(S, H, K)``) and load its best weights; what training reached, as
    ``settings.json`` records it (no test scores yet). None on processes other than rank 0."""
    result = fit(
        model, data["train"], data["val"], forecast_loss, config, out_dir, fingerprint, resume,
        reporter, context,
    )  # fmt: skip
    if not context.is_main:
        return None
    model.load_state_dict(result.weights)
    model.eval()
    best = finite_or_none(result.best_val)
    return result, ForecasterResult(result.best_epoch, best, result.epochs_run, {})


def evaluate(
    model: Forecaster, settings: ForecasterSettings, series: Series, split: Split, horizon: int
) -> tuple[Backtest, dict | None, list[Evaluation]]:
    """The test part's backtest, ``horizon`` steps from each origin, the conformal intervals
    for forecasts past the end (as settings record them) and each target's evaluation."""
    tested = backtest_model(model, settings, series, split, horizon)
    steps = max(tested.horizon, FUTURE_STEPS)
    intervals = future_intervals(model, settings, series, split, steps)
    return tested, intervals, tested_evaluations(tested)


def scores_of(
    evaluations: list[Evaluation], targets: list[str] | None = None
) -> dict[str, dict[str, MethodScores]]:
    """Target (``targets``, else each evaluation's) -> method -> scores, for the settings."""
    names = targets or [e.target for e in evaluations]
    return {
        name: {m: MethodScores.of(s) for m, s in e.scores.items()}
        for name, e in zip(names, evaluations, strict=True)
    }
