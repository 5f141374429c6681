# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""Helpers shared by the benchmark scripts: provenance (commit, device, versions) and timed bundle runs."""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]


def _versions() -> dict[str, str]:
    """Device, library versions and command line of this process."""
    import monai

    if torch.cuda.is_available():
        device = f"cuda: {torch.cuda.get_device_name(0)}"
    else:
        device = f"cpu: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    return {
        "device": device,
        "torch": torch.__version__,
        "monai": monai.__version__,
        "python": platform.python_version(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }


def provenance() -> dict[str, str]:
    """Commit, device and library versions of a benchmark run.

    Without a git checkout (a copy of the tree on a remote GPU machine) the commit comes from ``BENCH_COMMIT``.
    """
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    if commit.returncode != 0:
        return {"commit": os.environ.get("BENCH_COMMIT", "unknown (no git checkout)"), **_versions()}
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True)
    suffix = " (+ uncommitted changes)" if dirty.stdout.strip() else ""
    return {"commit": commit.stdout.strip() + suffix, **_versions()}


def page_header(title: str, label: str, prov: dict[str, str]) -> list[str]:
    """The first lines of a results page: title, the run's label (bold, if any), device, commit, versions, command.

    Args:
        title: page title.
        label: what the run was (device caveats, reduced settings); empty for none.
        prov: :func:`provenance` of the run.

    Returns:
        markdown lines, ending with a blank one.
    """
    return [
        f"# {title}",
        "",
        *([f"**{label}**", ""] if label else []),
        f"Device: {prov['device']}; commit {prov['commit']}; torch {prov['torch']}, MONAI {prov['monai']}, "
        f"Python {prov['python']}.",
        f"Command: `{prov['command']}`",
        "",
    ]


def write_results(out: Path, lines: list[str], prov: dict[str, str], args: Any, rows: list[dict]) -> None:
    """Write ``<out>.md`` (the lines) and ``<out>.json`` (provenance, command-line arguments and rows).

    Args:
        out: path without suffix.
        lines: markdown lines.
        prov: :func:`provenance` of the run.
        args: the parsed command line (an ``argparse.Namespace``).
        rows: the measurements.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"provenance": prov, "args": vars(args), "rows": rows}, indent=1))
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")


def gain_text(g: dict | None, metric: str = "psnr") -> str:
    """``mean [ci_low, ci_high] (median m; better/subjects)`` of a :func:`monai_tfm.metrics.paired_gain` result ("-"
    for none; results without a median, from older pages, leave it out); NRMSE with four decimals, others with two."""
    if not g:
        return "-"
    f = ".4f" if metric == "nrmse" else ".2f"
    median = f"median {g['median']:+{f}}; " if "median" in g else ""
    return f"{g['mean']:+{f}} [{g['ci_low']:+{f}}, {g['ci_high']:+{f}}] ({median}{g['better']}/{g['subjects']})"


def run_bundle(
    run_id: str, config_files: list[str], log_path: Path, cwd: Path = REPO, env: dict | None = None, **overrides: Any
) -> float:
    """Run ``python -m monai.bundle run`` in a subprocess; returns the wall time in seconds.

    Args:
        run_id: the bundle's run id (``training``, ``evaluating``).
        config_files: the config files, in reading order.
        log_path: where the run's output goes.
        cwd: working folder of the run (another checkout's root for a run of that checkout's code).
        env: environment of the run (default: this process's).
        overrides: bundle config ids to set.

    Raises:
        RuntimeError: the run failed (the log file holds its output).
    """
    cmd = [sys.executable, "-m", "monai.bundle", "run", run_id, "--config_file", json.dumps(config_files)]
    for key, value in overrides.items():
        cmd += [f"--{key}", json.dumps(value) if isinstance(value, (list, dict, bool)) else str(value)]
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise RuntimeError(f"{run_id} failed; see {log_path}")
    return time.perf_counter() - t0


def int_list(text: str) -> list[int]:
    """An argparse type: comma-separated integers (``"0,1,2"``); anything else is a usage error (exit 2).

    Args:
        text: the option's value.

    Returns:
        the integers.

    Raises:
        argparse.ArgumentTypeError: a value that is not a comma-separated list of integers.
    """
    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def parse_overrides(parser: argparse.ArgumentParser, items: list[str]) -> dict[str, Any]:
    """``--set KEY=VALUE`` options as bundle overrides (JSON values, else the text); a malformed item is a usage error.

    Args:
        parser: the command line parser (for its error).
        items: the ``--set`` values.

    Returns:
        ``{key: value}``.
    """
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--set expects KEY=VALUE, got {item!r}")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    return overrides
