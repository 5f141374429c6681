# Copyright (c) monai_tfm contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""Evaluation reports (docs/method.md section 7): per-sample CSV, per-method summaries and the over-runs table.

A *row* is one evaluated sample: a dict with the keys ``subject``, ``draw``, ``target_time`` and one
``<method>_<metric>`` key per method and metric (e.g. ``model_psnr``, ``lci_psnr``); see :py:func:`make_row`.

A *summary* (:py:func:`summarise`) maps ``method -> metric -> {"mean", "std", "median", "n"}``. Statistics skip
``nan`` values (e.g. ``change_rmse`` of a sample without change region) and ``n`` counts the values used; ``std`` uses
``ddof=1`` and is ``nan`` when ``n < 2``; ``inf`` values (``psnr`` of a perfect forecast) are kept, so they propagate.

A *runs summary* (:py:func:`aggregate_runs`) maps ``method -> metric -> {"mean", "std", "n_runs"}``: the mean and
std (``ddof=1``) over runs (seeds or folds) of each run's mean, the papers' Table 2 format.

Every writer is atomic (a temporary file in the destination folder, then :py:func:`os.replace`) and refuses to
replace an existing file unless ``overwrite=True``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from monai_tfm.metrics.forecast import FORECAST_METRICS, HIGHER_IS_BETTER
from monai_tfm.utils.errors import MonaiTFMError
from monai_tfm.utils.io import atomic_write_text

__all__ = [
    "LCI",
    "ROW_KEYS",
    "aggregate_runs",
    "format_runs_markdown",
    "format_summary_markdown",
    "make_row",
    "paired_gain",
    "read_per_sample_csv",
    "summarise",
    "write_per_sample_csv",
    "write_summary",
]

logger = logging.getLogger(__name__)

LCI = "lci"
"""Method name of the last-context-image baseline, always part of a summary."""

ROW_KEYS: tuple[str, ...] = ("subject", "draw", "target_time")
"""Identifying keys of a per-sample row, written first in the CSV."""

Summary = dict[str, dict[str, dict[str, float]]]


def _methods_with_lci(methods: Iterable[str]) -> list[str]:
    out = list(dict.fromkeys(methods))
    if LCI not in out:
        out.append(LCI)
    return out


def make_row(
    subject: str, draw: int, target_time: float, method_metrics: Mapping[str, Mapping[str, float]]
) -> dict[str, Any]:
    """Build one per-sample row from the metric dicts of each method.

    Args:
        subject: subject id.
        draw: draw index (-1 for a random draw).
        target_time: time of the forecast frame.
        method_metrics: ``method -> metric -> value``, e.g. ``{"model": compute_forecast_metrics(...), "lci": ...}``.

    Returns:
        a dict with ``subject``, ``draw``, ``target_time`` and ``<method>_<metric>`` keys.
    """
    row: dict[str, Any] = {"subject": str(subject), "draw": int(draw), "target_time": float(target_time)}
    for method, values in method_metrics.items():
        for metric, value in values.items():
            row[f"{method}_{metric}"] = float(value)
    return row


def _stats(values: Sequence[float]) -> dict[str, float]:
    arr = np.asarray(values, dtype=np.float64)
    arr = arr[~np.isnan(arr)]
    n = int(arr.size)
    if n == 0:
        return {"mean": math.nan, "std": math.nan, "median": math.nan, "n": 0}
    with np.errstate(invalid="ignore"):
        mean = float(np.mean(arr))
        std = float(np.std(arr, ddof=1)) if n > 1 else math.nan
        median = float(np.median(arr))
    return {"mean": mean, "std": std, "median": median, "n": n}


def summarise(
    rows: Sequence[Mapping[str, Any]],
    metrics: Sequence[str] = FORECAST_METRICS,
    methods: Sequence[str] = ("model",),
) -> Summary:
    """Mean, std (ddof=1) and median of each metric for each method over per-sample rows.

    ``nan`` values are skipped (``n`` says how many values were used). The LCI baseline is always included (added
    last when ``methods`` lacks it).

    Args:
        rows: per-sample rows with ``<method>_<metric>`` keys (numbers or numeric strings, e.g. read back from CSV).
        metrics: metric names to summarise.
        methods: method names (the prefixes of the row keys).

    Returns:
        ``method -> metric -> {"mean", "std", "median", "n"}``, in the order of ``methods`` and ``metrics``.

    Raises:
        ValueError: when ``rows`` is empty.
        KeyError: when a row lacks a ``<method>_<metric>`` key.
    """
    if len(rows) == 0:
        raise MonaiTFMError("cannot summarise an empty list of rows.")
    summary: Summary = {}
    for method in _methods_with_lci(methods):
        summary[method] = {}
        for metric in metrics:
            key = f"{method}_{metric}"
            values = []
            for i, row in enumerate(rows):
                if key not in row:
                    raise KeyError(f"row {i} has no key {key!r} (keys: {sorted(row)}).")
                value = row[key]
                values.append(math.nan if value is None or value == "" else float(value))
            summary[method][metric] = _stats(values)
    return summary


def _fmt(value: float, fmt: str) -> str:
    return "nan" if math.isnan(value) else format(value, fmt)


def _best_methods(table: Mapping[str, Mapping[str, Mapping[str, float]]], metric: str) -> set[str]:
    if metric not in HIGHER_IS_BETTER:
        return set()
    means = {m: float(cells[metric]["mean"]) for m, cells in table.items() if metric in cells}
    means = {m: v for m, v in means.items() if not math.isnan(v)}
    if len(means) < 2:
        return set()
    best = max(means.values()) if HIGHER_IS_BETTER[metric] else min(means.values())
    return {m for m, v in means.items() if v == best}


def _markdown_table(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return "\n".join(lines) + "\n"


def _select(
    table: Mapping[str, Mapping[str, Any]], metrics: Sequence[str] | None, methods: Sequence[str] | None
) -> tuple[list[str], list[str]]:
    methods_out = list(table) if methods is None else _methods_with_lci(methods)
    if metrics is None:
        first = next(iter(table.values()), {})
        metrics_out = list(first)
    else:
        metrics_out = list(metrics)
    for method in methods_out:
        if method not in table:
            raise KeyError(f"method {method!r} is not in the table (methods: {list(table)}).")
        for metric in metrics_out:
            if metric not in table[method]:
                raise KeyError(f"metric {metric!r} is missing for method {method!r}.")
    return methods_out, metrics_out


def format_summary_markdown(
    summary: Summary,
    metrics: Sequence[str] | None = None,
    methods: Sequence[str] | None = None,
    fmt: str = ".4g",
    bold_best: bool = True,
) -> str:
    """Markdown table of a :py:func:`summarise` result: one row per method, cells ``mean +- std (median)``.

    The ``n`` column is the largest per-metric count of the method; a cell whose count is smaller (``nan`` values
    skipped) gets a ``[n=k]`` suffix. With ``bold_best``, the best mean of each metric of
    :py:data:`~monai_tfm.metrics.forecast.HIGHER_IS_BETTER` is bold.

    Args:
        summary: the output of :py:func:`summarise`.
        metrics: columns to show (default: all, in summary order).
        methods: rows to show (default: all, in summary order); LCI is always added.
        fmt: format spec of the numbers.
        bold_best: whether to bold the best mean per metric.

    Returns:
        the markdown table, ending with a newline.

    Raises:
        KeyError: when a requested method or metric is missing.
    """
    methods_out, metrics_out = _select(summary, metrics, methods)
    shown = {m: summary[m] for m in methods_out}
    best = {metric: _best_methods(shown, metric) for metric in metrics_out} if bold_best else {}
    body = []
    for method in methods_out:
        n_max = max((int(summary[method][metric]["n"]) for metric in metrics_out), default=0)
        cells = [method, str(n_max)]
        for metric in metrics_out:
            s = summary[method][metric]
            mean = _fmt(s["mean"], fmt)
            if method in best.get(metric, set()):
                mean = f"**{mean}**"
            cell = f"{mean} +- {_fmt(s['std'], fmt)} ({_fmt(s['median'], fmt)})"
            if int(s["n"]) < n_max:
                cell += f" [n={int(s['n'])}]"
            cells.append(cell)
        body.append(cells)
    return _markdown_table(["method", "n", *metrics_out], body)


def aggregate_runs(
    run_summaries: Sequence[Mapping[str, Mapping[str, Any]]],
    metrics: Sequence[str] | None = None,
    methods: Sequence[str] | None = None,
) -> dict[str, dict[str, dict[str, float]]]:
    """Mean +- std (ddof=1) over runs (seeds or folds) of the per-run means: the papers' Table 2 format.

    Args:
        run_summaries: one entry per run, ``method -> metric -> value`` where value is either the run's mean (a
            number) or a :py:func:`summarise` cell (a mapping with a ``"mean"`` key).
        metrics: metrics to aggregate (default: those of the first run's first method).
        methods: methods to aggregate (default: those of the first run); LCI is added when ``methods`` is given.

    Returns:
        ``method -> metric -> {"mean", "std", "n_runs"}``; ``nan`` run means are skipped and ``n_runs`` counts the
        runs used, ``std`` is ``nan`` with fewer than two runs.

    Raises:
        ValueError: when ``run_summaries`` is empty.
        KeyError: when a run lacks a requested method or metric.
    """
    if len(run_summaries) == 0:
        raise MonaiTFMError("cannot aggregate an empty list of runs.")
    methods_out, metrics_out = _select(run_summaries[0], metrics, methods)
    out: dict[str, dict[str, dict[str, float]]] = {}
    for method in methods_out:
        out[method] = {}
        for metric in metrics_out:
            values = []
            for r, run in enumerate(run_summaries):
                try:
                    value = run[method][metric]
                except KeyError as e:
                    raise KeyError(f"run {r} has no value for method {method!r}, metric {metric!r}.") from e
                values.append(float(value["mean"] if isinstance(value, Mapping) else value))
            s = _stats(values)
            out[method][metric] = {"mean": s["mean"], "std": s["std"], "n_runs": s["n"]}
    return out


def format_runs_markdown(
    runs_summary: Mapping[str, Mapping[str, Mapping[str, float]]],
    metrics: Sequence[str] | None = None,
    methods: Sequence[str] | None = None,
    fmt: str = ".4g",
    bold_best: bool = True,
) -> str:
    """Markdown table of an :py:func:`aggregate_runs` result: one row per method, cells ``mean +- std``.

    Args:
        runs_summary: the output of :py:func:`aggregate_runs`.
        metrics: columns to show (default: all).
        methods: rows to show (default: all); LCI is always added.
        fmt: format spec of the numbers.
        bold_best: whether to bold the best mean per metric.

    Returns:
        the markdown table (with a ``runs`` column: the largest run count of the row), ending with a newline.

    Raises:
        KeyError: when a requested method or metric is missing.
    """
    methods_out, metrics_out = _select(runs_summary, metrics, methods)
    shown = {m: runs_summary[m] for m in methods_out}
    best = {metric: _best_methods(shown, metric) for metric in metrics_out} if bold_best else {}
    body = []
    for method in methods_out:
        n_max = max((int(runs_summary[method][metric]["n_runs"]) for metric in metrics_out), default=0)
        cells = [method, str(n_max)]
        for metric in metrics_out:
            s = runs_summary[method][metric]
            mean = _fmt(s["mean"], fmt)
            if method in best.get(metric, set()):
                mean = f"**{mean}**"
            cell = f"{mean} +- {_fmt(s['std'], fmt)}"
            if int(s["n_runs"]) < n_max:
                cell += f" [runs={int(s['n_runs'])}]"
            cells.append(cell)
        body.append(cells)
    return _markdown_table(["method", "runs", *metrics_out], body)


def write_per_sample_csv(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write per-sample rows as CSV (atomically).

    Columns: ``subject``, ``draw``, ``target_time`` first (those present), then every other key in first-seen order
    over the rows; a key missing from a row is written empty. Floats are written with ``repr`` precision, so they
    read back exactly (``nan`` and ``inf`` as ``nan``/``inf``).

    Args:
        rows: per-sample rows.
        path: destination ``.csv`` file.
        overwrite: whether an existing file may be replaced.

    Returns:
        the destination path.

    Raises:
        FileExistsError: when ``path`` exists and ``overwrite`` is False.
    """
    keys: dict[str, None] = {k: None for k in ROW_KEYS if any(k in row for row in rows)}
    for row in rows:
        keys.update(dict.fromkeys(row))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(keys), restval="", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (repr(float(v)) if isinstance(v, (float, np.floating)) else v) for k, v in row.items()})
    return atomic_write_text(path, buf.getvalue(), overwrite=overwrite)


def read_per_sample_csv(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read a CSV written by :py:func:`write_per_sample_csv`.

    ``subject`` stays a string, ``draw`` becomes an int, every other non-empty value a float (empty values become
    ``nan``).

    Args:
        path: the CSV file.

    Returns:
        the rows.
    """
    rows = []
    with open(path, newline="", encoding="utf-8") as f:
        for raw in csv.DictReader(f):
            row: dict[str, Any] = {}
            for k, v in raw.items():
                if k == "subject":
                    row[k] = v
                elif k == "draw":
                    row[k] = int(v)
                else:
                    row[k] = float(v) if v != "" else math.nan
            rows.append(row)
    return rows


def _csv_number(key: str, value: float) -> str:
    return str(int(value)) if key in ("n", "n_runs") else repr(float(value))


def _json_ready(table: Mapping[str, Mapping[str, Mapping[str, float]]]) -> dict:
    return {m: {k: dict(cell) for k, cell in cells.items()} for m, cells in table.items()}


def write_summary(
    path: str | os.PathLike,
    summary: Mapping[str, Mapping[str, Mapping[str, float]]],
    metrics: Sequence[str] | None = None,
    methods: Sequence[str] | None = None,
    overwrite: bool = False,
    fmt: str = ".4g",
) -> Path:
    """Write a :py:func:`summarise` or :py:func:`aggregate_runs` result (atomically); the suffix picks the format.

    * ``.md``: the markdown table of :py:func:`format_summary_markdown` (or :py:func:`format_runs_markdown`).
    * ``.csv``: long format, one line per method and metric, columns ``method, metric`` and the statistics.
    * ``.json``: the nested dict (Python's ``json``: ``nan``/``inf`` are written as ``NaN``/``Infinity``).

    Args:
        path: destination file (``.md``, ``.csv`` or ``.json``).
        summary: the table to write.
        metrics: metrics to write (default: all).
        methods: methods to write (default: all); LCI is always added.
        overwrite: whether an existing file may be replaced.
        fmt: number format of the markdown table.

    Returns:
        the destination path.

    Raises:
        FileExistsError: when ``path`` exists and ``overwrite`` is False.
        ValueError: for an unsupported suffix.
        KeyError: when a requested method or metric is missing.
    """
    dest = Path(path)
    suffix = dest.suffix.lower()
    if suffix not in (".md", ".csv", ".json"):
        raise MonaiTFMError(f"unsupported summary format {dest.suffix!r} for {str(dest)!r}; use .md, .csv or .json.")
    if dest.exists() and not overwrite:
        raise FileExistsError(f"{str(dest)!r} already exists; pass overwrite=True to replace it.")
    methods_out, metrics_out = _select(summary, metrics, methods)
    table = {m: {k: summary[m][k] for k in metrics_out} for m in methods_out}
    is_runs = any("n_runs" in cell for cells in table.values() for cell in cells.values())
    if suffix == ".md":
        formatter = format_runs_markdown if is_runs else format_summary_markdown
        text = formatter(table, fmt=fmt)
    elif suffix == ".json":
        text = json.dumps(_json_ready(table), indent=2) + "\n"
    else:
        stat_keys = ["mean", "std", "n_runs"] if is_runs else ["mean", "std", "median", "n"]
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["method", "metric", *stat_keys])
        for method, cells in table.items():
            for metric, cell in cells.items():
                writer.writerow([method, metric, *(_csv_number(k, cell[k]) for k in stat_keys)])
        text = buf.getvalue()
    return atomic_write_text(dest, text, overwrite=overwrite)


def paired_gain(
    rows: Sequence[Mapping[str, Any]],
    metric: str = "psnr",
    method: str = "model",
    baseline: str = LCI,
    resamples: int = 5000,
    seed: int = 0,
) -> dict[str, float]:
    """Per-subject paired gain of a method over a baseline, with a bootstrap 95% CI over subjects.

    The forecasts of one subject (its draws) are not independent, so the unit of resampling is the subject: each
    subject contributes the mean of ``method - baseline`` over its rows, and the CI is the 2.5/97.5 percentile of
    the mean over ``resamples`` resamples of the subjects with replacement (percentile bootstrap, Efron and
    Tibshirani 1993, ch. 13). Rows from several folds can be pooled: subjects are disjoint across folds.

    Args:
        rows: per-sample rows (``subject`` and ``<method>_<metric>``, ``<baseline>_<metric>`` keys).
        metric: the metric.
        method: the method's key prefix.
        baseline: the baseline's key prefix.
        resamples: bootstrap resamples.
        seed: NumPy generator seed.

    Returns:
        ``mean`` and ``median`` (over subjects), ``ci_low``, ``ci_high`` (of the mean), ``subjects``, ``better``
        (subjects with a gain > 0;
        for a lower-is-better metric (:data:`~monai_tfm.metrics.forecast.HIGHER_IS_BETTER`) such as ``nrmse`` a
        gain is a decrease, so the sign is flipped: a positive gain is always an improvement).

    Raises:
        ValueError: no rows.
    """
    if not rows:
        raise MonaiTFMError("paired_gain needs at least one row.")
    sign = 1.0 if HIGHER_IS_BETTER.get(metric, True) else -1.0
    per_subject: dict[str, list[float]] = {}
    for row in rows:
        diff = float(row[f"{method}_{metric}"]) - float(row[f"{baseline}_{metric}"])
        per_subject.setdefault(str(row["subject"]), []).append(sign * diff)
    gains = np.array([np.mean(v) for v in per_subject.values()], dtype=np.float64)
    rng = np.random.default_rng(seed)
    boot = gains[rng.integers(0, gains.size, size=(int(resamples), gains.size))].mean(axis=1)
    low, high = np.percentile(boot, [2.5, 97.5])
    return {
        "mean": float(gains.mean()),
        "median": float(np.median(gains)),
        "ci_low": float(low),
        "ci_high": float(high),
        "subjects": int(gains.size),
        "better": int((gains > 0).sum()),
    }
