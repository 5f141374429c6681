# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""The synthetic bundle end to end through MONAI's bundle machinery (tiny grid, one epoch)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from helpers import lci_metrics_from_draws, workflow
from monai.bundle import ConfigWorkflow, verify_metadata

from monai_tfm.apps.bundle_loading import bundle_run_files
from monai_tfm.data import load_series_datalist, write_series_datalist

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "synthetic_forecasting"
CONFIGS = BUNDLE / "configs"
INFERENCE = bundle_run_files(BUNDLE, "inference")  # inference.yaml is an overlay on train.yaml
SCHEMA = REPO / "bundles" / "schema" / "monai_tfm_meta_schema_v1.json"
METHODS = ("cronos_discrete", "cronos_continuous", "tfm")


def _small(tmp: Path, data: Path, **extra) -> dict:
    return {
        "bundle_root": str(BUNDLE),
        "dataset_dir": str(data),
        "output_dir": str(tmp),
        "max_epochs": 1,
        "num_train": 3,
        "num_val": 2,
        "num_test": 2,
        "spatial_size": [16, 16, 8],
        "network_def#channels": 8,
        "val_draws": 1,
        "eval_draws": 2,
        "batch_size": 2,
        **extra,
    }


def _workflow(files, workflow_type, run_id, **overrides) -> ConfigWorkflow:
    return workflow(files, workflow_type, run_id, CONFIGS / "metadata.json", **overrides)


def _files(method: str, run: str = "train") -> list[Path]:
    return bundle_run_files(BUNDLE, run, method)


def test_metadata_verifies(tmp_path):
    verify_metadata(meta_file=str(CONFIGS / "metadata.json"), filepath=str(SCHEMA))
    bad = json.loads((CONFIGS / "metadata.json").read_text())
    del bad["task"]
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(Exception, match="task"):
        verify_metadata(meta_file=str(tmp_path / "bad.json"), filepath=str(SCHEMA))


def test_property_checks(tmp_path):
    train = _workflow(bundle_run_files(BUNDLE), "train", "training", **_small(tmp_path / "r", tmp_path / "d"))
    assert train.check_properties() == []
    infer = _workflow(INFERENCE, "infer", "run", bundle_root=str(BUNDLE), dataset_dir=str(tmp_path / "d"))
    assert infer.check_properties() == []


@pytest.mark.parametrize("method", METHODS)
def test_train_evaluate_infer(tmp_path, method):
    data, run = tmp_path / "data", tmp_path / "run"
    wf = _workflow(_files(method), "train", "training", **_small(run, data))
    wf.run()
    wf.finalize()
    assert (run / "models" / "model.pt").is_file()
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert state["trainer"]["iteration"] == state["trainer"]["epoch_length"] == 2  # one epoch of 2 steps
    assert set(state) >= {"network", "optimizer", "lr_scheduler", "trainer", "checkpointer"}
    weights = torch.load(run / "models" / "model.pt", weights_only=True)
    assert all(torch.is_tensor(v) for v in weights.values())

    ev = _workflow(_files(method, "evaluate"), "train", "evaluating", **_small(run, data))
    ev.run()
    rows = list(csv.DictReader(open(run / "eval_test" / "per_sample.csv")))
    assert len(rows) == 2 * 2  # 2 test subjects x 2 fixed draws
    assert {"model_nrmse", "model_psnr", "model_ssim", "lci_nrmse", "lci_psnr", "lci_ssim"} <= set(rows[0])
    for r in rows:
        assert 0 <= float(r["model_ssim"]) <= 100 and float(r["model_rmse"]) >= 0
        assert float(r["lci_skill"]) == pytest.approx(0.0)
    draws = json.loads((run / "eval_test" / "draws.json").read_text())
    datalist = str(data / "datalist.json")
    for r in rows[:2]:
        ref = lci_metrics_from_draws(r, draws, load_series_datalist(datalist, "test"))
        assert float(r["lci_psnr"]) == pytest.approx(ref["psnr"], rel=1e-5)
        assert float(r["lci_nrmse"]) == pytest.approx(ref["nrmse"], rel=1e-5)
    summary = (run / "eval_test" / "summary.md").read_text()
    assert "| model |" in summary and "| lci |" in summary and "network evaluations per forecast" in summary

    inf = _workflow(
        bundle_run_files(BUNDLE, "inference", method),
        "infer",
        "run",
        bundle_root=str(BUNDLE),
        dataset_dir=str(data),
        datalist=datalist,
        output_dir=str(run),
        **{"network_def#channels": 8},
    )
    inf.run()
    inf.finalize()
    outs = sorted((run / "forecasts").glob("*.nii.gz"))
    assert len(outs) == 2
    ref = nib.load(load_series_datalist(datalist, "test")[0]["frames"][-1]["image"])
    out = nib.load(outs[0])
    assert out.shape == ref.shape and np.allclose(out.affine, ref.affine)
    assert np.isfinite(out.get_fdata()).all()


def test_fixed_draws_shared_by_models_and_resume(tmp_path):
    data = tmp_path / "data"
    for method in ("cronos_discrete", "cronos_continuous"):
        wf = _workflow(_files(method), "train", "training", **_small(tmp_path / method, data))
        wf.run()
    a = json.loads((tmp_path / "cronos_discrete" / "val_draws.json").read_text())
    b = json.loads((tmp_path / "cronos_continuous" / "val_draws.json").read_text())
    assert a == b and len(a["draws"]) == 2

    run = tmp_path / "cronos_discrete"
    with pytest.raises(RuntimeError) as err:  # MONAI's config runner chains our FileExistsError
        _workflow(_files("cronos_discrete"), "train", "training", **_small(run, data)).run()
    cause = err.value
    while cause.__cause__ is not None:
        cause = cause.__cause__
    assert isinstance(cause, FileExistsError) and "--resume true" in str(cause)
    wf = _workflow(_files("cronos_discrete"), "train", "training", **_small(run, data, max_epochs=2, resume=True))
    wf.run()
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    steps_per_epoch = 2  # 3 training subjects, batch size 2
    assert state["trainer"]["iteration"] == 2 * steps_per_epoch and state["trainer"]["max_epochs"] == 2
    assert state["lr_scheduler"]["last_epoch"] == 2 * steps_per_epoch


@pytest.mark.slow
def test_monai_bundle_command_line(tmp_path):
    """`python -m monai.bundle run` (default id) trains, as a user would type it."""
    args = []
    for key, value in _small(tmp_path / "run", tmp_path / "data").items():
        args += [f"--{key}", json.dumps(value) if isinstance(value, list) else str(value)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    files = json.dumps([str(f) for f in bundle_run_files(BUNDLE)])
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", files, *args]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "run" / "models" / "model.pt").is_file()
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents*"))
    # the same command again: refused; the one-line reason is logged at ERROR level before MONAI's traceback
    before = (tmp_path / "run" / "models" / "model.pt").read_bytes()
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    lines = proc.stderr.splitlines()
    error_at = next(i for i, line in enumerate(lines) if "ERROR" in line and "already holds a training run" in line)
    assert str(tmp_path / "run") in lines[error_at] and "--resume true" in lines[error_at]
    assert error_at < next(i for i, line in enumerate(lines) if line.startswith("Traceback"))
    assert (tmp_path / "run" / "models" / "model.pt").read_bytes() == before


def test_ema_weights_are_validated_and_exported(tmp_path):
    """With use_ema the exported best model is the EMA copy, and the resume checkpoint holds it."""
    run = tmp_path / "run"
    wf = _workflow(_files("cronos_discrete"), "train", "training", **_small(run, tmp_path / "data", use_ema=True))
    wf.run()
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert "ema" in state
    exported = torch.load(run / "models" / "model.pt", weights_only=True)
    online = state["network"]
    ema = state["ema"]
    key = next(k for k in exported if k.endswith("weight") and exported[k].dtype.is_floating_point)
    torch.testing.assert_close(exported[key], ema[key])
    assert not torch.equal(ema[key], online[key])  # EMA lags the online weights after a few steps


def _raw_series(tmp_path: Path) -> tuple[Path, list[np.ndarray], np.ndarray]:
    """One subject of 5 frames (16 x 16 x 8, intensities about 50..1050, a non-identity affine) and its datalist."""
    rng = np.random.default_rng(3)
    affine = np.diag([1.5, 1.5, 3.0, 1.0])
    affine[:3, 3] = [-10.0, 4.0, 2.0]
    frames, entries = [], []
    for i in range(5):
        vol = (50.0 + 1000.0 * rng.random((16, 16, 8))).astype(np.float32)
        path = tmp_path / "data" / f"f{i}.nii.gz"
        path.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(vol, affine), str(path))
        frames.append(vol)
        entries.append({"image": str(path), "time": i / 11})
    datalist = tmp_path / "data" / "datalist.json"
    write_series_datalist(datalist, {"test": [{"subject": "s1", "frames": entries}]}, relative=False)
    return datalist, frames, affine


def _infer_as_built(tmp_path: Path, files: list[Path], datalist: Path, perturb: float = 0.0, **overrides):
    """Save the weights of the network as the configs build it (plus ``perturb`` x seeded Gaussian noise, so that
    zero-initialised output layers do not hide the network), then run ``inference.yaml`` (target time 0.5) on the
    datalist with them; returns the parser of that build and the one forecast written (weights: ``model.pt``)."""
    built = ConfigWorkflow(config_file=[str(f) for f in files], workflow_type="infer", **overrides)
    built.initialize()
    net = built.parser.get_parsed_content("network_def")
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(perturb * torch.randn(p.shape, generator=gen))
    ckpt = tmp_path / "model.pt"
    torch.save(net.state_dict(), ckpt)
    inf = _workflow(
        files,
        "infer",
        "run",
        bundle_root=str(BUNDLE),
        datalist=str(datalist),
        output_dir=str(tmp_path / "run"),
        ckpt_path=str(ckpt),
        target_time=0.5,
        **overrides,
    )
    inf.run()
    inf.finalize()
    (out_file,) = sorted((tmp_path / "run" / "forecasts").glob("*.nii.gz"))
    return built.parser, nib.load(out_file)


def test_inference_writes_original_intensity_scale(tmp_path):
    """inference.yaml undoes the series normalisation: with the as-built network (zero velocity) and ``last``
    aggregation the forecast is the last context frame, clipped to the series' 0.5/99.5 percentiles, in the units of
    the input files (here about 50..1050), on the input grid."""
    datalist, frames, affine = _raw_series(tmp_path)
    _, out = _infer_as_built(tmp_path, INFERENCE, datalist, aggregation="last", **{"network_def#channels": 8})
    lo, hi = np.percentile(np.stack(frames), [0.5, 99.5])
    expected = np.clip(frames[-1], lo, hi)  # the last frame before t = 0.5 is t = 4/11
    assert out.shape == frames[-1].shape and np.allclose(out.affine, affine)
    np.testing.assert_allclose(out.get_fdata(), expected, rtol=0, atol=1e-3 * (hi - lo))
    # a second inference into the same folder is refused before it runs ('false' as a shell gives it), the forecast kept
    (forecast,) = sorted((tmp_path / "run" / "forecasts").glob("*.nii.gz"))
    before = forecast.read_bytes()
    again = dict(bundle_root=str(BUNDLE), datalist=str(datalist), output_dir=str(tmp_path / "run"))
    again.update(ckpt_path=str(tmp_path / "model.pt"), target_time=0.5, overwrite="false")
    with pytest.raises(RuntimeError) as err:
        _workflow(INFERENCE, "infer", "run", **again, **{"network_def#channels": 8}).run()
    cause = err.value
    while cause.__cause__ is not None:
        cause = cause.__cause__
    assert isinstance(cause, FileExistsError) and "already holds forecasts" in str(cause)
    assert forecast.read_bytes() == before


@pytest.mark.parametrize("method", ["convlstm", "simvp"])
def test_inference_with_a_direct_baseline_overlay(tmp_path, method):
    """A direct baseline's method overlay applies to inference.yaml as to train.yaml: its network, prepare-batch and
    inferer are used, and the forecast is written on the input grid with its affine."""
    from monai_tfm.engines import DirectPrepareBatch
    from monai_tfm.inferers import DirectInferer

    files = bundle_run_files(BUNDLE, "inference", method)
    datalist, frames, affine = _raw_series(tmp_path)
    parser, out = _infer_as_built(tmp_path, files, datalist)
    assert isinstance(parser.get_parsed_content("prepare_batch"), DirectPrepareBatch)
    assert isinstance(parser.get_parsed_content("inferer"), DirectInferer)
    assert (
        type(parser.get_parsed_content("network_def")).__name__
        == {"convlstm": "ConvLSTM3D", "simvp": "SimVP3D"}[method]
    )
    assert out.shape == frames[-1].shape and np.allclose(out.affine, affine)
    values = out.get_fdata()
    assert np.isfinite(values).all() and values.std() > 0
    assert np.abs(values - frames[-1]).max() > 1.0  # the untrained network's output, not a copy of the last frame


@pytest.mark.parametrize("method", [None, "cronos_continuous"])
def test_inference_yaml_and_the_forecast_command_agree_bit_for_bit(tmp_path, method):
    """``inference.yaml`` (a datalist, transforms, SaveImaged) and ``monai-tfm forecast``'s path (files, times,
    BundleForecaster) give the same forecast array, to the bit, on the same grid: with trained-like (non-zero)
    weights, so the network and the solver are exercised, not only the scaling."""
    from monai_tfm.apps.bundle_loading import bundle_config_files
    from monai_tfm.apps.forecast import BundleForecaster, forecast_series

    files = bundle_config_files(BUNDLE, method, ValueError)
    datalist, frames, affine = _raw_series(tmp_path)
    _, by_config = _infer_as_built(tmp_path, files, datalist, perturb=0.05, **{"network_def#channels": 8})
    ckpt = tmp_path / "model.pt"

    model = BundleForecaster(BUNDLE, method=method, weights=ckpt, overrides={"network_def#channels": 8})
    scans = sorted((tmp_path / "data").glob("f*.nii.gz"))
    out = tmp_path / "cli.nii.gz"
    forecast_series(model, scans, [i / 11 for i in range(len(scans))], 0.5, out)

    a, b = by_config, nib.load(out)
    np.testing.assert_array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj))
    np.testing.assert_allclose(a.affine, b.affine)
    lci = np.asarray(nib.load(scans[-1]).dataobj)
    assert not np.allclose(np.asarray(b.dataobj), np.clip(lci, *np.percentile(np.stack(frames), [0.5, 99.5])))


@pytest.mark.slow
def test_the_packed_bundle_trains_and_evaluates_from_its_own_configs(tmp_path):
    """``monai-tfm pack`` of the repository bundle (its own files plus bundles/_shared/) is self-contained: unzipped
    elsewhere, ``python -m monai.bundle run training --config_file <unzipped>/configs/train.yaml`` trains, a shared
    method overlay is ``configs/methods/<method>.yaml`` there, and the metadata names no shared folder."""
    import zipfile

    from monai_tfm.apps.pack import pack_bundle

    weights = tmp_path / "w.pt"
    parser = _workflow(bundle_run_files(BUNDLE, "inference"), "infer", "run").parser
    torch.save(parser.get_parsed_content("network_def").state_dict(), weights)
    zipped = pack_bundle(BUNDLE, tmp_path / "b.zip", weights=weights)
    with zipfile.ZipFile(zipped) as zf:
        names = set(zf.namelist())
        zf.extractall(tmp_path / "unzipped")
    root = tmp_path / "unzipped" / BUNDLE.name
    for name in ("train.yaml", "evaluate.yaml", "inference.yaml", "multi_gpu_train.yaml", "methods/lci.yaml"):
        assert f"{BUNDLE.name}/configs/{name}" in names
    assert "shared_configs" not in json.loads((root / "configs" / "metadata.json").read_text())
    verify_metadata(meta_file=str(root / "configs" / "metadata.json"), filepath=str(SCHEMA))
    args = []
    for key, value in _small(root / "runs" / "x", root / "data").items():
        if key != "bundle_root":  # found from the working folder, as a user running inside the bundle would
            args += [f"--{key}", json.dumps(value) if isinstance(value, list) else str(value)]
    env = {k: v for k, v in os.environ.items() if k != "MONAI_TFM_BUNDLES"} | {"PYTHONPATH": str(REPO)}
    train = [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "training",
        "--config_file",
        str(root / "configs" / "train.yaml"),
    ]
    proc = subprocess.run([*train, *args], cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (root / "runs" / "x" / "models" / "model.pt").is_file()
    configs = [str(root / "configs" / n) for n in ("train.yaml", "methods/lci.yaml", "evaluate.yaml")]
    evaluate = [sys.executable, "-m", "monai.bundle", "run", "evaluating", "--config_file", json.dumps(configs)]
    args = [a for i, a in enumerate(args) if "network_def#channels" not in args[i - (i % 2)]]  # LCI has no width
    proc = subprocess.run([*evaluate, *args], cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (root / "runs" / "x" / "eval_test" / "summary.md").is_file()
