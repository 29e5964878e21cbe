"""clearlstm's default forecaster beside two peer LSTMs, Darts' ``RNNModel(model="LSTM")`` and
NeuralForecast's ``LSTM``, on the four bundled series: test-part MASE and RMSE from the same
origins and horizon, and the seconds each spends training.

clearlstm is called through its public ``train_series`` with the default options and training
settings (what ``clearlstm train --dataset NAME`` runs), and its own test-part scores are
read back from the run. The split and the origins come from ``clearlstm.tasks.series``
(``window_and_split``, ``origins``) with the same default options, and the peers' forecasts are
scored by ``clearlstm.tasks.baselines.score`` with the MASE scale of the season clearlstm
used; the number of origins is checked against clearlstm's evaluation.

The peers keep their documented defaults except what they need set (listed in the table's
notes): the window (``input_chunk_length`` / ``input_size``) is clearlstm's, the horizon is
clearlstm's, and they learn from every row before the test part (they have no default use for
a validation part). Everything runs on one thread (the CLI's default). Lightning writes
nothing outside a temporary folder; nothing is downloaded.

    python benchmarks/peer_forecasters.py            # about 5 minutes here
    python benchmarks/peer_forecasters.py --quick    # a smoke test: nile, a few steps
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
import warnings
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

from clearlstm.tasks import baselines
from clearlstm.tasks.baselines import Scores
from clearlstm.tasks.forecasting import SeriesOptions, load_data, train_series, window_and_split
from clearlstm.tasks.series import origins
from clearlstm.train.loop import EpochReport, TrainConfig

SERIES = ("co2", "nile", "sunspots", "elnino")
RESULTS = Path(__file__).resolve().parent / "results" / "peer_forecasters.md"
RESULTS_TRAIN_PART = RESULTS.with_name("peer_forecasters_train_part.md")  # --peers-learn train
DARTS = "Darts RNNModel (LSTM)"
NEURALFORECAST = "NeuralForecast LSTM"
CLEARLSTM = "clearlstm LSTM"
# What ``--quick`` trains for: enough to run every line, not to forecast well.
QUICK = {"clearlstm_epochs": 2, "darts_epochs": 2, "nf_steps": 10}


@dataclass(frozen=True)
class Problem:
    """One bundled series as clearlstm's evaluation sees it."""

    name: str
    y: np.ndarray  # (N,) the target
    train_rows: int  # the training part: MASE's scale comes from it
    fit_rows: int  # what the peers learn from: the rows before the test part (or train)
    starts: np.ndarray  # (S,) test origins
    window: int
    horizon: int

    def truth(self) -> np.ndarray:
        """``(S, H, 1)``: the values each origin forecasts."""
        return np.stack([self.y[t : t + self.horizon] for t in self.starts])[..., None]


@dataclass(frozen=True)
class Result:
    method: str
    scores: Scores
    seconds: float | None  # training time; None for the baselines clearlstm scores


class _TrainingClock:
    """A clearlstm Reporter that times training only: from the first ``start`` to the last
    ``epoch`` (the test evaluation and the model's writing come after)."""

    def __init__(self) -> None:
        self.first: float | None = None
        self.last: float | None = None

    def start(self, total_batches: int, done_batches: int) -> None:
        self.first = self.first or time.perf_counter()

    def batch(self, epoch: int, loss: float) -> None:
        pass

    def epoch(self, report: EpochReport) -> None:
        self.last = time.perf_counter()

    @property
    def seconds(self) -> float:
        if self.first is None or self.last is None:
            raise RuntimeError("clearlstm's training never reported an epoch")
        return self.last - self.first


def problem(name: str, peers_learn: str = "before-test") -> Problem:
    """The series, its test origins and horizon, as ``train_series`` computes them."""
    options = SeriesOptions(dataset=name)
    series = load_data(options)
    window, split = window_and_split(series, options)
    starts = origins(split, "test", len(series), window, options.horizon)
    y = series.values[:, 0]
    fit_rows = split.train if peers_learn == "train" else split.test_start
    return Problem(name, y, split.train, fit_rows, starts, window, options.horizon)


def run_clearlstm(name: str, epochs: int | None, work: Path) -> tuple[list[Result], int, float]:
    """clearlstm's default training on ``name``: its rows (LSTM and the baselines it scores),
    the number of test origins and the season behind its MASE scale."""
    config = TrainConfig() if epochs is None else TrainConfig(epochs=epochs)
    clock = _TrainingClock()
    out = work / f"clearlstm-{name}"
    run = train_series(SeriesOptions(dataset=name), config, out, reporter=clock)
    evaluation = run.evaluations[0]
    rows = [
        Result(CLEARLSTM if m == "LSTM" else m, s, clock.seconds if m == "LSTM" else None)
        for m, s in evaluation.scores.items()
    ]
    return rows, evaluation.origins, evaluation.season


def run_darts(p: Problem, epochs: int | None, work: Path) -> tuple[np.ndarray, float]:
    """``(S, H, 1)`` forecasts and training seconds. Darts' own defaults otherwise:
    hidden_dim 25, one layer, no dropout, Adam at 1e-3, batch 32, 100 epochs, MSE loss; the
    series scaled by Darts' ``Scaler`` (min-max) fitted on the rows it learns from, as its
    documentation does."""
    from darts import TimeSeries
    from darts.dataprocessing.transformers import Scaler
    from darts.models import RNNModel

    series = TimeSeries.from_values(p.y.astype(np.float32))
    scaler = Scaler().fit(series[: p.fit_rows])
    extra = {} if epochs is None else {"n_epochs": epochs}
    model = RNNModel(
        input_chunk_length=p.window,
        model="LSTM",
        # Darts needs training_length > input_chunk_length; its default (24) is not.
        training_length=p.window + p.horizon,
        random_state=0,
        work_dir=str(work),
        pl_trainer_kwargs=_quiet_trainer(work),
        **extra,
    )
    started = time.perf_counter()
    model.fit(scaler.transform(series[: p.fit_rows]), verbose=False)
    seconds = time.perf_counter() - started
    history = [scaler.transform(series[: int(t)]) for t in p.starts]
    predicted = model.predict(n=p.horizon, series=history, verbose=False)
    out = np.stack([scaler.inverse_transform(f).values() for f in predicted])  # (S, H, 1)
    return out.astype(np.float64), seconds


def run_neuralforecast(p: Problem, steps: int | None, work: Path) -> tuple[np.ndarray, float]:
    """``(S, H, 1)`` forecasts and training seconds. NeuralForecast's own defaults otherwise:
    two layers of 128 units, an MLP decoder (two layers of 128), direct (not recurrent)
    outputs, MAE loss, robust scaling per window, Adam at 1e-3, 1000 steps, random_seed 1."""
    import pandas as pd
    from neuralforecast import NeuralForecast
    from neuralforecast.models import LSTM

    extra = {} if steps is None else {"max_steps": steps}
    model = LSTM(h=p.horizon, input_size=p.window, **_quiet_trainer(work), **extra)
    forecaster = NeuralForecast(models=[model], freq=1)
    rows = pd.DataFrame({"unique_id": 0, "ds": np.arange(p.fit_rows), "y": p.y[: p.fit_rows]})
    started = time.perf_counter()
    forecaster.fit(rows)
    seconds = time.perf_counter() - started
    # One series per origin, cut at the origin: NeuralForecast forecasts past each one's end.
    history = pd.concat(
        pd.DataFrame({"unique_id": i, "ds": np.arange(t), "y": p.y[:t]})
        for i, t in enumerate(p.starts)
    )
    predicted = forecaster.predict(df=history).sort_values(["unique_id", "ds"])
    out = predicted[type(model).__name__].to_numpy().reshape(len(p.starts), p.horizon, 1)
    return out.astype(np.float64), seconds


def _quiet_trainer(work: Path) -> dict:
    """Lightning settings: CPU, no progress bar, logger or checkpoints, files under ``work``."""
    return {
        "accelerator": "cpu",
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "logger": False,
        "enable_checkpointing": False,
        "default_root_dir": str(work),
    }


def _silence() -> None:
    """Lightning's banners and tips off: its loggers are set when it is imported, so after."""
    import lightning_fabric  # noqa: F401
    import pytorch_lightning  # noqa: F401

    for name in ("pytorch_lightning", "lightning_fabric", "lightning", "darts", "neuralforecast"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")


def compare(name: str, quick: bool, peers_learn: str, work: Path) -> list[Result]:
    """Every method's row on one series."""
    p = problem(name, peers_learn)
    rows, count, season = run_clearlstm(name, QUICK["clearlstm_epochs"] if quick else None, work)
    if count != len(p.starts):
        raise RuntimeError(
            f"{name}: clearlstm scored {count} test origins, this script {len(p.starts)}: its "
            "evaluation changed; take the origins from where it now gets them"
        )
    truth = p.truth()
    scale = baselines.mase_scale(p.y[: p.train_rows, None], season)
    darts, darts_s = run_darts(p, QUICK["darts_epochs"] if quick else None, work)
    nf, nf_s = run_neuralforecast(p, QUICK["nf_steps"] if quick else None, work)
    rows[1:1] = [
        Result(method, baselines.score(forecast, truth, scale)[0], seconds)
        for method, forecast, seconds in ((DARTS, darts, darts_s), (NEURALFORECAST, nf, nf_s))
    ]
    return rows


def table(results: dict[str, list[Result]], quick: bool, peers_learn: str) -> str:
    """The markdown document: the table, then how it was made."""
    lines = [
        "# clearlstm beside peer LSTMs on the bundled series",
        "",
        "Test-part scores from the same origins and horizon as `clearlstm train` (lower is "
        "better); training seconds with the ratio to clearlstm's on the same series, all in one "
        "process on one thread. Written by `python benchmarks/peer_forecasters.py`"
        + (" --quick (a smoke test: the numbers mean nothing)." if quick else "."),
        "",
        "| series | method | MASE | RMSE | train s | s / clearlstm |",
        "|---|---|---|---|---|---|",
    ]
    for name, rows in results.items():
        ours = next(r.seconds for r in rows if r.method == CLEARLSTM)
        for r in rows:
            seconds = "" if r.seconds is None else f"{r.seconds:.1f}"
            ratio = "" if r.seconds is None or not ours else f"{r.seconds / ours:.2f}"
            lines.append(
                f"| {name} | {r.method} | {r.scores.mase:.3f} | {r.scores.rmse:.4g} | "
                f"{seconds} | {ratio} |"
            )
    p = problem(next(iter(results)))
    versions = ", ".join(f"{m} {_version(m)}" for m in ("torch", "darts", "neuralforecast"))
    lines += [
        "",
        f"- Window {p.window} rows, horizon {p.horizon}; one forecast from every test origin. "
        "MASE divides by the training part's in-sample seasonal-naive MAE (clearlstm's scale).",
        "- clearlstm: `train_series` with its defaults (what `clearlstm train --dataset NAME` "
        "runs): it learns from the training part and stops early on the validation part; the "
        "naive, seasonal-naive and Holt-Winters rows are its own evaluation's.",
        f'- {DARTS}: `RNNModel(input_chunk_length={p.window}, model="LSTM", '
        f"training_length={p.window + p.horizon}, random_state=0)` (Darts needs "
        "training_length > input_chunk_length), the rest Darts' defaults; min-max `Scaler` "
        "fitted on the rows it learns from.",
        f"- {NEURALFORECAST}: `LSTM(h={p.horizon}, input_size={p.window})`, the rest "
        "NeuralForecast's defaults (its default input_size is 3 * h).",
        (
            "- The peers learn from the training part only (`--peers-learn train`), as "
            "clearlstm does; they leave the validation part unused."
            if peers_learn == "train"
            else "- The peers learn from every row before the test part (training and "
            "validation parts): they have no default use for a validation part "
            "(`--peers-learn train` gives them the training part only)."
        ),
        f"- {versions}; {os.cpu_count()} CPU cores, 1 thread.",
        "",
    ]
    return "\n".join(lines)


def _version(module: str) -> str:
    try:
        return metadata.version(module)
    except metadata.PackageNotFoundError:
        return "(not installed)"


def write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    part.write_text(text, encoding="utf-8")
    os.replace(part, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke test: nile, a few steps")
    parser.add_argument("--series", nargs="+", choices=SERIES, help="series (default: all 4)")
    parser.add_argument(
        "--peers-learn",
        choices=["before-test", "train"],
        default="before-test",
        help="rows the peers learn from: all before the test part (default), or the training part",
    )
    parser.add_argument("--out", type=Path, help=f"markdown file (default {RESULTS.name})")
    args = parser.parse_args(argv)
    names = args.series or (["nile"] if args.quick else list(SERIES))
    default = RESULTS if args.peers_learn == "before-test" else RESULTS_TRAIN_PART
    out = args.out or (None if args.quick else default)
    _silence()
    torch.set_num_threads(1)
    results = {}
    with tempfile.TemporaryDirectory(prefix="clearlstm-peers-") as work:
        for name in names:
            results[name] = compare(name, args.quick, args.peers_learn, Path(work))
    text = table(results, args.quick, args.peers_learn)
    print(text)
    if out is not None:
        write_atomically(out, text)
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
