# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""The table of scans a user brings (``subject,path,time`` rows): the one reader of it and of scan times.

``monai-tfm forecast --csv`` and ``monai-tfm prepare series --csv`` both read this table, so the header rule, the
relative-path rule, the subject-id rule and the time rules (a number, finite, no overflow; one file once; distinct
times per subject) live here once. Python's :mod:`csv` does the parsing; nothing in MONAI reads such a table with
per-row checks and line numbers in the messages.
"""

from __future__ import annotations

import csv
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from monai_tfm.utils.errors import MonaiTFMError, one_line

__all__ = ["SCAN_TABLE_COLUMNS", "ScanRow", "parse_series", "parse_time", "read_scan_table"]

#: the columns every scan table has (other columns are ignored unless asked for)
SCAN_TABLE_COLUMNS = ("subject", "path", "time")

_SUBJECT_RE = re.compile(r"[A-Za-z0-9._-]+")


class ScanRow(NamedTuple):
    """One row of a scan table.

    Attributes:
        path: the scan (NIfTI file or DICOM folder), absolute or relative to the working directory (relative paths
            of the table are made relative to the table's folder).
        time: the time cell as written (parse it with :func:`parse_time`).
        line: the line number in the file (1 = header), for messages.
        extra: the optional columns asked for (column -> cell, ``""`` when empty).
    """

    path: str
    time: str
    line: int
    extra: dict[str, str]


def read_scan_table(
    path: str | os.PathLike, optional: Sequence[str] = (), error: type[Exception] = MonaiTFMError
) -> dict[str, list[ScanRow]]:
    """Read a CSV file with a header naming ``subject``, ``path`` and ``time`` (in any order, any case).

    Relative paths are relative to the CSV file's folder. Empty lines are ignored; other columns are ignored unless
    named in ``optional``.

    Args:
        path: the CSV file.
        optional: further columns to return per row (``split``, ``label``); absent columns give empty cells.
        error: the exception class raised (e.g. the forecast's own).

    Returns:
        subject id -> its rows in file order (subjects in order of first appearance).

    Raises:
        error: a missing or unreadable file, missing columns, empty cells or an invalid subject id (named with its
            line).
    """
    csv_path = Path(path)
    if not csv_path.is_file():
        raise error(f"scan table '{path}' does not exist.")
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            rows = list(enumerate(csv.reader(f), start=1))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise error(f"cannot read scan table '{path}': {one_line(e)}") from e
    rows = [(n, r) for n, r in rows if any(c.strip() for c in r)]
    if not rows:
        raise error(f"scan table '{path}' is empty; expected a header 'subject,path,time' and rows.")
    header = [c.strip().lower() for c in rows[0][1]]
    missing = [c for c in SCAN_TABLE_COLUMNS if c not in header]
    if missing:
        raise error(f"scan table '{path}' has no column(s) {missing} in its header {rows[0][1]}.")
    col = {c: header.index(c) for c in SCAN_TABLE_COLUMNS}
    extra_col = {c: header.index(c) for c in optional if c in header}
    table: dict[str, list[ScanRow]] = {}
    for line, row in rows[1:]:
        cells = {c: (row[i].strip() if i < len(row) else "") for c, i in col.items()}
        empty = [c for c, v in cells.items() if not v]
        if empty:
            raise error(f"scan table '{path}' line {line}: empty {empty}.")
        subject = cells["subject"]
        if not _SUBJECT_RE.fullmatch(subject) or subject in (".", ".."):
            raise error(
                f"scan table '{path}' line {line}: subject id {subject!r} must be a file name (letters, digits, "
                "'.', '_', '-')."
            )
        scan = Path(cells["path"])
        scan = scan if scan.is_absolute() else csv_path.parent / scan
        extra = {c: (row[i].strip() if i < len(row) else "") for c, i in extra_col.items()}
        extra.update({c: "" for c in optional if c not in extra})
        table.setdefault(subject, []).append(ScanRow(str(scan), cells["time"], line, extra))
    if not table:
        raise error(f"scan table '{path}' has a header but no rows.")
    return table


def parse_time(value: Any, what: str, error: type[Exception] = MonaiTFMError) -> float:
    """A time given by a user (command line, table cell): a finite number.

    Args:
        value: a number or its text.
        what: what the value is, for the message (``--target-time``, ``the time of scan 'a.nii.gz'``).
        error: the exception class raised.

    Returns:
        the time as a float.

    Raises:
        error: a bool, text that is not a number, a non-finite value or an integer beyond the float range.
    """
    if isinstance(value, bool):
        raise error(f"{what} must be a number, got {value!r}.")
    try:
        t = float(value)
    except OverflowError:  # an integer beyond the float range (e.g. 1 followed by 400 zeros)
        raise error(f"{what} must be a finite number, got an integer of {len(str(value))} digits.") from None
    except (TypeError, ValueError):
        raise error(f"{what} must be a number, got {value!r}.") from None
    if not math.isfinite(t):
        raise error(f"{what} must be finite, got {value!r}.")
    return t


def parse_series(
    paths: Sequence[Any], times: Sequence[Any], who: str, error: type[Exception] = MonaiTFMError
) -> list[tuple[str, float]]:
    """Check one subject's scans and times: one time per scan, each file once, distinct times.

    Args:
        paths: the scans.
        times: their times (numbers or text).
        who: the subject, for messages (``subject 'p1' of 'scans.csv'``, ``--scans``).
        error: the exception class raised.

    Returns:
        ``(path, time)`` pairs in increasing time order.

    Raises:
        error: no scans, a count mismatch, a bad time, the same file twice (also through another spelling or a
            link), or two scans at one time.
    """
    if not paths:
        raise error(f"{who}: no scans given.")
    if len(times) != len(paths):
        raise error(f"{who}: {len(paths)} scans but {len(times)} times ({list(times)}); give one time per scan.")
    pairs = [
        (os.fspath(p), parse_time(t, f"{who}: the time of scan '{os.fspath(p)}'", error)) for p, t in zip(paths, times)
    ]
    first_as: dict[str, str] = {}
    for path, _ in pairs:
        real = os.path.realpath(path)
        if real in first_as:
            raise error(
                f"{who}: '{first_as[real]}' and '{path}' are the same file; give each scan once, at its own time."
            )
        first_as[real] = path
    first_at: dict[float, str] = {}
    for path, t in pairs:
        if t in first_at:
            raise error(f"{who}: scans '{first_at[t]}' and '{path}' have the same time {t:g}; times must differ.")
        first_at[t] = path
    return sorted(pairs, key=lambda pt: pt[1])
