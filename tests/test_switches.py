# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""Boolean switches given as text (``--overwrite false``) and the no-overwrite rule of runs, reports, forecasts."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from helpers import REPO, assert_one_line_error, run_cli

from monai_tfm.handlers import check_run_folder
from monai_tfm.utils import as_bool, as_float, check_outputs_free

BUNDLE = REPO / "bundles" / "synthetic_forecasting"


@pytest.mark.parametrize("word", ["true", "True", "TRUE", "1", "yes", "on", True, 1])
def test_as_bool_true(word):
    assert as_bool(word, "x") is True


@pytest.mark.parametrize("word", ["false", "False", "0", "no", "off", " NO ", False, 0])
def test_as_bool_false(word):
    assert as_bool(word, "x") is False


@pytest.mark.parametrize("word", ["maybe", "", None, 2, "2", 0.5])
def test_as_bool_refuses_other_values(word):
    with pytest.raises(ValueError, match=r"--amp: expected true or false"):
        as_bool(word, "amp")


@pytest.mark.parametrize("value, expected", [(0.5, 0.5), ("0.5", 0.5), (" 2 ", 2.0), (3, 3.0), ("-1e-3", -1e-3)])
def test_as_float_reads_numbers_and_their_text(value, expected):
    assert as_float(value, "x") == expected


@pytest.mark.parametrize("value", ["abc", "", None, True, "nan", float("inf"), [0.5]])
def test_as_float_refuses_other_values(value):
    with pytest.raises(ValueError, match=r"^--loss_distance_scale must be a number, got"):
        as_float(value, "loss_distance_scale")


def test_prepare_batch_options_are_one_line_errors():
    # a word where a number belongs is refused with the option's name (not a bare float() traceback)
    from monai_tfm.engines import FlowMatchingPrepareBatch

    with pytest.raises(ValueError, match="--loss_distance_scale must be a number, got 'abc'"):
        FlowMatchingPrepareBatch(distance_scale="abc")
    with pytest.raises(ValueError, match="--tau_zero_prob must be a number, got 'half'"):
        FlowMatchingPrepareBatch(tau_zero_prob="half")
    assert FlowMatchingPrepareBatch(distance_scale="0.5", tau_zero_prob="0.9").distance_scale == 0.5


def _tree(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.md5(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()
    }


def _train_args(run: Path, data: Path, **extra) -> list:
    small = {
        "bundle": BUNDLE,
        "output_dir": run,
        "dataset_dir": data,
        "max_epochs": 1,
        "num_train": 3,
        "num_val": 2,
        "num_test": 2,
        "spatial_size": "[16,16,8]",
        "network_def#channels": 8,
        "val_draws": 1,
        "eval_draws": 1,
        "batch_size": 2,
        **extra,
    }
    return ["train", *[a for k, v in small.items() for a in (f"--{k}", v)]]


def test_false_switches_keep_a_finished_run(tmp_path, capsys):
    """``--overwrite false`` / ``--resume false`` (text, as a shell gives it) refuse and leave every file as it was."""
    run, data = tmp_path / "run", tmp_path / "data"
    rc, _, err = run_cli(_train_args(run, data), capsys)
    assert rc == 0, err
    before = _tree(run)
    assert "models/model.pt" in before and "checkpoints/last.pt" in before
    for flags in (["--overwrite", "false"], ["--resume", "false"], ["--overwrite", "False", "--resume", "no"]):
        rc, _, err = run_cli(_train_args(run, data) + flags, capsys)
        assert_one_line_error(rc, err, str(run), "--resume true")
        assert _tree(run) == before, flags  # nothing replaced, nothing added (no TensorBoard events either)


def test_true_overwrite_replaces_and_bad_switch_is_refused(tmp_path, capsys):
    run, data = tmp_path / "run", tmp_path / "data"
    assert run_cli(_train_args(run, data), capsys)[0] == 0
    before = _tree(run)
    rc, _, err = run_cli(_train_args(run, data, max_epochs=2) + ["--overwrite", "true"], capsys)
    assert rc == 0, err
    after = _tree(run)
    assert after["checkpoints/last.pt"] != before["checkpoints/last.pt"]
    rc, _, err = run_cli(_train_args(tmp_path / "other", data) + ["--amp", "maybe"], capsys)
    assert_one_line_error(rc, err, "--amp", "'maybe'")


def test_check_run_folder_rule(tmp_path):
    assert check_run_folder(tmp_path / "none") is False
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "model.pt").write_bytes(b"x")
    with pytest.raises(FileExistsError, match="already holds a training run"):
        check_run_folder(tmp_path, "false", "false")
    assert check_run_folder(tmp_path, resume="true") is True
    assert check_run_folder(tmp_path, overwrite="yes") is True
    with pytest.raises(ValueError, match="--overwrite"):
        check_run_folder(tmp_path, overwrite="nope")


def test_check_outputs_free(tmp_path):
    check_outputs_free(tmp_path / "missing")
    (tmp_path / "summary.md").write_text("x")
    check_outputs_free(tmp_path, ["per_sample.csv"])  # other names: nothing to replace
    with pytest.raises(FileExistsError, match="summary.md"):
        check_outputs_free(tmp_path, ["per_sample.csv", "summary.md"], "false", "an evaluation report")
    with pytest.raises(FileExistsError, match="forecasts"):
        check_outputs_free(tmp_path, None, False, "forecasts")
    check_outputs_free(tmp_path, None, "true")


def test_second_evaluation_refused_before_it_runs(tmp_path, capsys):
    """A finished report is not replaced by ``--overwrite false``, and the refusal comes before the evaluation."""
    run, data = tmp_path / "run", tmp_path / "data"
    assert run_cli(_train_args(run, data), capsys)[0] == 0
    evaluate = ["evaluate", *_train_args(run, data)[1:]]
    rc, _, err = run_cli(evaluate, capsys)
    assert rc == 0, err
    report = run / "eval_test"
    before = _tree(report)
    assert "summary.json" in before
    rc, out, err = run_cli(evaluate + ["--overwrite", "false"], capsys)
    assert_one_line_error(rc, err, "already holds an evaluation report")
    assert "evaluation report in" not in out + err  # the refusal came first: no evaluation ran
    assert _tree(report) == before
