# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""The ACDC bundle on two shared patients: prepare, train one epoch at a tiny grid, evaluate.

Skipped when ../shared is absent.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from helpers import REPO, SHARED_ACDC, lci_metrics_from_draws, workflow
from monai.bundle import ConfigParser, verify_metadata

from monai_tfm.apps.bundle_loading import bundle_run_files
from monai_tfm.data import fold_split

BUNDLE = REPO / "bundles" / "acdc_cine_forecasting"
CONFIGS = BUNDLE / "configs"
META = CONFIGS / "metadata.json"

needs_shared = pytest.mark.skipif(not SHARED_ACDC.is_dir(), reason="../shared/data/acdc_cine is not available")


def test_metadata_verifies():
    verify_metadata(meta_file=str(META), filepath=str(REPO / "bundles" / "schema" / "monai_tfm_meta_schema_v1.json"))


@pytest.fixture(scope="module")
def two_patients(tmp_path_factory) -> Path:
    """An official-layout folder of symlinks to two shared patients (nothing is copied)."""
    if not SHARED_ACDC.is_dir():
        pytest.skip("../shared/data/acdc_cine is not available")
    src = tmp_path_factory.mktemp("acdc_src") / "training"
    src.mkdir()
    for pid in ("patient001", "patient021"):
        (src / pid).symlink_to(SHARED_ACDC / pid, target_is_directory=True)
    return src.parent


def _small(src: Path, tmp: Path, **extra) -> dict:
    return {
        "dataset_dir": str(src),
        "prepared_dir": str(tmp / "prepared"),
        "spatial_size": [32, 32, 8],
        "output_dir": str(tmp / "run"),
        "fold": 0,
        "max_epochs": 1,
        "network_def#channels": 8,
        "val_draws": 1,
        "eval_draws": 2,
        "batch_size": 2,
        **extra,
    }


@needs_shared
def test_properties(two_patients, tmp_path):
    train = workflow(bundle_run_files(BUNDLE), "train", "training", META, **_small(two_patients, tmp_path))
    assert train.check_properties() == []
    infer = workflow(
        bundle_run_files(BUNDLE, "inference"),
        "infer",
        "run",
        META,
        dataset_dir=str(two_patients),
        prepared_dir=str(tmp_path / "prepared"),
        spatial_size=[32, 32, 8],
        infer_split="training",  # the development copy has no test patients
    )
    assert infer.check_properties() == []


@needs_shared
@pytest.mark.parametrize("method", ["cronos_discrete", "cronos_continuous"])
def test_prepare_train_evaluate(two_patients, tmp_path, method):
    files = bundle_run_files(BUNDLE, method=method)
    over = _small(two_patients, tmp_path)
    wf = workflow(files, "train", "training", META, **over)
    wf.run()
    run = tmp_path / "run"
    assert (run / "models" / "model.pt").is_file()
    datalist = tmp_path / "prepared" / "datalist.json"
    train_items, val_items = fold_split(datalist, 0)
    assert len(train_items) == 1 and len(val_items) == 1
    ev = workflow(bundle_run_files(BUNDLE, "evaluate", method), "train", "evaluating", META, **over)
    ev.run()
    rows = list(csv.DictReader(open(run / "eval_validation" / "per_sample.csv")))
    assert len(rows) == 2 and {r["subject"] for r in rows} == {val_items[0]["subject"]}
    draws = json.loads((run / "eval_validation" / "draws.json").read_text())
    for r in rows:
        assert 0 < float(r["model_nrmse"]) < 1 and 0 <= float(r["model_ssim"]) <= 100
        assert float(r["model_psnr"]) > 5 and 0 <= float(r["target_time"]) <= 1
        ref = lci_metrics_from_draws(r, draws, val_items)  # LCI from the very draws the model was scored on
        assert float(r["lci_nrmse"]) == pytest.approx(ref["nrmse"], rel=1e-5)
        assert float(r["lci_ssim"]) == pytest.approx(ref["ssim"], rel=1e-5)
    # the prepared frames have the requested grid and 12 phases
    frames = val_items[0]["frames"]
    assert len(frames) == 12 and frames[-1]["time"] == pytest.approx(1.0)
    state = torch.load(run / "models" / "model.pt", weights_only=True)
    assert all(torch.is_tensor(v) for v in state.values())
    # inference on the same official-layout folder: ES forecast from the earlier phases, on the prepared grid
    inf = workflow(
        bundle_run_files(BUNDLE, "inference", method),
        "infer",
        "run",
        META,
        dataset_dir=str(two_patients),
        prepared_dir=str(tmp_path / "prepared"),
        spatial_size=[32, 32, 8],
        infer_split="training",
        ckpt_path=str(run / "models" / "model.pt"),
        output_dir=str(run),
        **{"network_def#channels": 8},
    )
    inf.run()
    outs = sorted((run / "forecasts").glob("*_forecast.nii.gz"))
    assert [o.name.split("_")[0] for o in outs] == ["patient001", "patient021"]
    by_subject = {i["subject"]: i for i in train_items + val_items}
    for out in outs:
        ref = nib.load(by_subject[out.name.split("_")[0]]["frames"][-1]["image"])
        img = nib.load(out)
        assert img.shape == ref.shape == (32, 32, 8)
        assert np.allclose(img.affine, ref.affine, atol=1e-5)
        assert np.isfinite(img.get_fdata()).all()


@needs_shared
def test_continuous_time_protocol_overlay(two_patients, tmp_path):
    files = bundle_run_files(BUNDLE, method="cronos_continuous", overlays=["protocols/continuous_time.yaml"])
    over = _small(two_patients, tmp_path)
    over.pop("output_dir")  # the overlay names the run folder; keep it under tmp_path, not in the repository
    over["bundle_root"] = str(tmp_path)
    wf = workflow(files, "train", "training", META, **over)
    wf.run()
    out = Path(wf.parser.get_parsed_content("output_dir"))
    assert out == tmp_path / "runs" / "cronos_continuous_ct_fold0" and (out / "models" / "model.pt").is_file()
    draws = json.loads((out / "val_draws.json").read_text())
    for d in draws["draws"]:
        assert len(d["context_indices"]) == 2 and d["target_index"] - d["context_indices"][0] <= 3


@needs_shared
def test_step_budget(two_patients, tmp_path):
    """``max_steps`` overrides the epoch budget: training stops at that many optimiser steps, the lr schedule spans
    them, and ``budget.json`` records the steps and the threads."""
    files = bundle_run_files(BUNDLE, method="cronos_discrete")
    wf = workflow(files, "train", "training", META, **_small(two_patients, tmp_path, max_steps=3, val_interval=100))
    wf.run()
    wf.finalize()  # `monai.bundle run` calls it after the run: it writes budget.json
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert state["trainer"]["iteration"] == 3  # one training patient at batch 2: one step per epoch
    assert state["lr_scheduler"]["last_epoch"] == 3
    budget = json.loads((tmp_path / "run" / "budget.json").read_text())
    assert budget["max_steps"] == 3 and budget["steps_timed"] == 3 and budget["threads"] >= 1
    assert budget["seconds_per_step"] > 0


@needs_shared
def test_extra_train_phases(two_patients, tmp_path):
    """`extra_train_phases` adds the diastole of the training patients to the training items, not to validation."""
    parser = ConfigParser()
    parser.read_config([str(f) for f in bundle_run_files(BUNDLE)])
    for key, value in _small(two_patients, tmp_path, extra_train_phases=["diastole_reversed"]).items():
        parser[key] = value
    train, val = parser.get_parsed_content("folds")
    plain_train, plain_val = fold_split(parser.get_parsed_content("datalist"), 0)
    assert val == plain_val and train[: len(plain_train)] == plain_train
    assert [e["subject"] for e in train[len(plain_train) :]] == [e["subject"] for e in plain_train]
    assert {e["metadata"]["phases"] for e in train[len(plain_train) :]} == {"diastole_reversed"}
    assert (tmp_path / "prepared_diastole_reversed" / "datalist.json").is_file()


@pytest.mark.parametrize("method, share", [("cronos_discrete", 0.9), ("cronos_continuous", 0.9), ("tfm", 0.9)])
def test_tau_zero_share_by_method(method, share):
    # the bundle's flow methods train 90 % of their samples at tau = 0 (docs/results/acdc_recipe_tau0.md); the
    # training prepare-batch draws accordingly
    parser = ConfigParser()
    parser.read_config([str(f) for f in bundle_run_files(BUNDLE, method=method)])
    prepare = parser.get_parsed_content("train#prepare_batch")
    assert prepare.tau_zero_prob == share
    n = 2000
    batch = {
        "context": torch.rand(n, 11, 1, 2, 2, 2),
        "context_time": torch.linspace(0, 1, 11).repeat(n, 1),
        "context_mask": torch.ones(n, 11, dtype=torch.bool),
        "target": torch.rand(n, 1, 2, 2, 2),
        "target_time": torch.ones(n),
    }
    tau = prepare(batch)[3]["tau"]
    assert abs(float((tau == 0).float().mean()) - share) < 0.05
