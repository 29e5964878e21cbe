"""What did two quickly trained models learn to remember? ``rank_units`` against the
shifted-feature chance level, on the bundled Shakespeare (char model) and CO2 (forecaster).

    python benchmarks/analyse_models.py [--lm /tmp/lm] [--series /tmp/co2] [--chars 20000]

A model directory that does not exist is trained first with the ``clearlstm train`` command
the issue names (text: 64 units, 1 epoch, ~10 s here; CO2: defaults, ~10 s). For each
feature the table shows its best unit by |r|, and the bars that unit must clear:
``chance max|r|`` is the 99th percentile over 200 circular shifts of the feature of the
largest |r| of *any* unit (the honest bar for a unit picked as the best of H), ``p`` the
fraction of shifts matching the unit's own |r|; then the held-out R² of a probe from that
one unit and from all units, each with its chance level. ``beats chance`` needs |r| above
``chance max|r|`` and the all-units probe above its chance R² and above 0.

Text: the validation part (the last 10%, never trained on), read in the model's own
100-character pieces from a zero state, as in training; states of all pieces, in order.
Series: the state the head reads (after the last step of each 24-month window), one per
forecast origin, against the features of the window's last month. The forecaster sees each
window relative to its last value, so the level itself is invisible to it by design; and
the seasonal features are periodic, which blinds the shift baseline (see
:mod:`clearlstm.analysis.cells`).
Then integrated gradients of the one-step CO2 forecast (baseline: a flat window at the
last value) over the test origins: which past months the forecast is drawn from.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from clearlstm.analysis import (
    beats_chance,
    best_units,
    explain_forgetting,
    gate_statistics,
    integrated_gradients,
    rank_units,
    series_features,
    states_from_trace,
    text_features,
)
from clearlstm.tasks.datasets import get_dataset
from clearlstm.tasks.forecasting import load_forecaster, series_for_model
from clearlstm.tasks.text import encode, load_char_model, read_text

TRAIN = {
    "lm": ["--dataset", "shakespeare", "--hidden-size", "64", "--epochs", "1"],
    "series": ["--dataset", "co2"],
}


def ensure_model(kind: str, out: Path) -> None:
    if (out / "settings.json").exists():
        return
    command = ["clearlstm", "train", *TRAIN[kind], "--out", str(out)]
    print(f"training: {' '.join(command)}", flush=True)
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)


def table(title: str, scores, steps: int) -> list[str]:
    head = (
        f"{'feature':<18} {'best':>5} {'r':>7} {'chance max|r|':>13} {'p':>6} "
        f"{'probe R2':>8} {'(chance)':>8} {'all-units R2':>12} {'(chance)':>8}  beats chance"
    )
    lines = [f"{title} ({steps} steps)", head, "-" * len(head)]
    for feature, (s,) in best_units(scores).items():
        verdict = (
            "constant here" if np.isnan(s.all_units_r2) else "yes" if beats_chance(s) else "NO"
        )
        lines.append(
            f"{feature:<18} {s.quantity + str(s.unit):>5} {s.r:>7.3f} {s.chance_r_max:>13.3f} "
            f"{s.p_value:>6.3f} {s.probe_r2:>8.3f} {s.chance_probe_r2:>8.3f} "
            f"{s.all_units_r2:>12.3f} {s.chance_all_units_r2:>8.3f}  {verdict}"
        )
    return lines


def gate_line(trace) -> str:
    stats = gate_statistics(trace)
    f = stats.saturation["forget_gate"]
    remembers = int((f.right > 0.5).sum())
    forgets = int((f.left > 0.5).sum())
    median = stats.half_life_median
    return (
        f"gates: {remembers}/{len(median)} units keep the forget gate > 0.9 on most steps, "
        f"{forgets} keep it < 0.1; median per-step half-life {median.median():.1f} steps "
        f"(units' medians {median.min():.2f}..{median.max():.1f}); dead units {stats.dead}"
    )


def analyse_text(path: Path, chars: int) -> list[str]:
    model, settings = load_char_model(path)
    text = read_text(get_dataset(settings.data.dataset).path)
    piece = settings.data.seq_len
    val = text[int(len(text) * (1 - settings.data.val_fraction)) :]
    val = val[: (min(chars, len(val)) // piece) * piece]
    ids = encode(val, settings.vocabulary).view(-1, piece)  # (S, 100): the training pieces
    started = time.perf_counter()
    trace = model.trace(ids)
    states = states_from_trace(trace)
    features = text_features(val)
    scores = rank_units(states, features)
    seconds = time.perf_counter() - started
    bpc = settings.result.val_bits_per_char if settings.result else float("nan")
    title = (
        f"Shakespeare char model {path} ({settings.model.hidden_size} units, validation "
        f"{bpc:.2f} bits/char): {len(ids)} pieces of {piece} characters"
    )
    lines = [*table(title, scores, len(val)), gate_line(trace), f"(analysis {seconds:.1f} s)"]
    return lines + why_forget(model, trace, ids, val)


def why_forget(model, trace, ids: torch.Tensor, text: str) -> list[str]:
    """The longest-memory unit's sharpest forgetting in the first pieces, explained by the
    characters before it (integrated gradients over their embeddings, zero baseline)."""
    unit = int(gate_statistics(trace).half_life_median.argmax())
    f = trace[0, 0].forget_gate[:, :20, unit]  # (T, 20 pieces)
    step, piece = divmod(int(f.argmin()), f.shape[1])
    with torch.no_grad():
        embedded = model.embedding(ids[piece]).double()  # (T, E)
    result = explain_forgetting(model.lstm.double(), embedded, step, unit)
    model.lstm.float()
    chars = text[piece * ids.shape[1] : (piece + 1) * ids.shape[1]]
    per_step = result.per_step[: step + 1]
    shut = torch.argsort(per_step)[:4].tolist()  # most negative: pushed the gate shut
    named = ", ".join(f"{chars[k]!r} {step - k} back ({per_step[k]:+.2f})" for k in shut)
    return [
        f"why did unit {unit} (longest median half-life) forget at {chars[step]!r} "
        f"(piece {piece}, step {step}, f = {result.forget_gate:.3f}, pre-activation "
        f"{result.pre_activation:+.2f})? pushed shut most by: {named}; "
        f"context {chars[max(0, step - 15) : step + 1]!r}; IG completeness error "
        f"{result.integrated.relative_error:.1e} at m = {result.integrated.steps}",
    ]


def forecast_windows(path: Path):
    model, settings, _ = load_forecaster(path)
    series = series_for_model(settings)
    scaled = settings.data.scaler.to_scaler().transform(series.values)
    window = settings.data.window
    origins = np.arange(window, len(series) + 1)  # the model reads rows [t - W, t)
    x = torch.tensor(np.stack([scaled[t - window : t] for t in origins]), dtype=torch.float32)
    return model, settings, series, x, origins


def analyse_series(path: Path) -> list[str]:
    model, settings, series, x, origins = forecast_windows(path)
    started = time.perf_counter()
    trace = model.trace(x)
    last = {k: getattr(trace[-1, 0], k)[-1].double().numpy() for k in ("c", "h")}  # (S, H)
    values = series.values[:, 0]
    features = {k: v[origins - 1] for k, v in series_features(values, settings.data.season).items()}
    scores = rank_units(last, features)
    seconds = time.perf_counter() - started
    title = (
        f"CO2 forecaster {path} ({settings.model.hidden_size} units): state after the last "
        f"step of each {settings.data.window}-month window"
    )
    lines = [*table(title, scores, len(origins)), gate_line(trace), f"(analysis {seconds:.1f} s)"]
    return lines + attribute_series(model.double(), settings, x.double(), origins, len(series))


def attribute_series(model, settings, x, origins, rows: int) -> list[str]:
    # test origins with a truth to forecast
    test = np.flatnonzero((origins >= settings.data.split.test_start) & (origins < rows))

    def forecast(windows: torch.Tensor) -> torch.Tensor:
        return model(windows)[:, 0, 0]

    shares, errors, steps = [], [], []
    started = time.perf_counter()
    for s in test:
        flat = x[s, -1:].expand_as(x[s])  # a window that stayed at its last value
        result = integrated_gradients(forecast, x[s], flat)
        shares.append(result.share().numpy())
        errors.append(result.relative_error)
        steps.append(result.steps)
    share = np.mean(shares, axis=0)  # (W,), index W-1 is the last month
    lags = np.argsort(share)[::-1][:5]
    window = settings.data.window
    named = ", ".join(f"lag {window - k} {share[k]:.1%}" for k in lags)
    recent = share[window - 12 :].sum()  # the last 12 months read (lag 12 .. lag 1)
    return [
        f"integrated gradients of the forecast over {len(test)} test origins "
        f"({time.perf_counter() - started:.1f} s): mean share by months back: {named}; "
        f"the last 12 months {recent:.0%}, the 12 before {1 - recent:.0%}",
        f"  completeness |sum - (f(x) - f(flat))| / |f(x) - f(flat)|: median "
        f"{np.median(errors):.2e}, max {np.max(errors):.2e}; trapezoid intervals "
        f"{min(steps)}..{max(steps)}",
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lm", type=Path, default=Path("/tmp/lm"))
    parser.add_argument("--series", type=Path, default=Path("/tmp/co2"))
    parser.add_argument("--chars", type=int, default=20000, help="validation characters")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    ensure_model("lm", args.lm)
    ensure_model("series", args.series)
    for lines in (analyse_text(args.lm, args.chars), analyse_series(args.series)):
        print("\n".join(lines), end="\n\n", flush=True)


if __name__ == "__main__":
    sys.exit(main())
