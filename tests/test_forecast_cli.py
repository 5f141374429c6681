# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""``monai-tfm forecast`` / ``pack`` and TorchScript export of the bundle network.

Weights are those of a freshly built bundle network (zero-initialised head: zero velocity, the LCI model) or the same
network with a random head (a non-trivial field); nothing is trained here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from helpers import assert_one_line_error, run_cli
from monai.bundle import ConfigParser, ckpt_export, verify_net_in_out

from monai_tfm.apps.bundle_loading import bundle_config_files, copy_bundle_configs
from monai_tfm.cli import _group_list_flags
from monai_tfm.data.synthetic import make_heart_series

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "synthetic_forecasting"
CONFIGS = BUNDLE / "configs"
ACDC_4D = Path(__file__).resolve().parents[2] / "shared" / "data" / "acdc_cine" / "patient001" / "patient001_4d.nii.gz"
STEP = 1.0 / 11  # the synthetic bundle's frame spacing (12 frames over [0, 1])


pytestmark = pytest.mark.usefixtures("fresh_log_handler")  # conftest.py


def _network(method: str | None = None) -> torch.nn.Module:
    parser = ConfigParser()
    parser.read_config([str(f) for f in bundle_config_files(BUNDLE, method, ValueError)])
    return parser.get_parsed_content("network_def")


def _randomise_head(net: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        net.out_conv.weight.copy_(torch.randn(net.out_conv.weight.shape, generator=gen) * 0.05)
        net.out_conv.bias.copy_(torch.randn(net.out_conv.bias.shape, generator=gen) * 0.01)
    return net


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> dict[str, Path]:
    """``zero``: the bundle network as built (zero velocity: the LCI model); ``random``: with a random head;
    ``continuous``: the continuous CRONOS network with a random head."""
    folder = tmp_path_factory.mktemp("weights")
    out = {"zero": folder / "zero.pt", "random": folder / "random.pt", "continuous": folder / "continuous.pt"}
    net = _network()
    torch.save(net.state_dict(), out["zero"])
    torch.save(_randomise_head(net).state_dict(), out["random"])
    torch.save(_randomise_head(_network("cronos_continuous"), seed=1).state_dict(), out["continuous"])
    return out


def _affine(spacing=(1.5, 1.25, 3.0), angle=0.5, shift=(-20.0, 12.0, 7.0)) -> np.ndarray:
    """A non-identity voxel-to-world matrix: anisotropic spacing, a rotation about z and a translation."""
    c, s = np.cos(angle), np.sin(angle)
    affine = np.eye(4)
    affine[:3, :3] = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ np.diag(spacing)
    affine[:3, 3] = shift
    return affine


def _save(path: Path, array: np.ndarray, affine: np.ndarray | None = None) -> str:
    nib.save(nib.Nifti1Image(np.asarray(array), _affine() if affine is None else affine), str(path))
    return str(path)


@pytest.fixture(scope="module")
def scans(tmp_path_factory) -> list[str]:
    """Six synthetic heart frames (16 x 16 x 8) at times k / 11, intensities 40..840, on a rotated grid."""
    folder = tmp_path_factory.mktemp("scans")
    frames, _ = make_heart_series(7, spatial_size=(16, 16, 8), num_frames=12)
    return [_save(folder / f"frame_{k:02d}.nii.gz", (frames[k] * 800 + 40).astype(np.float32)) for k in range(6)]


def _forecast_args(bundle: Path, scan_list, times, target, output, weights_file, *extra) -> list:
    """The forecast command line (``weights_file`` None: the bundle's own ``models/model.pt``)."""
    return [
        "forecast",
        "--bundle",
        bundle,
        "--scans",
        *scan_list,
        "--times",
        *times,
        "--target-time",
        target,
        "--output",
        output,
        *(["--weights", weights_file] if weights_file is not None else []),
        "--steps",
        "1",
        *extra,
    ]


def _clip_to_percentiles(last: np.ndarray, frames: list[np.ndarray]) -> np.ndarray:
    lo, hi = np.percentile(np.stack(frames), [0.5, 99.5])
    return np.clip(last, lo, hi)


# ---------------------------------------------------------------------------------------------------------- syntax


def test_list_flags_are_grouped_for_fire():
    assert _group_list_flags(
        ["forecast", "--scans", "a.nii.gz", "b.nii.gz", "--times", "0", "-0.5", "--overwrite"]
    ) == [
        "forecast",
        "--scans",
        "['a.nii.gz', 'b.nii.gz']",
        "--times",
        "['0', '-0.5']",
        "--overwrite",
    ]
    assert _group_list_flags(["forecast", "--scans", "[a/x.nii.gz, b.nii.gz]"])[2] == "['a/x.nii.gz', 'b.nii.gz']"
    assert _group_list_flags(["forecast", "--times", "[0, 0.3]"])[2] == "[0, 0.3]"
    assert _group_list_flags(["forecast", "--times", "0.3"])[2] == "0.3"
    assert _group_list_flags(["train", "--scans", "a", "b"]) == ["train", "--scans", "a", "b"]


# ---------------------------------------------------------------------------------------------------------- round trip


def test_round_trip_lci_model_returns_last_scan(tmp_path, capsys, weights):
    """A 4D series split into frames on a non-identity grid: the LCI model writes the last scan back."""
    if ACDC_4D.is_file():
        img = nib.load(str(ACDC_4D))
        series = np.asarray(img.dataobj)[..., :4].astype(np.float32)
        affine = _affine(angle=-0.3) @ np.asarray(img.affine)
    else:
        series = np.moveaxis(make_heart_series(3, spatial_size=(20, 18, 6), num_frames=12)[0][:4], 0, -1) * 500 + 20
        affine = _affine(angle=-0.3)
    files = [_save(tmp_path / f"t{k}.nii.gz", series[..., k], affine) for k in range(4)]
    out = tmp_path / "out" / "pred.nii.gz"
    times = [f"{k * STEP:.6f}" for k in range(4)]
    rc, stdout, err = run_cli(
        _forecast_args(BUNDLE, files, times, 0.5, out, weights["zero"], "--aggregation", "last"), capsys
    )
    assert rc == 0, err
    assert stdout.strip() == str(out)
    ref, pred = nib.load(files[-1]), nib.load(str(out))
    assert pred.shape == ref.shape
    np.testing.assert_allclose(pred.affine, ref.affine, atol=1e-5)
    expected = _clip_to_percentiles(series[..., 3], [series[..., k] for k in range(4)])
    scale = float(expected.max() - expected.min())
    np.testing.assert_allclose(pred.get_fdata(), expected, rtol=0, atol=1e-5 * scale)


def test_list_syntaxes(tmp_path, capsys, weights, scans):
    """``--scans a b c --times 0 t1 t2`` and ``--scans '[a,b,c]' --times '[0,t1,t2]'`` give the same forecast."""
    three = scans[:3]
    times = [f"{k * STEP:.6f}" for k in range(3)]
    first, second = tmp_path / "spaces.nii.gz", tmp_path / "brackets.nii.gz"
    rc, stdout, err = run_cli(_forecast_args(BUNDLE, three, times, 0.6, first, weights["random"]), capsys)
    assert rc == 0, err
    assert stdout.strip() == str(first)
    args = _forecast_args(BUNDLE, [f"[{','.join(three)}]"], [f"[{','.join(times)}]"], 0.6, second, weights["random"])
    rc, _, err = run_cli(args, capsys)
    assert rc == 0, err
    a, b = nib.load(str(first)).get_fdata(), nib.load(str(second)).get_fdata()
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - nib.load(three[-1]).get_fdata()).max() > 1.0  # a non-zero field changes the last scan


@pytest.mark.slow
def test_console_entry_bad_input(tmp_path, weights, scans):
    """The real console entry: exit code 2, one line naming the problem, no traceback, no output."""
    out = tmp_path / "pred.nii.gz"
    args = _forecast_args(BUNDLE, scans[:3], ["0", "0.1"], 0.6, out, weights["zero"])
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "monai_tfm.cli", *(str(a) for a in args)]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert_one_line_error(proc.returncode, proc.stderr, "3 scans but 2 times")
    assert proc.stdout == "" and not out.exists()


def test_target_time_equal_to_a_context_time_is_allowed(tmp_path, capsys, weights, scans):
    out = tmp_path / "pred.nii.gz"
    times = [f"{k * STEP:.6f}" for k in range(3)]
    rc, _, err = run_cli(
        _forecast_args(BUNDLE, scans[:3], times, times[-1], out, weights["zero"], "--aggregation", "last"), capsys
    )
    assert rc == 0, err
    frames = [nib.load(s).get_fdata() for s in scans[:3]]
    expected = _clip_to_percentiles(frames[-1], frames)
    np.testing.assert_allclose(nib.load(str(out)).get_fdata(), expected, atol=1e-3)
    # continuous CRONOS interpolates between scans
    out_c = tmp_path / "cont.nii.gz"
    args = _forecast_args(BUNDLE, scans[:3], times, times[1], out_c, weights["continuous"], "--method")
    rc, _, err = run_cli([*args, "cronos_continuous"], capsys)
    assert rc == 0, err
    assert out_c.is_file()


def test_csv_several_subjects(tmp_path, capsys, weights, scans):
    table = tmp_path / "scans.csv"
    rows = ["subject,path,time"] + [f"A,{scans[k]},{k * STEP:.6f}" for k in (1, 0, 2)]
    rows += [f"B,{Path(scans[k]).name},{k * STEP:.6f}" for k in (3, 4)]  # relative to the CSV's folder
    table.write_text("\n".join(rows) + "\n")
    for k in (3, 4):
        shutil.copy(scans[k], tmp_path / Path(scans[k]).name)
    out = tmp_path / "forecasts"
    rc, stdout, err = run_cli(
        ["forecast", "--bundle", BUNDLE, "--csv", table, "--target-time", 0.6, "--output", out]
        + ["--weights", weights["random"], "--steps", 1],
        capsys,
    )
    assert rc == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["A_forecast.nii.gz", "B_forecast.nii.gz"]
    assert stdout.split() == [str(out / "A_forecast.nii.gz"), str(out / "B_forecast.nii.gz")]
    assert nib.load(str(out / "B_forecast.nii.gz")).shape == nib.load(scans[4]).shape


def test_continuous_extrapolation_rule(tmp_path, capsys, weights, scans):
    # the synthetic bundle was trained on times 0..1 (margin 0.25): a target of 1e6 or a scan at 5 is refused with
    # the range named; --allow-extrapolation forecasts anyway; 1.2 lies within the margin
    times = ["0", f"{STEP:.6f}"]
    cont = ["--method", "cronos_continuous"]
    for target, scan_times, needle in (("1e6", times, "target time 1e+06"), ("0.5", ["0", "5"], "at time 5")):
        out = tmp_path / f"pred_{target}.nii.gz"
        args = _forecast_args(BUNDLE, scans[:2], scan_times, target, out, weights["continuous"], *cont)
        rc, _, err = run_cli(args, capsys)
        assert_one_line_error(rc, err, needle, "0..1", "-0.25..1.25", "--allow-extrapolation")
        assert not out.exists()
        rc, _, err = run_cli([*args, "--allow-extrapolation"], capsys)
        assert rc == 0 and out.is_file(), err
    out = tmp_path / "pred_margin.nii.gz"
    rc, _, err = run_cli(_forecast_args(BUNDLE, scans[:2], times, 1.2, out, weights["continuous"], *cont), capsys)
    assert rc == 0 and out.is_file(), err


def test_csv_every_subject_checked_before_the_first_output(tmp_path, capsys, weights, scans):
    # subject B's second scan is truncated: the error names subject and file, and subject A's forecast is not written
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(Path(scans[4]).read_bytes()[:200])
    table = tmp_path / "scans.csv"
    rows = ["subject,path,time"] + [f"A,{scans[k]},{k * STEP:.6f}" for k in (0, 1)]
    rows += [f"B,{scans[3]},{3 * STEP:.6f}", f"B,{cut},{4 * STEP:.6f}"]
    table.write_text("\n".join(rows) + "\n")
    out = tmp_path / "forecasts"
    rc, _, err = run_cli(
        ["forecast", "--bundle", BUNDLE, "--csv", table, "--target-time", 0.6, "--output", out]
        + ["--weights", weights["random"], "--steps", 1],
        capsys,
    )
    assert_one_line_error(rc, err, "subject 'B'", "cut.nii.gz")
    assert not out.exists() or not any(out.iterdir())


def test_preview_without_matplotlib_writes_nothing(tmp_path, capsys, weights, scans, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    out = tmp_path / "pred.nii.gz"
    args = _forecast_args(BUNDLE, scans[:2], ["0", f"{STEP:.6f}"], 0.5, out, weights["random"])
    rc, _, err = run_cli([*args, "--preview", tmp_path / "panel.png"], capsys)
    assert_one_line_error(rc, err, "--preview", "matplotlib")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_other_grids_dicom_and_reference(tmp_path, capsys, caplog, weights, scans):
    """A DICOM series and a NIfTI scan on other grids are resampled onto the latest scan's grid (or --reference)."""
    itk = pytest.importorskip("itk")
    frames = [np.asarray(nib.load(s).dataobj) for s in scans[:3]]
    dicom = tmp_path / "dicom_series"
    dicom.mkdir()
    image = itk.image_from_array(np.ascontiguousarray(frames[0].transpose(2, 1, 0)).astype(np.int16))
    names = [str(dicom / f"slice_{k:03d}.dcm") for k in range(frames[0].shape[2])]
    writer = itk.ImageSeriesWriter[type(image), itk.Image[itk.SS, 2]].New()
    writer.SetInput(image)
    writer.SetImageIO(itk.GDCMImageIO.New())
    writer.SetFileNames(names)
    writer.Update()
    coarse = _save(tmp_path / "coarse.nii.gz", frames[1][::2, ::2], _affine(spacing=(3.0, 2.5, 3.0)))
    out = tmp_path / "pred.nii.gz"
    times = ["0", f"{STEP:.6f}", f"{2 * STEP:.6f}"]
    rc, _, err = run_cli(_forecast_args(BUNDLE, [dicom, coarse, scans[2]], times, 0.5, out, weights["random"]), capsys)
    assert rc == 0, err
    assert caplog.text.count("resampled onto the reference grid") == 2  # logged notes
    ref = nib.load(scans[2])
    assert nib.load(str(out)).shape == ref.shape and np.allclose(nib.load(str(out)).affine, ref.affine)

    other = _save(tmp_path / "other_grid.nii.gz", np.zeros((10, 12, 6), np.float32), _affine(spacing=(2, 2, 2)))
    out_ref = tmp_path / "pred_ref.nii.gz"
    rc, _, err = run_cli(
        _forecast_args(BUNDLE, scans[:2], times[:2], 0.5, out_ref, weights["random"], "--reference", other), capsys
    )
    assert rc == 0, err
    written = nib.load(str(out_ref))
    assert written.shape == (10, 12, 6) and np.allclose(written.affine, nib.load(other).affine)


def test_samples_preview_truth_and_no_overwrite(tmp_path, capsys, weights, scans, caplog):
    out = tmp_path / "pred.nii.gz"
    times = [f"{k * STEP:.6f}" for k in range(3)]
    args = _forecast_args(BUNDLE, scans[:3], times, 4 * STEP, out, weights["random"], "--samples", 3, "--sigma", 0.05)
    args += ["--preview", tmp_path / "panel.png", "--truth", scans[4]]
    rc, _, err = run_cli(args, capsys)
    assert rc == 0, err
    std = nib.load(str(tmp_path / "pred_std.nii.gz")).get_fdata()
    assert std.shape == nib.load(scans[2]).shape and std.max() > 0 and std.min() >= 0
    assert (tmp_path / "panel.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "against the real scan" in caplog.text

    before = out.read_bytes()
    rc, _, err = run_cli(args, capsys)
    assert_one_line_error(rc, err, str(out), "--overwrite")
    assert out.read_bytes() == before
    # the switch as a user types it: 'false' refuses (fire hands it over as a string), a bad value is one line
    rc, _, err = run_cli([*args, "--overwrite", "false"], capsys)
    assert_one_line_error(rc, err, str(out), "--overwrite")
    assert out.read_bytes() == before
    rc, _, err = run_cli([*args, "--overwrite", "maybe"], capsys)
    assert_one_line_error(rc, err, "--overwrite", "'maybe'")
    assert out.read_bytes() == before
    rc, _, err = run_cli([*args, "--overwrite"], capsys)
    assert rc == 0, err
    rc, _, err = run_cli([*args, "--overwrite", "true"], capsys)
    assert rc == 0, err
    # the bundle trains deterministically (sigma 0): samples need an explicit sigma
    args = _forecast_args(BUNDLE, scans[:2], times[:2], 0.5, tmp_path / "x.nii.gz", weights["random"], "--samples", 2)
    rc, _, err = run_cli(args, capsys)
    assert_one_line_error(rc, err, "--samples 2", "sigma")


# ---------------------------------------------------------------------------------------------------------- bad input


def _bad_case(name: str, tmp: Path, scans: list[str], weights: dict[str, Path]) -> tuple[list, list[str]]:
    """Arguments (scans, times, target, extra, bundle) of one bad input and the texts its error must name."""
    good, times = scans[:2], ["0", f"{STEP:.6f}"]
    bundle, extra, target = BUNDLE, [], "0.5"
    if name == "missing file":
        good, needles = [str(tmp / "missing.nii.gz"), good[1]], ["missing.nii.gz", "does not exist"]
    elif name == "unreadable file":
        (tmp / "broken.nii.gz").write_bytes(b"this is not a NIfTI file")
        good, needles = [str(tmp / "broken.nii.gz"), good[1]], ["broken.nii.gz", "cannot read"]
    elif name == "DICOM folder without series":
        (tmp / "empty_study").mkdir()
        (tmp / "empty_study" / "notes.txt").write_text("no images here")
        good, needles = [str(tmp / "empty_study"), good[1]], ["empty_study", "no DICOM series"]
    elif name == "fewer times than scans":
        good, needles = scans[:3], ["3 scans but 2 times"]
    elif name == "non-numeric time":
        times, needles = ["0", "soon"], ["'soon'", "must be a number"]
    elif name == "non-finite time":
        times, needles = ["0", "nan"], ["'nan'", "finite"]
    elif name == "duplicate times":
        times, needles = ["0.1", "0.1"], ["same time 0.1"]
    elif name == "NaN voxels":
        data = np.asarray(nib.load(good[0]).dataobj).copy()
        data[1, 2, 3], data[4, 5, 6] = np.nan, np.inf
        good, needles = [_save(tmp / "nan_scan.nii.gz", data), good[1]], ["nan_scan.nii.gz", "2 non-finite"]
    elif name == "2D scan":
        good, needles = [_save(tmp / "flat.nii.gz", np.ones((16, 16), np.float32)), good[1]], [
            "flat.nii.gz",
            "2 spatial",
        ]
    elif name == "4D scan":
        good = [_save(tmp / "cine.nii.gz", np.ones((16, 16, 8, 3), np.float32)), good[1]]
        needles = ["cine.nii.gz", "4D image"]
    elif name == "bundle without weights":
        bundle = tmp / "no_weights_bundle"
        copy_bundle_configs(BUNDLE, bundle)
        needles = [str(bundle / "models" / "model.pt"), "no weights"]
    elif name == "target outside the time grid":
        target, needles = "2.5", ["target time 2.5", "outside"]
    elif name == "unknown option":
        extra, needles = ["--solver_stepz", "3"], ["--solver_stepz"]
    elif name == "truncated file":
        cut = tmp / "cut.nii.gz"
        cut.write_bytes(Path(good[0]).read_bytes()[:200])
        good, needles = [str(cut), good[1]], ["cut.nii.gz"]
    elif name == "fractional steps":
        extra, needles = ["--steps", "2.5"], ["--steps", "positive integer", "2.5"]
    elif name == "fractional samples":
        extra, needles = ["--samples", "2.5"], ["--samples", "positive integer", "2.5"]
    elif name == "same file twice":
        link = tmp / "alias.nii.gz"
        link.symlink_to(Path(good[0]).resolve())
        good, needles = [good[0], str(link)], ["alias.nii.gz", "same file"]
    elif name == "huge integer time":
        target, needles = "1" + "0" * 400, ["--target-time", "finite number", "401 digits"]
    else:
        raise AssertionError(name)
    return [bundle, good, times, target, extra], needles


BAD_CASES = [
    "missing file",
    "unreadable file",
    "DICOM folder without series",
    "fewer times than scans",
    "non-numeric time",
    "non-finite time",
    "duplicate times",
    "NaN voxels",
    "2D scan",
    "4D scan",
    "bundle without weights",
    "target outside the time grid",
    "unknown option",
    "truncated file",
    "fractional steps",
    "fractional samples",
    "same file twice",
    "huge integer time",
]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_one_line_error_and_no_output(tmp_path, capsys, weights, scans, case):
    if case == "DICOM folder without series":
        pytest.importorskip("itk")
    (bundle, scan_list, times, target, extra), needles = _bad_case(case, tmp_path, scans, weights)
    out_dir = tmp_path / "out"
    out = out_dir / "pred.nii.gz"
    weights_args = [] if case == "bundle without weights" else ["--weights", weights["zero"]]
    argv = ["forecast", "--bundle", bundle, "--scans", *scan_list, "--times", *times, "--target-time", target]
    steps = [] if "--steps" in extra else ["--steps", 1]
    rc, _, err = run_cli([*argv, "--output", out, *weights_args, *steps, *extra], capsys)
    assert_one_line_error(rc, err, *needles)
    assert not out.exists()
    assert not out_dir.exists() or not any(out_dir.iterdir())  # no temporary files left either


# ---------------------------------------------------------------------------------------------------------- sharing


@pytest.mark.parametrize("method", [None, "cronos_continuous"])
def test_torchscript_export_matches_eager(tmp_path, weights, method):
    files = [str(f) for f in bundle_config_files(BUNDLE, method, ValueError)]
    ckpt = weights["continuous" if method else "random"]
    ts_file = tmp_path / "model.ts"
    ckpt_export(
        net_id="network_def",
        filepath=str(ts_file),
        ckpt_file=str(ckpt),
        meta_file=str(CONFIGS / "metadata.json"),
        config_file=files,
    )
    extra = {"metadata.json": "", "inference.json": ""}
    scripted = torch.jit.load(str(ts_file), _extra_files=extra)
    assert extra["metadata.json"] and extra["inference.json"]
    eager = _network(method)
    eager.load_state_dict(torch.load(ckpt, weights_only=True))
    eager.eval()
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(2, 11, 1, 16, 16, 8, generator=gen)
    tau = torch.tensor([0.25, 0.75])
    kwargs = {}
    if method:
        mask = torch.ones(2, 11, dtype=torch.bool)
        mask[1, 5:] = False
        kwargs = {"frame_times": torch.rand(2, 11, generator=gen), "frame_mask": mask, "target_time": torch.rand(2)}
    with torch.no_grad():
        expected = eager(x, tau, **kwargs)
        got = scripted(x, tau, **kwargs)
        assert expected.abs().max() > 0
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
        first = {k: v[:1] for k, v in kwargs.items()}  # one sample, tau as a number
        torch.testing.assert_close(scripted(x[:1], 0.5, **first), eager(x[:1], 0.5, **first), rtol=0, atol=1e-5)
    verify_net_in_out(
        net_id="network_def",
        meta_file=str(CONFIGS / "metadata.json"),
        config_file=files,
        device="cpu",
        extra_forward_args={"tau": 0.5, **({"frame_times": torch.zeros(1, 11), "target_time": 0.5} if method else {})},
    )


def test_pack_is_reproducible_and_runs_offline(tmp_path, capsys, monkeypatch, weights, scans):
    bundle = tmp_path / "src" / "synthetic_forecasting"
    copy_bundle_configs(BUNDLE, bundle)  # a self-contained copy (the repository bundle: tests/test_bundle.py)
    shutil.copy(BUNDLE / "LICENSE", bundle / "LICENSE")
    for junk in (
        "data/heart_000/frame_00.nii.gz",
        "runs/x/models/model.pt",
        "configs/__pycache__/a.pyc",
        "models/old.pt",
    ):
        (bundle / junk).parent.mkdir(parents=True, exist_ok=True)
        (bundle / junk).write_bytes(b"junk")
    first, second = tmp_path / "a.zip", tmp_path / "b.zip"
    rc, stdout, err = run_cli(["pack", "--bundle", bundle, "--weights", weights["zero"], "--output", first], capsys)
    assert rc == 0, err
    assert stdout.strip() == str(first)
    os.utime(bundle / "LICENSE", (1e9, 1e9))  # another timestamp must not change the zip
    rc, _, err = run_cli(["pack", "--bundle", bundle, "--weights", weights["zero"], "--output", second], capsys)
    assert rc == 0, err
    assert first.read_bytes() == second.read_bytes()
    with zipfile.ZipFile(first) as zf:
        names = zf.namelist()
        assert names == sorted(names)
        assert all(i.date_time == (1980, 1, 1, 0, 0, 0) for i in zf.infolist())
        assert zf.read("synthetic_forecasting/models/model.pt") == weights["zero"].read_bytes()
        assert "synthetic_forecasting/models/old.pt" in names and "synthetic_forecasting/LICENSE" in names
        assert not [n for n in names if "/data/" in n or "/runs/" in n or "__pycache__" in n]
        zf.extractall(tmp_path / "elsewhere")
    rc, _, err = run_cli(["pack", "--bundle", bundle, "--weights", weights["zero"], "--output", first], capsys)
    assert_one_line_error(rc, err, str(first))

    monkeypatch.chdir(tmp_path)  # nothing may come from the repository folder
    out = tmp_path / "pred.nii.gz"
    unpacked = tmp_path / "elsewhere" / "synthetic_forecasting"
    rc, _, err = run_cli(_forecast_args(unpacked, scans[:2], ["0", "0.1"], 0.5, out, None), capsys)
    assert rc == 0, err
    assert out.is_file()


@pytest.mark.parametrize(
    "bundle, method, times, target, expected, percentiles",
    [
        # ISLES: 7 frame slots ending 3 frames before the target; frames 10, 11 lie in the hidden gap (left out),
        # frames 0-2 are older than the grid and share its first slot
        ("isles_ctp_forecasting", None, list(range(12)), 12.0, list(range(10)), (2, 98)),
        # LUMIERE discrete: 8 slots of 12 weeks ending 12 weeks before the target visit; any target week works
        ("lumiere_glioma_forecasting", "cronos_discrete", [0.0, 10.0, 30.0, 100.0], 110.0, [0, 1, 2, 3], (0.5, 99.5)),
    ],
)
def test_forecast_on_target_anchored_grids(tmp_path, bundle, method, times, target, expected, percentiles):
    """``monai-tfm forecast`` with bundles whose time grid moves with the target (GridEmbedd anchor='target')."""
    from monai_tfm.apps.forecast import BundleForecaster, forecast_series

    root = REPO / "bundles" / bundle
    parser = ConfigParser()
    files = bundle_config_files(root, method, ValueError)
    parser.read_config([str(f) for f in files])
    parser["network_def#channels"] = 8
    weights = tmp_path / "w.pt"
    torch.save(parser.get_parsed_content("network_def").state_dict(), weights)  # as built: zero velocity
    model = BundleForecaster(
        root, method=method, weights=weights, overrides={"network_def#channels": 8, "aggregation": "last"}
    )
    names = [f"s{i}" for i in range(len(times))]
    assert model.select_context(times, target, names) == expected

    rng = np.random.default_rng(0)
    scans = [
        _save(tmp_path / f"s{i}.nii.gz", rng.random((16, 16, 8), dtype=np.float32) * 100) for i in range(len(times))
    ]
    out = tmp_path / "pred.nii.gz"
    forecast_series(model, scans, times, target, out)
    last = nib.load(scans[expected[-1]])
    pred = nib.load(out)
    assert pred.shape == last.shape and np.allclose(pred.affine, last.affine)
    # zero velocity + last aggregation: the latest used scan, back in the original scale (clipped to percentiles)
    frames = np.stack([np.asarray(nib.load(scans[i]).dataobj) for i in expected])
    lo, hi = np.percentile(frames, percentiles)  # the bundle's normalisation over the used scans
    np.testing.assert_allclose(pred.get_fdata(), np.clip(frames[-1], lo, hi), atol=1e-3 * (hi - lo))


def test_forecast_options_are_one_list():
    """The model options are one dataclass: keyword arguments split into its fields and bundle config overrides."""
    from monai_tfm.apps.forecast import BundleForecaster, ForecastError, ForecastOptions

    opts = ForecastOptions.from_kwargs({"solver": "euler", "steps": 2, "aggregation": "last", "overrides": {"a": 1}})
    assert (opts.solver, opts.steps, opts.samples, opts.device) == ("euler", 2, 1, "cpu")
    assert dict(opts.overrides) == {"a": 1, "aggregation": "last"}
    with pytest.raises(ForecastError, match="not both"):
        BundleForecaster(BUNDLE, ForecastOptions(), solver="euler")
    with pytest.raises(ForecastError, match="unknown forecast option.*colour"):
        BundleForecaster(BUNDLE, colour="red")
