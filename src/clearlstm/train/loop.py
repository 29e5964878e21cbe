"""The training loop shared by forecasters and language models.

Adam with gradient-norm clipping and a cosine learning-rate schedule; early stopping on the
validation loss (the best epoch's weights are the result). After every epoch the whole state
of the run (weights, optimizer, schedule, random-number state, best-so-far) is saved
atomically, so ``resume=True`` continues an interrupted run and ends with the same weights,
bit for bit, as a run that was never interrupted: the shuffled order of each epoch depends
only on the seed and the epoch number.

Shapes: ``S`` samples; inputs ``x (S, ...)`` and truths ``y (S, ...)`` are split along the
first axis into batches; ``loss_fn(model, x, y)`` returns one loss per sample, ``(B,)``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from clearlstm.errors import UsageError
from clearlstm.train import checkpoint
from clearlstm.train.codec import JsonSettings, limits
from clearlstm.train.distributed import Distributed

LossFn = Callable[[nn.Module, Tensor, Tensor], Tensor]
STOP_AFTER_EPOCH = "CLEARLSTM_STOP_AFTER_EPOCH"  # testing: stop as if killed after epoch N


@dataclass(frozen=True)
class TrainConfig(JsonSettings):
    """How to train (saved with the model and checked on ``--resume``); the limits are what
    a saved ``settings.json`` may hold."""

    epochs: int = field(default=100, metadata=limits(low=1))
    batch_size: int = field(default=32, metadata=limits(low=1))
    lr: float = field(default=3e-3, metadata=limits(above=0))
    seed: int = 0
    # epochs without a better validation loss before stopping
    patience: int = field(default=10, metadata=limits(low=0))
    clip: float = field(default=1.0, metadata=limits(low=0))  # largest gradient norm
    # the cosine schedule ends at lr * this
    final_lr_fraction: float = field(default=0.05, metadata=limits(low=0))


@dataclass(frozen=True)
class EpochReport:
    epoch: int  # 1-based
    epochs: int
    train_loss: float
    val_loss: float
    lr: float
    improved: bool


@dataclass
class FitResult:
    weights: dict[str, Tensor]  # the best epoch's state dict
    best_val: float
    best_epoch: int
    epochs_run: int
    history: list[dict[str, float]] = field(default_factory=list)


class Reporter(Protocol):
    """Where progress goes (the CLI draws a rich progress bar; the library prints nothing)."""

    def start(self, total_batches: int, done_batches: int) -> None: ...
    def batch(self, epoch: int, loss: float) -> None: ...
    def epoch(self, report: EpochReport) -> None: ...


class _Quiet:
    def start(self, total_batches: int, done_batches: int) -> None:
        pass

    def batch(self, epoch: int, loss: float) -> None:
        pass

    def epoch(self, report: EpochReport) -> None:
        pass


def check_config(config: TrainConfig, context: Distributed) -> None:
    """A :class:`UsageError` naming the setting (and its flag), what it accepts and what it
    holds, for any setting that would make training fail or silently learn nothing: the
    library's callers get the same checks as the command line's flags."""
    integers = [("epochs", 1), ("batch_size", 1), ("patience", 1)]  # patience 0: no epoch
    for name, low in integers:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise _bad(name, f"an integer of at least {low}", value)
    if isinstance(config.seed, bool) or not isinstance(config.seed, int):
        raise _bad("seed", "an integer", config.seed)
    # clip 0 zeroes every gradient (nothing is learnt), below 0 it reverses them
    for name in ("lr", "clip"):
        if not _number(getattr(config, name)) or not getattr(config, name) > 0:
            raise _bad(name, "a finite number greater than 0", getattr(config, name))
    fraction = config.final_lr_fraction
    if not _number(fraction) or not 0 <= fraction <= 1:
        raise _bad("final_lr_fraction", "a number from 0 to 1", fraction)
    if config.batch_size < context.world_size:
        raise UsageError(
            f"--batch-size {config.batch_size} is the global batch: it must be at least the "
            f"number of processes ({context.world_size})"
        )


def _number(value: Any) -> bool:
    return type(value) in (int, float) and math.isfinite(value)


def _bad(name: str, what: str, value: Any) -> UsageError:
    flag = "" if name == "final_lr_fraction" else f" (--{name.replace('_', '-')})"
    return UsageError(f"TrainConfig.{name}{flag} must be {what}; got {value!r}")


def batches(
    samples: int, config: TrainConfig, epoch: int, context: Distributed
) -> list[tuple[Tensor, int]]:
    """This process's sample indices for each global batch of one epoch, with the global
    batch's size.

    Every process draws the same order (seeded by seed and epoch) and takes its contiguous
    slice of each global batch; a last batch smaller than the number of processes is skipped.
    """
    generator = torch.Generator().manual_seed(config.seed * 1_000_003 + epoch)
    order = torch.randperm(samples, generator=generator)
    out = []
    for batch in order.split(config.batch_size):
        if len(batch) >= context.world_size:
            out.append((torch.tensor_split(batch, context.world_size)[context.rank], len(batch)))
    return out


def evaluate(model: nn.Module, x: Tensor, y: Tensor, loss_fn: LossFn, size: int = 256) -> float:
    """Mean per-sample loss over ``x (S, ...)``, ``y (S, ...)`` without gradients."""
    model.eval()
    total = 0.0
    with torch.no_grad():
        for start in range(0, len(x), size):
            total += float(loss_fn(model, x[start : start + size], y[start : start + size]).sum())
    model.train()
    return total / len(x)


def _optimizer_tensors(state: dict) -> tuple[dict[str, Tensor], dict]:
    """Split an optimizer state dict into tensors and JSON-able rest."""
    tensors, rest = {}, {}
    for index, values in state["state"].items():
        rest[str(index)] = {}
        for key, value in values.items():
            if isinstance(value, Tensor):
                tensors[f"optimizer/{index}/{key}"] = value
            else:
                rest[str(index)][key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": rest}


def _optimizer_state(tensors: dict[str, Tensor], saved: dict) -> dict:
    state: dict[int, dict[str, Any]] = {int(i): dict(v) for i, v in saved["scalars"].items()}
    for name, value in tensors.items():
        if name.startswith("optimizer/"):
            _, index, key = name.split("/", 2)
            state.setdefault(int(index), {})[key] = value
    return {"state": state, "param_groups": saved["param_groups"]}


def _prefixed(tensors: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def fit(
    model: nn.Module,
    train: tuple[Tensor, Tensor],
    val: tuple[Tensor, Tensor] | None,
    loss_fn: LossFn,
    config: TrainConfig,
    out_dir: Path,
    fingerprint: dict[str, Any],
    resume: bool = False,
    reporter: Reporter | None = None,
    context: Distributed | None = None,
    stop_after: int | None = None,
) -> FitResult:
    """Train ``model`` on ``train`` and keep the weights with the lowest validation loss.

    ``fingerprint`` (JSON-able settings of the run) is saved with the state; ``resume``
    refuses to continue a run whose fingerprint differs. Without ``val`` (a refit on all
    rows) the last epoch's weights are kept; ``stop_after`` ends the run after that many
    epochs, on the schedule of ``config.epochs`` (as the run that chose them).
    """
    context = context or Distributed()
    reporter = reporter or _Quiet()
    check_config(config, context)
    x_train, y_train = train
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=config.epochs, eta_min=config.lr * config.final_lr_fraction
    )
    fingerprint = {**fingerprint, "train": asdict(config), "world_size": context.world_size}
    done, best_val, best_epoch, bad_epochs, history = 0, math.inf, 0, 0, []
    best = {k: v.clone() for k, v in model.state_dict().items()}
    if resume:
        tensors, state = checkpoint.load_training_state(out_dir)
        _check_fingerprint(out_dir, state["fingerprint"], fingerprint)
        model.load_state_dict(_prefixed(tensors, "model/"))
        best = _prefixed(tensors, "best/")
        optimizer.load_state_dict(_optimizer_state(tensors, state["optimizer"]))
        schedule.load_state_dict(state["schedule"])
        checkpoint.restore_rng(tensors)
        done, best_val, best_epoch = state["epoch"], state["best_val"], state["best_epoch"]
        bad_epochs, history = state["bad_epochs"], state["history"]
    trained = DistributedDataParallel(model) if context.active else model
    per_epoch = len(batches(len(x_train), config, 0, context))
    reporter.start(config.epochs * per_epoch, done * per_epoch)
    interrupt_after = int(os.environ.get(STOP_AFTER_EPOCH, "0"))  # a test's simulated kill
    last = min(config.epochs, stop_after or config.epochs, interrupt_after or config.epochs)

    for epoch in range(done, last):
        if bad_epochs >= config.patience:
            break
        model.train()
        total, count = 0.0, 0
        for index, global_size in batches(len(x_train), config, epoch, context):
            losses = loss_fn(trained, x_train[index], y_train[index])  # (b,)
            # Sum over this slice / the global batch size, times the number of processes:
            # DDP's averaging then gives the gradient of the global batch's mean loss.
            scale = context.world_size / global_size
            optimizer.zero_grad(set_to_none=True)
            (losses.sum() * scale).backward()
            nn.utils.clip_grad_norm_(model.parameters(), config.clip)
            optimizer.step()
            total, count = total + float(losses.detach().sum()), count + len(index)
            reporter.batch(epoch + 1, total / count)
        lr = optimizer.param_groups[0]["lr"]
        schedule.step()
        val_loss = math.nan if val is None else evaluate(model, *val, loss_fn)
        improved = val is None or val_loss < best_val
        if improved:
            best_val, best_epoch, bad_epochs = val_loss, epoch + 1, 0
            best = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            bad_epochs += 1
        history.append({"epoch": epoch + 1, "train_loss": total / count, "val_loss": val_loss})
        if context.is_main:
            opt_tensors, opt_rest = _optimizer_tensors(optimizer.state_dict())
            tensors = {f"model/{k}": v for k, v in model.state_dict().items()}
            tensors |= {f"best/{k}": v for k, v in best.items()} | opt_tensors
            tensors |= checkpoint.rng_tensors()
            state = {
                "epoch": epoch + 1,
                "best_val": best_val,
                "best_epoch": best_epoch,
                "bad_epochs": bad_epochs,
                "history": history,
                "optimizer": opt_rest,
                "schedule": schedule.state_dict(),
                "fingerprint": fingerprint,
            }
            checkpoint.save_training_state(out_dir, tensors, state)
        reporter.epoch(EpochReport(epoch + 1, config.epochs, total / count, val_loss, lr, improved))
        if interrupt_after and epoch + 1 >= interrupt_after and epoch + 1 < config.epochs:
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C after this epoch
    return FitResult(best, best_val, best_epoch, len(history), history)


def _check_fingerprint(out_dir: Path, saved: dict, current: dict) -> None:
    if saved == current:
        return
    keys = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
    raise checkpoint.CheckpointError(
        f"--resume: the run in {out_dir} was started with other settings ({', '.join(keys)} "
        f"differ: saved {[saved.get(k) for k in keys]}, now {[current.get(k) for k in keys]}); "
        "resume with the same settings, or start afresh in another --out directory"
    )
