"""Small saved models for the tests, made the way a user makes them: `clearlstm train`."""

from __future__ import annotations

import math
from pathlib import Path

from clearlstm.cli.main import main


def _train(*args: str) -> None:
    # In-process: the same command line a user types, without a second torch start-up.
    assert main(["train", "--epochs", "1", "--seed", "0", *args]) == 0


def make_forecaster(folder: Path, name: str = "wave") -> Path:
    """A one-column forecaster with 6 units, trained for one epoch on a sine wave."""
    csv = folder / f"{name}.csv"
    rows = "\n".join(f"{math.sin(t / 4):.4f}" for t in range(80))
    csv.write_text(f"y\n{rows}\n")
    out = folder / "models" / name
    _train(
        "--csv",
        str(csv),
        "--hidden-size",
        "6",
        "--ensemble",
        "1",
        "--window",
        "8",
        "--out",
        str(out),
    )
    return out


def make_text_model(folder: Path, name: str = "words", words: str | None = None) -> Path:
    """A character model with 8 units, trained for one epoch on a short text (``words``, by
    default a line of Hamlet 30 times)."""
    text = folder / f"{name}.txt"
    text.write_text(words or "to be or not to be that is the question\n" * 30)
    out = folder / "models" / name
    _train("--text", str(text), "--hidden-size", "8", "--out", str(out))
    return out
