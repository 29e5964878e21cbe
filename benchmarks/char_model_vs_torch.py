"""clearlstm's character model beside the same model on a plain ``torch.nn.LSTM``: validation
bits per character and seconds per epoch, in one process.

Both train the recipe of ``clearlstm train --dataset shakespeare``: the same pieces of the
bundled text (``prepare_text``), the same initial weights (the torch model copies clearlstm's,
drawn under the same seed), the same loss, batches, optimizer, schedule and clipping
(clearlstm's ``fit`` loop, checkpoint writes included). Only the LSTM differs. The two runs
alternate in rounds (A B, then B A, ...); a round's epoch times are the gaps between the
loop's epoch reports. The table gives medians over every epoch and the ratio.

    python benchmarks/char_model_vs_torch.py             # 3 epochs x 2 rounds, ~5 minutes
    python benchmarks/char_model_vs_torch.py --quick     # a smoke test: a tiny model
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from timing import interleaved
from torch import Tensor, nn

from clearlstm.cli.commands import TEXT_DEFAULTS
from clearlstm.tasks.models import CharModel
from clearlstm.tasks.text import PieceSet, TextOptions, piece_loss, prepare_text
from clearlstm.train.loop import EpochReport, TrainConfig, evaluate, fit

RESULTS = Path(__file__).resolve().parent / "results" / "char_model_vs_torch.md"
CLEARLSTM, TORCH = "clearlstm", "torch.nn.LSTM"
SETTLE_SECONDS = 0.5  # idle before each run: torch's spinning OpenMP workers wind down


class TorchCharModel(nn.Module):
    """:class:`CharModel` with ``torch.nn.LSTM`` in place of clearlstm's: the same parameter
    names and shapes, so it loads a CharModel's state dict."""

    def __init__(self, like: CharModel) -> None:
        super().__init__()
        lstm = like.lstm
        self.embedding = nn.Embedding(like.embedding.num_embeddings, like.embedding.embedding_dim)
        self.lstm = nn.LSTM(lstm.input_size, lstm.hidden_size, lstm.num_layers, batch_first=True)
        self.head = nn.Linear(like.head.in_features, like.head.out_features)
        self.load_state_dict(like.state_dict())

    def forward(
        self, tokens: Tensor, state: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """``(B, T)`` character ids -> ``(B, T, V)`` logits and the LSTM state."""
        output, state = self.lstm(self.embedding(tokens), state)
        return self.head(output), state


class _EpochClock:
    """A Reporter keeping each epoch's seconds (from the loop's start or the last epoch)."""

    def __init__(self) -> None:
        self.last = 0.0
        self.seconds: list[float] = []

    def start(self, total_batches: int, done_batches: int) -> None:
        self.last = time.perf_counter()

    def batch(self, epoch: int, loss: float) -> None:
        pass

    def epoch(self, report: EpochReport) -> None:
        now = time.perf_counter()
        self.seconds.append(now - self.last)
        self.last = now


@dataclass
class Runs:
    bits: dict[str, list[float]]  # model -> best validation bits per character, per round
    epochs: dict[str, list[float]]  # model -> seconds of every epoch of every round
    step: dict[str, float]  # model -> median seconds of one training step (interleaved)
    validation: dict[str, float]  # model -> median seconds of one validation batch


def models(options: TextOptions, vocabulary: str, seed: int) -> dict[str, nn.Module]:
    """Both models with the same initial weights, drawn as ``train_text`` draws them."""
    torch.manual_seed(seed)
    ours = CharModel(
        len(vocabulary), options.embedding_size, options.hidden_size, options.num_layers
    )
    return {CLEARLSTM: ours, TORCH: TorchCharModel(ours)}


def warm_up(model: nn.Module, train: PieceSet, val: PieceSet, config: TrainConfig) -> None:
    """One tiny run of the loop on a copy, so no model's first epoch pays one-time costs:
    compiled kernels, allocations, and torch's lazy imports (the first ``torch.optim.Adam``
    imports ``torch._dynamo``, some 800 modules: 1-4 s here)."""
    tiny = TrainConfig(epochs=1, batch_size=config.batch_size, lr=config.lr)
    pieces = 2 * config.batch_size
    with tempfile.TemporaryDirectory(prefix="clearlstm-char-") as out:
        fit(
            copy.deepcopy(model),
            (train[0][:pieces], train[1][:pieces]),
            (val[0][:pieces], val[1][:pieces]),
            piece_loss,
            tiny,
            Path(out),
            {},
        )


def step_timing(
    fresh: dict[str, nn.Module], train: PieceSet, val: PieceSet, config: TrainConfig, repeats: int
) -> dict[str, float]:
    """Median seconds of one training step (the loop's: loss, backward, clip, Adam) and of one
    validation batch of 256 pieces per model, in short interleaved blocks after an idle."""
    x, y = train[0][: config.batch_size], train[1][: config.batch_size]
    xv, yv = val[0][:256], val[1][:256]

    def step(model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        optimizer.zero_grad(set_to_none=True)
        (piece_loss(model, x, y).sum() / len(x)).backward()
        nn.utils.clip_grad_norm_(model.parameters(), config.clip)
        optimizer.step()

    contenders = {}
    for name, model in fresh.items():
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
        contenders[f"{name} step"] = lambda m=model, o=optimizer: step(m, o)
        contenders[f"{name} validation"] = lambda m=model: evaluate(m, xv, yv, piece_loss)
    return interleaved(contenders, repeats)


def profile_steps(fresh: dict[str, nn.Module], train: PieceSet, rows: int = 12) -> None:
    """torch.profiler's costliest ops over 5 training steps of each model, printed."""
    from torch.profiler import ProfilerActivity, profile

    x, y = train[0][:32], train[1][:32]
    for name, model in fresh.items():
        piece_loss(model, x, y).mean().backward()  # warm
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(5):
                model.zero_grad(set_to_none=True)
                piece_loss(model, x, y).mean().backward()
        print(f"## {name}: 5 training steps (forward and backward)")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows))


def run(
    quick: bool, epochs: int, rounds: int, threads: int, repeats: int, profiled: bool
) -> tuple[Runs, dict]:
    defaults = TEXT_DEFAULTS
    hidden = 32 if quick else defaults["hidden_size"]
    options = TextOptions(dataset="shakespeare", seq_len=defaults["window"], hidden_size=hidden)
    _, _, vocabulary, train, val = prepare_text(options)
    if quick:  # a slice of the pieces: enough to run every line
        train, val = (train[0][:96], train[1][:96]), (val[0][:32], val[1][:32])
    config = TrainConfig(
        epochs=epochs,
        batch_size=defaults["batch_size"],
        lr=defaults["lr"],
        patience=defaults["patience"],
    )
    torch.set_num_threads(threads)
    load_before = os.getloadavg()[0]
    runs = Runs({CLEARLSTM: [], TORCH: []}, {CLEARLSTM: [], TORCH: []}, {}, {})
    for model in models(options, vocabulary, config.seed).values():
        warm_up(model, train, val, config)
    if profiled:
        profile_steps(models(options, vocabulary, config.seed), train)
    timed = step_timing(models(options, vocabulary, config.seed), train, val, config, repeats)
    runs.step = {n: timed[f"{n} step"] for n in (CLEARLSTM, TORCH)}
    runs.validation = {n: timed[f"{n} validation"] for n in (CLEARLSTM, TORCH)}
    for r in range(rounds):
        order = [CLEARLSTM, TORCH] if r % 2 == 0 else [TORCH, CLEARLSTM]
        fresh = models(options, vocabulary, config.seed)
        for name in order:
            clock = _EpochClock()
            time.sleep(SETTLE_SECONDS)
            with tempfile.TemporaryDirectory(prefix="clearlstm-char-") as out:
                result = fit(
                    fresh[name], train, val, piece_loss, config, Path(out), {}, reporter=clock
                )
            runs.bits[name].append(result.best_val / math.log(2))
            runs.epochs[name].extend(clock.seconds)
    shape = {
        "pieces": (len(train[0]), len(val[0])),
        "seq_len": options.seq_len,
        "hidden": hidden,
        "embedding": options.embedding_size,
        "vocabulary": len(vocabulary),
        "config": config,
        "rounds": rounds,
        "threads": threads,
        "repeats": repeats,
        "load": (load_before, os.getloadavg()[0]),
    }
    return runs, shape


def table(runs: Runs, shape: dict, quick: bool) -> str:
    median = {n: statistics.median(t) for n, t in runs.epochs.items()}
    config = shape["config"]
    lines = [
        "# clearlstm's character model beside torch.nn.LSTM",
        "",
        "Validation bits per character (best epoch) and seconds per epoch (median over "
        f"{len(runs.epochs[TORCH])} epochs: {shape['rounds']} alternating rounds of "
        f"{config.epochs}), one process, {shape['threads']} thread(s). Written by "
        "`python benchmarks/char_model_vs_torch.py`"
        + (" --quick (a smoke test: the numbers mean nothing)." if quick else "."),
        "",
        "| model | bits / char | s / epoch (median) | min - max | time / torch |",
        "|---|---|---|---|---|",
    ]
    for name in (CLEARLSTM, TORCH):
        bits = ", ".join(sorted({f"{b:.4f}" for b in runs.bits[name]}))
        t = runs.epochs[name]
        lines.append(
            f"| {name} | {bits} | {median[name]:.2f} | {min(t):.2f} - {max(t):.2f} | "
            f"{median[name] / median[TORCH]:.3f} |"
        )
    train, val = shape["pieces"]
    batches, val_batches = math.ceil(train / config.batch_size), math.ceil(val / 256)
    lines += [
        "",
        f"In short interleaved blocks (median of {shape['repeats']} rounds of 3 calls after an "
        "idle, so the machine's drift and other processes weigh on both alike):",
        "",
        "| model | ms / training step | ms / validation batch (256) | s / epoch from these "
        "| time / torch |",
        "|---|---|---|---|---|",
    ]
    epoch = {n: batches * runs.step[n] + val_batches * runs.validation[n] for n in runs.step}
    for name in (CLEARLSTM, TORCH):
        lines.append(
            f"| {name} | {1e3 * runs.step[name]:.1f} | {1e3 * runs.validation[name]:.1f} | "
            f"{epoch[name]:.2f} | {epoch[name] / epoch[TORCH]:.3f} |"
        )
    lines += [
        "",
        f"- Bundled Shakespeare: {train} training and {val} validation pieces of "
        f"{shape['seq_len']} characters, vocabulary {shape['vocabulary']}; embedding "
        f"{shape['embedding']}, one LSTM layer of {shape['hidden']} units, linear head.",
        f"- `clearlstm train --dataset shakespeare`'s recipe: Adam at lr {config.lr}, batch "
        f"{config.batch_size}, cosine schedule to {config.final_lr_fraction} x lr, gradient "
        f"clip {config.clip}, seed {config.seed}, {config.epochs} epoch(s) per round (the "
        "CLI's default is 10, with patience 3); an epoch includes the validation pass and the "
        "checkpoint write.",
        "- Before timing, each model runs the loop once on two batches (a copy): no first "
        "epoch pays one-time costs (kernel compilation, torch's lazy imports on the first "
        "Adam). The interleaved table is the fairer timing on a shared machine: whole epochs "
        "run minutes apart, and other processes' load changes in between.",
        f"- torch {torch.__version__}; {os.cpu_count()} CPU cores; load average "
        f"{shape['load'][0]:.1f} at the start, {shape['load'][1]:.1f} at the end.",
        "",
    ]
    return "\n".join(lines)


def write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    part.write_text(text, encoding="utf-8")
    os.replace(part, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke test: a tiny model")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per round (3)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds (2)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1, the CLI's)")
    parser.add_argument("--repeats", type=int, default=8, help="interleaved rounds (8)")
    parser.add_argument("--profile", action="store_true", help="print torch.profiler's top ops")
    parser.add_argument("--out", type=Path, help=f"markdown file (default {RESULTS.name})")
    args = parser.parse_args(argv)
    for name in ("epochs", "rounds", "threads", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1; got {getattr(args, name)}")
    epochs = 1 if args.quick else args.epochs
    repeats = 2 if args.quick else args.repeats
    runs, shape = run(args.quick, epochs, args.rounds, args.threads, repeats, args.profile)
    text = table(runs, shape, args.quick)
    print(text)
    out = args.out or (None if args.quick else RESULTS)
    if out is not None:
        write_atomically(out, text)
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
