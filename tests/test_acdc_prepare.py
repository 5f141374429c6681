# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""ACDC preparation (``monai_tfm.data.acdc``) on fake downloads, on the shared development copy, and via the CLI."""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from monai_tfm.cli import CLIError, Commands
from monai_tfm.data.acdc import (
    ACDC_DEFAULT_SPATIAL_SIZE,
    ACDC_DEV_SPATIAL_SIZE,
    cycle_frames,
    default_acdc_spatial_size,
    ensure_acdc_extra_phases,
    ensure_acdc_prepared,
    find_acdc_patients,
    prepare_acdc,
    read_info_cfg,
)
from monai_tfm.data.datalist import load_series_datalist
from monai_tfm.data.preparation import (
    assign_folds,
    fold_split,
    resample_labels,
    resample_series,
    resampled_affine,
    split_folds,
)

SHARED_ACDC = Path(__file__).resolve().parents[2] / "shared" / "data" / "acdc_cine"

SHAPE = (20, 18, 4)
NB_FRAMES = 9
LABEL_VALUES = (0, 2, 5)
GROUPS = ("DCM", "HCM", "NOR")


def _affine() -> np.ndarray:
    """A non-identity affine: rotation about z, anisotropic spacing (1.5, 1.2, 8.0), an offset."""
    c, s = np.cos(0.3), np.sin(0.3)
    rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    aff = np.eye(4)
    aff[:3, :3] = rot @ np.diag([-1.5, 1.2, 8.0])
    aff[:3, 3] = [40.0, -25.0, 12.0]
    return aff


def _series(number: int) -> np.ndarray:
    """Intensities linear in time: ``base(x, y, z) + slope(x, y, z) * t`` (t = 0-based frame index)."""
    rng = np.random.default_rng(number)
    base = rng.uniform(50.0, 500.0, SHAPE)
    slope = rng.uniform(-10.0, 10.0, SHAPE)
    t = np.arange(NB_FRAMES, dtype=np.float64)
    return (base[..., None] + slope[..., None] * t).astype(np.float32)


def _labels(number: int) -> np.ndarray:
    rng = np.random.default_rng(1000 + number)
    return rng.choice(np.asarray(LABEL_VALUES, dtype=np.uint8), size=SHAPE)


def _write_patient(
    folder: Path,
    number: int,
    ed: int = 1,
    es: int = 5,
    group: str | None = "DCM",
    gt_suffix: str | None = "_gt",
    info: bool = True,
) -> Path:
    """A fake ACDC patient folder: ``patientXXX_4d.nii.gz``, ``Info.cfg``, optional ED/ES masks."""
    pid = f"patient{number:03d}"
    pdir = folder / pid
    pdir.mkdir(parents=True)
    nib.save(nib.Nifti1Image(_series(number), _affine()), str(pdir / f"{pid}_4d.nii.gz"))
    if info:
        lines = [f"ED: {ed}", f"ES: {es}"] + ([f"Group: {group}"] if group else [])
        lines += ["Height: 170.0", f"NbFrame: {NB_FRAMES}", "Weight: 70.0"]
        (pdir / "Info.cfg").write_text("\n".join(lines) + "\n")
    if gt_suffix is not None:
        for frame in (ed, es):
            lab = _labels(number * 100 + frame)
            nib.save(nib.Nifti1Image(lab, _affine()), str(pdir / f"{pid}_frame{frame:02d}{gt_suffix}.nii.gz"))
    return pdir


@pytest.fixture
def official(tmp_path: Path) -> Path:
    """Official layout: training/ with 6 patients of 3 groups, testing/ with patient 101 (no Group, no masks)."""
    src = tmp_path / "acdc_download"
    for i, number in enumerate(range(1, 7)):
        _write_patient(src / "training", number, ed=1 + (i % 2), es=5 + (i % 3), group=GROUPS[i % 3])
    _write_patient(src / "testing", 101, ed=1, es=6, group=None, gt_suffix=None)
    return src


@pytest.fixture
def flat(tmp_path: Path) -> Path:
    """Flat layout (like the shared development copy), ``_gt_crop`` masks, one patient >= 101."""
    src = tmp_path / "acdc_flat"
    _write_patient(src, 1, ed=1, es=7, gt_suffix="_gt_crop")
    _write_patient(src, 2, ed=2, es=6, group="NOR", gt_suffix=None)
    _write_patient(src, 120, ed=1, es=4, group="RV", gt_suffix="_gt_crop")
    return src


def _snapshot(root: Path) -> dict[str, tuple]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.stat()
            digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None
            out[str(p.relative_to(root))] = (digest, st.st_mtime_ns, st.st_size if p.is_file() else None)
    return out


def _voxel_centre(affine: np.ndarray, shape) -> np.ndarray:
    return (affine @ np.r_[(np.asarray(shape, dtype=float) - 1.0) / 2.0, 1.0])[:3]


# ---------------------------------------------------------------------------------------------------------------------
# building blocks


def test_read_info_cfg(tmp_path: Path):
    cfg = tmp_path / "Info.cfg"
    cfg.write_text("ED: 1\nES: 12\nGroup: DCM\n\nHeight: 184.0\nNbFrame: 30\nWeight: 95.0\n")
    assert read_info_cfg(cfg) == {"ED": 1, "ES": 12, "Group": "DCM", "Height": 184.0, "NbFrame": 30, "Weight": 95.0}
    cfg.write_text("ED: 1\nthis line is broken\n")
    with pytest.raises(ValueError, match="line 2"):
        read_info_cfg(cfg)
    with pytest.raises(FileNotFoundError, match="nope.cfg"):
        read_info_cfg(tmp_path / "nope.cfg")


def test_resampling_helpers():
    series = _series(3)
    out = resample_series(series, (7, 9, 3), 5)
    assert out.shape == (7, 9, 3, 5) and out.dtype == np.float32
    # space: same as scipy's field-of-view-preserving (grid_mode) linear zoom; time: ED and the last frame kept
    ref_first = ndimage.zoom(series[..., 0], np.divide((7, 9, 3), SHAPE), order=1, mode="nearest", grid_mode=True)
    ref_last = ndimage.zoom(series[..., -1], np.divide((7, 9, 3), SHAPE), order=1, mode="nearest", grid_mode=True)
    np.testing.assert_allclose(out[..., 0], ref_first, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(out[..., -1], ref_last, rtol=1e-5, atol=1e-3)
    # identity grid: nothing changes
    np.testing.assert_allclose(resample_series(series, SHAPE, NB_FRAMES), series, rtol=1e-6)
    # labels: nearest neighbour, no new values
    lab = _labels(0)
    assert set(np.unique(resample_labels(lab, (31, 7, 9)))) <= set(LABEL_VALUES)
    np.testing.assert_array_equal(resample_labels(lab, SHAPE), lab)
    # affine: spacing * n_in / n_out, same directions, same field-of-view centre
    aff = resampled_affine(_affine(), SHAPE, (10, 36, 8))
    np.testing.assert_allclose(np.linalg.norm(aff[:3, :3], axis=0), [1.5 * 2, 1.2 * 0.5, 8.0 * 0.5])
    np.testing.assert_allclose(_voxel_centre(aff, (10, 36, 8)), _voxel_centre(_affine(), SHAPE))


def test_assign_folds_stratified_and_deterministic():
    subjects = [f"patient{i:03d}" for i in range(1, 101)]
    groups = [GROUPS[i % 3] if i < 60 else f"G{i % 2}" for i in range(100)]
    folds = assign_folds(subjects, groups, 5, seed=0)
    assert folds == assign_folds(list(reversed(subjects)), list(reversed(groups)), 5, seed=0)  # order-free
    assert folds != assign_folds(subjects, groups, 5, seed=1)
    assert sorted(folds) == sorted(subjects) and set(folds.values()) == set(range(5))
    assert set(Counter(folds.values()).values()) == {20}
    per_group = Counter((folds[s], g) for s, g in zip(subjects, groups))
    for g in set(groups):
        counts = [per_group[(f, g)] for f in range(5)]
        assert max(counts) - min(counts) <= 1, (g, counts)
    with pytest.raises(ValueError, match="num_folds"):
        assign_folds(subjects, groups, 1)


def test_default_spatial_size():
    assert default_acdc_spatial_size([(100, 95, 7, 30), (100, 95, 5, 20)]) == ACDC_DEV_SPATIAL_SIZE
    assert default_acdc_spatial_size([(216, 256, 10, 30), (154, 224, 8, 28)]) == ACDC_DEFAULT_SPATIAL_SIZE


# ---------------------------------------------------------------------------------------------------------------------
# preparation of fake downloads


def test_prepare_official_layout(official: Path, tmp_path: Path):
    before = _snapshot(official)
    size, num_frames = (12, 10, 6), 5
    dst = tmp_path / "prepared"
    datalist = prepare_acdc(official, dst, spatial_size=size, num_frames=num_frames, num_folds=3, progress=False)
    assert datalist == dst / "datalist.json" and datalist.is_file()
    assert _snapshot(official) == before  # the source is never written

    training = load_series_datalist(datalist, "training")
    test = load_series_datalist(datalist, "test")
    assert [e["subject"] for e in training] == [f"patient{i:03d}" for i in range(1, 7)]
    assert [e["subject"] for e in test] == ["patient101"]
    assert "fold" not in test[0] and test[0]["metadata"]["group"] is None
    raw = json.loads(datalist.read_text())
    assert raw["metadata"]["spatial_size"] == list(size) and raw["time_unit"] == "cardiac phase"

    target_spacing = np.array([1.5, 1.2, 8.0]) * np.array(SHAPE) / np.array(size)
    for i, item in enumerate(training + test):
        number = int(item["subject"][-3:])
        meta = item["metadata"]
        ed, es = meta["ed"], meta["es"]
        if item in training:
            assert meta["group"] == GROUPS[i % 3] and (ed, es) == (1 + (i % 2), 5 + (i % 3))
        assert meta["nb_frames"] == NB_FRAMES
        split = "testing" if number >= 101 else "training"
        assert meta["source"] == f"{split}/{item['subject']}/{item['subject']}_4d.nii.gz"
        times = [f["time"] for f in item["frames"]]
        np.testing.assert_allclose(times, np.linspace(0.0, 1.0, num_frames))
        imgs = [nib.load(f["image"]) for f in item["frames"]]
        data = np.stack([np.asanyarray(im.dataobj) for im in imgs], axis=-1)
        assert len(imgs) == num_frames and all(im.shape == size for im in imgs)
        assert data.min() >= 0.0 and data.max() <= 1.0 and data.min() == 0.0 and data.max() == pytest.approx(1.0)
        # affine: scaled spacing, source orientation, same field-of-view centre
        for im in imgs:
            np.testing.assert_allclose(np.linalg.norm(im.affine[:3, :3], axis=0), target_spacing, rtol=1e-5)
            directions = im.affine[:3, :3] / np.linalg.norm(im.affine[:3, :3], axis=0)
            src_dirs = _affine()[:3, :3] / np.linalg.norm(_affine()[:3, :3], axis=0)
            np.testing.assert_allclose(directions, src_dirs, atol=1e-6)
            np.testing.assert_allclose(_voxel_centre(im.affine, size), _voxel_centre(_affine(), SHAPE), atol=1e-4)
        # frame k == spatial resampling of source frame ED + k (ES - ED) / (n - 1), and ONE clip/scale for the
        # whole series: the 0.5 / 99.5 percentiles over all resampled frames (not per frame)
        src = _series(number)
        refs = []
        for k in range(num_frames):
            t = (ed - 1) + k * (es - ed) / (num_frames - 1)
            i0, w = int(t), t - int(t)
            frame = (1 - w) * src[..., i0] + w * src[..., min(i0 + 1, NB_FRAMES - 1)]
            refs.append(ndimage.zoom(frame, np.divide(size, SHAPE), order=1, mode="nearest", grid_mode=True))
        refs = np.stack(refs, axis=-1)
        lo, hi = np.percentile(refs, [0.5, 99.5])
        np.testing.assert_allclose(meta["intensity_clip"], [lo, hi], rtol=1e-4)
        np.testing.assert_allclose(data, np.clip((refs - lo) / (hi - lo), 0.0, 1.0), atol=1e-4)
        # labels: attached to ED (first) and ES (last) frames, nearest neighbour only
        if number < 101:
            assert "label" in item["frames"][0] and "label" in item["frames"][-1]
            assert all("label" not in f for f in item["frames"][1:-1])
            for f, frame_no in ((item["frames"][0], ed), (item["frames"][-1], es)):
                lab = nib.load(f["label"])
                assert lab.shape == size
                values = np.asanyarray(lab.dataobj)
                assert set(np.unique(values)) <= set(LABEL_VALUES)
                ref = _labels(number * 100 + frame_no)
                np.testing.assert_array_equal(values, resample_labels(ref, size))
                np.testing.assert_allclose(lab.affine, imgs[0].affine)
        else:
            assert all("label" not in f for f in item["frames"])

    # folds: every training patient exactly once; deterministic; fold helpers agree
    folds = {e["subject"]: e["fold"] for e in training}
    assert set(folds.values()) <= set(range(3)) and len(folds) == len(training)
    seen = []
    for f in range(3):
        train_items, val_items = fold_split(datalist, f)
        assert {e["subject"] for e in val_items} == {s for s, v in folds.items() if v == f}
        assert {e["subject"] for e in train_items} | {e["subject"] for e in val_items} == set(folds)
        assert not {e["subject"] for e in train_items} & {e["subject"] for e in val_items}
        seen += [e["subject"] for e in val_items]
    assert sorted(seen) == sorted(folds)
    assert {
        g: sorted(Counter(folds[e["subject"]] for e in training if e["metadata"]["group"] == g).values())
        for g in GROUPS
    } == {
        g: [1, 1] for g in GROUPS
    }  # stratified: each group's 2 patients in 2 folds
    again = prepare_acdc(
        official, tmp_path / "again", spatial_size=size, num_frames=num_frames, num_folds=3, progress=False
    )
    assert {e["subject"]: e["fold"] for e in load_series_datalist(again)} == folds
    with pytest.raises(ValueError, match="fold 7"):
        split_folds(training, 7)
    with pytest.raises(ValueError, match="fold"):
        split_folds(test, 0)


def test_prepare_flat_layout_and_default_grid(flat: Path, tmp_path: Path, caplog):
    before = _snapshot(flat)
    dst = tmp_path / "out"
    with caplog.at_level("INFO", logger="monai_tfm.data.acdc"):
        datalist = prepare_acdc(flat, dst, num_frames=4, progress=False)
    assert "(96, 96, 8)" in caplog.text  # small in-plane size: development grid, and it is logged
    assert _snapshot(flat) == before
    training, test = load_series_datalist(datalist), load_series_datalist(datalist, "test")
    assert [e["subject"] for e in training] == ["patient001", "patient002"]
    assert [e["subject"] for e in test] == ["patient120"]
    assert training[0]["metadata"]["source"] == "patient001/patient001_4d.nii.gz"
    for item in training + test:
        assert len(item["frames"]) == 4
        assert all(nib.load(f["image"]).shape == ACDC_DEV_SPATIAL_SIZE for f in item["frames"])
    assert training[0]["metadata"]["labels"] == {
        "ed": "patient001_frame01_gt_crop.nii.gz",
        "es": "patient001_frame07_gt_crop.nii.gz",
    }
    assert all("label" not in f for f in training[1]["frames"])  # patient002 has no masks
    assert "label" in test[0]["frames"][0]
    # include_labels=False writes no masks
    nolab = prepare_acdc(
        flat, tmp_path / "nolab", spatial_size=(8, 8, 4), num_frames=3, include_labels=False, progress=False
    )
    assert not list((tmp_path / "nolab").rglob("label_*"))
    assert all("label" not in f for e in load_series_datalist(nolab) for f in e["frames"])


def test_overwrite(flat: Path, tmp_path: Path):
    dst = tmp_path / "out"
    prepare_acdc(flat, dst, spatial_size=(8, 8, 4), num_frames=6, progress=False)
    stamp = (dst / "datalist.json").read_bytes()
    with pytest.raises(FileExistsError, match=str(dst)):
        prepare_acdc(flat, dst, spatial_size=(8, 8, 4), num_frames=3, progress=False)
    assert (dst / "datalist.json").read_bytes() == stamp and len(list((dst / "patient001").glob("frame_*"))) == 6
    datalist = prepare_acdc(flat, dst, spatial_size=(8, 8, 4), num_frames=3, overwrite=True, progress=False)
    assert sorted(p.name for p in (dst / "patient001").glob("frame_*")) == [f"frame_{k:02d}.nii.gz" for k in range(3)]
    assert all(len(e["frames"]) == 3 for e in load_series_datalist(datalist))
    # a non-empty dst without a datalist (e.g. an interrupted run) is fine
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    prepare_acdc(flat, other, spatial_size=(8, 8, 4), num_frames=3, progress=False)
    assert (other / "notes.txt").read_text() == "keep me"


@pytest.mark.parametrize(
    "case, exc, match",
    [
        ("no_info", FileNotFoundError, "Info.cfg"),
        ("info_without_es", ValueError, "'ES'"),
        ("es_outside", ValueError, "outside the series"),
        ("es_before_ed", ValueError, "before ED"),
        ("image_3d", ValueError, "4D"),
        ("missing_image", FileNotFoundError, "patient002_4d.nii.gz"),
        ("empty", FileNotFoundError, "no ACDC patients"),
    ],
)
def test_errors(tmp_path: Path, case: str, exc: type, match: str):
    src = tmp_path / "src"
    src.mkdir()
    if case != "empty":
        _write_patient(src, 1)
        pdir = _write_patient(src, 2, es=NB_FRAMES + 3 if case == "es_outside" else 5)
        if case == "no_info":
            (pdir / "Info.cfg").unlink()
        elif case == "info_without_es":
            (pdir / "Info.cfg").write_text("ED: 1\nGroup: NOR\n")
        elif case == "es_before_ed":
            (pdir / "Info.cfg").write_text("ED: 5\nES: 2\nGroup: NOR\n")
        elif case == "image_3d":
            nib.save(nib.Nifti1Image(_series(2)[..., 0], _affine()), str(pdir / "patient002_4d.nii.gz"))
        elif case == "missing_image":
            (pdir / "patient002_4d.nii.gz").unlink()
    (src / "README.md").write_text("not a patient")
    before = _snapshot(src)
    dst = tmp_path / "dst"
    with pytest.raises(exc, match=match) as info:
        prepare_acdc(src, dst, spatial_size=(8, 8, 4), num_frames=3, progress=False)
    if case not in ("empty", "missing_image"):
        assert "patient002" in str(info.value)  # the message names the file
    assert not dst.exists()  # every patient is checked before anything is written
    assert _snapshot(src) == before


def test_bad_arguments(flat: Path, tmp_path: Path):
    with pytest.raises(ValueError, match="inside the source"):
        prepare_acdc(flat, flat / "prepared", progress=False)
    with pytest.raises(ValueError, match="num_frames"):
        prepare_acdc(flat, tmp_path / "a", num_frames=1, progress=False)
    with pytest.raises(ValueError, match="spatial_size"):
        prepare_acdc(flat, tmp_path / "a", spatial_size=(8, 8), progress=False)
    assert not (flat / "prepared").exists() and not (tmp_path / "a").exists()
    assert [p.subject for p in find_acdc_patients(flat)] == ["patient001", "patient002", "patient120"]


# ---------------------------------------------------------------------------------------------------------------------
# CLI and real data


def test_cli_prepare(official: Path, tmp_path: Path):
    out = Commands().prepare(
        "acdc", str(official), str(tmp_path / "cli"), spatial_size=[16, 16, 4], num_frames=4, progress=False
    )
    items = load_series_datalist(out)
    assert len(items) == 6 and all(nib.load(f["image"]).shape == (16, 16, 4) for f in items[0]["frames"])
    assert len(items[0]["frames"]) == 4
    with pytest.raises(CLIError, match="nope"):
        Commands().prepare("nope", str(official), str(tmp_path / "x"))
    with pytest.raises(CLIError, match="frames_per_patient"):
        Commands().prepare("acdc", str(official), str(tmp_path / "x"), frames_per_patient=3)
    assert not (tmp_path / "x").exists()


@pytest.mark.skipif(not SHARED_ACDC.is_dir(), reason=f"shared ACDC development copy not found at {SHARED_ACDC}")
def test_shared_acdc_two_patients(tmp_path: Path):
    from monai.transforms import LoadImage

    src = tmp_path / "src"
    src.mkdir()
    for pid in ("patient001", "patient021"):  # symlinks: nothing is copied
        if not (SHARED_ACDC / pid).is_dir():
            pytest.skip(f"{SHARED_ACDC / pid} is missing")
        (src / pid).symlink_to(SHARED_ACDC / pid, target_is_directory=True)
    before = _snapshot(SHARED_ACDC / "patient001")
    datalist = prepare_acdc(src, tmp_path / "prepared", spatial_size=(32, 32, 8), num_frames=6, progress=False)
    assert _snapshot(SHARED_ACDC / "patient001") == before
    items = load_series_datalist(datalist)
    assert [e["subject"] for e in items] == ["patient001", "patient021"]
    assert items[0]["metadata"]["group"] == "DCM" and items[1]["metadata"]["group"] == "HCM"
    loader = LoadImage(image_only=True, ensure_channel_first=True)
    for item in items:
        assert len(item["frames"]) == 6
        assert item["frames"][-1]["time"] == 1.0
        vols = [loader(f["image"]) for f in item["frames"]]
        assert all(tuple(v.shape) == (1, 32, 32, 8) for v in vols)
        assert all(0.0 <= float(v.min()) and float(v.max()) <= 1.0 for v in vols)
        assert max(float(v.max()) for v in vols) == pytest.approx(1.0)
    lab = loader(items[0]["frames"][0]["label"])
    assert tuple(lab.shape) == (1, 32, 32, 8) and set(np.unique(lab.numpy()).tolist()) <= {0, 1, 2, 3}


# ---------------------------------------------------------------------------------------------------------------------
# other parts of the cycle as extra training series


def test_cycle_frames():
    # 0-based indices of a 9-frame cycle with ED = 2, ES = 6 (1-based)
    assert cycle_frames(2, 6, 9) == [1, 2, 3, 4, 5]
    assert cycle_frames(2, 6, 9, "diastole") == [5, 6, 7, 8, 0, 1]
    assert cycle_frames(2, 6, 9, "diastole_reversed") == [1, 0, 8, 7, 6, 5]
    assert cycle_frames(1, 9, 9, "diastole") == [8, 0]  # ES is the last recorded frame: back to ED
    with pytest.raises(ValueError, match="'systolic'"):
        cycle_frames(1, 5, 9, "systolic")


def test_diastole_is_systole_of_the_rearranged_cycle(tmp_path: Path):
    """A diastolic folder equals the systolic preparation of a download whose cycle holds those frames in order."""
    src, rearranged = tmp_path / "src", tmp_path / "rearranged"
    _write_patient(src, 1, ed=2, es=6, gt_suffix=None)
    _write_patient(src, 2, ed=1, es=4, group="NOR", gt_suffix=None)
    for number, (ed, es) in ((1, (2, 6)), (2, (1, 4))):
        frames = cycle_frames(ed, es, NB_FRAMES, "diastole_reversed")
        _write_patient(rearranged, number, ed=1, es=len(frames), group="DCM" if number == 1 else "NOR", gt_suffix=None)
        path = rearranged / f"patient{number:03d}" / f"patient{number:03d}_4d.nii.gz"
        nib.save(nib.Nifti1Image(_series(number)[..., frames], _affine()), str(path))
    kw = {"spatial_size": (10, 9, 4), "num_frames": 5, "num_folds": 2, "progress": False}
    dia = load_series_datalist(prepare_acdc(src, tmp_path / "dia", phases="diastole_reversed", **kw))
    ref = load_series_datalist(prepare_acdc(rearranged, tmp_path / "ref", **kw))
    assert [e["subject"] for e in dia] == [e["subject"] for e in ref]
    for a, b in zip(dia, ref):
        assert a["metadata"]["phases"] == "diastole_reversed" and b["metadata"]["phases"] == "systole"
        assert [f["time"] for f in a["frames"]] == [f["time"] for f in b["frames"]]
        for fa, fb in zip(a["frames"], b["frames"]):
            np.testing.assert_array_equal(nib.load(fa["image"]).get_fdata(), nib.load(fb["image"]).get_fdata())
            assert "label" not in fa  # masks belong to the systolic series only
    with pytest.raises(ValueError, match="phases must be one of"):
        prepare_acdc(src, tmp_path / "bad", phases="ed_es", **kw)


def test_extra_training_series_follow_the_folds(official: Path, tmp_path: Path):
    kw = {"spatial_size": (8, 8, 4), "num_frames": 3, "progress": False}
    systole = tmp_path / "prepared"
    datalist = ensure_acdc_prepared(official, systole, **kw)
    assert ensure_acdc_extra_phases(official, systole, [], **kw) == []
    (extra,) = ensure_acdc_extra_phases(official, systole, ["diastole"], **kw)
    assert ensure_acdc_extra_phases(official, systole, "diastole", **kw) == [extra]  # one name, not its letters
    assert Path(extra).parent == tmp_path / "prepared_diastole"
    with pytest.raises(ValueError, match="phases='diastole' \\(asked: 'diastole_reversed'\\)"):  # the staleness policy
        ensure_acdc_prepared(official, tmp_path / "prepared_diastole", phases="diastole_reversed", **kw)
    items = load_series_datalist(datalist)
    for fold in sorted({e["fold"] for e in items}):
        train, val = fold_split(datalist, fold, extra=[extra])
        plain_train, plain_val = fold_split(datalist, fold)
        assert val == plain_val  # validation: the systolic series of the fold only
        added = train[len(plain_train) :]
        assert train[: len(plain_train)] == plain_train
        assert sorted(e["subject"] for e in added) == sorted(e["subject"] for e in plain_train)
        assert all(e["metadata"]["phases"] == "diastole" for e in added)
    # a diastole whose folds are not the systolic folds (another seed, an edited file) is refused
    data = json.loads(Path(extra).read_text())
    data["training"][0]["fold"] = (data["training"][0]["fold"] + 1) % 5
    Path(extra).write_text(json.dumps(data))
    with pytest.raises(ValueError, match=rf"{data['training'][0]['subject']}' has fold .* same subjects and folds"):
        fold_split(datalist, 0, extra=[extra])
    with pytest.raises(ValueError, match="must be among"):
        ensure_acdc_extra_phases(official, systole, ["systole"], **kw)
    with pytest.raises(ValueError, match="is a prepared folder"):
        ensure_acdc_extra_phases(systole, tmp_path / "again", ["diastole"], **kw)
