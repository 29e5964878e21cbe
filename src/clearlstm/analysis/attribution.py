"""Which inputs an output came from: integrated gradients, and "why did it forget here?".

Integrated gradients (Sundararajan, Taly & Yan 2017) average the gradient of a scalar
output along the straight path from a baseline ``x'`` to the input ``x`` and multiply by
``x - x'``. They are *complete*: the attributions add up to ``f(x) - f(x')``, so the gap
between the two is a measure of the integration error we can report, not hope about. The
path integral is the trapezoid rule on ``m`` intervals; ``m`` doubles (reusing every
gradient already computed) until the gap is within ``tolerance`` of ``|f(x) - f(x')|``, or
``max_steps`` is reached (then :attr:`Attribution.converged` is False).

The gradients run in batches of path points through the model, so through
:class:`clearlstm.LSTM`'s own forward and backward (fused kernels on CPU). A model is any
callable ``(B, T, I) -> (B,)`` whose batch items do not interact (an LSTM in eval mode);
:func:`readout` makes one from an LSTM and a head.

"Why did it forget here?": the forget gate's pre-activation at step ``t``, unit ``j`` is a
scalar function of the inputs at steps ``<= t`` (:func:`forget_gate_pre_activation`, the
same value the trace records); :func:`explain_forgetting` attributes it to them, a negative
attribution being an input that pushed the gate shut.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from clearlstm.core.cell import cell_step, input_projection
from clearlstm.core.records import combined_bias
from clearlstm.nn.functional import lstm as lstm_forward
from clearlstm.nn.functional import lstm_layer
from clearlstm.nn.lstm import LSTM

Model = Callable[[Tensor], Tensor]  # (B, T, I) -> (B,)


@dataclass(frozen=True)
class Attribution:
    """Integrated gradients of one scalar output for one sequence ``(T, I)``."""

    attributions: Tensor  # (T, I), same dtype as the input
    output: float  # f(x)
    baseline_output: float  # f(x')
    steps: int  # trapezoid intervals m used
    relative_error: float  # |sum(attributions) - (f(x) - f(x'))| / |f(x) - f(x')|
    tolerance: float

    @property
    def total(self) -> float:
        return float(self.attributions.sum())

    @property
    def delta(self) -> float:
        return self.output - self.baseline_output

    @property
    def converged(self) -> bool:
        return self.relative_error <= self.tolerance

    @property
    def per_step(self) -> Tensor:
        """``(T,)`` attribution of each step (summed over input features)."""
        return self.attributions.sum(-1)

    def share(self) -> Tensor:
        """``(T,)`` each step's fraction of the absolute attribution mass."""
        mass = self.per_step.abs()
        return mass / mass.sum().clamp_min(torch.finfo(mass.dtype).tiny)


def readout(lstm: LSTM, head: nn.Module | None = None, *, step: int = -1, index: int = 0) -> Model:
    """A model ``(B, T, I) -> (B,)``: output ``index`` of ``head`` (or of the LSTM's output
    when there is no head) read at ``step`` (the last by default)."""
    if not isinstance(lstm, LSTM):
        raise TypeError(f"readout: lstm must be a clearlstm.LSTM; got {type(lstm).__name__}")

    def model(x: Tensor) -> Tensor:
        output, _ = lstm(x if lstm.batch_first else x.transpose(0, 1))
        last = output[:, step] if lstm.batch_first else output[step]  # (B, D*P)
        return (last if head is None else head(last))[:, index]

    return model


def _sequence(owner: str, name: str, x: Tensor) -> Tensor:
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError(f"{owner}: {name} must be a floating-point tensor; got {x!r:.60}")
    if x.dim() == 3 and x.shape[0] == 1:
        x = x[0]
    if x.dim() != 2:
        raise ValueError(f"{owner}: {name} must be one sequence (T, I); got {tuple(x.shape)}")
    return x.detach()


def _gradients(model: Model, points: Tensor) -> tuple[Tensor, Tensor]:
    """Outputs ``(N,)`` and their gradients ``(N, T, I)`` at ``points (N, T, I)``."""
    points = points.clone().requires_grad_(True)
    with torch.enable_grad():
        out = model(points)
        if not isinstance(out, Tensor) or out.shape != (points.shape[0],):
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(f"integrated_gradients: model must return (B,) = "
                             f"({points.shape[0]},) for (B, T, I) input; got {got}")  # fmt: skip
        (grad,) = torch.autograd.grad(out.sum(), points)
    return out.detach(), grad


def integrated_gradients(
    model: Model,
    x: Tensor,
    baseline: Tensor | None = None,
    *,
    steps: int | None = None,
    tolerance: float = 0.01,
    first_steps: int = 16,
    max_steps: int = 2048,
    batch_size: int = 64,
) -> Attribution:
    """Integrated gradients of ``model`` at ``x (T, I)`` from ``baseline`` (zeros if None).

    ``steps`` fixes the trapezoid intervals; without it they start at ``first_steps`` and
    double until the completeness gap is within ``tolerance`` (relative) or ``max_steps``.
    """
    owner = "integrated_gradients"
    x = _sequence(owner, "x", x)
    base = torch.zeros_like(x) if baseline is None else _sequence(owner, "baseline", baseline)
    if base.shape != x.shape:
        raise ValueError(f"{owner}: baseline must have x's shape {tuple(x.shape)}; "
                         f"got {tuple(base.shape)}")  # fmt: skip
    for name, value in (("steps", steps), ("first_steps", first_steps), ("max_steps", max_steps),
                        ("batch_size", batch_size)):  # fmt: skip
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value < 1):  # fmt: skip
            raise ValueError(f"{owner}: {name} must be a positive int; got {value!r}")
    if not tolerance > 0:
        raise ValueError(f"{owner}: tolerance must be positive; got {tolerance}")
    diff = (x - base).to(base.dtype)

    def grads_at(alphas: Tensor) -> tuple[Tensor, Tensor]:
        outs, total = [alphas.new_empty(0)], torch.zeros_like(x)
        for chunk in alphas.split(batch_size) if len(alphas) else ():
            out, grad = _gradients(model, base + chunk[:, None, None] * diff)
            outs.append(out)
            total += grad.sum(0)
        return torch.cat(outs), total

    m = steps or first_steps
    ends_out, ends = grads_at(torch.tensor([0.0, 1.0], dtype=x.dtype))
    f_base, f_x = float(ends_out[0]), float(ends_out[1])
    _, interior = grads_at(torch.arange(1, m, dtype=x.dtype) / m)
    delta = f_x - f_base
    scale = max(abs(delta), 1e-12 * max(abs(f_x), abs(f_base), 1e-300))
    while True:
        attributions = diff * (ends / 2 + interior) / m
        error = abs(float(attributions.sum()) - delta) / scale
        if steps is not None or error <= tolerance or 2 * m > max_steps:
            return Attribution(attributions, f_x, f_base, m, error, tolerance)
        _, new = grads_at((2 * torch.arange(m, dtype=x.dtype) + 1) / (2 * m))
        interior, m = interior + new, 2 * m


def gradient_times_input(model: Model, x: Tensor, baseline: Tensor | None = None) -> Tensor:
    """``(T, I)``: the output's gradient at ``x`` times ``x - baseline`` (one pass)."""
    x = _sequence("gradient_times_input", "x", x)
    base = torch.zeros_like(x) if baseline is None else baseline.detach().reshape(x.shape)
    _, grad = _gradients(model, x[None])
    return grad[0] * (x - base)


def forget_gate_pre_activation(
    lstm: LSTM, x: Tensor, step: int, unit: int, layer: int = 0
) -> Tensor:
    """``(B,)``: the forget gate's pre-activation of ``unit`` at ``step`` of ``layer``'s
    forward direction, differentiable in ``x (B, T, I)`` (batch first, whatever the LSTM's
    ``batch_first``). Zero initial state; eval semantics (no dropout, zoneout at its
    expectation). For a variant, what the sigmoid receives (:func:`clearlstm.core.cell.cell_step`'s
    pre-activation: layer norm, the peephole term ``p_f * c`` added, clipped)."""
    if not isinstance(lstm, LSTM):
        raise TypeError(f"forget_gate_pre_activation: lstm must be a clearlstm.LSTM; "
                        f"got {type(lstm).__name__}")  # fmt: skip
    if x.dim() != 3:
        raise ValueError(f"forget_gate_pre_activation: x must be (B, T, I); got {tuple(x.shape)}")
    for name, value, size in (("step", step, x.shape[1]), ("unit", unit, lstm.hidden_size),
                              ("layer", layer, lstm.num_layers)):  # fmt: skip
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < size:
            raise ValueError(
                f"forget_gate_pre_activation: {name} must be an int in [0, {size - 1}]; "
                f"got {value!r}"
            )
    weights, directions = lstm.all_weights(), lstm.num_directions
    choice = {"backend": lstm.backend, "kernel": lstm.kernel}
    u = x.transpose(0, 1)  # (T, B, I)
    if layer > 0:  # a reverse direction below reads the future: keep every step then
        below = u if lstm.bidirectional else u[: step + 1]
        u, _, _, _ = lstm_forward(below, None, None, weights[: layer * directions],
                                  bidirectional=lstm.bidirectional, **choice)  # fmt: skip
    w = weights[layer * directions]
    row = lstm.hidden_size + unit  # gate order i, f, g, o
    if step > 0:
        before = lstm_layer(u[:step], None, None, w, **choice)
        h_prev, c_prev = before.output[-1], before.c_n  # (B, P), (B, H)
    else:
        h_prev = u.new_zeros(u.shape[1], w.w_hh.shape[1])
        c_prev = u.new_zeros(u.shape[1], lstm.hidden_size)
    if w.variant is not None:  # the cell's own step: LN needs all 4H, peepholes need c
        xw = input_projection(u[step], w.w_ih, w.b_ih, w.layer_norm)  # (B, 4H)
        variant = w.cell_kwargs() | {"zoneout": None}  # zoneout changes only the new state
        return cell_step(xw, h_prev, c_prev, w.w_hh, w.b_hh, **variant).pre_activation[:, row]
    pre = u[step] @ w.w_ih[row] + h_prev @ w.w_hh[row]
    bias = combined_bias(w.b_ih, w.b_hh)
    return pre if bias is None else pre + bias[row]


@dataclass(frozen=True)
class ForgetAttribution:
    """What drove one forget gate at one step: attributions over the inputs ``(T, I)``
    (zero after ``step``: the forward direction has not read them)."""

    step: int
    unit: int
    layer: int
    pre_activation: float  # the forget gate's pre-activation at (step, unit)
    forget_gate: float  # sigmoid of it: the fraction of c kept
    gradient_x_input: Tensor  # (T, I) gradient of the pre-activation times the input
    integrated: Attribution  # integrated gradients of the pre-activation

    @property
    def per_step(self) -> Tensor:
        """``(T,)`` integrated-gradient attribution of each step; negative: pushed it shut."""
        return self.integrated.per_step


def explain_forgetting(
    lstm: LSTM,
    x: Tensor,
    step: int,
    unit: int,
    *,
    layer: int = 0,
    baseline: Tensor | None = None,
    prepare: Callable[[Tensor], Tensor] | None = None,
    tolerance: float = 0.01,
    max_steps: int = 2048,
) -> ForgetAttribution:
    """Attribute the forget gate's pre-activation at (``step``, ``unit``) of ``layer`` to
    the inputs ``x (T, I)``: gradient x input, and integrated gradients from ``baseline``.

    ``prepare`` maps ``(B, T, C)`` raw inputs to the LSTM's inputs (e.g. a
    ``Forecaster.features``); it may mix steps, so then every step of ``x`` is attributed.
    Without it only steps ``<= step`` are read and the rest get zero.
    """
    x = _sequence("explain_forgetting", "x", x)
    if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step < x.shape[0]:
        raise ValueError(f"explain_forgetting: step must be an int in [0, {x.shape[0] - 1}]; "
                         f"got {step!r}")  # fmt: skip

    def model(points: Tensor) -> Tensor:
        inputs = points if prepare is None else prepare(points)
        return forget_gate_pre_activation(lstm, inputs, step, unit, layer)

    cut = x.shape[0] if prepare is not None else step + 1
    base = None if baseline is None else _sequence("explain_forgetting", "baseline", baseline)
    part = integrated_gradients(model, x[:cut], None if base is None else base[:cut],
                                tolerance=tolerance, max_steps=max_steps)  # fmt: skip
    grad_x = gradient_times_input(model, x[:cut])
    pad = x.new_zeros(x.shape[0] - cut, x.shape[1])
    full = Attribution(torch.cat([part.attributions, pad]), part.output, part.baseline_output,
                       part.steps, part.relative_error, part.tolerance)  # fmt: skip
    pre = part.output
    return ForgetAttribution(step, unit, layer, pre, float(torch.sigmoid(torch.tensor(pre))),
                             torch.cat([grad_x, pad]), full)  # fmt: skip
