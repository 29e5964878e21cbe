"""Attribution on models whose answer is known: a hand-set LSTM that stores the value at one
marked step, and a small LSTM trained to output ``x[t0]``, put > 90% of the integrated-
gradient mass at that step, with completeness (sum of attributions = f(x) - f(baseline))
within 1%. "Why did it forget?" on a hand-set forget gate returns its own input."""

from __future__ import annotations

import pytest
import torch

import clearlstm
from clearlstm.analysis import (
    Attribution,
    ForgetAttribution,
    explain_forgetting,
    forget_gate_pre_activation,
    gradient_times_input,
    integrated_gradients,
    readout,
)

T, T0 = 12, 4


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Two pytest workers on two busy cores: torch's own threads would only contend."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def zero_unit(lstm: clearlstm.LSTM, unit: int) -> None:
    h = lstm.hidden_size
    with torch.no_grad():
        for gate in range(4):
            for p in (lstm.weight_ih_l0, lstm.weight_hh_l0, lstm.bias_ih_l0, lstm.bias_hh_l0):
                p[gate * h + unit] = 0.0


def storing_lstm() -> clearlstm.LSTM:
    """Input (value, marker). Unit 0 forgets and writes tanh(value) only where the marker is
    1, holds it elsewhere (forget gate ~1, input gate ~0), and shows it (output gate ~1)."""
    torch.manual_seed(0)
    lstm = clearlstm.LSTM(2, 3).double()
    zero_unit(lstm, 0)
    h = 3
    with torch.no_grad():
        lstm.weight_ih_l0[0 * h, 1], lstm.bias_ih_l0[0 * h] = 20.0, -10.0  # input: on marker
        lstm.weight_ih_l0[1 * h, 1], lstm.bias_ih_l0[1 * h] = -20.0, 10.0  # forget: on marker
        lstm.weight_ih_l0[2 * h, 0] = 1.0  # potential memory: tanh(value)
        lstm.bias_ih_l0[3 * h] = 10.0  # output gate open
    return lstm


def marked_input(seed: int = 0) -> torch.Tensor:
    x = torch.randn(T, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    x[:, 1] = 0.0
    x[T0, 1], x[T0, 0] = 1.0, 1.5
    return x


def test_hand_set_model_attributes_its_answer_to_the_marked_step() -> None:
    model = readout(storing_lstm(), None, index=0)
    x = marked_input()
    baseline = x.clone()
    baseline[:, 0] = 0.0  # the marker is part of the baseline: only values get credit
    result = integrated_gradients(model, x, baseline)
    assert isinstance(result, Attribution) and result.attributions.shape == (T, 2)
    assert result.output == pytest.approx(
        torch.tanh(torch.tanh(torch.tensor(1.5))).item(), rel=1e-3
    )
    assert result.converged and result.relative_error < 0.01, result.relative_error
    assert abs(result.total - result.delta) <= 0.01 * abs(result.delta)
    assert torch.all(result.attributions[:, 1] == 0)
    share = result.share()
    assert share[T0] > 0.9 and share.sum().item() == pytest.approx(1.0), share
    assert share.argmax() == T0


def test_adaptive_steps_double_until_complete() -> None:
    model = readout(storing_lstm(), None, index=0)
    x, baseline = marked_input(1), marked_input(1)
    baseline[:, 0] = 0.0
    coarse = integrated_gradients(model, x, baseline, steps=1)  # one trapezoid: crude
    tight = integrated_gradients(model, x, baseline, tolerance=1e-4, first_steps=2)
    assert coarse.steps == 1 and tight.steps > 2 and tight.relative_error < 1e-4
    assert tight.relative_error < coarse.relative_error
    capped = integrated_gradients(model, x, baseline, tolerance=1e-12, first_steps=2, max_steps=8)
    assert capped.steps == 8 and not capped.converged
    # Doubling reuses points: the adaptive answer equals a fixed run with the same m.
    fixed = integrated_gradients(model, x, baseline, steps=tight.steps)
    torch.testing.assert_close(fixed.attributions, tight.attributions)


def test_trained_model_attributes_to_the_step_it_copies() -> None:
    """An LSTM + linear head trained (seeded, 600 Adam steps) to output x[t0]."""
    torch.manual_seed(1)
    lstm, head = clearlstm.LSTM(1, 8, batch_first=True), torch.nn.Linear(8, 1)
    optimiser = torch.optim.Adam([*lstm.parameters(), *head.parameters()], lr=0.01)
    data = torch.randn(512, T, 1, generator=torch.Generator().manual_seed(1))
    for step in range(600):
        batch = data[(step % 16) * 32 : (step % 16 + 1) * 32]
        output, _ = lstm(batch)
        loss = ((head(output[:, -1])[:, 0] - batch[:, T0, 0]) ** 2).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert loss.item() < 0.02
    model = readout(lstm.double(), head.double())
    shares = []
    for seed in (5, 6, 7):
        x = torch.randn(T, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
        x[T0] = 1.5  # a clear answer to credit
        result = integrated_gradients(model, x)
        assert result.relative_error < 0.01, result.relative_error
        shares.append(result.share()[T0].item())
        # gradient x input, one pass, is a coarser view that agrees on the step.
        assert gradient_times_input(model, x)[:, 0].abs().argmax() == T0
    assert min(shares) > 0.85 and sum(shares) / 3 > 0.9, shares


def test_forget_gate_driven_by_the_same_step() -> None:
    """Unit 1's forget pre-activation is 3 x_t[0] - 1 and reads nothing else: its whole
    attribution sits at (t, 0), equal to 3 x_t[0], and completeness is exact."""
    torch.manual_seed(0)
    lstm = clearlstm.LSTM(2, 3).double()
    zero_unit(lstm, 1)
    with torch.no_grad():
        lstm.weight_ih_l0[3 + 1, 0], lstm.bias_hh_l0[3 + 1] = 3.0, -1.0
    x = torch.randn(10, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    result = explain_forgetting(lstm, x, step=6, unit=1)
    assert isinstance(result, ForgetAttribution) and result.step == 6 and result.unit == 1
    assert result.pre_activation == pytest.approx(3 * x[6, 0].item() - 1)
    assert result.forget_gate == pytest.approx(torch.sigmoid(3 * x[6, 0] - 1).item())
    expected = torch.zeros(10, 2, dtype=torch.float64)
    expected[6, 0] = 3 * x[6, 0]
    torch.testing.assert_close(result.integrated.attributions, expected)
    torch.testing.assert_close(result.gradient_x_input, expected)
    assert result.integrated.relative_error < 1e-12
    assert result.per_step.shape == (10,)


def test_forget_pre_activation_is_the_traced_one_in_every_layer() -> None:
    torch.manual_seed(3)
    lstm = clearlstm.LSTM(3, 5, num_layers=2, bidirectional=True).double()
    x = torch.randn(9, 2, 3, dtype=torch.float64)
    _, _, trace = lstm(x, trace=True)
    for layer in (0, 1):
        for step in (0, 4, 8):
            pre = forget_gate_pre_activation(lstm, x.transpose(0, 1), step, 2, layer)
            torch.testing.assert_close(pre, trace[layer, 0].pre_activation[step, :, 1, 2])


def test_recurrent_forget_gate_attribution_reads_only_the_past() -> None:
    torch.manual_seed(4)
    lstm = clearlstm.LSTM(2, 4, num_layers=2).double()
    x = torch.randn(15, 2, dtype=torch.float64)
    result = explain_forgetting(lstm, x, step=9, unit=3, layer=1)
    attributions = result.integrated.attributions
    assert torch.all(attributions[10:] == 0) and torch.any(attributions[:9] != 0)
    assert result.integrated.relative_error < 0.01
    # The gradient in gradient x input is the true one: a central difference agrees.
    pre = forget_gate_pre_activation
    for t, i in ((2, 0), (9, 1)):
        e = torch.zeros_like(x)
        e[t, i] = 1e-6
        slope = (pre(lstm, (x + e)[None], 9, 3, 1) - pre(lstm, (x - e)[None], 9, 3, 1)) / 2e-6
        assert result.gradient_x_input[t, i].item() == pytest.approx(
            (slope * x[t, i]).item(), rel=1e-5, abs=1e-9
        )
    # A prepare step sees the raw input: here a scaling, so attributions stay in place.
    scaled = explain_forgetting(lstm, x / 2, step=9, unit=3, layer=1, prepare=lambda z: 2 * z)
    torch.testing.assert_close(scaled.integrated.attributions, attributions, rtol=1e-3, atol=1e-6)


def test_errors_name_the_argument() -> None:
    lstm = clearlstm.LSTM(2, 3).double()
    model = readout(lstm)
    x = torch.randn(5, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"x must be one sequence \(T, I\)"):
        integrated_gradients(model, x[None, None])
    with pytest.raises(ValueError, match="baseline must have x's shape"):
        integrated_gradients(model, x, torch.zeros(4, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"model must return \(B,\)"):
        integrated_gradients(lambda z: z.sum(-1), x)
    with pytest.raises(ValueError, match="steps must be a positive int"):
        integrated_gradients(model, x, steps=0)
    with pytest.raises(ValueError, match=r"unit must be an int in \[0, 2\]"):
        forget_gate_pre_activation(lstm, x[None], 1, 3)
    with pytest.raises(ValueError, match=r"step must be an int in \[0, 4\]"):
        explain_forgetting(lstm, x, 5, 0)
    with pytest.raises(TypeError, match=r"must be a clearlstm\.LSTM"):
        readout(torch.nn.LSTM(2, 3))
