"""Many series in one long-format CSV file: a row per series and time step, an id column
naming the series each row belongs to (``store,date,sales``).

:func:`read_panel` groups the rows by id (in order of first appearance), sorts each group by
its time column when there is one, and gives one :class:`~clearlstm.tasks.series.Series` per
id, read and checked as :func:`~clearlstm.tasks.series.read_series` reads one: numbers,
missing values (filled within a series, never across two), time labels. The ids are
untrusted strings from a file: at most :data:`MAX_SERIES` of them, each at most
:data:`MAX_ID_CHARS` printable characters, never empty; they name series in messages and
output files, never a path. Shapes: ``N`` rows of a series, ``C`` columns.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clearlstm.errors import SeriesError
from clearlstm.tasks.series import (
    TIME_COLUMN_NAMES,
    FillMethod,
    Series,
    _check_unique,
    _fill,
    _parse_column,
    _raise_missing,
    _read_rows,
)

MAX_SERIES = 10_000
MAX_ID_CHARS = 100


@dataclass(frozen=True)
class Panel:
    """The series of one long-format file, one per id."""

    source: str  # the file
    id_column: str
    ids: list[str]  # in order of first appearance
    series: list[Series]  # one per id; each one's ``source`` names the file and the id

    def __len__(self) -> int:
        return len(self.ids)


def check_id(value: str, where: str) -> str:
    """``value`` stripped, or a :class:`SeriesError` naming ``where`` when it is no usable id:
    empty, longer than :data:`MAX_ID_CHARS`, or holding characters that do not print."""
    text = value.strip()
    if not text:
        raise SeriesError(f"{where}: the id is empty; every row needs the id of its series")
    if len(text) > MAX_ID_CHARS:
        raise SeriesError(
            f"{where}: the id has {len(text)} characters; ids may have at most {MAX_ID_CHARS}"
        )
    if not text.isprintable():
        raise SeriesError(f"{where}: the id {text!r} holds characters that do not print")
    return text


def read_panel(
    path: str | Path,
    id_column: str,
    targets: list[str] | None = None,
    covariates: list[str] | None = None,
    time_column: str | None = None,
    fill: FillMethod | None = None,
) -> Panel:
    """The series of a long-format CSV file, grouped by ``id_column``.

    Columns are chosen as :func:`~clearlstm.tasks.series.read_series` chooses them (the id
    column is never a target). Within a series the rows are sorted by the time column (as
    numbers when every label is one, else as text, which orders ISO dates); two rows of one
    series at the same time are an error naming both lines.
    """
    path = Path(path)
    header, rows, lines = _read_rows(path)
    _check_unique(path, header)
    if id_column not in header:
        raise SeriesError(
            f"{path}: --id-column {id_column!r}: no such column; the columns are "
            f"{', '.join(header)}"
        )
    if time_column is None and header[0] != id_column:
        time_column = header[0] if header[0].strip().lower() in TIME_COLUMN_NAMES else None
    covariates = list(covariates or [])
    for name in [*(targets or []), *covariates, *([time_column] if time_column else [])]:
        if name not in header:
            raise SeriesError(
                f"{path}: no column named {name!r}; the columns are {', '.join(header)}"
            )
    if targets is None:
        rest = [c for c in header if c not in (id_column, time_column, *covariates)]
        if len(rest) != 1:
            raise SeriesError(
                f"{path}: say which column to forecast with --target; candidates: "
                f"{', '.join(rest) or '(none)'}"
            )
        targets = rest
    used = [*targets, *covariates, *([time_column] if time_column else [])]
    twice = {n for n in used if used.count(n) > 1} | ({id_column} & set(used))
    if twice:
        raise SeriesError(f"{path}: column {sorted(twice)[0]!r} is used twice")
    columns = [*targets, *covariates]
    values = np.empty((len(rows), len(columns)))
    for j, name in enumerate(columns):
        values[:, j] = _parse_column(path, name, [r[header.index(name)] for r in rows], lines)
    groups = _groups(path, id_column, [r[header.index(id_column)] for r in rows], lines)
    times = [r[header.index(time_column)].strip() for r in rows] if time_column else None
    numeric = times is not None and all(_is_number(t) for t in times)
    series = []
    for name, members in groups.items():
        where = f"{path}, {id_column} {name!r}"
        if times is not None:
            key = (lambda i: float(times[i])) if numeric else (lambda i: times[i])
            members = sorted(members, key=key)  # stable: equal times keep the file's order
            for a, b in itertools.pairwise(members):
                if key(a) == key(b):
                    raise SeriesError(
                        f"{where}: two rows at time {times[b]!r} (lines {lines[a]} and "
                        f"{lines[b]}); each series needs one row per time step"
                    )
        part = values[members]
        if np.isnan(part).any():
            if fill is None:
                _raise_missing(Path(where), columns, np.isnan(part), [lines[i] for i in members])
            part = _fill(part, fill)
        labels = [times[i] for i in members] if times is not None else None
        series.append(Series(where, list(targets), covariates, part, labels, time_column))
    return Panel(str(path), id_column, list(groups), series)


def _groups(path: Path, id_column: str, cells: list[str], lines: list[int]) -> dict[str, list]:
    """Id -> its rows' indices, in order of first appearance, the ids checked."""
    groups: dict[str, list[int]] = {}
    for i, cell in enumerate(cells):
        name = check_id(cell, f"{path}, line {lines[i]}, column {id_column!r}")
        if name not in groups and len(groups) == MAX_SERIES:
            raise SeriesError(
                f"{path}, line {lines[i]}: more than {MAX_SERIES} series (ids in column "
                f"{id_column!r}); one model trains on at most {MAX_SERIES}: split the file"
            )
        groups.setdefault(name, []).append(i)
    return groups


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False
