# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""Your own scans: ``monai-tfm prepare series --csv`` and ``bundles/series_forecasting`` end to end.

Every bad table gives one line naming the table row or file and writes nothing; scans on other grids (and a DICOM
series folder) are resampled onto the subject's latest scan; the split column is honoured; the prepared folder
trains, evaluates, forecasts and packs through the command line.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from helpers import assert_one_line_error, run_cli
from monai.bundle import verify_metadata

from monai_tfm.data import prepare_series, series_settings
from monai_tfm.utils.errors import MonaiTFMError

__all__: list[str] = []

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "series_forecasting"
SHAPE = (12, 10, 6)


def _affine(spacing=(2.0, 2.0, 3.0), shift=(-10.0, 5.0, 2.0)) -> np.ndarray:
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = shift
    return affine


def _scan(path: Path, value: float, shape=SHAPE, affine=None, dtype=np.float32) -> Path:
    """A smooth blob whose size grows with ``value`` (so that percentiles and resampling are not trivial)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    data = (100.0 * np.exp(-(grid**2).sum(0) / (0.2 + 0.05 * value)) + 10.0).astype(dtype)
    nib.save(nib.Nifti1Image(data, _affine() if affine is None else affine), str(path))
    return path


@pytest.fixture()
def table(tmp_path) -> Path:
    """Four subjects with 3-4 scans at irregular times, split column given; returns the CSV path."""
    src = tmp_path / "src"
    rows = ["subject,path,time,split"]
    for i, (split, times) in enumerate(
        [("training", (0, 5, 13)), ("training", (2, 4, 9, 20)), ("validation", (0, 7, 8)), ("test", (1, 6, 15))]
    ):
        for k, t in enumerate(times):
            _scan(src / f"s{i}" / f"scan{k}.nii.gz", t / 5)
            rows.append(f"s{i},s{i}/scan{k}.nii.gz,{t},{split}")
    csv = src / "scans.csv"
    csv.write_text("\n".join(rows) + "\n")
    return csv


def _rewrite(csv: Path, edit) -> Path:
    """The table with ``edit(lines) -> lines`` applied (line 0 is the header)."""
    lines = csv.read_text().splitlines()
    csv.write_text("\n".join(edit(lines)) + "\n")
    return csv


def test_prepare_writes_frames_affines_times_and_splits(table, tmp_path):
    dst = tmp_path / "prep"
    datalist = json.loads(prepare_series(table, dst, time_unit="days", progress=False).read_text())
    assert [it["subject"] for it in datalist["training"]] == ["s0", "s1"]
    assert [it["subject"] for it in datalist["validation"]] == ["s2"]
    assert [it["subject"] for it in datalist["test"]] == ["s3"]
    s1 = datalist["training"][1]
    assert [f["time"] for f in s1["frames"]] == [0.0, 2.0, 7.0, 18.0]  # counted from the first scan
    frames = [nib.load(str(dst / f["image"])) for f in s1["frames"]]
    assert all(f.shape == SHAPE and np.allclose(f.affine, _affine()) for f in frames)
    values = np.stack([np.asarray(f.dataobj) for f in frames])
    assert values.min() >= 0.0 and values.max() <= 1.0 and values.max() > 0.99  # one clip/scale for the series
    assert not np.allclose(values[0], values[-1])  # the growth between the scans is kept
    settings = series_settings(dst)
    assert settings["time_unit"] == "days" and settings["time_range"] == [0.0, 18.0]
    assert settings["time_scale"] == pytest.approx(1 / 18.0)
    assert settings["grid_spacing"] == pytest.approx(float(np.median([5, 8, 2, 5, 11])))
    assert sorted(p.name for p in table.parent.iterdir()) == ["s0", "s1", "s2", "s3", "scans.csv"]  # source as it was


def test_folds_when_the_table_has_no_split(table, tmp_path):
    _rewrite(table, lambda lines: [",".join(line.split(",")[:3]) for line in lines])
    data = json.loads(
        prepare_series(table, tmp_path / "p", num_folds=2, test_fraction=0.25, progress=False).read_text()
    )
    assert len(data["test"]) == 1 and len(data["training"]) == 3
    assert not data.get("validation")
    assert sorted({it["fold"] for it in data["training"]}) == [0, 1]


def _nan_scan(csv: Path) -> None:
    img = nib.load(str(csv.parent / "s0" / "scan1.nii.gz"))
    data = np.asarray(img.dataobj).copy()
    data[0, 0, 0] = np.nan
    nib.save(nib.Nifti1Image(data, img.affine), str(csv.parent / "s0" / "scan1.nii.gz"))


def _garbage(csv: Path) -> None:
    (csv.parent / "s0" / "scan1.nii.gz").write_bytes(b"not a nifti file")


def _four_d(csv: Path) -> None:
    nib.save(nib.Nifti1Image(np.zeros((*SHAPE, 2), np.float32), _affine()), str(csv.parent / "s0" / "scan1.nii.gz"))


def _label_off_grid(csv: Path) -> None:
    _scan(csv.parent / "s0" / "lab.nii.gz", 1.0, shape=(6, 5, 3))
    _rewrite(
        csv,
        lambda lines: [lines[0] + ",label"]
        + [line + ("," + ("s0/lab.nii.gz" if i == 1 else "")) for i, line in enumerate(lines[1:], 1)],
    )


def _edit_row(old: str, new: str):
    """An edit of the table that replaces ``old`` by ``new`` in its row 2 (file line 3: s0's second scan)."""
    return lambda csv: _rewrite(csv, lambda ls: [*ls[:2], ls[2].replace(old, new), *ls[3:]])


# (case, edit of the source, needles of the one-line error)
BAD = {
    "missing scan": (lambda c: (c.parent / "s0" / "scan1.nii.gz").unlink(), ["scan1.nii.gz", "line 3"]),
    "unreadable scan": (_garbage, ["scan1.nii.gz", "line 3"]),
    "4D scan": (_four_d, ["scan1.nii.gz", "line 3"]),
    "non-finite voxels": (_nan_scan, ["scan1.nii.gz", "line 3"]),
    "non-numeric time": (
        lambda c: _rewrite(c, lambda ls: [*ls[:2], ls[2].replace(",5,", ",five,"), *ls[3:]]),
        ["scan1.nii.gz", "five"],
    ),
    "duplicate time": (_edit_row(",5,", ",0,"), ["scan1.nii.gz", "same time"]),
    "same file twice": (lambda c: _rewrite(c, lambda ls: [*ls, "s3,s0/scan0.nii.gz,30,test"]), ["scan0.nii.gz"]),
    "bad split": (_edit_row("training", "train"), ["train"]),
    "label off grid": (_label_off_grid, ["lab.nii.gz"]),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_tables_give_one_line_and_write_nothing(case, table, tmp_path, capsys):
    edit, needles = BAD[case]
    edit(table)
    before = sorted(p.relative_to(table.parent) for p in table.parent.rglob("*"))
    dst = tmp_path / "prep"
    rc, _, err = run_cli(["prepare", "series", "--csv", table, "--dst", dst], capsys)
    assert_one_line_error(rc, err, *needles)
    assert not dst.exists()
    assert sorted(p.relative_to(table.parent) for p in table.parent.rglob("*")) == before


def test_a_subject_with_one_scan_is_an_error_or_skipped(table, tmp_path, capsys):
    _scan(table.parent / "solo" / "a.nii.gz", 1.0)
    _rewrite(table, lambda ls: [*ls, "solo,solo/a.nii.gz,0,training"])
    rc, _, err = run_cli(["prepare", "series", "--csv", table, "--dst", tmp_path / "p"], capsys)
    assert_one_line_error(rc, err, "solo")
    assert not (tmp_path / "p").exists()
    data = json.loads(prepare_series(table, tmp_path / "p", short_series="skip", progress=False).read_text())
    assert "solo" not in [it["subject"] for sec in ("training", "validation", "test") for it in data.get(sec, [])]
    assert "solo" in json.dumps(data["metadata"])  # listed as skipped


def test_destination_holding_a_source_is_refused(table, capsys):
    rc, _, err = run_cli(["prepare", "series", "--csv", table, "--dst", table.parent], capsys)
    assert rc == 2 and "Traceback" not in err
    assert not (table.parent / "datalist.json").exists()


def test_other_grids_and_a_dicom_series_are_resampled(table, tmp_path):
    itk = pytest.importorskip("itk")
    src = table.parent
    # s0's middle scan: another grid (coarser, shifted) ; s1's first scan: a DICOM series folder
    _scan(src / "s0" / "scan1.nii.gz", 1.0, shape=(6, 5, 4), affine=_affine((4.0, 4.0, 4.5), (-9.0, 6.0, 2.5)))
    volume = np.asarray(nib.load(str(src / "s1" / "scan0.nii.gz")).dataobj).astype(np.int16)
    image = itk.image_from_array(np.ascontiguousarray(volume.transpose(2, 1, 0)))
    image.SetSpacing([2.0, 2.0, 3.0])
    image.SetOrigin([-10.0, 5.0, 2.0])
    dicom = src / "s1" / "dicom0"
    dicom.mkdir()
    writer = itk.ImageSeriesWriter[type(image), itk.Image[itk.SS, 2]].New()
    writer.SetInput(image)
    writer.SetImageIO(itk.GDCMImageIO.New())
    writer.SetFileNames([str(dicom / f"slice_{k:03d}.dcm") for k in range(volume.shape[2])])
    writer.Update()
    _rewrite(table, lambda ls: [line.replace("s1/scan0.nii.gz", "s1/dicom0") for line in ls])
    data = json.loads(prepare_series(table, tmp_path / "p", progress=False).read_text())
    for it in data["training"]:
        for f in it["frames"]:
            img = nib.load(str(tmp_path / "p" / f["image"]))
            assert img.shape == SHAPE and np.allclose(img.affine, _affine(), atol=1e-4)


def test_subjects_on_different_shapes_need_spatial_size(table, tmp_path, capsys):
    for k in range(3):  # the whole of s3 on another grid shape
        _scan(table.parent / "s3" / f"scan{k}.nii.gz", k, shape=(8, 8, 4))
    rc, _, err = run_cli(["prepare", "series", "--csv", table, "--dst", tmp_path / "p"], capsys)
    assert_one_line_error(rc, err, "--spatial_size")
    assert not (tmp_path / "p").exists()
    data = json.loads(prepare_series(table, tmp_path / "p", spatial_size=(8, 8, 4), progress=False).read_text())
    for sec in ("training", "test"):
        assert all(
            nib.load(str(tmp_path / "p" / f["image"])).shape == (8, 8, 4) for it in data[sec] for f in it["frames"]
        )


def test_overwrite_semantics(table, tmp_path, capsys):
    dst = tmp_path / "p"
    prepare_series(table, dst, progress=False)
    stamp = (dst / "datalist.json").read_bytes()
    rc, _, err = run_cli(["prepare", "series", "--csv", table, "--dst", dst, "--overwrite", "false"], capsys)
    assert_one_line_error(rc, err, "datalist.json")
    assert (dst / "datalist.json").read_bytes() == stamp
    rc, _, err = run_cli(
        ["prepare", "series", "--csv", table, "--dst", dst, "--time_unit", "h", "--overwrite", "true"], capsys
    )
    assert rc == 0, err
    assert series_settings(dst)["time_unit"] == "h"


def test_bad_options_are_one_line(table, tmp_path):
    for kw in ({"num_folds": 1}, {"test_fraction": 1.0}, {"time_origin": "middle"}, {"time_scale": -1.0}):
        with pytest.raises(MonaiTFMError):
            prepare_series(table, tmp_path / "p", progress=False, **kw)
        assert not (tmp_path / "p").exists()


def test_metadata_verifies():
    verify_metadata(
        meta_file=str(BUNDLE / "configs" / "metadata.json"),
        filepath=str(REPO / "bundles" / "schema" / "monai_tfm_meta_schema_v1.json"),
    )


@pytest.mark.slow
def test_csv_to_trained_evaluated_forecast_and_packed_bundle(tmp_path, capsys, monkeypatch):
    """The README's worked example at a tiny size: synthetic --csv, prepare, train, evaluate, forecast, pack."""
    monkeypatch.chdir(tmp_path)
    net = ["--network_def#channels", "8"]
    rc, _, err = run_cli(
        ["synthetic", "--out", "raw", "--kind", "tumour", "--csv", "true", "--spatial_size", "[16,16,8]"], capsys
    )
    assert rc == 0, err
    rc, _, err = run_cli(
        ["prepare", "series", "--csv", "raw/scans.csv", "--dst", "prep", "--time_unit", "weeks"], capsys
    )
    assert rc == 0, err
    common = ["--bundle", BUNDLE, "--dataset_dir", "prep", "--output_dir", "run", *net]
    rc, _, err = run_cli(["train", *common, "--max_epochs", "1"], capsys)
    assert rc == 0, err
    assert (tmp_path / "run" / "models" / "model.pt").is_file()
    rc, _, err = run_cli(["evaluate", *common, "--split", "test"], capsys)  # = --eval_split
    assert rc == 0, err
    rows = (tmp_path / "run" / "eval_test" / "per_sample.csv").read_text().splitlines()
    test_subjects = json.loads((tmp_path / "prep" / "datalist.json").read_text())["test"]
    assert len(rows) == 1 + len(test_subjects)  # one sample (the last scan) per test subject

    subject = test_subjects[0]
    frames = subject["frames"]
    scans = [str(tmp_path / "prep" / f["image"]) for f in frames[:-1]]
    times = [str(f["time"]) for f in frames[:-1]]
    args = ["forecast", "--bundle", BUNDLE, "--dataset_dir", "prep", "--weights", "run/models/model.pt", *net]
    args += ["--scans", *scans, "--times", *times, "--target-time", frames[-1]["time"], "--output", "f.nii.gz"]
    rc, _, err = run_cli(args, capsys)
    assert rc == 0, err
    forecast = nib.load(str(tmp_path / "f.nii.gz"))
    assert forecast.shape == nib.load(scans[-1]).shape and np.allclose(forecast.affine, nib.load(scans[-1]).affine)

    rc, _, err = run_cli(["pack", "--bundle", BUNDLE, "--weights", "run/models/model.pt", "--output", "b.zip"], capsys)
    assert_one_line_error(rc, err, "--dataset_dir")
    assert not (tmp_path / "b.zip").exists()
    pack = [
        "pack",
        "--bundle",
        BUNDLE,
        "--weights",
        "run/models/model.pt",
        "--output",
        "b.zip",
        "--dataset_dir",
        "prep",
    ]
    rc, _, err = run_cli(pack, capsys)
    assert rc == 0, err
    with zipfile.ZipFile(tmp_path / "b.zip") as zf:
        zf.extractall(tmp_path / "unzipped")
    packed = tmp_path / "unzipped" / "series_forecasting"
    assert json.loads((packed / "configs" / "dataset_settings.json").read_text()) == series_settings("prep")
    # the unzipped bundle forecasts the same without the prepared folder
    args = ["forecast", "--bundle", packed, *net, "--scans", *scans, "--times", *times]
    args += ["--target-time", frames[-1]["time"], "--output", "g.nii.gz"]
    rc, _, err = run_cli(args, capsys)
    assert rc == 0, err
    assert np.array_equal(np.asarray(nib.load("g.nii.gz").dataobj), np.asarray(forecast.dataobj))
