"""What ``clearlstm train``, ``forecast``, ``generate``, ``datasets`` and ``explain --model`` do
once their arguments are parsed (:mod:`clearlstm.cli` parses and dispatches to these).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from clearlstm.cli import train_report
from clearlstm.cli.variant_flags import variant_options
from clearlstm.tasks.datasets import DEFAULT_SERIES, get_dataset
from clearlstm.train.lock import training_lock
from clearlstm.train.loop import Reporter, TrainConfig

if TYPE_CHECKING:
    from clearlstm.tasks.forecasting import SeriesRun
    from clearlstm.tasks.panel_train import PanelRun
    from clearlstm.tasks.settings import ForecasterSettings
    from clearlstm.tasks.text import TextRun
    from clearlstm.train.distributed import Distributed

SERIES_DEFAULTS = {"window": 24, "hidden_size": 32, "epochs": 100, "batch_size": 32, "lr": 3e-3}
SERIES_DEFAULTS |= {"patience": 10}
TEXT_DEFAULTS = {"window": 100, "hidden_size": 256, "epochs": 10, "batch_size": 32, "lr": 5e-3}
TEXT_DEFAULTS |= {"patience": 3}


def _say(console: Console, text: str) -> None:
    """Print ``text`` as it is: it holds the user's paths, column names and generated text,
    so ``[red]``, ``[/]`` or ``:thumbs_up:`` in it are no markup and no emoji codes."""
    console.print(text, markup=False, emoji=False, highlight=False)


def _is_text(args: argparse.Namespace) -> bool:
    if args.text is not None:
        return True
    return args.dataset is not None and get_dataset(args.dataset).kind == "text"


def _config(args: argparse.Namespace, defaults: dict) -> TrainConfig:
    pick = lambda name: getattr(args, name) if getattr(args, name) is not None else defaults[name]  # noqa: E731
    return TrainConfig(
        epochs=pick("epochs"),
        batch_size=pick("batch_size"),
        lr=pick("lr"),
        seed=args.seed,
        patience=pick("patience"),
        clip=args.clip,
    )


def run_train(args: argparse.Namespace, console: Console) -> int:
    import torch

    if args.dataset is None and args.csv is None and args.text is None:
        args.dataset = DEFAULT_SERIES
    if args.threads < 1:
        raise ValueError(f"--threads must be at least 1; got {args.threads}")
    # The models are small: a second thread costs more in waiting than it gains, and on a busy
    # machine many times more (a 10x slower epoch has been measured with 2 threads on 2 cores).
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return _run_train(args, console)
    finally:
        torch.set_num_threads(threads)  # as it was, for callers of main() in the same process


def _run_train(args: argparse.Namespace, console: Console) -> int:
    from clearlstm.train import distributed

    text = _is_text(args)
    series_only = ("val_size", "test_size", "test_start", "backtest_horizon", "backtest_csv")
    series_only += ("id_column",)
    for name in series_only:
        if text and getattr(args, name) is not None:
            flag = "--" + name.replace("_", "-")
            raise ValueError(f"{flag} is for series; a text model splits by --val-fraction only")
    context = distributed.setup()
    defaults = TEXT_DEFAULTS if text else SERIES_DEFAULTS
    config = _config(args, defaults)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give a directory for the model")
    with training_lock(out) if context.is_main else contextlib.nullcontext():
        _check_out(args, out)  # under the lock: no other run can finish in between
        hidden = args.hidden_size if args.hidden_size is not None else defaults["hidden_size"]
        window = args.window if args.window is not None else defaults["window"]
        started = time.perf_counter()
        try:
            with _reporter(console, context, text) as reporter:
                train = _train_text if text else _train_series
                run = train(args, config, out, reporter, context, hidden, window)
        except KeyboardInterrupt:
            if context.is_main:
                _say(
                    console,
                    f"interrupted: the last finished epoch is saved in {out}; run the same "
                    "command with --resume to continue",
                )
            return 130
        finally:
            distributed.teardown(context)
    if run is None:
        return 0
    (_show_text if text else _show_series)(args, run, out, console)
    _say(console, f"Model saved in {out} (took {time.perf_counter() - started:.0f} s)")
    return 0


def _check_out(args: argparse.Namespace, out: Path) -> None:
    """Refuse to replace a finished model, or restart an unfinished run, unless asked to."""
    if args.resume or args.overwrite:
        return
    if _unfinished(out):
        raise ValueError(
            f"--out {out} holds an unfinished training run; add --resume to continue it, "
            "--overwrite to start again there, or choose another --out"
        )
    if (out / "model.safetensors").exists() or (out / "settings.json").exists():
        raise ValueError(
            f"--out {out} already holds a trained model; add --overwrite to replace it, or "
            "choose another --out"
        )


def _unfinished(out: Path) -> bool:
    """A run was saved in ``out`` after its last finished model (or it never finished)."""
    state, model = out / "training.safetensors", out / "model.safetensors"
    if not state.exists():
        return False
    return not model.exists() or state.stat().st_mtime_ns > model.stat().st_mtime_ns


class _NoProgress:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _reporter(
    console: Console, context: Distributed, text: bool
) -> train_report.ProgressReporter | _NoProgress:
    if not context.is_main:
        return _NoProgress()
    if text:
        return train_report.ProgressReporter(console, "val bits/char", 1 / math.log(2))
    return train_report.ProgressReporter(console, "val loss")


def run_backtest(args: argparse.Namespace, console: Console) -> int:
    from clearlstm.cli import backtest_report

    return backtest_report.run(args, console)


def _train_series(
    args: argparse.Namespace,
    config: TrainConfig,
    out: Path,
    reporter: Reporter | None,
    context: Distributed,
    hidden: int,
    window: int,
) -> SeriesRun | PanelRun | None:
    from clearlstm.tasks import forecasting

    options = forecasting.SeriesOptions(
        dataset=args.dataset,
        csv=args.csv,
        targets=args.target,
        covariates=args.covariates,
        future_covariates=args.future_covariates,
        time_column=args.time_column,
        fill=args.fill,
        window=args.window,  # None: the recipe's choice
        horizon=args.horizon if args.horizon is not None else 1,
        hidden_size=hidden,
        num_layers=args.layers,
        season=args.season,
        val_size=args.val_size,
        test_size=args.test_size,
        test_start=args.test_start,
        backtest_horizon=args.backtest_horizon,
        refit=args.refit,
        transform=args.transform or "auto",
        normalise=args.normalise or "auto",
        members=args.ensemble if args.ensemble is not None else 9,
        linear=args.linear != "off",
        lstm=variant_options(args),
    )
    if args.id_column is not None:  # many series, one model
        from clearlstm.cli import panel_report

        return panel_report.train(args, options, config, out, reporter, context)
    return forecasting.train_series(options, config, out, args.resume, reporter, context)


def _show_series(
    args: argparse.Namespace, run: SeriesRun | PanelRun, out: Path, console: Console
) -> None:
    from clearlstm.cli import backtest_report, panel_report
    from clearlstm.tasks import forecasting

    if args.id_column is not None:
        return panel_report.show(args, run, console)
    fit, settings = run.fit, run.settings
    _say(console, f"Chosen: {run.choices}")
    _say(
        console,
        f"Best validation loss {fit.best_val:.4f} at epoch {fit.best_epoch} of {fit.epochs_run}",
    )
    assert run.backtest is not None
    backtest_report.show(run.backtest, console)
    console.print(train_report.memory_table(run.memory))
    _say(console, train_report.memory_sentence(run.memory))
    if settings.refitted:
        _say(
            console,
            f"Refitted on all {settings.data.rows} rows for {fit.best_epoch} epochs (the "
            f"validation-chosen number) in {run.refit_seconds:.1f} s: that is the saved model, "
            "for forecasting past the end (--no-refit keeps the validation-chosen one).",
        )
    else:
        why = "--no-refit" if not args.refit else "no epoch improved on validation"
        _say(console, f"The saved model is the validation-chosen one ({why}).")
    if args.backtest_csv:
        rows = backtest_report.write(Path(args.backtest_csv), run.backtest)
        _say(console, f"Backtest forecasts ({rows} rows) written to {args.backtest_csv}")
    if args.plot:
        from clearlstm.tasks import forecast

        series = forecasting.series_for_model(settings, args.csv, out)
        start = settings.data.split.test_start
        forecast.plot(Path(args.plot), series, start, _title(settings), run.backtest)
        _say(console, f"Plot written to {args.plot}")


def _title(settings: ForecasterSettings) -> str:
    data = settings.data
    source = data.dataset or Path(data.csv or "").name
    return (
        f"clearlstm forecaster on {source}: window {data.window}, horizon {data.horizon}, "
        f"{settings.model.hidden_size} units"
    )


def _train_text(
    args: argparse.Namespace,
    config: TrainConfig,
    out: Path,
    reporter: Reporter | None,
    context: Distributed,
    hidden: int,
    window: int,
) -> TextRun | None:
    from clearlstm.tasks import text

    series_only = ("target", "covariates", "time_column", "fill", "horizon", "season", "plot")
    series_only += ("transform", "normalise", "ensemble", "linear", "future_covariates")
    for name in series_only:
        if getattr(args, name) is not None:
            raise ValueError(
                f"--{name.replace('_', '-')} is for series; a text model predicts the next "
                "character and reports bits per character"
            )
    options = text.TextOptions(
        text=args.text, dataset=args.dataset, seq_len=window, hidden_size=hidden,
        num_layers=args.layers, lstm=variant_options(args),
    )  # fmt: skip
    return text.train_text(options, config, out, args.resume, reporter, context)


def _show_text(args: argparse.Namespace, run: TextRun, out: Path, console: Console) -> None:
    if not run.settings.model.lstm.plain:
        _say(console, f"Chosen: {run.settings.model.lstm.describe()}")
    _say(
        console,
        f"Validation bits per character: {run.bits_per_char:.3f} (best epoch "
        f"{run.fit.best_epoch} of {run.fit.epochs_run}; a model that knew nothing would score "
        f"{math.log2(len(run.settings.vocabulary)):.2f})",
    )
    console.print(train_report.memory_table(run.memory, "on validation text"))
    _say(console, train_report.memory_sentence(run.memory))
    _say(console, "Sample (temperature 0.8):")
    _say(console, run.sample)


def run_forecast(args: argparse.Namespace, console: Console) -> int:
    from clearlstm.cli import panel_report
    from clearlstm.tasks import forecast, forecasting

    if panel_report.is_panel(args):
        return panel_report.run_forecast(args, console)
    model, settings, directory = forecasting.load_forecaster(args.model)
    series = forecasting.series_for_model(settings, args.csv, directory)
    future = forecast.forecast_future(model, series, settings, args.steps)
    forecast.write_csv(Path(args.out), future, series.time_column)
    which = (
        f"refitted on all {settings.fitted_rows} rows"
        if settings.refitted
        else "the validation-chosen model"
    )
    steps = len(future.values)
    _say(console, f"{steps} step(s) forecast past {series.source} ({which}): {args.out}")
    if future.bands:
        calibrated = len(next(iter(settings.intervals.values())))
        _say(
            console,
            f"With 80% and 95% conformal intervals for the first {min(calibrated, steps)} "
            "step(s) (calibrated on the validation and test parts' errors; none further out).",
        )
    if args.plot:
        start = forecast.test_start(series, settings)
        title = _title(settings) + f", {steps} steps ahead"
        forecast.plot(Path(args.plot), series, start, title, None, future)
        _say(console, f"Plot written to {args.plot}")
    return 0


def run_generate(args: argparse.Namespace, console: Console) -> int:
    from clearlstm.tasks import text

    model, settings = text.load_char_model(args.model)
    sample = text.generate(
        model, settings.vocabulary, args.prompt, args.length, args.temperature, args.seed
    )
    print(sample)
    return 0


def run_datasets(args: argparse.Namespace, console: Console) -> int:
    console.print(train_report.datasets_table())
    return 0


def run_explain_model(args: argparse.Namespace, console: Console) -> int:
    """``clearlstm explain --model DIR``: a trained model's gates, step by step, on a sequence."""
    import numpy as np
    import torch

    from clearlstm.tasks import forecasting, text
    from clearlstm.tasks.settings import CharModelSettings, read_settings

    found, _ = read_settings(args.model)
    if isinstance(found, CharModelSettings):
        model, lm = text.load_char_model(args.model)
        chars = args.text if args.text is not None else "To be, or not to be"
        trace = model.trace(text.encode(chars, lm.vocabulary)[None])
        inputs = [repr(ch) for ch in chars]
    else:
        if args.text is not None:
            raise ValueError("--text is for text models; give a forecaster --sequence numbers")
        model, settings, directory = forecasting.load_forecaster(args.model)
        data = settings.data
        if model.columns != 1:
            raise ValueError(
                f"this model reads {model.columns} columns ({', '.join(map(repr, data.columns))}); "
                "--sequence gives one value per step, so it explains single-column models only"
            )
        if args.sequence is None:
            values = forecasting.last_window(settings, directory)[:, 0].tolist()
        else:
            values = args.sequence
        scaled = data.scaler.to_scaler().transform(np.array(values)[:, None])  # (T, 1)
        trace = model.trace(torch.as_tensor(scaled, dtype=torch.float32)[None])
        inputs = [f"{v:g}" for v in values]
    console.print(train_report.gates_table(trace, inputs))
    memory = trace.memory_summary()
    console.print(train_report.memory_table(memory, "on this sequence"))
    _say(console, train_report.memory_sentence(memory))
    return 0
