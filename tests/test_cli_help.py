# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""``monai-tfm [CMD] --help`` prints usage, exits 0 and does nothing else (no data, no run folder)."""

from __future__ import annotations

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
