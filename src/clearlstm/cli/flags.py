"""argparse ``type=`` functions: every numeric flag is checked while the command line is parsed.

Text that is not a number at all is argparse's usage error (exit code 2). A number outside
the flag's range raises :class:`FlagError`, which argparse lets through (it is no
``ValueError``), so ``clearlstm`` prints one line naming the flag, the range and the value and
exits with 1, as for every other value it refuses. Imports nothing heavy: ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable

from clearlstm.errors import ClearLSTMError

# Values whose square would overflow float64 (a scaler's variance, a squared error).
MAX_MAGNITUDE = 1e150
MAX_LIST = 100_000  # steps in a --sequence: clearlstm.viz.subject.MAX_STEPS
MAX_SEED = 2**32 - 1  # what numpy and torch both accept
MAX_THREADS = (os.cpu_count() or 64) * 4


class FlagError(ClearLSTMError):
    """A flag's value is a number outside its range (not a ValueError: argparse would replace
    the message with its own 'invalid value')."""


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer; got {text!r}") from None


def integer(flag: str, low: int, high: int | None = None) -> Callable[[str], int]:
    """An integer ``low <= n`` (``<= high`` when given)."""

    def parse(text: str) -> int:
        value = _int(text)
        if high is None and value < low:
            raise FlagError(f"{flag} must be at least {low}; got {value}")
        if high is not None and not low <= value <= high:
            raise FlagError(f"{flag} must be an integer from {low} to {high}; got {value}")
        return value

    parse.__name__ = "integer"
    return parse


def finite_float(text: str) -> float:
    """argparse type: a finite number."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number; got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number; got {text!r}")
    return value


def _show(x: float) -> str:
    return f"{x:g}".replace("e+", "e")


def number(
    flag: str,
    *,
    above: float | None = None,
    low: float | None = None,
    high: float = MAX_MAGNITUDE,
) -> Callable[[str], float]:
    """A finite number ``> above`` (or ``>= low``, default -MAX_MAGNITUDE) and ``<= high``."""
    if above is None and low is None:
        low = -MAX_MAGNITUDE

    def parse(text: str) -> float:
        value = finite_float(text)
        too_low = value <= above if above is not None else value < low  # type: ignore[operator]
        if not too_low and value <= high:
            return value
        if above is not None:
            whole = f"greater than {_show(above)} and at most {_show(high)}"
        else:
            whole = f"from {_show(low)} to {_show(high)}"  # type: ignore[arg-type]
        raise FlagError(f"{flag} must be a finite number {whole}; got {text}")

    parse.__name__ = "number"
    return parse


def number_list(flag: str) -> Callable[[str], list[float]]:
    """Comma-separated finite numbers, 1 to MAX_LIST of them, each within +-MAX_MAGNITUDE."""

    def parse(text: str) -> list[float]:
        parts = [p.strip() for p in text.split(",")]
        if not text.strip() or any(not p for p in parts):
            raise argparse.ArgumentTypeError(
                f"expected comma-separated numbers such as 0,0.5,0.25,1; got {text!r}"
            )
        if len(parts) > MAX_LIST:
            raise FlagError(f"{flag}: {len(parts)} numbers; at most {MAX_LIST} are read")
        values = []
        for i, part in enumerate(parts, 1):
            try:
                value = finite_float(part)
            except argparse.ArgumentTypeError as error:
                raise argparse.ArgumentTypeError(f"number {i}: {error}") from None
            if abs(value) > MAX_MAGNITUDE:
                raise FlagError(
                    f"{flag}: number {i} ({part}) is too large: values must lie within "
                    f"+-{_show(MAX_MAGNITUDE)}, where their squares stay finite"
                )
            values.append(value)
        return values

    parse.__name__ = "number list"
    return parse


def temperature(text: str) -> float:
    """0 (always the likeliest character) or a number from 0.01 to 100: below 0.01 the
    scaled logits overflow."""
    value = finite_float(text)
    if value != 0 and not 0.01 <= value <= 100:
        raise FlagError(
            "--temperature must be 0 (always the likeliest character) or a finite number "
            f"from 0.01 to 100; got {text}"
        )
    return value
