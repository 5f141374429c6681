# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""``monai-tfm [CMD] --help`` prints usage, exits 0 and does nothing else (no data, no run folder)."""

from __future__ import annotations

import re
import subprocess

import pytest
from helpers import REPO, run_cli

COMMANDS = ["train", "evaluate", "quickstart", "synthetic", "prepare", "forecast", "generate", "pack", "version"]


def _repo_state() -> str:
    return subprocess.run(
        ["git", "status", "--porcelain", "--ignored"], cwd=REPO, capture_output=True, text=True
    ).stdout


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["-h"]]
    + [[c, "--help"] for c in COMMANDS]
    + [["train", "-h", "--max_epochs", "1"]]
    + [["prepare", d, "--help"] for d in ("acdc", "isles", "lumiere")],
)
def test_help_only_helps(argv, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    before = _repo_state()
    rc, out, err = run_cli(argv, capsys)
    assert rc == 0, err
    assert out.startswith("usage: monai-tfm")
    words = [a for a in argv if not a.startswith("-") and a in COMMANDS]
    if words:
        assert f"monai-tfm {words[0]}" in out.splitlines()[0]
    else:
        assert all(c in out for c in COMMANDS)  # the top-level help lists every command
    if argv[0] == "prepare" and len(argv) > 2:
        assert f"prepare_{argv[1]}" in out  # the dataset's own options
    assert list(tmp_path.iterdir()) == []
    assert _repo_state() == before


def test_quickstart_shows_its_table_once_with_progress(tmp_path, capsys, monkeypatch):
    # the README's main job at tiny settings: train, evaluate (with a progress bar), the table once, the report path
    import logging

    from monai_tfm.cli import main

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "qs"
    args = ["quickstart", "--output_dir", out, "--dataset_dir", tmp_path / "data", "--max_epochs", 1]
    args += ["--num_train", 3, "--num_val", 2, "--num_test", 2, "--spatial_size", "[16,16,8]"]
    args += ["--network_def#channels", 8, "--val_draws", 1, "--eval_draws", 2, "--batch_size", 2]
    stream = logging.StreamHandler()  # the package logs through its own handlers: collect them here as well
    records: list[str] = []
    stream.emit = lambda record: records.append(record.getMessage())  # type: ignore[method-assign]
    logging.getLogger("monai_tfm").addHandler(stream)
    try:
        rc = main([str(a) for a in args])
    finally:
        logging.getLogger("monai_tfm").removeHandler(stream)
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    summary = out / "eval_test" / "summary.md"
    assert captured.out.strip().splitlines()[-1] == str(summary)  # MONAI's StatsHandler also logs to stdout
    table_line = next(line for line in summary.read_text().splitlines() if line.startswith("| model"))
    shown = captured.out + captured.err + "\n".join(records)
    assert shown.count(table_line) == 1
    # the evaluation's bar over its 2 batches of 2 forecasts; which states tqdm draws depends on the machine's speed
    # (a state within its refresh interval of the last one is skipped and the closed bar is cleared)
    assert re.search(r"forecasting: \[[12]/2\]", captured.err), captured.err


@pytest.mark.parametrize("kind", ["package error", "file error", "bug: ValueError", "bug: TypeError"])
def test_only_user_errors_become_one_line(kind, tmp_path, monkeypatch, capsys):
    """The package's errors (MonaiTFMError and its subclasses) and file errors print one line and exit 2; any other
    exception, a ValueError from a library too, is a bug and keeps its traceback."""
    import monai_tfm.cli as cli
    from monai_tfm.apps.forecast import ForecastError

    raised = {
        "package error": ForecastError("scan 'a.nii.gz' does not exist."),
        "file error": FileExistsError("output 'x' exists"),
        "bug: ValueError": ValueError("not enough values to unpack"),
        "bug: TypeError": TypeError("unsupported operand"),
    }[kind]

    def version(self):  # stands in for a command that fails
        raise raised

    monkeypatch.setattr(cli.Commands, "version", version)
    monkeypatch.chdir(tmp_path)
    if kind.startswith("bug"):
        with pytest.raises(type(raised)):
            cli.main(["version"])
    else:
        rc, _, err = run_cli(["version"], capsys)
        assert rc == 2 and err.strip().splitlines()[-1] == f"monai-tfm: error: {raised}"
