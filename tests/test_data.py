# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""Tests of the series data layer: datalists, series loading, shared-statistics normalisation, phantoms."""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import ScaleIntensityRangePercentilesd

from monai_tfm.data import (
    DatalistError,
    ensure_synthetic_dataset,
    generate_synthetic_dataset,
    load_series_datalist,
    make_heart_series,
    make_tumour_series,
    write_series_datalist,
)
from monai_tfm.transforms.series import LoadSeries, LoadSeriesd, SeriesReadError, grid_mismatch, read_volume
from monai_tfm.utils.io import atomic_path, atomic_save_torch, atomic_write_text

AFFINE = np.array([[1.5, 0, 0, -5.0], [0, 1.5, 0, 2.0], [0, 0, 3.0, 1.0], [0, 0, 0, 1]])
SHAPE = (6, 5, 4)


def _save(path: Path, array: np.ndarray, affine: np.ndarray = AFFINE) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(array), affine), str(path))
    return str(path)


def _series(folder: Path, subject: str, times=(0.0, 0.5, 1.0), seed: int = 0) -> dict:
    """Write a small series and return its datalist entry (absolute paths)."""
    rng = np.random.default_rng(seed)
    frames = []
    for k, t in enumerate(times):
        p = _save(folder / subject / f"f{k}.nii.gz", rng.random(SHAPE, dtype=np.float32) + k)
        frames.append({"image": p, "time": t})
    return {"subject": subject, "frames": frames}


def _snapshot(folder: Path) -> dict[str, tuple[int, str]]:
    return {
        str(p.relative_to(folder)): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


# ---------------------------------------------------------------------------------------------------------------------
# datalist


def test_datalist_round_trip(tmp_path):
    a = _series(tmp_path / "data", "s1", times=(1.0, 0.0, 0.5))  # unsorted on purpose
    b = _series(tmp_path / "data", "s2", times=(0, 3, 7))
    b["metadata"] = {"group": "NOR"}
    path = write_series_datalist(
        tmp_path / "lists" / "dl.json", {"training": [a], "test": [b]}, name="toy", time_unit="weeks"
    )
    raw = json.loads(path.read_text())
    assert raw["name"] == "toy" and raw["time_unit"] == "weeks"
    assert raw["training"][0]["frames"][0]["image"] == "../data/s1/f1.nii.gz"  # relative, sorted by time
    assert not [p for p in path.parent.iterdir() if p.name != "dl.json"]  # no temporary leftovers

    train = load_series_datalist(path, "training")
    assert [f["time"] for f in train[0]["frames"]] == [0.0, 0.5, 1.0]
    assert train[0]["frames"][0]["image"] == str((tmp_path / "data/s1/f1.nii.gz").resolve())
    test = load_series_datalist(path, section="test")
    assert test[0]["metadata"] == {"group": "NOR"}
    assert all(isinstance(f["time"], float) for f in test[0]["frames"])

    with pytest.raises(FileExistsError, match="dl.json"):
        write_series_datalist(path, {"training": [a]})
    write_series_datalist(path, {"training": train}, overwrite=True)  # absolute paths from the loader
    assert load_series_datalist(path) == train
    with pytest.raises(DatalistError, match="validation"):
        load_series_datalist(path, "validation")


def test_datalist_base_dir(tmp_path):
    entry = _series(tmp_path / "imgs", "s1")
    for f in entry["frames"]:
        f["image"] = os.path.relpath(f["image"], tmp_path / "imgs")
    path = tmp_path / "dl.json"
    path.write_text(json.dumps({"training": [entry]}))
    with pytest.raises(FileNotFoundError, match="s1"):
        load_series_datalist(path)
    items = load_series_datalist(path, base_dir=tmp_path / "imgs")
    assert Path(items[0]["frames"][0]["image"]).is_file()


def _bad(entry: dict, case: str) -> dict:
    frames = entry["frames"]
    if case == "no_frames":
        entry.pop("frames")
    elif case == "no_image":
        frames[1].pop("image")
    elif case == "no_time":
        frames[1].pop("time")
    elif case == "text_time":
        frames[1]["time"] = "late"
    elif case == "nan_time":
        frames[1]["time"] = float("nan")
    elif case == "dup_time":
        frames[1]["time"] = frames[0]["time"]
    elif case == "one_frame":
        del frames[1:]
    elif case == "missing_file":
        frames[1]["image"] = frames[1]["image"].replace("f1", "gone")
    return entry


@pytest.mark.parametrize(
    "case, words",
    [
        ("no_frames", ["'frames'"]),
        ("no_image", ["'image'", "frame #1"]),
        ("no_time", ["'time'", "f1.nii.gz"]),
        ("text_time", ["'time'", "late"]),
        ("nan_time", ["finite"]),
        ("dup_time", ["duplicate", "f1.nii.gz"]),
        ("one_frame", ["at least 2"]),
        ("missing_file", ["gone.nii.gz", "does not exist"]),
    ],
)
def test_datalist_errors(tmp_path, case, words):
    entry = _bad(_series(tmp_path, "subj_7"), case)
    path = tmp_path / "dl.json"
    path.write_text(json.dumps({"training": [entry]}))  # NaN is written as the JSON extension NaN
    with pytest.raises((DatalistError, FileNotFoundError)) as err:
        load_series_datalist(path)
    msg = str(err.value)
    for word in ["dl.json", "training", "subj_7", *words]:
        assert word in msg, msg


def test_datalist_duplicate_subjects(tmp_path):
    a, b = _series(tmp_path, "s1"), _series(tmp_path, "s1")
    path = tmp_path / "dl.json"
    path.write_text(json.dumps({"training": [a, b]}))
    with pytest.raises(DatalistError, match="'s1' occurs twice in section 'training'"):
        load_series_datalist(path)
    path.write_text(json.dumps({"training": [a], "test": [b]}))
    with pytest.raises(DatalistError, match="both 'training' and section 'test'|both 'test' and section 'training'"):
        load_series_datalist(path, "test")
    with pytest.raises(DatalistError, match="s1"):
        write_series_datalist(tmp_path / "other.json", {"training": [a], "test": [b]})
    path.write_text("{not json")
    with pytest.raises(DatalistError, match="dl.json"):
        load_series_datalist(path)


# ---------------------------------------------------------------------------------------------------------------------
# LoadSeriesd


def test_load_series_outputs_and_no_side_effects(tmp_path):
    entry = _series(tmp_path / "data", "s1", times=(2.0, 0.0, 1.0))
    entry["frames"][0]["label"] = _save(tmp_path / "data/s1/l0.nii.gz", np.ones(SHAPE, dtype=np.uint8))
    before = _snapshot(tmp_path / "data")
    out = LoadSeriesd(keys="frames")(entry)
    assert _snapshot(tmp_path / "data") == before  # inputs only read

    series, times = out["series"], out["series_time"]
    assert isinstance(series, MetaTensor) and series.shape == (3, 1, *SHAPE) and series.dtype == torch.float32
    assert times.dtype == torch.float32 and times.tolist() == [0.0, 1.0, 2.0]
    # frame k of the input holds values in [k, k + 1): time order 0, 1, 2 is input order 1, 2, 0
    assert [int(series[i].min()) for i in range(3)] == [1, 2, 0]
    np.testing.assert_allclose(series.affine.numpy(), AFFINE, atol=1e-6)
    assert str(series.meta["filename_or_obj"]).endswith("f1.nii.gz")
    assert out["frames"] is entry["frames"] and entry["frames"][0]["time"] == 2.0  # input untouched
    assert out["series_label"].shape == (3, 1, *SHAPE)
    assert out["series_label_mask"].tolist() == [False, False, True]
    assert float(out["series_label"][2].min()) == 1.0 and float(out["series_label"][:2].abs().max()) == 0.0

    plain = LoadSeries()([f["image"] for f in entry["frames"]], times=[5, 3, 4], subject="s1")
    assert plain.time.tolist() == [3.0, 4.0, 5.0] and plain.label is None


def _load_error(entry: dict) -> str:
    with pytest.raises((ValueError, FileNotFoundError, SeriesReadError)) as err:
        LoadSeriesd()(entry)
    return str(err.value)


def test_load_series_errors(tmp_path):
    def fresh(name: str, **kw) -> dict:
        return _series(tmp_path / name, f"subj_{name}", **kw)

    e = fresh("missing")
    os.remove(e["frames"][2]["image"])
    msg = _load_error(e)
    assert "subj_missing" in msg and "f2.nii.gz" in msg and "does not exist" in msg

    e = fresh("shape")
    _save(Path(e["frames"][1]["image"]), np.zeros((6, 5, 3), dtype=np.float32))
    msg = _load_error(e)
    assert "subj_shape" in msg and "f1.nii.gz" in msg and "different grids" in msg

    e = fresh("affine")
    shifted = AFFINE.copy()
    shifted[0, 3] += 0.01
    _save(Path(e["frames"][2]["image"]), np.zeros(SHAPE, dtype=np.float32), shifted)
    msg = _load_error(e)
    assert "subj_affine" in msg and "f2.nii.gz" in msg and "affine" in msg

    e = fresh("duptime", times=(0.0, 1.0, 1.0))
    msg = _load_error(e)
    assert "subj_duptime" in msg and "f2.nii.gz" in msg and "same time" in msg

    e = fresh("nantime", times=(0.0, math.nan, 1.0))
    msg = _load_error(e)
    assert "subj_nantime" in msg and "f1.nii.gz" in msg and "finite" in msg

    e = fresh("one", times=(0.0,))
    assert "subj_one" in _load_error(e) and "at least 2" in _load_error(e)

    e = fresh("nanvox")
    vol = np.zeros(SHAPE, dtype=np.float32)
    vol[1, 2, 3] = np.nan
    _save(Path(e["frames"][1]["image"]), vol)
    msg = _load_error(e)
    assert "subj_nanvox" in msg and "f1.nii.gz" in msg and "non-finite" in msg

    e = fresh("corrupt")
    Path(e["frames"][0]["image"]).write_bytes(b"this is not a nifti file" * 4)
    with pytest.raises(SeriesReadError) as err:
        LoadSeriesd()(e)
    assert "subj_corrupt" in str(err.value) and "f0.nii.gz" in str(err.value)

    e = fresh("four_d")
    _save(Path(e["frames"][1]["image"]), np.zeros((*SHAPE, 7), dtype=np.float32))
    msg = _load_error(e)
    assert "subj_four_d" in msg and "f1.nii.gz" in msg and "4D" in msg and "3D volume" in msg


def test_percentile_normalisation_uses_shared_statistics():
    """MONAI's ScaleIntensityRangePercentilesd on (N, C, D, H, W) computes one statistic over all frames."""
    rng = np.random.default_rng(0)
    base = torch.as_tensor(rng.uniform(0.1, 1.0, size=(1, 8, 8, 4)), dtype=torch.float32)
    series = MetaTensor(torch.stack([base, 3.0 * base]), affine=torch.as_tensor(AFFINE))  # frame 1 is 3x brighter
    norm = ScaleIntensityRangePercentilesd(keys="series", lower=0.5, upper=99.5, b_min=0, b_max=1, clip=True)
    out = norm({"series": series})["series"]

    lo, hi = np.percentile(series.numpy(), [0.5, 99.5])  # one pair over all frames
    expected = np.clip((series.numpy() - lo) / (hi - lo), 0, 1)
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-5)
    assert out.shape == series.shape and out.dtype == torch.float32
    assert float(out[0].max()) < 0.4 and float(out[1].max()) > 0.95  # frame 0 stays darker than frame 1
    # relative intensities kept: (frame1 - lo) = 3 (frame0 - lo) + 2 lo, away from the clipped ends
    inner = (out[1] < 0.99) & (out[0] > 0.01)
    a0, a1 = series[0][inner].numpy(), series[1][inner].numpy()
    np.testing.assert_allclose(out[1][inner].numpy() - out[0][inner].numpy(), (a1 - a0) / (hi - lo), atol=1e-5)
    # the pitfall: channel_wise=True iterates over the first axis, i.e. normalises each frame alone
    per_frame = ScaleIntensityRangePercentilesd(
        keys="series", lower=0.5, upper=99.5, b_min=0, b_max=1, clip=True, channel_wise=True
    )({"series": series})["series"]
    assert float(per_frame[0].max()) == pytest.approx(1.0) and float(per_frame[1].max()) == pytest.approx(1.0)


# ---------------------------------------------------------------------------------------------------------------------
# phantoms


def test_heart_phantom():
    frames, times = make_heart_series(3, spatial_size=(24, 24, 12), num_frames=12)
    again, _ = make_heart_series(3, spatial_size=(24, 24, 12), num_frames=12)
    other, _ = make_heart_series(4, spatial_size=(24, 24, 12), num_frames=12)
    assert frames.shape == (12, 24, 24, 12) and frames.dtype == np.float32
    np.testing.assert_array_equal(frames, again)
    assert not np.array_equal(frames, other)
    assert frames.min() >= 0.0 and frames.max() <= 1.0
    np.testing.assert_allclose(times, np.arange(12) / 11)

    clean, _, labels = make_heart_series(3, spatial_size=(24, 24, 12), noise_std=0.0, return_labels=True)
    lv = (labels == 3).sum(axis=(1, 2, 3))
    assert lv.min() < 0.7 * lv[0]  # end-systole well below end-diastole
    assert lv[0] == lv[-1]  # one full cycle
    assert set(np.unique(labels)) == {0, 1, 2, 3}
    # forecasting beats copying: the frame before a 3-frame gap differs clearly from the target
    gap = np.sqrt(((clean[4:] - clean[:-4]) ** 2).mean(axis=(1, 2, 3)))
    assert gap.mean() > 1.5 * 0.02  # vs noise std 0.02
    steps = np.abs(np.diff(clean, axis=0)).max()
    assert steps < 0.9  # smooth edges, no flicker


def test_tumour_phantom():
    frames, times, labels = make_tumour_series(5, spatial_size=(20, 20, 10), return_labels=True)
    again, times2 = make_tumour_series(5, spatial_size=(20, 20, 10))
    np.testing.assert_array_equal(frames, again)
    np.testing.assert_array_equal(times, times2)
    assert 3 <= len(times) <= 6 and times[0] == 0.0 and np.all(np.diff(times) > 0) and times[-1] <= 60
    assert frames.shape == (len(times), 20, 20, 10) and 0.0 <= frames.min() and frames.max() <= 1.0
    vol = (labels == 2).sum(axis=(1, 2, 3))
    assert np.all(np.diff(vol) >= 0) and vol[-1] > vol[0]
    other, t4 = make_tumour_series(6, spatial_size=(20, 20, 10), num_visits=4)
    assert len(t4) == 4 and not np.array_equal(other[0], frames[0])


def test_generate_synthetic_dataset(tmp_path, caplog):
    out = tmp_path / "heart"
    path = generate_synthetic_dataset(
        out, num_train=2, num_val=1, num_test=1, seed=1, spatial_size=(12, 12, 6), num_frames=4, with_labels=True
    )
    assert path == out / "datalist.json" and not [p for p in tmp_path.iterdir() if p.name != "heart"]
    raw = json.loads(path.read_text())
    assert raw["metadata"]["kind"] == "heart" and raw["metadata"]["seed"] == 1 and raw["time_unit"] == "cardiac phase"
    train = load_series_datalist(path)
    assert [s["subject"] for s in train] == ["heart_000", "heart_001"]
    assert [s["subject"] for s in load_series_datalist(path, "test")] == ["heart_003"]
    item = LoadSeriesd()(train[0])
    assert item["series"].shape == (4, 1, 12, 12, 6) and item["series_label"].shape == (4, 1, 12, 12, 6)
    np.testing.assert_allclose(item["series"].affine.diagonal()[:3].numpy(), [1.5, 1.5, 3.0])
    frames, _ = make_heart_series([1, 0, 0], spatial_size=(12, 12, 6), num_frames=4)
    np.testing.assert_allclose(item["series"][:, 0].numpy(), frames, atol=1e-7)  # same generator as the API

    before = _snapshot(out)
    assert generate_synthetic_dataset(out, num_train=2, num_val=1, num_test=1, seed=1) == path
    assert ensure_synthetic_dataset(out) == str(path)
    assert _snapshot(out) == before  # reused, not regenerated
    generate_synthetic_dataset(
        out, num_train=1, num_val=1, num_test=1, seed=2, spatial_size=(12, 12, 6), overwrite=True
    )
    assert len(load_series_datalist(path)) == 1 and _snapshot(out) != before

    tumour = ensure_synthetic_dataset(tmp_path / "tumour", kind="tumour", num_train=2, num_val=0, num_test=0)
    items = load_series_datalist(tumour)
    loaded = LoadSeriesd()(items[1])
    assert loaded["series"].shape[1:] == (1, 32, 32, 16) and torch.all(torch.diff(loaded["series_time"]) > 0)

    (tmp_path / "empty").mkdir()  # an existing empty folder is replaced by the staged dataset
    path = ensure_synthetic_dataset(tmp_path / "empty", num_train=1, num_val=0, num_test=0, spatial_size=(8, 8, 4))
    assert len(load_series_datalist(path)) == 1
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging leftovers

    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("keep me")
    path = generate_synthetic_dataset(tmp_path / "busy", num_train=1, num_val=0, num_test=0, spatial_size=(8, 8, 4))
    assert (tmp_path / "busy" / "notes.txt").read_text() == "keep me" and len(load_series_datalist(path)) == 1
    with pytest.raises(ValueError, match="kind"):
        generate_synthetic_dataset(tmp_path / "x", kind="lung")


# ---------------------------------------------------------------------------------------------------------------------
# atomic io


def test_atomic_io(tmp_path):
    p = atomic_write_text(tmp_path / "a" / "x.txt", "one")
    assert p.read_text() == "one"
    with pytest.raises(FileExistsError, match="x.txt"):
        atomic_write_text(p, "two")
    atomic_write_text(p, "two", overwrite=True)
    assert p.read_text() == "two"
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "a" / "y.nii.gz") as tmp:
        assert tmp.name.endswith("y.nii.gz")
        tmp.write_text("partial")
        raise RuntimeError("boom")
    assert sorted(q.name for q in (tmp_path / "a").iterdir()) == ["x.txt"]
    ckpt = atomic_save_torch({"w": torch.arange(3)}, tmp_path / "m.pt")
    assert torch.equal(torch.load(ckpt, weights_only=True)["w"], torch.arange(3))


def test_read_volume_and_grid_mismatch(tmp_path):
    """The one reader of scans (datalist frames and ``monai-tfm forecast``): value, affine, checks, grid comparison."""
    vol = np.arange(np.prod(SHAPE), dtype=np.float32).reshape(SHAPE)
    img = read_volume(_save(tmp_path / "a.nii.gz", vol), what="scan")
    assert img.shape == (1, *SHAPE) and np.array_equal(img[0].numpy(), vol)
    assert np.allclose(np.asarray(img.affine), AFFINE)

    assert grid_mismatch(img, img) is None
    other = read_volume(_save(tmp_path / "b.nii.gz", np.zeros((6, 5, 3), np.float32)))
    assert "spatial shape (6, 5, 3) vs (6, 5, 4)" in grid_mismatch(other, img)
    shifted = AFFINE.copy()
    shifted[1, 3] += 0.5
    moved = read_volume(_save(tmp_path / "c.nii.gz", vol, shifted))
    assert "affines differ by up to 0.5" in grid_mismatch(moved, img)
    assert grid_mismatch(moved, img, atol=1.0) is None

    with pytest.raises(FileNotFoundError, match="subj: label file '.*nope.nii.gz' does not exist"):
        read_volume(tmp_path / "nope.nii.gz", what="label", who="subj")
    four_d = _save(tmp_path / "d.nii.gz", np.zeros((*SHAPE, 2), np.float32))
    with pytest.raises(ValueError, match="4D image"):
        read_volume(four_d)
    assert read_volume(four_d, allow_multichannel=True).shape == (2, *SHAPE)
    bad = vol.copy()
    bad[0, 0, 0] = np.inf
    with pytest.raises(ValueError, match="1 non-finite"):
        read_volume(_save(tmp_path / "e.nii.gz", bad))
    assert not torch.isfinite(read_volume(tmp_path / "e.nii.gz", check_finite=False)).all()


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
@pytest.mark.parametrize("keep", ["first_200", "half", "all_but_4"])
def test_truncated_nifti_is_an_error_naming_the_file(tmp_path, suffix, keep):
    """A NIfTI file cut short (its first 200 bytes, half of it, all but 4 bytes) is refused, never read as zeros."""
    full = tmp_path / f"full{suffix}"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((16, 16, 8)).astype(np.float32), np.eye(4)), full)
    data = full.read_bytes()
    n = {"first_200": 200, "half": len(data) // 2, "all_but_4": len(data) - 4}[keep]
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(data[:n])
    assert read_volume(full).shape == (1, 16, 16, 8)
    with pytest.raises(SeriesReadError, match=str(cut).replace(".", r"\.")):
        read_volume(cut)


@pytest.mark.parametrize("n", [1, 2, 5, 1000, 294_912, 1_200_000])
@pytest.mark.parametrize("bounds", [(0.5, 99.5), (0.0, 100.0), (2.5, 97.5)])
def test_series_percentiles_equal_monai_percentile(n, bounds):
    """The selection-based percentiles are the values MONAI's percentile (torch.quantile / NumPy) gives, ties too."""
    from monai.transforms.utils_pytorch_numpy_unification import percentile

    from monai_tfm.transforms.intensity import series_percentiles

    g = torch.Generator().manual_seed(n)
    for x in (torch.randn(n, generator=g) * 37.0, (torch.rand(n, generator=g) * 9).round()):
        expected = tuple(float(percentile(x, q)) for q in bounds)
        assert series_percentiles(x.reshape(-1, 1), *bounds) == expected


def test_gzip_nifti_with_two_members_is_read_in_full(tmp_path):
    """A valid .nii.gz whose trailer does not give its size (two gzip members) is checked by decompressing it."""
    import gzip

    vol = np.random.default_rng(1).random((16, 16, 8)).astype(np.float32)
    plain = tmp_path / "v.nii"
    nib.save(nib.Nifti1Image(vol, np.eye(4)), plain)
    raw = plain.read_bytes()
    two = tmp_path / "two.nii.gz"
    two.write_bytes(gzip.compress(raw[:1000]) + gzip.compress(raw[1000:]))
    np.testing.assert_array_equal(read_volume(two)[0].numpy(), vol)
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(two.read_bytes()[:-40])
    with pytest.raises(SeriesReadError, match="cut"):
        read_volume(cut)


def test_prepared_folder_with_other_options_is_refused_naming_them(tmp_path):
    """One staleness policy for every preparer: a prepared folder made with other options is an error naming them."""
    from monai_tfm.data.preparation import ensure_prepared

    calls = []

    def prepare(src, dst, **kwargs):
        calls.append(kwargs)
        Path(dst).mkdir(parents=True, exist_ok=True)
        meta = {"source": str(Path(src).resolve()), "spatial_size": [8, 8, 4], "num_frames": 5}
        (Path(dst) / "datalist.json").write_text(json.dumps({"metadata": meta, "training": []}))
        return Path(dst) / "datalist.json"

    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    first = ensure_prepared(src, dst, prepare, "TOY", spatial_size=(8, 8, 4), num_frames=5)
    # same options (a tuple vs the stored list, None = the preparer's default, an option the metadata does not record)
    assert ensure_prepared(src, dst, prepare, "TOY", spatial_size=[8, 8, 4], num_frames=None, overwrite=False) == first
    assert len(calls) == 1
    with pytest.raises(
        ValueError, match=r"other options: spatial_size=\[8, 8, 4\] \(asked: \[16, 16, 4\]\), num_frames=5"
    ):
        ensure_prepared(src, dst, prepare, "TOY", spatial_size=(16, 16, 4), num_frames=7)
    assert len(calls) == 1
