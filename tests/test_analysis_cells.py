"""rank_units on planted structure: a hand-set counting cell and a small trained model both
show a unit whose c tracks bracket depth far above the shifted-feature chance level, and a
feature of pure noise stays at chance."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import clearlstm
from clearlstm.analysis import (
    ProbeScore,
    UnitScore,
    best_units,
    probe_all_units,
    rank_units,
    states_from_trace,
)

H = 8


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Two pytest workers on two busy cores: torch's own threads would only contend."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def brackets(steps: int, seed: int, max_depth: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Symbols (0 "(", 1 ")", 2 other) of a random well-nested text and the depth after each."""
    rng = np.random.default_rng(seed)
    depth, symbols, depths = 0, [], []
    for _ in range(steps):
        u = rng.random()
        if u < 0.3 and depth < max_depth:
            symbol, depth = 0, depth + 1
        elif u < 0.6 and depth > 0:
            symbol, depth = 1, depth - 1
        else:
            symbol = 2
        symbols.append(symbol)
        depths.append(depth)
    return np.array(symbols), np.array(depths, dtype=np.float64)


def one_hot(symbols: np.ndarray, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.from_numpy(symbols), 3).to(dtype)


def counting_lstm(unit: int = 0) -> clearlstm.LSTM:
    """Unit ``unit`` counts: the forget gate stays open, the input gate opens on either
    bracket, the potential memory is +0.3 on "(" and -0.3 on ")"; the others are random."""
    torch.manual_seed(0)
    lstm = clearlstm.LSTM(3, H).double()
    with torch.no_grad():
        for gate in range(4):
            for p in (lstm.weight_ih_l0, lstm.weight_hh_l0, lstm.bias_ih_l0, lstm.bias_hh_l0):
                p[gate * H + unit] = 0.0
        lstm.weight_ih_l0[0 * H + unit] = torch.tensor([20.0, 20.0, 0.0])
        lstm.bias_ih_l0[0 * H + unit] = -10.0
        lstm.bias_ih_l0[1 * H + unit] = 10.0
        lstm.weight_ih_l0[2 * H + unit] = torch.tensor([0.3, -0.3, 0.0])
        lstm.bias_ih_l0[3 * H + unit] = 10.0
    return lstm


def test_planted_counter_is_found_far_above_chance() -> None:
    symbols, depth = brackets(2000, seed=0)
    _, _, trace = counting_lstm(unit=3)(one_hot(symbols)[:, None], trace=True)
    states = states_from_trace(trace)
    assert states["c"].shape == (2000, H) and states["h"].shape == (2000, H)
    scores = rank_units(states, {"depth": depth})
    assert all(isinstance(s, UnitScore) for s in scores) and len(scores) == 2 * H
    best = next(s for s in scores if s.quantity == "c")
    assert best.unit == 3 and best.r > 0.99, best
    assert best.chance_r < 0.3 and best.chance_r_max < 0.3, best
    assert best.p_value == pytest.approx(1 / 201)  # no shift of 200 came close
    assert best.probe_r2 > 0.98 and best.chance_probe_r2 < 0.1, best
    assert best.all_units_r2 > 0.98 and best.chance_all_units_r2 < 0.1, best
    assert abs(scores[0].r) >= abs(scores[-1].r)  # sorted by falling |r|


def test_trained_model_learns_a_depth_cell() -> None:
    """A small LSTM trained (seeded, 400 Adam steps) to output the depth: some unit's c
    follows it, tested on new text; looser bound than the planted cell."""
    torch.manual_seed(0)
    lstm, head = clearlstm.LSTM(3, H, batch_first=True), torch.nn.Linear(H, 1)
    optimiser = torch.optim.Adam([*lstm.parameters(), *head.parameters()], lr=0.02)
    symbols, depth = brackets(4 * 16 * 64, seed=10)
    x = one_hot(symbols, torch.float32).view(4, 16, 64, 3)
    y = torch.from_numpy(depth).float().view(4, 16, 64)
    for step in range(400):
        output, _ = lstm(x[step % 4])
        loss = ((head(output)[..., 0] - y[step % 4]) ** 2).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    symbols, depth = brackets(2000, seed=99)
    with torch.no_grad():
        _, _, trace = lstm(one_hot(symbols, torch.float32)[None], trace=True)
    scores = rank_units(states_from_trace(trace), {"depth": depth}, shifts=100)
    best = next(s for s in scores if s.quantity == "c")
    assert abs(best.r) > 0.7 and best.chance_r_max < 0.35, best
    assert abs(best.r) > 2 * best.chance_r_max and best.p_value <= 1 / 101 + 1e-12, best
    assert best.probe_r2 > 0.4 > best.chance_probe_r2, best


def test_noise_feature_stays_at_chance() -> None:
    """No unit can track a feature drawn after the fact: the best |r| stays under the
    family-wise chance level (within a margin) and no probe beats its chance R²."""
    symbols, _depth = brackets(1500, seed=3)
    _, _, trace = counting_lstm()(one_hot(symbols)[:, None], trace=True)
    noise = np.random.default_rng(7).normal(size=1500)
    slow = np.convolve(np.random.default_rng(8).normal(size=1600), np.ones(100) / 100, "valid")
    scores = rank_units(states_from_trace(trace), {"noise": noise, "slow": slow[:1500]})
    for feature, chosen in best_units(scores).items():
        best = chosen[0]
        assert abs(best.r) < 1.5 * best.chance_r_max, (feature, best)
        assert best.all_units_r2 < max(best.chance_all_units_r2, 0.0) + 0.1, (feature, best)
    slow_best = best_units(scores)["slow"][0]
    noise_best = best_units(scores)["noise"][0]
    # A slow feature's chance level is far higher than white noise's: why we shift, not shuffle.
    assert slow_best.chance_r_max > 2 * noise_best.chance_r_max


def test_probe_all_units_and_nan_steps() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 5))
    feature = x @ np.array([1.0, -2.0, 0.5, 0.0, 0.0]) + 0.1 * rng.normal(size=400)
    feature[:10] = np.nan  # undefined steps are left out
    probes = probe_all_units({"h": x}, {"mix": feature}, shifts=50)
    assert probes == probe_all_units({"h": x}, {"mix": feature}, shifts=50)  # seeded
    (probe,) = probes
    assert isinstance(probe, ProbeScore) and probe.steps == 390 and probe.units == 5
    assert probe.r2 > 0.95 > 0.2 > probe.chance_r2
    single = rank_units({"h": torch.from_numpy(x)}, {"mix": feature}, shifts=50)
    assert single[0].unit == 1 and single[0].r < 0 and single[0].all_units_r2 == probe.r2
    assert single[0].probe_r2 < probe.r2  # one unit explains less than all of them


def test_dead_unit_scores_zero_and_probe_matches_least_squares() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 3))
    x[:, 2] = 4.0  # a dead unit
    y = 2 * x[:, 0] + rng.normal(size=300)
    scores = {s.unit: s for s in rank_units({"c": x}, {"y": y}, folds=3, shifts=20)}
    assert scores[2].r == 0.0 and scores[2].probe_r2 <= 0.0
    blocks, sse = np.array_split(np.arange(300), 3), 0.0
    for block in blocks:
        train = np.setdiff1d(np.arange(300), block)
        design = np.c_[np.ones(len(train)), x[train, 0]]
        coef = np.linalg.lstsq(design, y[train], rcond=None)[0]
        sse += ((y[block] - coef[0] - coef[1] * x[block, 0]) ** 2).sum()
    expected = 1 - sse / ((y - y.mean()) ** 2).sum()
    assert scores[0].probe_r2 == pytest.approx(expected, abs=1e-9)
    assert scores[0].r == pytest.approx(np.corrcoef(x[:, 0], y)[0, 1], abs=1e-12)


@pytest.mark.parametrize(
    ("states", "features", "kwargs", "message"),
    [
        ({"c": np.zeros(10)}, {"f": np.zeros(10)}, {}, r"states\['c'\] must be \(T, H\)"),
        ({"c": np.zeros((10, 2))}, {"f": np.zeros(9)}, {}, r"feature 'f' must have shape"),
        ({"c": np.zeros((10, 2))}, {"f": np.zeros(10)}, {"folds": 1}, "folds must be"),
        ({"c": np.zeros((10, 2))}, {"f": np.zeros(10)}, {"shifts": 0}, "shifts must be"),
        ({"c": np.zeros((10, 2))}, {"f": np.full(10, np.nan)}, {}, "has 0 finite steps"),
        ({}, {"f": np.zeros(10)}, {}, "states must be a dict"),
    ],
)
def test_errors_name_the_argument(states, features, kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        rank_units(states, features, **kwargs)
