"""The forecaster's automatic choices, each made on the training and validation parts only.

``clearlstm train`` with the defaults picks, per series: the window (36 steps where the
training part leaves 24 windows to learn from beside it, else 24), the targets' transform
(:func:`clearlstm.tasks.transforms.choose`) and the linear part's ridge penalty; each window
is read relative to its mean. The linear part (an autoregression on the normalised window,
as LSTNet adds one beside its network) starts at the least-squares fit and the LSTM's head
at zero, so training starts from a sound linear forecaster and the LSTM learns what it
misses. Every choice comes back in words, to be printed and saved. Shapes: ``S`` samples,
``W`` window, ``H`` horizon, ``K`` targets.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from clearlstm.tasks import transforms
from clearlstm.tasks.models import NORMALISE, Forecaster
from clearlstm.tasks.series import Split
from clearlstm.tasks.transforms import TRANSFORMS, Transform

LONG_WINDOW, SHORT_WINDOW = 36, 24
SPARE_WINDOWS = 24  # training windows a long window must leave
# Ridge penalties per training sample tried for the linear part.
RIDGE = (1e-5, 1e-4, 1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0, 1000.0)
AUTO_NORMALISE = "mean"  # measured best with the linear part (benchmarks/forecast_experiments.py)


def window(asked: int | None, train_rows: int, horizon: int) -> int:
    """``--window``, or for ``None`` the long window where the training part holds it,
    a horizon and :data:`SPARE_WINDOWS` more rows, else the short one."""
    if asked is not None:
        return asked
    return LONG_WINDOW if train_rows >= LONG_WINDOW + horizon + SPARE_WINDOWS else SHORT_WINDOW


def transform(asked: str, y: np.ndarray, split: Split, season: int | None) -> tuple[Transform, str]:
    """The targets' transform (``y (N, K)``), chosen on validation for ``auto``."""
    if asked not in TRANSFORMS:
        raise ValueError(f"--transform must be one of {', '.join(TRANSFORMS)}; got {asked!r}")
    if asked != "auto":
        return transforms.make(asked, y[: split.train]), f"transform {asked} (as asked)"
    chosen, errors = transforms.choose(y, split.train, split.val, season)
    tried = ", ".join(f"{name} {e:.4f}" for name, e in errors.items())
    return chosen, f"transform {chosen.describe()} (chosen on validation; errors {tried})"


def check_normalise(asked: str, season: int | None, window: int) -> None:
    if asked not in ("auto", *NORMALISE):
        raise ValueError(f"--normalise must be one of auto, {', '.join(NORMALISE)}; got {asked!r}")
    if asked == "seasonal" and not (season and 2 <= season < window):
        raise ValueError(
            f"--normalise seasonal needs a season of 2 or more steps, shorter than --window "
            f"({window}); the season is {season} (set it with --season)"
        )


def ridge(
    model: Forecaster,
    train: tuple[Tensor, Tensor],
    val: tuple[Tensor, Tensor],
    penalties: tuple[float, ...] = RIDGE,
) -> tuple[float, float, np.ndarray]:
    """The ridge fit of the training part's ``y - base`` on the normalised window's lags
    (inputs ``(S, W, C)``, truths ``(S, H, K)``) and the future covariates on the forecast
    rows, its penalty (one of ``penalties``) chosen on validation: the validation mean
    squared error, the penalty and the coefficients ``(W*K + H*F + 1, H*K)`` (intercept
    last)."""

    def design(x: Tensor) -> np.ndarray:
        lags = model.lags(x).double().numpy()
        return np.hstack([lags, np.ones((len(lags), 1))])

    def residual(x: Tensor, y: Tensor) -> np.ndarray:
        with torch.no_grad():
            return (y - model.base(model.split(x)[0])).reshape(len(y), -1).double().numpy()

    a, b = design(train[0]), residual(*train)
    av, bv = design(val[0]), residual(*val)
    penalty = np.eye(a.shape[1]) * len(a)
    penalty[-1, -1] = 0  # the intercept is not shrunk
    fits = [np.linalg.solve(a.T @ a + lam * penalty, a.T @ b) for lam in penalties]
    errors = [float(((av @ c - bv) ** 2).mean()) for c in fits]
    best = int(np.argmin(errors))
    return errors[best], penalties[best], fits[best]


def start_linear(
    model: Forecaster,
    train: tuple[Tensor, Tensor],
    val: tuple[Tensor, Tensor],
    asked: str = "auto",
    penalty: float | None = None,
) -> str:
    """Set the normalisation (``auto``: :data:`AUTO_NORMALISE`), the linear part to its
    ridge fit (``penalty``, else the one of :data:`RIDGE` that does best on ``val``) and the
    LSTM's head to zero; the choices in words. A refit on all rows passes the penalty that
    validation chose: chosen on the rows it fits, the smallest would always win."""
    assert model.linear is not None
    model.normalise = AUTO_NORMALISE if asked == "auto" else asked
    error, penalty, coef = ridge(model, train, val, RIDGE if penalty is None else (penalty,))
    model.ridge_penalty = penalty
    with torch.no_grad():
        model.linear.weight.copy_(torch.as_tensor(coef[:-1].T))
        model.linear.bias.copy_(torch.as_tensor(coef[-1]))
        model.head.weight.zero_()
        model.head.bias.zero_()
    how = "as asked" if asked != "auto" else "the default"
    return (
        f"normalise {model.normalise} ({how}); linear part's ridge penalty {penalty:g} (chosen "
        f"on validation, error {error:.4f})"
    )
