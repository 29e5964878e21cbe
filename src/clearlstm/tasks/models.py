"""The two trainable models: a forecaster for series and a character-level language model.

Both are a :class:`clearlstm.LSTM` with a linear layer on top, so everything the LSTM offers
(``trace=True``, retention, half-life) works on a trained model. Shapes: ``B`` batch, ``W``
window (steps read), ``C`` input columns, ``K`` targets, ``H`` horizon, ``T`` steps of text,
``V`` vocabulary size, ``E`` embedding size, ``U`` hidden units, ``F`` future covariates.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor, nn

from clearlstm.core.trace import Trace
from clearlstm.nn.lstm import LSTM
from clearlstm.nn.variants import init_gate_biases

if TYPE_CHECKING:
    from clearlstm.tasks.settings import CharModelSettings, ForecasterSettings


Normalise = Literal["last", "mean", "seasonal", "none"]
NORMALISE: tuple[str, ...] = ("last", "mean", "seasonal", "none")


class Forecaster(nn.Module):
    """Reads a window of scaled rows and forecasts the next ``horizon`` rows of the targets.

    The network sees each target relative to a *base* taken from its window and predicts the
    change from that base (per-window level normalisation, as N-BEATS and DeepAR do), so a
    trend that carries the series beyond the training range needs no extrapolation of levels:

    - ``"last"``: the window's last value;
    - ``"mean"``: the window's mean (a noisy series' level is better read from many steps);
    - ``"seasonal"``: the value one ``season`` back plus the last seasonal change
      (``y[t-m+h] + y[t-1] - y[t-1-m]``: a seasonal random walk with drift), so the network
      models what that misses; needs ``window > season``;
    - ``"none"``: the scaled values as they are, predicted directly.

    Covariates are read as they are. *Past* covariates are known up to the forecast origin
    only: the LSTM reads them in the window. *Future* covariates (the last ``future`` of the
    ``columns``: a calendar, a planned price, holidays) are known for the forecast rows too:
    the LSTM reads their past values in the window like any column, and their values on the
    ``H`` forecast rows, flattened ``(B, H*F)``, go to the head beside the LSTM's last hidden
    state and to the linear part beside the lags. The input ``x`` of such a model is
    ``(B, W + H, C)``: rows ``[t - W, t + H)`` of which, on the last ``H``, only the future
    covariates are read (:meth:`join` builds it, the rest zero).

    With ``members > 1`` the module holds that many independent networks (a seed ensemble)
    trained in one pass: one LSTM of ``members * hidden_size`` units whose recurrent (and
    deeper input) weights and head are block-diagonal (every member's head reads the future
    covariates), each block initialised as a network of ``hidden_size`` units would be; the
    forecast is the members' median. ``lstm``: the LSTM's variant arguments
    (:data:`clearlstm.nn.variants.DEFAULTS`; none: torch's LSTM); ``layer_norm`` needs one
    member (it normalises over all units, which would join the members).
    """

    def __init__(
        self,
        columns: int,
        targets: int,
        horizon: int,
        hidden_size: int,
        num_layers: int,
        normalise: Normalise = "last",
        members: int = 1,
        season: int | None = None,
        linear_window: int | None = None,
        lstm: Mapping[str, Any] | None = None,
        future: int = 0,
    ) -> None:
        super().__init__()
        variant = dict(lstm or {})
        if variant.get("layer_norm") and members > 1:
            raise ValueError(
                f"Forecaster: layer_norm normalises over all units, so it needs members=1 (the "
                f"members would be one network); got members={members}"
            )
        if normalise not in NORMALISE:
            raise ValueError(f"normalise must be one of {', '.join(NORMALISE)}; got {normalise!r}")
        if members < 1:
            raise ValueError(f"members must be at least 1; got {members}")
        if not 0 <= future <= columns - targets:
            raise ValueError(
                f"future must be from 0 to the {columns - targets} covariate column(s); got "
                f"{future}"
            )
        if normalise == "seasonal" and (season is None or season < 2):
            raise ValueError(
                f"normalise 'seasonal' needs a season of at least 2 steps; got {season}"
            )
        self.columns, self.targets, self.horizon = columns, targets, horizon
        self.hidden_size, self.members, self.future = hidden_size, members, future
        self.normalise, self.season = normalise, season if normalise == "seasonal" else None
        self.lstm = LSTM(columns, members * hidden_size, num_layers, batch_first=True, **variant)
        ahead = horizon * future  # the future covariates' values on the forecast rows
        self.head = nn.Linear(members * hidden_size + ahead, members * horizon * targets)
        if members > 1:
            self._block_diagonal()
        # A linear autoregression on the normalised window beside the LSTM (LSTNet's
        # "highway"): started at its least-squares fit, the LSTM learns what it misses.
        self.linear_window = linear_window
        self.ridge_penalty: float | None = None  # the linear part's, once started (recipe)
        self.linear = None
        if linear_window is not None:
            self.linear = nn.Linear(linear_window * targets + ahead, horizon * targets)

    @classmethod
    def from_settings(cls, settings: ForecasterSettings) -> Forecaster:
        m = settings.model
        return cls(
            m.columns, m.targets, m.horizon, m.hidden_size, m.num_layers, m.normalise,
            m.members, m.season, m.linear_window, m.lstm.kwargs(), m.future,
        )  # fmt: skip

    def _masks(self) -> dict[str, Tensor]:
        """Which weights couple units of one member only: 1 there, 0 across members."""
        n, u = self.members, self.hidden_size
        same = torch.kron(torch.eye(n), torch.ones(u, u))  # (N*U, N*U)
        out = torch.kron(torch.eye(n), torch.ones(self.horizon * self.targets, u))
        shared = torch.ones(len(out), self.horizon * self.future)  # every member reads these
        masks = {"head.weight": torch.cat([out, shared], dim=1)}
        for k in range(self.lstm.num_layers):
            masks[f"lstm.weight_hh_l{k}"] = same.repeat(4, 1)  # gates i, f, g, o
            if k > 0:
                masks[f"lstm.weight_ih_l{k}"] = same.repeat(4, 1)
        return masks

    def _block_diagonal(self) -> None:
        """Initialise as ``members`` networks of ``hidden_size`` units, and keep the weights
        across members at zero: their gradients are masked, so Adam never moves them."""
        bound = 1 / math.sqrt(self.hidden_size)
        masks = self._masks()
        with torch.no_grad():
            for name, p in self.named_parameters():
                p.uniform_(-bound, bound)
                if name in masks:
                    p.mul_(masks[name])
        lstm = self.lstm
        if lstm.forget_bias is not None or lstm.init == "chrono":  # after the draw, as LSTM's
            for k in range(lstm.num_layers):
                b_ih, b_hh = getattr(lstm, f"bias_ih_l{k}"), getattr(lstm, f"bias_hh_l{k}")
                init_gate_biases(b_ih, b_hh, lstm.forget_bias, lstm.init, lstm.chrono_max_steps)
        for name, p in self.named_parameters():
            if name in masks:
                p.register_hook(lambda g, m=masks[name]: g * m)

    def check_blocks(self) -> None:
        """A ``ValueError`` when weights across members are not zero (a damaged file)."""
        for name, mask in (self._masks() if self.members > 1 else {}).items():
            p = dict(self.named_parameters())[name]
            if bool((p.detach() * (1 - mask)).abs().max() > 0):
                raise ValueError(
                    f"{name}: an ensemble of {self.members} members keeps the weights between "
                    "members at zero; this file's are not"
                )

    def split(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """The model's input ``x`` -> the window ``(B, W, C)`` and the future covariates on
        the forecast rows ``(B, H, F)`` (None without future covariates)."""
        if not self.future:
            return x, None
        return x[:, : -self.horizon], x[:, -self.horizon :, -self.future :]

    def join(self, window: Tensor, later: Tensor) -> Tensor:
        """The model's input from a window ``(B, W, C)`` and the ``H`` rows after it
        ``(B, H, C)`` (or ``(H, C)``, the same for every window): ``(B, W + H, C)``, of the
        later rows only the future covariates kept (the rest zero: never read), or the window
        itself without future covariates."""
        if not self.future:
            return window
        ahead = torch.zeros_like(later)
        ahead[..., -self.future :] = later[..., -self.future :]
        return torch.cat([window, ahead.expand(len(window), -1, -1)], dim=1)

    def base(self, x: Tensor) -> Tensor:
        """``(B, W, C) -> (B, H, K)``: what the network's output is added to (the window)."""
        y = x[..., : self.targets]  # (B, W, K)
        last = y[:, -1:]
        if self.normalise == "last":
            return last.expand(-1, self.horizon, -1)
        if self.normalise == "mean":
            return y.mean(dim=1, keepdim=True).expand(-1, self.horizon, -1)
        if self.normalise == "none":
            return torch.zeros_like(last).expand(-1, self.horizon, -1)
        m, w = self.season or 1, y.shape[1]
        if w <= m:
            raise ValueError(
                f"normalise 'seasonal' reads one season ({m}) and a step back: the window must "
                f"be longer than {m} steps; got {w}"
            )
        h = torch.arange(self.horizon)
        change = last - y[:, w - 1 - m : w - m]  # (B, 1, K)
        return y[:, w - m + h % m] + (h // m + 1).to(y.dtype)[None, :, None] * change

    def features(self, x: Tensor) -> Tensor:
        """``(B, W, C) -> (B, W, C)``: targets relative to their level in the window."""
        y = x[..., : self.targets]
        if self.normalise == "none":
            return x
        level = y.mean(dim=1, keepdim=True) if self.normalise == "mean" else y[:, -1:]
        return torch.cat([y - level, x[..., self.targets :]], dim=-1)

    def lags(self, x: Tensor) -> Tensor:
        """The model's input -> ``(B, W * K + H * F)``: the targets relative to their level
        and the future covariates on the forecast rows, what the linear part reads."""
        window, ahead = self.split(x)
        lags = self.features(window)[..., : self.targets].reshape(len(x), -1)  # (B, W*K)
        return lags if ahead is None else torch.cat([lags, ahead.reshape(len(x), -1)], dim=1)

    def forward(self, x: Tensor, members: bool = False) -> Tensor:
        """``(B, W, C)`` (``(B, W + H, C)`` with future covariates) ``-> (B, H, K)`` scaled
        forecasts, the members' median; with ``members=True`` each member's, ``(B, N, H, K)``."""
        window, ahead = self.split(x)
        if self.linear_window is not None and window.shape[1] != self.linear_window:
            raise ValueError(
                f"x: this forecaster's linear part reads windows of exactly "
                f"{self.linear_window} steps; got {window.shape[1]}"
            )
        output, _ = self.lstm(self.features(window))  # (B, W, N*U)
        last = output[:, -1]  # (B, N*U)
        if ahead is not None:
            last = torch.cat([last, ahead.reshape(len(x), -1)], dim=1)  # (B, N*U + H*F)
        n, h, k = self.members, self.horizon, self.targets
        each = self.base(window)[:, None] + self.head(last).view(-1, n, h, k)
        if self.linear is not None:
            each = each + self.linear(self.lags(x)).view(-1, 1, h, k)
        return each if members else median(each)

    def trace(self, x: Tensor) -> Trace:
        """The LSTM's trace on ``(B, W, C)`` scaled rows, a window (all members' units side by
        side)."""
        with torch.no_grad():
            _, _, trace = self.lstm(self.features(x), trace=True)
        return trace


def median(each: Tensor) -> Tensor:
    """``(B, N, ...) -> (B, ...)``: the median over axis 1 (the mean of the middle two for an
    even ``N``), robust to one member that went astray."""
    n = each.shape[1]
    if n == 1:
        return each[:, 0]
    ordered = each.sort(dim=1).values
    return ordered[:, (n - 1) // 2 : n // 2 + 1].mean(dim=1)


class CharModel(nn.Module):
    """Character-level language model: embedding, LSTM, linear layer to next-character logits."""

    def __init__(
        self,
        vocab_size: int,
        embedding_size: int,
        hidden_size: int,
        num_layers: int,
        lstm: Mapping[str, Any] | None = None,  # the LSTM's variant arguments, as Forecaster's
    ) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_size)
        self.lstm = LSTM(
            embedding_size, hidden_size, num_layers, batch_first=True, **dict(lstm or {})
        )
        self.head = nn.Linear(hidden_size, vocab_size)

    @classmethod
    def from_settings(cls, settings: CharModelSettings) -> CharModel:
        m = settings.model
        vocab = len(settings.vocabulary)
        return cls(vocab, m.embedding_size, m.hidden_size, m.num_layers, m.lstm.kwargs())

    def forward(
        self, tokens: Tensor, state: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """``(B, T)`` character ids -> ``(B, T, V)`` logits and the LSTM state."""
        output, state = self.lstm(self.embedding(tokens), state)  # (B, T, U)
        return self.head(output), state

    def trace(self, tokens: Tensor) -> Trace:
        """The LSTM's trace on ``(B, T)`` character ids."""
        with torch.no_grad():
            _, _, trace = self.lstm(self.embedding(tokens), trace=True)
        return trace


def forecast_loss(model: torch.nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """Per-sample mean squared error of ``(B, H, K)`` scaled forecasts: ``(B,)``. In training
    each ensemble member learns on its own (the mean of the members' errors); in evaluation
    (early stopping) the error is the members' median forecast's."""
    if model.training:
        return ((model(x, members=True) - y[:, None]) ** 2).mean(dim=(1, 2, 3))
    return ((model(x) - y) ** 2).mean(dim=(1, 2))
