"""Numeric series from CSV files: reading, checking, splitting in time, scaling and windowing.

A CSV file has a header line and one row per time step. Some columns are *targets* (the
values to forecast), some optional *covariates* (extra inputs the model reads but does not
forecast), and an optional *time column* (labels such as ``1958-03``, kept for output only).

Every user mistake raises :class:`SeriesError` (a ``ValueError``) naming the file, the line
or the column, and what to do. Shapes: ``N`` rows, ``C`` columns (targets first, then
covariates), ``K`` targets, ``W`` window, ``H`` horizon, ``S`` samples.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from clearlstm.errors import SeriesError
from clearlstm.tasks.covariates import Ahead, split_ahead
from clearlstm.tasks.transforms import Transform

FillMethod = Literal["previous", "linear"]
FILL_METHODS: tuple[str, ...] = ("previous", "linear")
TIME_COLUMN_NAMES = ("time", "date", "datetime", "timestamp", "year", "month", "week", "day")
MISSING = ("", "na", "nan", "null", "none", "n/a", "-")
# Larger values would overflow float64 when squared (a variance, a squared error).
MAX_MAGNITUDE = 1e150
MAX_SCALED = 1e15  # standard deviations from the mean: squared, still finite in float32


@dataclass(frozen=True)
class Series:
    """The columns a model uses, read from one file."""

    source: str  # the file (or bundled dataset) it came from
    targets: list[str]
    covariates: list[str]
    values: np.ndarray  # (N, C) float64: targets, past covariates, future covariates
    time: list[str] | None  # (N,) labels from the time column, if there is one
    time_column: str | None = None
    future_covariates: list[str] = field(default_factory=list)  # known for the forecast too
    ahead: Ahead | None = None  # their rows after the last target value (for forecasts)

    @property
    def columns(self) -> list[str]:
        return self.targets + self.covariates + self.future_covariates

    def __len__(self) -> int:
        return self.values.shape[0]


def read_series(
    path: str | Path,
    targets: list[str] | None = None,
    covariates: list[str] | None = None,
    time_column: str | None = None,
    fill: FillMethod | None = None,
    future_covariates: list[str] | None = None,
) -> Series:
    """Read a CSV file's target, covariate, future covariate and time columns.

    Without ``targets`` the file must have exactly one column besides the time column and the
    covariates. Without ``time_column`` a first column named like a time (``date``, ``year``,
    ...) is taken as one. Missing values (empty, ``NA``, ...) are an error naming their lines
    unless ``fill`` is ``"previous"`` or ``"linear"``; with ``future_covariates``, rows at the
    end with empty targets are their rows ``ahead`` (:mod:`clearlstm.tasks.covariates`).
    """
    path = Path(path)
    header, rows, lines = _read_rows(path)
    _check_unique(path, header)
    if time_column is None and header[0].strip().lower() in TIME_COLUMN_NAMES:
        time_column = header[0]
    covariates, future = list(covariates or []), list(future_covariates or [])
    named = [*(targets or []), *covariates, *future, *([time_column] if time_column else [])]
    for name in named:
        if name not in header:
            raise SeriesError(
                f"{path}: no column named {name!r}; the columns are {', '.join(header)}"
            )
    if targets is None:
        rest = [c for c in header if c != time_column and c not in covariates + future]
        if len(rest) != 1:
            raise SeriesError(
                f"{path}: say which column to forecast with --target; candidates: "
                f"{', '.join(rest) or '(none)'}"
            )
        targets = rest
    columns = [*targets, *covariates, *future]
    twice = {c for i, c in enumerate(columns) if c in columns[:i]} | set(targets) & {time_column}
    if twice:
        raise SeriesError(f"{path}: column {sorted(twice)[0]!r} is used twice")
    values = np.empty((len(rows), len(columns)))
    for j, name in enumerate(columns):
        values[:, j] = _parse_column(path, name, [r[header.index(name)] for r in rows], lines)
    time = [r[header.index(time_column)] for r in rows] if time_column else None
    values, lines, time, ahead = split_ahead(path, values, lines, time, targets, future)
    missing = np.isnan(values)
    if missing.any():
        if fill is None:
            _raise_missing(path, columns, missing, lines)
        values = _fill(values, fill)
    return Series(str(path), list(targets), covariates, values, time, time_column, future, ahead)


def _read_rows(path: Path) -> tuple[list[str], list[list[str]], list[int]]:
    """Header, data rows and each row's line number."""
    if not path.exists():
        raise SeriesError(f"{path}: no such file")
    if path.is_dir():
        raise SeriesError(f"{path} is a directory; expected a CSV file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise SeriesError(
            f"{path} is not UTF-8 text (byte {error.object[error.start]:#04x} at offset "
            f"{error.start}); is it a CSV file?"
        ) from None
    if not text.strip():
        raise SeriesError(f"{path} is empty; expected a header line and one row per step")
    reader = csv.reader(text.splitlines())
    header = [h.strip() for h in next(reader)]
    rows, lines = [], []
    for row in reader:
        if not any(cell.strip() for cell in row):
            continue  # blank line
        if len(row) != len(header):
            raise SeriesError(
                f"{path}, line {reader.line_num}: {len(row)} fields; the header has "
                f"{len(header)} ({', '.join(header)})"
            )
        rows.append(row)
        lines.append(reader.line_num)
    if not rows:
        raise SeriesError(f"{path} has a header but no rows of data")
    return header, rows, lines


def _check_unique(path: Path, header: list[str]) -> None:
    seen = set()
    for name in header:
        if name in seen:
            raise SeriesError(f"{path}: the header names column {name!r} twice; rename one")
        seen.add(name)


def _parse_column(path: Path, name: str, cells: list[str], lines: list[int]) -> np.ndarray:
    """(N,) float64, NaN where the cell is missing."""
    out = np.empty(len(cells))
    for i, cell in enumerate(cells):
        text = cell.strip()
        if text.lower() in MISSING:
            out[i] = math.nan
            continue
        try:
            out[i] = float(text)
        except ValueError:
            raise SeriesError(
                f"{path}, line {lines[i]}, column {name!r}: {cell!r} is not a number; "
                "choose numeric columns with --target / --covariates (a time column goes "
                "in --time-column)"
            ) from None
        if not math.isfinite(out[i]):
            raise SeriesError(
                f"{path}, line {lines[i]}, column {name!r}: value {text} is not a finite number"
            )
        if abs(out[i]) > MAX_MAGNITUDE:
            raise SeriesError(
                f"{path}, line {lines[i]}, column {name!r}: value {text} is too large: values "
                "must lie within +-1e150, where their squares stay finite; rescale the column"
            )
    known = out[~np.isnan(out)]
    if known.size and not math.isfinite(float(known.std())):
        raise SeriesError(
            f"{path}, column {name!r}: its standard deviation overflows float64; rescale "
            "the column (divide it by a power of ten)"
        )
    return out


def _raise_missing(path: Path, columns: list[str], missing: np.ndarray, lines: list[int]) -> None:
    j = int(np.argmax(missing.any(axis=0)))
    rows = np.flatnonzero(missing[:, j])
    shown = ", ".join(str(lines[i]) for i in rows[:8]) + (" ..." if len(rows) > 8 else "")
    raise SeriesError(
        f"{path}, column {columns[j]!r}: {len(rows)} missing value(s) on line(s) {shown}; "
        "fill them in the file, or pass --fill previous (carry the last value forward) or "
        "--fill linear (interpolate)"
    )


def _fill(values: np.ndarray, method: FillMethod) -> np.ndarray:
    """Fill NaN in each column of ``(N, C)``; leading gaps take the first known value."""
    out = values.copy()
    steps = np.arange(len(out))
    for j in range(out.shape[1]):
        known = ~np.isnan(out[:, j])
        if not known.any():
            raise SeriesError(f"column {j} has no values at all; nothing to fill from")
        if method == "linear":
            out[:, j] = np.interp(steps, steps[known], out[known, j])
        else:
            last = np.maximum.accumulate(np.where(known, steps, -1))
            first = int(np.argmax(known))
            out[:, j] = out[np.where(last >= 0, last, first), j]
    return out


@dataclass(frozen=True)
class Split:
    """Chronological parts: rows ``[0, train)``, ``[train, train + val)``, the rest test."""

    train: int
    val: int
    test: int

    @property
    def test_start(self) -> int:
        return self.train + self.val


def split_sizes(n: int, val_fraction: float, test_fraction: float) -> Split:
    """Sizes of the three chronological parts of ``n`` rows."""
    test = max(1, round(n * test_fraction))
    val = max(1, round(n * val_fraction))
    return Split(n - val - test, val, test)


def check_length(
    series: Series, window: int, horizon: int, val_fraction: float, test_fraction: float
) -> Split:
    """The split, or a clear error when the series is too short for the window and horizon.

    Each part needs at least one forecast origin: the training part a whole window and
    horizon, the validation and test parts a whole horizon.
    """
    for name, value in (("window", window), ("horizon", horizon)):
        if value < 1:
            raise SeriesError(f"--{name} must be at least 1 step; got {value}")
    for name, value in (("val-fraction", val_fraction), ("test-fraction", test_fraction)):
        if not 0 < value < 0.5:
            raise SeriesError(f"--{name} must be between 0 and 0.5; got {value}")

    def fits(n: int) -> bool:
        s = split_sizes(n, val_fraction, test_fraction)
        return s.train >= window + horizon and s.val >= horizon and s.test >= horizon

    n = len(series)
    if not fits(n):
        # Rounding moves each part by under one row: the least length lies between these.
        rest, wh = 1 - val_fraction - test_fraction, window + horizon
        low = math.floor(max((wh - 1) / rest, (horizon - 0.5) / min(val_fraction, test_fraction)))
        high = math.ceil(max((wh + 1) / rest, (horizon + 0.5) / min(val_fraction, test_fraction)))
        need = next((m for m in range(max(n, low), high + 2) if fits(m)), high)
        raise SeriesError(
            f"{series.source}: {n} rows are too few for --window {window} and --horizon "
            f"{horizon}: the training part needs window + horizon rows and the validation "
            f"and test parts ({val_fraction:.0%} and {test_fraction:.0%}) a horizon each, "
            f"so at least {need} rows; use a shorter --window or --horizon, or a longer series"
        )
    return split_sizes(n, val_fraction, test_fraction)


@dataclass(frozen=True)
class Scaler:
    """Per-column standardisation fitted on the training part only, after an optional
    transform of the leading (target) columns (:class:`~clearlstm.tasks.transforms.Transform`:
    log or Box-Cox); the mean and standard deviation are then the transformed values'."""

    mean: list[float]  # (C,)
    std: list[float]  # (C,)
    target_transform: Transform = field(default_factory=lambda: Transform("none"))

    def __post_init__(self) -> None:
        numbers = np.asarray([*self.mean, *self.std], dtype=np.float64)
        if not np.isfinite(numbers).all() or min(self.std, default=1.0) <= 0:
            raise SeriesError(
                f"a scaler needs finite means and standard deviations above 0; got mean "
                f"{self.mean} and std {self.std}"
            )

    @classmethod
    def fit(cls, values: np.ndarray, transform: Transform | None = None) -> Scaler:
        """Fit on ``(N_train, C)``; a constant column gets std 1."""
        transform = transform or Transform("none")
        values = _apply(transform.forward, values, transform)
        std = values.std(axis=0)
        return cls(values.mean(axis=0).tolist(), np.where(std > 0, std, 1.0).tolist(), transform)

    def transform(self, values: np.ndarray) -> np.ndarray:
        """``(N, C') -> (N, C')`` for the first ``C'`` columns; a value more than
        :data:`MAX_SCALED` standard deviations from the mean is an error (its squared error
        would overflow the model's float32)."""
        c = values.shape[-1]
        moved = _apply(self.target_transform.forward, values, self.target_transform)
        scaled = (moved - np.array(self.mean[:c])) / np.array(self.std[:c])
        far = ~(np.abs(scaled) <= MAX_SCALED)  # NaN counts as far
        if far.any():
            row, j = np.argwhere(far.reshape(-1, c))[0]
            raise SeriesError(
                f"column {j + 1} (targets first, then covariates): value "
                f"{values.reshape(-1, c)[row, j]:g} lies more than {MAX_SCALED:g} standard "
                f"deviations ({self.std[j]:g}) from the training part's mean "
                f"({self.mean[j]:g}): too far to train on or forecast; check the data's units"
            )
        return scaled

    def inverse(self, scaled: np.ndarray) -> np.ndarray:
        """``(..., C') -> (..., C')`` back in the data's units, for the first ``C'`` columns."""
        c = scaled.shape[-1]
        moved = scaled * np.array(self.std[:c]) + np.array(self.mean[:c])
        return _apply(self.target_transform.inverse, moved, self.target_transform)


def _apply(
    function: Callable[[np.ndarray], np.ndarray], values: np.ndarray, transform: Transform
) -> np.ndarray:
    """``function`` on the leading columns of ``(..., C')`` that ``transform`` covers."""
    k = min(len(transform.lambdas or ()), values.shape[-1])
    if k == 0:
        return values
    out = np.array(values, dtype=float, copy=True)
    out[..., :k] = function(out[..., :k])
    return out


def origins(split: Split, part: str, n: int, window: int, horizon: int) -> np.ndarray:
    """Forecast origins ``t`` of one part: the model reads rows ``[t - W, t)`` and forecasts
    rows ``[t, t + H)``, which lie wholly inside the part (the window may reach back)."""
    start, stop = {
        "train": (0, split.train),
        "val": (split.train, split.test_start),
        "test": (split.test_start, n),
    }[part]
    return np.arange(max(start, window), stop - horizon + 1)


def windows(
    scaled: np.ndarray, starts: np.ndarray, window: int, horizon: int, targets: int
) -> tuple[np.ndarray, np.ndarray]:
    """Inputs ``(S, W, C)`` and truths ``(S, H, K)`` at the given origins."""
    x = np.stack([scaled[t - window : t] for t in starts])
    y = np.stack([scaled[t : t + horizon, :targets] for t in starts])
    return x, y


def choose_split(
    series: Series,
    window: int,
    horizon: int,
    val_size: int | None = None,
    test_size: int | None = None,
    test_start: str | None = None,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
) -> Split:
    """The split a user asked for: ``--test-size N`` rows or ``--test-start LABEL`` (a time
    label, or a row number without a time column) and ``--val-size N``; the fractions only
    for what is not given. A clear error when a part cannot hold a window or a horizon."""
    if val_size is None and test_size is None and test_start is None:
        return check_length(series, window, horizon, val_fraction, test_fraction)
    if test_size is not None and test_start is not None:
        raise SeriesError("give --test-size or --test-start, not both")
    n = len(series)
    if test_start is not None:
        labels = series.time or [str(i) for i in range(n)]
        where = [i for i, label in enumerate(labels) if label.strip() == test_start.strip()]
        if not where:
            kind = "time label" if series.time else "row number (the file has no time column)"
            raise SeriesError(
                f"--test-start {test_start!r}: no such {kind} in {series.source}; its rows run "
                f"from {labels[0]!r} to {labels[-1]!r}"
            )
        test = n - where[0]
    else:
        test = test_size if test_size is not None else max(1, round(n * test_fraction))
    val = val_size if val_size is not None else max(1, round(n * val_fraction))
    flag = "--test-start" if test_start is not None else "--test-size"
    if test < horizon:
        raise SeriesError(
            f"{flag}: the test part has {test} row(s); it needs at least --horizon ({horizon}) "
            "for one forecast origin"
        )
    if val < horizon:
        raise SeriesError(
            f"--val-size must be at least --horizon ({horizon}) rows for one validation "
            f"origin; got {val}"
        )
    train = n - val - test
    if train < window + horizon:
        raise SeriesError(
            f"{series.source}: {n} rows leave {train} for training after a validation part of "
            f"{val} and a test part of {test}; training needs at least window + horizon "
            f"({window + horizon}); use a smaller {flag} or --val-size, or a shorter --window"
        )
    return Split(train, val, test)
