"""The Trace is consistent with the module: what it records rebuilds what the module returned.

- c and h rebuilt from the recorded gates with :mod:`clearlstm.cell`'s two memory equations
  equal the recorded c / h and the module's outputs bit for bit;
  (on the ``"reference"`` backend; the default ``"auto"`` may run a fused kernel with its own
  rounding, and agrees to a tight tolerance);
- padded steps are NaN, the mask says which steps are valid;
- retention is the product of forget gates, half-life is ``log(1/2) / mean(log f)``;
- the layer equals the cell stepped by hand (hypothesis, random shapes and lengths).
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.testing import assert_close

import clearlstm
from clearlstm.core.cell import long_term_memory, lstm_cell, short_term_memory
from clearlstm.core.records import LayerRecord

F64 = torch.float64
T, B, I, H = 6, 3, 2, 4
LENGTHS = [6, 2, 4]

pytestmark = pytest.mark.filterwarnings("ignore:LSTM with projections is not supported")


def in_processing_order(values: torch.Tensor, lengths: list[int], direction: int) -> torch.Tensor:
    """``(T, B, ...)`` in the order the direction reads it: reversed within each length."""
    if direction == 0:
        return values
    out = values.clone()
    for b, n in enumerate(lengths):
        out[:n, b] = values[:n, b].flip(0)
    return out


def run(config: dict, lengths: list[int] | None, seed: int = 0, dtype=F64, backend="auto"):
    torch.manual_seed(seed)
    lstm = clearlstm.LSTM(I, H, dtype=dtype, backend=backend, **config)
    d = lstm.num_directions
    stacked, out_size = lstm.num_layers * d, lstm.proj_size or H
    x = torch.randn(T, B, I, dtype=dtype)
    hx = (torch.randn(stacked, B, out_size, dtype=dtype), torch.randn(stacked, B, H, dtype=dtype))
    kwargs = {} if lengths is None else {"lengths": torch.tensor(lengths)}
    output, (h_n, c_n), trace = lstm(x, hx, trace=True, **kwargs)
    return lstm, hx, output, h_n, c_n, trace


CONFIGS = [
    dict(),
    dict(num_layers=2),
    dict(bidirectional=True),
    dict(num_layers=2, bidirectional=True, proj_size=2),
    dict(proj_size=3, bias=False),
]
CONFIG_IDS = ["uni", "uni-2layers", "bi", "bi-2layers-proj", "proj-nobias"]


@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "lengths"])
@pytest.mark.parametrize("dtype", [torch.float32, F64], ids=["float32", "float64"])
@pytest.mark.parametrize("config", CONFIGS, ids=CONFIG_IDS)
@pytest.mark.parametrize("backend", ["reference", "auto"])
def test_memories_rebuilt_from_recorded_gates_equal_the_record(
    backend, config, dtype, lengths
) -> None:
    if backend == "reference":  # bit for bit: the trace holds what clearlstm.cell computed
        same = lambda a, b: torch.equal(a, b)  # noqa: E731
    else:
        tol = {"atol": 1e-6, "rtol": 1e-6} if dtype == torch.float32 else {"atol": 1e-12, "rtol": 0}
        same = lambda a, b: torch.allclose(a, b, **tol)  # noqa: E731
    lstm, (h0, c0), output, h_n, c_n, trace = run(config, lengths, dtype=dtype, backend=backend)
    n = lengths or [T] * B
    d = lstm.num_directions
    valid = torch.arange(T)[:, None] < torch.tensor(n)[None, :]  # (T, B)
    assert torch.equal(trace.mask, valid)
    assert torch.equal(trace.lengths, torch.tensor(n))
    assert (trace.num_layers, trace.num_directions, trace.steps) == (lstm.num_layers, d, T)
    for layer in range(lstm.num_layers):
        for direction in range(d):
            k = layer * d + direction
            rec = LayerRecord(
                *(in_processing_order(v, n, direction) for v in trace[layer, direction])
            )
            w_hr = lstm.layer_weights(layer, direction).w_hr
            h, c = h0[k], c0[k]
            for t in range(T):
                ok = valid[t]  # padding lies at the end in processing order too
                c_t = long_term_memory(
                    rec.forget_gate[t], c, rec.input_gate[t], rec.potential_memory[t]
                )
                h_t = short_term_memory(rec.output_gate[t], c_t, w_hr).detach()
                assert same(c_t[ok], rec.c[t][ok]), (layer, direction, t)
                assert same(h_t[ok], rec.h[t][ok]), (layer, direction, t)
                # the gates are the activations of the recorded pre-activations
                pre = rec.pre_activation[t]  # (B, 4, H), gates i, f, g, o
                assert same(torch.sigmoid(pre[:, 0])[ok], rec.input_gate[t][ok])
                assert same(torch.sigmoid(pre[:, 1])[ok], rec.forget_gate[t][ok])
                assert same(torch.tanh(pre[:, 2])[ok], rec.potential_memory[t][ok])
                assert same(torch.sigmoid(pre[:, 3])[ok], rec.output_gate[t][ok])
                h = torch.where(ok[:, None], rec.h[t], h)
                c = torch.where(ok[:, None], rec.c[t], c)
            # final memories: the recorded ones after each sequence's last valid step
            assert torch.equal(h_n[k], h.detach()) and torch.equal(c_n[k], c.detach())
    # the last layer's recorded h is the module's output (zero at padded steps), on any backend
    last = torch.cat([trace[-1, direction].h for direction in range(d)], dim=-1)
    assert torch.equal(output[valid], last[valid])
    assert not output[~valid].any()


@pytest.mark.parametrize("config", CONFIGS, ids=CONFIG_IDS)
def test_padded_steps_are_nan_and_valid_steps_finite(config) -> None:
    lstm, *_, trace = run(config, LENGTHS)
    valid = trace.mask
    for layer in range(lstm.num_layers):
        for direction in range(lstm.num_directions):
            for name, values in trace[layer, direction]._asdict().items():
                assert values.shape[:2] == (T, B), name
                assert values[~valid].isnan().all(), name
                assert values[valid].isfinite().all(), name
                assert not values.requires_grad, name


def test_trace_shapes_and_unbatched_and_packed_input() -> None:
    torch.manual_seed(1)
    lstm = clearlstm.LSTM(I, H, num_layers=2, bidirectional=True, proj_size=2)
    _, _, trace = lstm(torch.randn(T, I), trace=True)
    rec = trace[1, 1]
    assert rec.pre_activation.shape == (T, 1, 4, H)
    assert rec.forget_gate.shape == rec.c.shape == (T, 1, H)
    assert rec.h.shape == (T, 1, 2)
    assert trace[1] is trace[1, 0] and trace[-1, 1] is trace[1, 1]
    assert repr(trace) == f"Trace(layers=2, directions=2, steps={T}, batch=1, hidden={H})"
    # a PackedSequence gives the same trace as the padded batch with lengths=
    x = torch.randn(T, B, I)
    packed = torch.nn.utils.rnn.pack_padded_sequence(x, LENGTHS, enforce_sorted=False)
    _, _, from_packed = lstm(packed, trace=True)
    _, _, from_lengths = lstm(x, lengths=LENGTHS, trace=True)
    assert torch.equal(from_packed.lengths, from_lengths.lengths)
    for layer in range(2):
        for direction in range(2):
            for a, b in zip(
                from_packed[layer, direction], from_lengths[layer, direction], strict=True
            ):
                assert torch.equal(a.isnan(), b.isnan())
                assert_close(a.nan_to_num(), b.nan_to_num(), atol=1e-6, rtol=1e-6)


# ---------------------------------------------------------------------------------------
# retention and half-life


def hand_retention(f: torch.Tensor, start: int) -> torch.Tensor:
    """``f (T, B, H)`` in processing order, NaN at padding -> products by explicit loop."""
    kept = torch.full_like(f, math.nan, dtype=F64)
    for b in range(f.shape[1]):
        for u in range(f.shape[2]):
            if math.isnan(f[start, b, u]):
                continue
            product = 1.0
            kept[start, b, u] = product
            for t in range(start + 1, f.shape[0]):
                product *= f[t, b, u].item()
                kept[t, b, u] = product
    return kept


@pytest.mark.parametrize("start", [0, 1, 3, T - 1])
@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "lengths"])
@pytest.mark.parametrize("direction", [0, 1])
def test_retention_is_the_product_of_forget_gates(direction, lengths, start) -> None:
    *_, trace = run(dict(num_layers=2, bidirectional=True), lengths, seed=2)
    for layer in (0, 1):
        f = in_processing_order(trace[layer, direction].forget_gate, lengths or [T] * B, direction)
        kept = trace.retention(start=start, layer=layer, direction=direction)
        assert kept.dtype == F64 and kept.shape == (T, B, H)
        assert kept[:start].isnan().all()
        assert_close(kept, hand_retention(f, start), atol=1e-15, rtol=1e-13, equal_nan=True)
    # default layer is the last one
    assert torch.equal(
        trace.retention(start, direction=direction).nan_to_num(-1),
        trace.retention(start, layer=1, direction=direction).nan_to_num(-1),
    )


def test_retention_is_one_at_start_and_decreasing() -> None:
    *_, trace = run(dict(), None, seed=3)
    kept = trace.retention(start=2)
    assert torch.equal(kept[2], torch.ones(B, H, dtype=F64))
    assert (kept[3:] <= kept[2:-1]).all()  # forget gates are < 1: memory only fades


@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "lengths"])
def test_half_life_is_log_half_over_mean_log_forget(lengths) -> None:
    *_, trace = run(dict(num_layers=2, bidirectional=True), lengths, seed=4)
    n = lengths or [T] * B
    for layer in (0, 1):
        for direction in (0, 1):
            f = trace[layer, direction].forget_gate
            valid_f = torch.cat([f[: n[b], b] for b in range(B)])  # (sum of lengths, H)
            want = math.log(0.5) / torch.log(valid_f).mean(dim=0)
            got = trace.half_life(layer=layer, direction=direction)
            assert got.dtype == F64 and got.shape == (H,)
            assert_close(got, want, atol=0, rtol=1e-12)
            assert (got > 0).all()


def test_half_life_is_infinite_when_the_forget_gate_is_one() -> None:
    lstm = clearlstm.LSTM(1, 2, dtype=F64)
    # gate rows for hidden_size 2: i = [0, 1], f = [2, 3], g = [4, 5], o = [6, 7]
    with torch.no_grad():  # unit 0's forget gate: sigmoid(100) == 1.0 in float64
        lstm.weight_ih_l0[2] = 0.0
        lstm.weight_hh_l0[2] = 0.0
        lstm.bias_ih_l0[2] = 100.0
    _, _, trace = lstm(torch.randn(5, 2, 1, dtype=F64), trace=True)
    assert (trace[0].forget_gate[..., 0] == 1.0).all()
    half = trace.half_life()
    assert half[0] == math.inf and math.isfinite(half[1])
    assert torch.equal(trace.retention()[..., 0], torch.ones(5, 2, dtype=F64))
    summary = trace.memory_summary()
    assert [m.unit for m in summary] == [0, 1]
    assert summary[0].half_life == math.inf and summary[0].mean_forget_gate == 1.0


def test_memory_summary_sorted_by_half_life() -> None:
    *_, trace = run(dict(num_layers=2, bidirectional=True), LENGTHS, seed=5)
    for layer, direction in [(0, 0), (0, 1), (-1, 1)]:
        summary = trace.memory_summary(layer=layer, direction=direction)
        half = trace.half_life(layer=layer, direction=direction)
        assert sorted(m.unit for m in summary) == list(range(H))
        assert [m.half_life for m in summary] == sorted(half.tolist(), reverse=True)
        f = trace[layer, direction].forget_gate
        for m in summary:
            assert m.layer == layer % 2 and m.direction == direction
            assert m.half_life == half[m.unit].item()
            geometric_mean = math.exp(torch.nanmean(torch.log(f[..., m.unit])).item())
            assert m.mean_forget_gate == pytest.approx(geometric_mean, rel=1e-12)
            # half-life and the typical per-step retention say the same thing
            assert m.mean_forget_gate**m.half_life == pytest.approx(0.5, rel=1e-9)


# ---------------------------------------------------------------------------------------
# the seed's example: two companies, StatQuest's unit

# Company A, B days 1-4 and h after each day, from shared/reference/seed-walkthrough.md
X = {"A": [0.0, 0.5, 0.25, 1.0], "B": [1.0, 0.5, 0.25, 1.0]}
H_TABLE = {
    "A": [-0.127755, -0.096522, -0.166218, 0.006393],
    "B": [0.276438, 0.611733, 0.867005, 0.969393],
}


def statquest_unit() -> clearlstm.LSTM:
    lstm = clearlstm.LSTM(1, 1, dtype=F64)
    with torch.no_grad():
        lstm.weight_ih_l0.copy_(torch.tensor([[1.65], [1.63], [0.94], [-0.19]], dtype=F64))
        lstm.weight_hh_l0.copy_(torch.tensor([[2.00], [2.70], [1.41], [4.38]], dtype=F64))
        lstm.bias_ih_l0.copy_(torch.tensor([0.62, 1.62, -0.32, 0.59], dtype=F64))
        lstm.bias_hh_l0.zero_()
    return lstm


def test_seed_companies_retention_by_hand() -> None:
    x = torch.tensor([X["A"], X["B"]], dtype=F64).T[..., None]  # (T=4, B=2, 1)
    _, _, trace = statquest_unit()(x, trace=True)
    retention = trace.retention()  # (4, 2, 1): memory after day 1 left after each day
    for b, company in enumerate("AB"):
        # forget gate on day t: sigmoid(2.70 * h[t-1] + 1.63 * x[t] + 1.62), h from the table
        h_prev = [0.0, *H_TABLE[company]]
        f = [
            1 / (1 + math.exp(-(2.70 * h_prev[t] + 1.63 * X[company][t] + 1.62))) for t in range(4)
        ]
        want = [1.0, f[1], f[1] * f[2], f[1] * f[2] * f[3]]
        assert_close(retention[:, b, 0], torch.tensor(want, dtype=F64), atol=1e-5, rtol=0)
        assert_close(trace[0].forget_gate[:, b, 0], torch.tensor(f, dtype=F64), atol=1e-5, rtol=0)
        from_day_2 = trace.retention(start=1)[:, b, 0]
        assert math.isnan(from_day_2[0]) and from_day_2[1] == 1.0
        assert_close(
            from_day_2[2:], torch.tensor([f[2], f[2] * f[3]], dtype=F64), atol=1e-5, rtol=0
        )
    # company B's rising memory is kept better than A's (its forget gates are larger)
    assert (retention[1:, 1, 0] > retention[1:, 0, 0]).all()
    half = trace.half_life()
    assert half.shape == (1,) and 0 < half.item() < math.inf


# ---------------------------------------------------------------------------------------
# the layer equals the cell stepped by hand


def hand_stepped(lstm: clearlstm.LSTM, x, h0, c0, lengths):
    """Each sequence alone, each layer and direction stepped with ``lstm_cell``."""
    steps, batch, _ = x.shape
    d = lstm.num_directions
    out_size = lstm.proj_size or lstm.hidden_size
    output = torch.zeros(steps, batch, d * out_size, dtype=x.dtype)
    h_n, c_n = torch.zeros_like(h0), torch.zeros_like(c0)
    for b in range(batch):
        n = lengths[b]
        layer_input = x[:n, b : b + 1]  # (n, 1, I)
        for layer in range(lstm.num_layers):
            outputs = []
            for direction in range(d):
                k = layer * d + direction
                w = lstm.layer_weights(layer, direction)
                h, c = h0[k, b : b + 1], c0[k, b : b + 1]
                per_step = [None] * n
                for t in range(n) if direction == 0 else reversed(range(n)):
                    step = lstm_cell(layer_input[t], h, c, w.w_ih, w.w_hh, w.b_ih, w.b_hh, w.w_hr)
                    h, c = step.h, step.c
                    per_step[t] = h
                outputs.append(torch.stack(per_step))
                h_n[k, b], c_n[k, b] = h[0], c[0]
            layer_input = torch.cat(outputs, dim=-1)
        output[:n, b] = layer_input[:, 0]
    return output, h_n, c_n


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_layer_equals_the_cell_stepped_by_hand(data) -> None:
    backend = data.draw(st.sampled_from(["reference", "auto"]), label="backend")
    num_layers = data.draw(st.integers(1, 3), label="num_layers")
    bidirectional = data.draw(st.booleans(), label="bidirectional")
    hidden = data.draw(st.integers(1, 5), label="hidden_size")
    proj = data.draw(st.integers(0, hidden - 1), label="proj_size")
    inputs = data.draw(st.integers(1, 4), label="input_size")
    steps = data.draw(st.integers(1, 6), label="T")
    batch = data.draw(st.integers(1, 3), label="B")
    bias = data.draw(st.booleans(), label="bias")
    padded = data.draw(st.booleans(), label="padded")
    lengths = (
        data.draw(st.lists(st.integers(1, steps), min_size=batch, max_size=batch), label="lengths")
        if padded
        else [steps] * batch
    )
    scale = data.draw(st.sampled_from([0.1, 1.0, 4.0]), label="value scale")
    seed = data.draw(st.integers(0, 2**31 - 1), label="seed")

    torch.manual_seed(seed)
    lstm = clearlstm.LSTM(
        inputs,
        hidden,
        num_layers,
        bias,
        False,
        0.0,
        bidirectional,
        proj,
        dtype=F64,
        backend=backend,
    )
    with torch.no_grad():
        for p in lstm.parameters():
            p.mul_(scale)
    stacked, out_size = num_layers * lstm.num_directions, proj or hidden
    x = scale * torch.randn(steps, batch, inputs, dtype=F64)
    h0 = torch.randn(stacked, batch, out_size, dtype=F64)
    c0 = scale * torch.randn(stacked, batch, hidden, dtype=F64)
    kwargs = {"lengths": lengths} if padded else {}
    output, (h_n, c_n) = lstm(x, (h0, c0), **kwargs)
    want_output, want_h, want_c = hand_stepped(lstm, x, h0, c0, lengths)
    assert_close(output, want_output, atol=1e-12, rtol=1e-12)
    assert_close(h_n, want_h, atol=1e-12, rtol=1e-12)
    assert_close(c_n, want_c, atol=1e-12, rtol=1e-12)
