"""Every figure kind renders to PNG and SVG, non-empty and of a sensible size."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
import torch

from clearlstm import LSTM
from clearlstm.teach.explain import explain_sequence
from clearlstm.teach.seed import COMPANIES, statquest_lstm
from clearlstm.teach.unit import GateWeights, UnitWeights, statquest_weights
from clearlstm.viz import figures


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def company_a_trace():
    x = torch.tensor(COMPANIES["A"], dtype=torch.float64).reshape(-1, 1, 1)
    _, _, trace = statquest_lstm()(x, trace=True)
    return trace, x


def big_trace(steps: int = 300, hidden: int = 80):
    torch.manual_seed(0)
    lstm = LSTM(3, hidden, num_layers=2, bidirectional=True)
    x = torch.randn(steps, 2, 3)
    with torch.no_grad():
        _, _, trace = lstm(x, trace=True)
    return trace, x


def one_step_diagram(x: float = 1.0, c: float = 2.0, h: float = 1.0, weights=None):
    weights = weights or statquest_weights()
    step = explain_sequence([x], c, h, weights.to_lstm()).steps[0]
    return figures.unit_diagram(step, weights)


def all_figures():
    trace, x = company_a_trace()
    big, xb = big_trace(steps=150, hidden=40)
    return {
        "heatmap": figures.gate_heatmaps(trace, x),
        "heatmap-big": figures.gate_heatmaps(big, xb, layer=1, direction=1, batch=1),
        "retention": figures.retention_curves(trace),
        "retention-big": figures.retention_curves(big, start=10, layer=0),
        "unit": one_step_diagram(),
        "unit-forgetting": one_step_diagram(x=-10.0),
    }


@pytest.mark.parametrize("fmt", ["png", "svg"])
def test_every_figure_kind_renders_non_empty(tmp_path: Path, fmt: str):
    for name, fig in all_figures().items():
        path = figures.save_figure(fig, tmp_path / f"{name}.{fmt}")
        size = path.stat().st_size
        assert 10_000 < size < 5_000_000, (name, size)
        if fmt == "png":
            width, height = png_size(path)
            assert 600 <= width <= 2400 and 400 <= height <= 4200, (name, width, height)
        else:
            text = path.read_text()
            assert text.lstrip().startswith("<?xml") and "<svg" in text and "</svg>" in text
    assert not list(tmp_path.glob(".*")), "a temporary file was left behind"


def test_heatmap_has_one_panel_per_quantity_with_colour_bars_and_inputs_on_top():
    trace, x = company_a_trace()
    fig = figures.gate_heatmaps(trace, x)
    titles = [ax.get_title(loc="left") for ax in fig.axes]
    assert titles[0] == "input sequence"
    for quantity in figures.QUANTITIES:
        assert any(t.startswith(quantity.title) for t in titles), quantity.title
    images = [ax for ax in fig.axes if ax.images and ax.get_title(loc="left")]
    assert len(images) == len(figures.QUANTITIES)
    colour_bars = [ax for ax in fig.axes if not ax.get_title(loc="left")]
    assert len(colour_bars) == len(figures.QUANTITIES)
    # Few cells: the exact numbers are written on them (the forget gate at step 2 is 0.8899).
    texts = {t.get_text() for ax in fig.axes for t in ax.texts}
    assert "0.8899" in texts


def test_heatmap_sorts_units_by_half_life_and_caps_many_units():
    trace, x = big_trace(steps=60, hidden=80)
    fig = figures.gate_heatmaps(trace, x, max_units=20)
    forget_ax = next(ax for ax in fig.axes if ax.get_title(loc="left").startswith("forget"))
    data = forget_ax.images[0].get_array()
    assert data.shape == (20, 60)
    order = figures.unit_order(trace)
    expected = trace[-1, 0].forget_gate[:, 0, order[:20]].T.numpy()
    torch.testing.assert_close(torch.as_tensor(data.data), torch.as_tensor(expected).double())
    assert "20 of 80 shown" in fig._suptitle.get_text()
    half_lives = trace.half_life()
    assert half_lives[order[0]] == half_lives.max()


def test_heatmap_labels_text_steps_and_greys_padding():
    torch.manual_seed(1)
    lstm = LSTM(2, 4)
    x = torch.randn(5, 2, 2)
    with torch.no_grad():
        _, _, trace = lstm(x, lengths=[5, 3], trace=True)
    fig = figures.gate_heatmaps(trace, x, batch=1, step_labels=list("hello"))
    labels = [t.get_text() for t in fig.axes[-2].get_xticklabels()]
    assert labels == list("hello")
    forget = next(ax for ax in fig.axes if ax.get_title(loc="left").startswith("forget"))
    assert forget.images[0].get_array().mask[:, 3:].all()  # padded steps are NaN → grey


def test_retention_marks_each_half_life():
    trace, _ = company_a_trace()
    fig = figures.retention_curves(trace)
    ax = fig.axes[0]
    label = ax.get_legend().get_texts()[0].get_text()
    assert "t½ = 5.4 steps" in label
    marker = next(line for line in ax.lines if line.get_marker() == "X")
    (x,), (y,) = marker.get_data()
    assert y == 0.5 and x == pytest.approx(1 + float(trace.half_life()[0]))
    solid = ax.lines[0].get_ydata()
    torch.testing.assert_close(
        torch.as_tensor(solid), trace.retention(0)[:, 0, 0], check_dtype=False
    )


@pytest.mark.parametrize("steps", [1, 2, 3])
def test_retention_of_a_short_sequence_draws_every_unit(steps: int):
    # A unit whose half-life outlasts the sequence widens the axis; the next unit's curve
    # must still stop where the trace does (it failed: "x and y must have same first dimension").
    torch.manual_seed(0)
    lstm = LSTM(1, 6)
    with torch.no_grad():
        _, _, trace = lstm(torch.linspace(1000, 1010, steps).reshape(-1, 1, 1), trace=True)
    fig = figures.retention_curves(trace)
    solid = [line for line in fig.axes[0].lines if line.get_marker() == "o"]
    assert len(solid) == 6 and all(len(line.get_xdata()) == steps for line in solid)


def test_unit_diagram_writes_the_steps_numbers_for_any_weights():
    weights = UnitWeights(
        forget=GateWeights(w_h=-1.5, w_x=0.25, b=3.0),
        input=GateWeights(w_h=0.5, w_x=-2.0, b=0.0),
        potential=GateWeights(w_h=1.0, w_x=1.0, b=-0.5),
        output=GateWeights(w_h=0.1, w_x=0.2, b=0.3),
    )
    fig = one_step_diagram(x=0.5, c=-1.0, h=0.25, weights=weights)
    text = "\n".join(t.get_text() for t in fig.axes[0].texts)
    step = explain_sequence([0.5], -1.0, 0.25, weights.to_lstm()).steps[0]
    assert "z = −1.50h + 0.25x + 3.00" in text
    assert f"= {step.forget_x_axis:.4g}" in text and f"f = {step.forget_gate:.4g}" in text
    assert f"C' = {step.c:.4g}" in text and f"h' = {step.h:.4g}" in text
    for stage in ("forget-gate stage", "input-gate stage", "output stage"):
        assert stage in text
    assert step.sentences()["forget"] in text


def test_unit_diagram_of_the_series_step():
    fig = one_step_diagram()
    text = "\n".join(t.get_text() for t in fig.axes[0].texts)
    assert "z = 2.70h + 1.63x + 1.62" in text and "= 5.95" in text and "f = 0.9974" in text
    assert "C' = 2.948" in text and "h' = 0.9862" in text


def test_save_figure_refuses_other_formats_and_missing_folders(tmp_path: Path):
    fig = one_step_diagram()
    with pytest.raises(ValueError, match=r"must end in \.png or \.svg"):
        figures.save_figure(fig, tmp_path / "unit.jpg")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        figures.save_figure(fig, tmp_path / "missing" / "unit.png")


def test_svg_output_is_deterministic():
    first = figures.figure_bytes(one_step_diagram(), "svg")
    assert first == figures.figure_bytes(one_step_diagram(), "svg")
