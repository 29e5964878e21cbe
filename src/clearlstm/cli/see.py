"""What ``clearlstm explain``, ``figure``, ``report`` and ``serve`` do once parsed.

:mod:`clearlstm.cli` declares their options; the functions here turn the options into a
:class:`~clearlstm.viz.subject.Subject` (the seed's unit, or a saved model, and a sequence) and
hand it to :mod:`clearlstm.figures`, :mod:`clearlstm.report` or :mod:`clearlstm.server`.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.text import Text

from clearlstm.errors import UsageError
from clearlstm.viz.subject import Subject, read_numbers_csv, statquest_subject

if TYPE_CHECKING:
    from clearlstm.viz.saved_models import SavedModel


def subject_from_args(args: argparse.Namespace, model: SavedModel | None = None) -> Subject:
    """The LSTM and sequence the options name (StatQuest's unit on Company A by default, with
    ``--peephole``'s peepholes where given); ``model``: the saved model ``--model`` names, when
    it is open already."""
    subject = _subject(args, model)
    peephole = getattr(args, "peephole", None)
    if peephole is None:
        return subject
    if args.model is not None:
        raise UsageError("--peephole is for the seed's unit; a saved model has its own")
    from clearlstm.teach.seed import statquest_lstm

    lstm = statquest_lstm(peephole=peephole)
    return dataclasses.replace(subject, name=subject.name + " with peepholes", lstm=lstm)


def _subject(args: argparse.Namespace, model: SavedModel | None) -> Subject:
    given = [k for k in ("sequence", "csv", "text") if getattr(args, k, None) is not None]
    if len(given) > 1:
        raise UsageError(f"give one of --sequence, --csv or --text; got {', '.join(given)}")
    c0 = args.long_term if args.long_term is not None else 0.0
    h0 = args.short_term if args.short_term is not None else 0.0
    if args.model is None:
        if args.text is not None:
            raise UsageError(
                "--text needs --model with a text model; the seed's unit reads "
                "numbers (use --sequence or --csv)"
            )
        if args.csv is not None:
            values = read_numbers_csv(args.csv, args.column)
            return statquest_subject(list(values), c0, h0, source=args.csv)
        return statquest_subject(args.sequence, c0, h0)
    from clearlstm.viz.saved_models import load_saved_model

    model = model or load_saved_model(args.model)
    if args.long_term is not None or args.short_term is not None:
        raise UsageError(
            "--long-term / --short-term set the seed's unit's memories; a saved "
            "model starts from zero memories"
        )
    if args.text is not None:
        path = Path(args.text)
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise UsageError(f"{path} is not UTF-8 text") from None
        return model.subject_from_text(text.rstrip("\n"), source=str(path))
    if args.csv is not None:
        return model.subject_from_csv(args.csv)
    if args.sequence is not None:
        return model.subject_from_numbers(args.sequence)
    example = model.example  # the end of its training data, where that is still there
    if example is None:
        what = "--text FILE" if model.reads_text else "--sequence or --csv FILE"
        raise UsageError(f"model {model.name!r}: give the sequence to read with {what}")
    if isinstance(example, str):
        return model.subject_from_text(example, source="the start of its training text")
    return model.subject_from_numbers(example, source="the end of its training series")


def run_explain(args: argparse.Namespace, console: Console) -> int:
    """``clearlstm explain``: the seed's walkthrough (with ``--peephole``'s peepholes), or a
    saved model's gates with ``--model``."""
    from clearlstm.teach import explain

    if args.model is not None:
        if args.peephole is not None:
            raise UsageError("--peephole is for the seed's unit; a saved model has its own")
        from clearlstm.cli import commands

        return commands.run_explain_model(args, console)
    single = args.sequence is None
    inputs = [args.input] if single else args.sequence
    c0 = args.long_term if args.long_term is not None else (2.0 if single else 0.0)
    h0 = args.short_term if args.short_term is not None else (1.0 if single else 0.0)
    unit = None
    if args.peephole is not None:
        from clearlstm.teach.seed import statquest_lstm

        unit = statquest_lstm(peephole=args.peephole)
    walk = explain.explain_sequence(inputs, c0, h0, unit)
    if args.json:
        print(explain.to_json(walk))
    else:
        explain.render(walk, console)
    return 0


def run_figure(args: argparse.Namespace, console: Console) -> int:
    from clearlstm.teach.explain import explain_sequence
    from clearlstm.viz import figures

    out = Path(args.out or f"clearlstm-{args.kind}.png")
    if args.kind == "unit":
        if args.model is None and args.sequence is None and args.csv is None:
            # The series' single step, as `clearlstm explain` shows it.
            args.sequence = [args.input]
            args.long_term = 2.0 if args.long_term is None else args.long_term
            args.short_term = 1.0 if args.short_term is None else args.short_term
        subject = subject_from_args(args)
        weights = subject.weights
        if weights is None:
            raise UsageError(
                "the unit diagram draws a one-unit LSTM (LSTM(1, 1)), plain or with "
                "peepholes; this model has more units or another variant: use `figure "
                "heatmap` or `figure retention`"
            )
        values = subject.inputs[:, 0, 0].tolist()  # what the unit reads (scaled for a model)
        walk = explain_sequence(values, subject.c0, subject.h0, subject.lstm)
        step = _step_index(args.step, len(walk.steps), "--step")
        fig = figures.unit_diagram(walk.steps[step], weights)
    else:
        subject = subject_from_args(args)
        trace = subject.run()
        _check_layer(args, trace.num_layers, trace.num_directions)
        if args.kind == "heatmap":
            fig = figures.gate_heatmaps(
                trace,
                subject.shown,
                layer=args.layer,
                direction=args.direction,
                step_labels=subject.step_labels,
            )
        else:
            start = _step_index(args.start, trace.steps, "--start")
            fig = figures.retention_curves(trace, start, layer=args.layer, direction=args.direction)
    path = figures.save_figure(fig, out)
    plain(console, f"wrote {path} ({path.stat().st_size:,} bytes)")
    return 0


def plain(console: Console, text: str) -> None:
    """Print ``text`` as it is: a path holding ``[red]`` or ``:smile:`` is no markup."""
    console.print(text, markup=False, emoji=False, highlight=False)


def _step_index(step: int, steps: int, option: str) -> int:
    """``--step 1`` is the first step; returns the 0-based index."""
    if not 1 <= step <= steps:
        raise UsageError(
            f"{option} must be between 1 and {steps} (the sequence's steps); got {step}"
        )
    return step - 1


def _check_layer(args: argparse.Namespace, layers: int, directions: int) -> None:
    if not -layers <= args.layer < layers:
        raise UsageError(
            f"--layer must be in [0, {layers - 1}] (or -1 for the last); got {args.layer}"
        )
    if not 0 <= args.direction < directions:
        raise UsageError(
            f"--direction must be 0{' or 1' if directions == 2 else ''} for this "
            f"model; got {args.direction}"
        )


def run_report(args: argparse.Namespace, console: Console) -> int:
    from clearlstm.files import write_atomically
    from clearlstm.viz.report import build_report

    out = Path(args.out)
    if not out.parent.is_dir():
        raise UsageError(f"--out {out}: folder {out.parent} does not exist")
    analysis = model = None
    if args.model is not None:
        from clearlstm.viz.saved_models import load_saved_model

        model = load_saved_model(args.model)
    subject = subject_from_args(args, model)
    if model is not None:
        from clearlstm.cli.report_summary import print_summary
        from clearlstm.viz.cell_analysis import analyse

        given = any(getattr(args, k) is not None for k in ("text", "csv", "sequence"))
        analysis = analyse(model, subject, given)
        print_summary(console, analysis)
    document = build_report(subject, image_format=args.images, analysis=analysis)
    write_atomically(out, document.encode("utf-8"))
    plain(console, f"wrote {out} ({out.stat().st_size:,} bytes): open it in any browser")
    return 0


def run_serve(args: argparse.Namespace, console: Console) -> int:
    from clearlstm.web.server import ExplorerServer

    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be between 0 and 65535; got {args.port}")
    if args.verbose:  # uvicorn's log lines and every request, on stderr
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        for name in ("uvicorn", "clearlstm.web"):
            logging.getLogger(name).addHandler(handler)
            logging.getLogger(name).setLevel(logging.INFO)
    server = ExplorerServer(args.host, args.port, args.models, verbose=args.verbose)
    # Ctrl-C (and a plain `kill`) stop the server cleanly, even when the shell that started
    # it in the background told it to ignore SIGINT; a second Ctrl-C stops it at once.
    signal.signal(signal.SIGINT, lambda signum, frame: server.stop())
    signal.signal(signal.SIGTERM, lambda signum, frame: server.stop())
    plain(console, f"clearlstm explorer: {server.url}  (Ctrl-C stops it)")
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        note = f" listening on {args.host}: other machines may reach it"
        console.print(Text.assemble(("note:", "yellow"), note), markup=False, emoji=False)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    console.print("stopped")
    return 0
