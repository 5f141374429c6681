# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""LUMIERE preparation (``monai_tfm.data.lumiere``) on a fake download in the official layout, and the LUMIERE bundle
(one training epoch, evaluation and inference at a tiny grid)."""

from __future__ import annotations

import csv
import hashlib
import json
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from helpers import REPO, workflow
from monai.bundle import ConfigParser, verify_metadata

from monai_tfm.apps.bundle_loading import bundle_methods, bundle_run_files
from monai_tfm.cli import Commands
from monai_tfm.data import ensure_lumiere_prepared, fold_split, load_series_datalist, prepare_lumiere
from monai_tfm.data.lumiere import (
    LUMIERE_DEFAULT_PATTERN,
    LUMIERE_RAW_PATTERN,
    LumiereVisit,
    find_lumiere_patients,
    lumiere_image_path,
    parse_week_folder,
    visit_times,
)
from monai_tfm.data.preparation import resampled_affine

BUNDLE = REPO / "bundles" / "lumiere_glioma_forecasting"
CONFIGS = BUNDLE / "configs"
META = CONFIGS / "metadata.json"
SCHEMA = REPO / "bundles" / "schema" / "monai_tfm_meta_schema_v1.json"

SHAPE = (20, 24, 16)  # a small stand-in for the 182 x 218 x 182 atlas grid
GRID = (16, 16, 8)
#: patient -> visit folders (Patient-001: two scans in week 0 and a week-NNN-k folder; Patient-006: one visit)
VISITS = {
    "Patient-001": ["week-000-1", "week-000-2", "week-012", "week-044-1"],
    "Patient-002": ["week-000", "week-009", "week-023"],
    "Patient-003": ["week-000", "week-015", "week-031", "week-050"],
    "Patient-004": ["week-000", "week-011"],
    "Patient-005": ["week-000-1", "week-007", "week-020"],
    "Patient-006": ["week-003"],
}


def _atlas_affine() -> np.ndarray:
    aff = np.diag([-1.0, 1.0, 1.0, 1.0])
    aff[:3, 3] = [90.0, -126.0, -72.0]
    return aff


def _volume(rng: np.random.Generator, scale: float) -> np.ndarray:
    """A skull-stripped-like volume: zeros outside a box "brain", random intensities (times ``scale``) inside."""
    vol = np.zeros(SHAPE, dtype=np.float32)
    vol[3:-3, 3:-3, 2:-2] = rng.uniform(100.0, 900.0, (SHAPE[0] - 6, SHAPE[1] - 6, SHAPE[2] - 4)) * scale
    return vol


def _save(path: Path, data: np.ndarray, affine: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), str(path))


def _fake_download(root: Path, visits: dict[str, list[str]] = VISITS) -> Path:
    """``root/Imaging/Patient-XXX/week-NNN[-k]/`` with raw ``CT1.nii.gz``/``FLAIR.nii.gz`` and the atlas
    ``DeepBraTumIA-segmentation/atlas/skull_strip/{ct1,flair}_skull_strip.nii.gz``. Intensities of Patient-002 grow
    from visit to visit (x1, x1.5, x2), which a per-visit normalisation would erase."""
    imaging = root / "Imaging"
    for p, names in visits.items():
        rng = np.random.default_rng(int(p[-3:]))
        for k, name in enumerate(names):
            scale = 1.0 + 0.5 * k if p == "Patient-002" else 1.0
            visit = imaging / p / name
            for mod in ("CT1", "FLAIR"):
                _save(lumiere_image_path(visit, mod), _volume(rng, scale), _atlas_affine())
                raw_shape = (SHAPE[0] + k, SHAPE[1], SHAPE[2])  # native space: a different grid at every visit
                _save(visit / f"{mod}.nii.gz", rng.uniform(0, 500, raw_shape).astype(np.float32), np.eye(4))
    if (imaging / "Patient-001").is_dir():
        (imaging / "Patient-001" / "notes.txt").write_text("not a visit")  # stray entries are ignored
    return root


def _snapshot(folder: Path) -> dict[str, str]:
    """Every entry under ``folder``: a content hash for files, ``"dir"`` for folders."""
    return {
        str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        for p in folder.rglob("*")
    }


@pytest.fixture(scope="module")
def download(tmp_path_factory) -> Path:
    return _fake_download(tmp_path_factory.mktemp("lumiere_src"))


@pytest.fixture(scope="module")
def prepared(download, tmp_path_factory) -> tuple[Path, dict[str, str], list[str]]:
    before = _snapshot(download)
    dst = tmp_path_factory.mktemp("lumiere_prep") / "prepared"
    records = []

    class _Keep(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    handler = _Keep(level=logging.INFO)
    log = logging.getLogger("monai_tfm.data.lumiere")
    old_level = log.level
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    try:
        out = prepare_lumiere(download / "Imaging", dst, spatial_size=GRID, progress=False)
    finally:
        log.removeHandler(handler)
        log.setLevel(old_level)
    assert out == dst / "datalist.json"
    return dst, before, records


# ---------------------------------------------------------------------------------------------------------------------
# parsing


def test_parse_week_folder():
    assert parse_week_folder("week-044-1") == (44, 1)
    assert parse_week_folder("week-044") == (44, 0)
    assert parse_week_folder("week-000-2") == (0, 2)
    assert parse_week_folder("week-112") == (112, 0)
    for bad in ("week-4a", "week-044-", "week_044", "week--1", "Week-044", "week-044-1-2"):
        with pytest.raises(ValueError, match=bad):
            parse_week_folder(bad)


def test_visit_times_keep_order_within_a_week():
    names = ["week-000-1", "week-000-2", "week-000-3", "week-012", "week-044-1"]
    visits = [LumiereVisit(n, *parse_week_folder(n), Path(n)) for n in names]
    assert visit_times(visits) == pytest.approx([0.0, 1 / 7, 2 / 7, 12.0, 44.0])
    assert visit_times(visits, same_week_offset=0.01) == pytest.approx([0.0, 0.01, 0.02, 12.0, 44.0])
    with pytest.raises(ValueError, match="do not fit"):
        visit_times(visits, same_week_offset=0.5)
    with pytest.raises(ValueError, match="sorted"):
        visit_times(visits[::-1])
    twin = [LumiereVisit("week-012", 12, 0, Path("a")), LumiereVisit("week-012-0", 12, 0, Path("b"))]
    with pytest.raises(ValueError, match="same week"):
        visit_times(twin)


def test_find_patients_and_image_paths(download):
    patients = find_lumiere_patients(download)  # the parent of Imaging works too
    assert [p.subject for p in patients] == sorted(VISITS)
    p1 = patients[0]
    assert [v.name for v in p1.visits] == VISITS["Patient-001"]
    assert [v.time for v in p1.visits] == pytest.approx([0.0, 1 / 7, 12.0, 44.0])
    visit = p1.visits[0].folder
    assert lumiere_image_path(visit) == visit / "DeepBraTumIA-segmentation/atlas/skull_strip/ct1_skull_strip.nii.gz"
    assert lumiere_image_path(visit, "flair", LUMIERE_RAW_PATTERN) == visit / "FLAIR.nii.gz"
    with pytest.raises(ValueError, match="modality"):
        lumiere_image_path(visit, "DWI")
    with pytest.raises(ValueError, match="placeholder"):
        lumiere_image_path(visit, "CT1", "{sequence}.nii.gz")


# ---------------------------------------------------------------------------------------------------------------------
# preparation


def test_prepared_shapes_times_order(prepared, download):
    dst, _, _ = prepared
    data = json.loads((dst / "datalist.json").read_text())
    assert data["time_unit"] == "weeks" and data["metadata"]["spatial_size"] == list(GRID)
    items = {i["subject"]: i for i in load_series_datalist(dst / "datalist.json", "training")}
    items.update({i["subject"]: i for i in load_series_datalist(dst / "datalist.json", "test")})
    assert sorted(items) == [p for p in sorted(VISITS) if len(VISITS[p]) > 1]
    p1 = items["Patient-001"]
    assert [f["visit"] for f in p1["frames"]] == VISITS["Patient-001"]
    assert [f["week"] for f in p1["frames"]] == [0, 0, 12, 44]
    assert [f["time"] for f in p1["frames"]] == pytest.approx([0.0, 1 / 7, 12.0, 44.0])
    assert p1["metadata"]["source"][0] == "Patient-001/week-000-1/" + LUMIERE_DEFAULT_PATTERN.format(
        modality_lower="ct1"
    )
    expected_affine = resampled_affine(_atlas_affine(), SHAPE, GRID)
    for item in items.values():
        assert [f["time"] for f in item["frames"]] == sorted(f["time"] for f in item["frames"])
        assert len(item["frames"]) == len(VISITS[item["subject"]])
        for f in item["frames"]:
            img = nib.load(f["image"])
            assert img.shape == GRID
            np.testing.assert_allclose(img.affine, expected_affine, atol=1e-5)
        series = np.stack([nib.load(f["image"]).get_fdata() for f in item["frames"]])
        assert series.min() == pytest.approx(0.0) and series.max() == pytest.approx(1.0)  # shared clip to [0, 1]
    # one clip/scale per patient: the growing intensities of Patient-002 survive (per-visit scaling would erase them)
    brain = (slice(None), slice(4, 12), slice(4, 12), slice(2, 6))
    means = np.stack([nib.load(f["image"]).get_fdata() for f in items["Patient-002"]["frames"]])[brain].mean(
        axis=(1, 2, 3)
    )
    assert means[0] < means[1] < means[2]
    assert means[1] / means[0] == pytest.approx(1.5, rel=0.1)


def test_splits_skipped_patient_and_source_untouched(prepared, download):
    dst, before, log = prepared
    data = json.loads((dst / "datalist.json").read_text())
    train, test = data["training"], data["test"]
    assert len(test) == 1 and len(train) == 4  # 20 % of the 5 usable patients
    assert {i["subject"] for i in train} | {i["subject"] for i in test} == {f"Patient-00{i}" for i in range(1, 6)}
    assert sorted(i["fold"] for i in train) == [0, 1, 2, 3]  # 4 patients dealt onto 5 folds
    train_items, val_items = fold_split(dst / "datalist.json", 0)
    assert len(train_items) == 3 and len(val_items) == 1
    assert "Patient-006" in data["metadata"]["skipped_subjects"]
    assert any("skipping Patient-006" in m for m in log)
    assert not (dst / "Patient-006").exists()
    assert _snapshot(download) == before  # the source is only read
    # same options, same splits: preparing again (overwrite) is deterministic
    again = prepare_lumiere(download, dst.parent / "again", spatial_size=GRID, progress=False)
    data2 = json.loads(again.read_text())
    assert [(i["subject"], i["fold"]) for i in data2["training"]] == [(i["subject"], i["fold"]) for i in train]


def test_modality_option_and_refusals(prepared, download, tmp_path):
    dst, _, _ = prepared
    with pytest.raises(FileExistsError, match="overwrite"):
        prepare_lumiere(download, dst, spatial_size=GRID, progress=False)
    with pytest.raises(ValueError, match="prepared from"):  # a prepared folder from another source is not reused
        ensure_lumiere_prepared(tmp_path / "elsewhere", dst, spatial_size=GRID)
    assert ensure_lumiere_prepared(download / "Imaging", dst, modality="ct1") == str(dst / "datalist.json")
    with pytest.raises(ValueError, match="spatial_size"):  # nor one prepared on another grid
        ensure_lumiere_prepared(download / "Imaging", dst, spatial_size=(8, 8, 4))
    with pytest.raises(ValueError, match="inside"):
        prepare_lumiere(download, download / "prep", progress=False)
    flair = prepare_lumiere(download, tmp_path / "flair", modality="flair", spatial_size=GRID, progress=False)
    assert json.loads(flair.read_text())["metadata"]["modality"] == "FLAIR"
    with pytest.raises(ValueError, match="different voxel grids"):  # raw native images are not co-registered
        prepare_lumiere(download, tmp_path / "raw", pattern=LUMIERE_RAW_PATTERN, spatial_size=GRID, progress=False)
    with pytest.raises(ValueError, match="modality"):
        prepare_lumiere(download, tmp_path / "x", modality="DWI", progress=False)
    with pytest.raises(ValueError, match="spatial_size"):
        prepare_lumiere(download, tmp_path / "x", spatial_size=(16, 16), progress=False)
    out = Commands().prepare("lumiere", str(download), str(tmp_path / "cli"), spatial_size=[8, 8, 4], progress=False)
    assert nib.load(load_series_datalist(out, "training")[0]["frames"][0]["image"]).shape == (8, 8, 4)


def _broken(tmp_path: Path, visits: dict[str, list[str]] | None = None) -> Path:
    small = {"Patient-001": ["week-000", "week-010"], "Patient-002": ["week-000-1", "week-000-2"]}
    return _fake_download(tmp_path / "src", visits or small) / "Imaging"


def test_errors_name_the_file(tmp_path):
    # a 4D file where a 3D volume is expected
    src = _broken(tmp_path)
    bad = lumiere_image_path(src / "Patient-002" / "week-000-2")
    _save(bad, np.zeros((*SHAPE, 3), np.float32), _atlas_affine())
    with pytest.raises(ValueError, match=r"ct1_skull_strip.nii.gz' has shape .*4D.*expected a 3D volume"):
        prepare_lumiere(src, tmp_path / "out", spatial_size=GRID, progress=False)
    assert not (tmp_path / "out" / "datalist.json").exists()  # checked before anything is written
    # an unreadable file
    bad.write_bytes(b"not a nifti file")
    with pytest.raises(ValueError, match="cannot read .*week-000-2"):
        prepare_lumiere(src, tmp_path / "out", spatial_size=GRID, progress=False)
    # a missing modality file: an error naming the visit, or the visit left out on request
    bad.unlink()
    with pytest.raises(FileNotFoundError, match="week-000-2.*no CT1 image"):
        prepare_lumiere(src, tmp_path / "out", spatial_size=GRID, progress=False)
    out = prepare_lumiere(src, tmp_path / "out", spatial_size=GRID, missing_visits="skip", progress=False)
    data = json.loads(out.read_text())
    assert "Patient-002" in data["metadata"]["skipped_subjects"]  # one visit left: skipped
    # a bad week folder name
    (src / "Patient-001" / "week-01a").mkdir()
    with pytest.raises(ValueError, match="week-01a"):
        prepare_lumiere(src, tmp_path / "out2", spatial_size=GRID, progress=False)
    # no patient with two visits at all
    lone = _fake_download(tmp_path / "lone", {"Patient-009": ["week-000"]})
    with pytest.raises(ValueError, match="two usable"):
        prepare_lumiere(lone, tmp_path / "out3", spatial_size=GRID, progress=False)
    with pytest.raises(FileNotFoundError, match="Patient-XXX"):
        prepare_lumiere(tmp_path / "lone" / "Imaging" / "Patient-009", tmp_path / "out4", progress=False)


# ---------------------------------------------------------------------------------------------------------------------
# bundle


def test_metadata_verifies():
    verify_metadata(meta_file=str(META), filepath=str(SCHEMA))


@pytest.mark.parametrize("method", bundle_methods(BUNDLE))
def test_method_overlays_build(method):
    """Every overlay builds its network and batch preparation; the flow methods see K context slots."""
    parser = ConfigParser()
    parser.read_config([str(f) for f in bundle_run_files(BUNDLE, "train", method)])
    assert parser["method"] == method
    assert isinstance(parser.get_parsed_content("network_def"), torch.nn.Module)
    parser.get_parsed_content("validate#prepare_batch")
    protocol = parser.get_parsed_content("protocol")
    assert protocol.target == "last" and protocol.max_context == parser.get_parsed_content("num_slots")
    week_grid = len(parser.get_parsed_content("variant_transforms")) == 2  # GridEmbedd + FillLOCFd
    assert week_grid == (parser.get_parsed_content("variant") == "discrete")


def _small(src: Path, tmp: Path, **extra) -> dict:
    return {
        "dataset_dir": str(src),
        "prepared_dir": str(tmp / "prepared"),
        "spatial_size": list(GRID),
        "output_dir": str(tmp / "run"),
        "fold": 0,
        "max_epochs": 1,
        "network_def#channels": 8,
        "batch_size": 2,
        **extra,
    }


@pytest.mark.parametrize("method", ["cronos_continuous", "cronos_discrete"])
def test_bundle_train_evaluate_infer(download, tmp_path, method):
    files = bundle_run_files(BUNDLE, "train", method)
    over = _small(download, tmp_path)
    wf = workflow(files, "train", "training", META, **over)
    assert wf.check_properties() == []
    wf.run()
    run = tmp_path / "run"
    assert (run / "models" / "model.pt").is_file()
    state = torch.load(run / "models" / "model.pt", weights_only=True)
    assert all(torch.is_tensor(v) for v in state.values())
    # validation: the last visit of the held-out patient, every earlier visit as context
    datalist = tmp_path / "prepared" / "datalist.json"
    _, val_items = fold_split(datalist, 0)
    (draw,) = json.loads((run / "val_draws.json").read_text())["draws"]
    n = len(val_items[0]["frames"])
    assert draw["subject"] == val_items[0]["subject"]
    assert draw["target_index"] == n - 1 and draw["context_indices"] == list(range(n - 1))
    # evaluation on the test split: last visit at its real week
    ev = workflow(bundle_run_files(BUNDLE, "evaluate", method), "train", "evaluating", META, **over)
    ev.run()
    rows = list(csv.DictReader(open(run / "eval_test" / "per_sample.csv")))
    test_items = load_series_datalist(datalist, "test")
    assert [r["subject"] for r in rows] == [i["subject"] for i in test_items]
    assert float(rows[0]["target_time"]) == pytest.approx(test_items[0]["frames"][-1]["time"])
    assert 0 < float(rows[0]["model_nrmse"]) < 1 and 0 < float(rows[0]["lci_nrmse"]) < 1
    # inference: each test patient's last visit, written on the prepared grid
    inf = workflow(
        bundle_run_files(BUNDLE, "inference", method),
        "infer",
        "run",
        META,
        dataset_dir=str(download),
        prepared_dir=str(tmp_path / "prepared"),
        spatial_size=list(GRID),
        ckpt_path=str(run / "models" / "model.pt"),
        output_dir=str(run),
        **{"network_def#channels": 8},
    )
    assert inf.check_properties() == []
    inf.run()
    outs = sorted((run / "forecasts").glob("*_forecast.nii.gz"))
    assert [o.name for o in outs] == [f"{i['subject']}_forecast.nii.gz" for i in test_items]
    img, ref = nib.load(outs[0]), nib.load(test_items[0]["frames"][-1]["image"])
    assert img.shape == ref.shape == GRID and np.allclose(img.affine, ref.affine, atol=1e-5)
    assert np.isfinite(img.get_fdata()).all()


def test_the_continuous_model_knows_its_training_weeks(prepared, tmp_path):
    """The bundle's time_range is the training visits' weeks (from the prepared data; nothing without it), and
    `monai-tfm forecast` refuses a target far beyond them unless extrapolation is allowed."""
    from monai_tfm.apps.forecaster import BundleForecaster, ForecastError
    from monai_tfm.data import training_time_range

    dst, _, _ = prepared
    items = json.loads((dst / "datalist.json").read_text())["training"]
    weeks = [f["time"] for item in items for f in item["frames"]]
    assert training_time_range([None, tmp_path / "nothing", dst]) == [min(weeks), max(weeks)]
    assert training_time_range([tmp_path / "nothing"]) is None
    parser = ConfigParser()
    parser.read_config([str(f) for f in bundle_run_files(BUNDLE)])
    weights = tmp_path / "w.pt"
    torch.save(parser.get_parsed_content("network_def", instantiate=True).state_dict(), weights)
    over = {"dataset_dir": str(dst), "prepared_dir": str(tmp_path / "unused")}
    model = BundleForecaster(REPO / "bundles" / "lumiere_glioma_forecasting", weights=weights, overrides=over)
    lo, hi = model.time_range.accepted
    assert (model.time_range.lo, model.time_range.hi) == (min(weeks), max(weeks)) and hi > max(weeks)
    assert model.select_context([0.0, 10.0], max(weeks), ["a", "b"]) == [0, 1]
    with pytest.raises(ForecastError, match="lies outside the trained times"):
        model.select_context([0.0, 10.0], hi + 50.0, ["a", "b"])
    free = BundleForecaster(
        REPO / "bundles" / "lumiere_glioma_forecasting", weights=weights, overrides=over, allow_extrapolation=True
    )
    assert free.select_context([0.0, 10.0], hi + 50.0, ["a", "b"]) == [0, 1]


def test_a_packed_bundle_carries_its_training_weeks(prepared, tmp_path):
    """`monai-tfm pack --dataset_dir` stores the range, so the unzipped bundle checks forecasts without the data."""
    import zipfile

    from monai_tfm.apps.forecaster import BundleForecaster
    from monai_tfm.apps.pack import pack_bundle
    from monai_tfm.data import training_time_range

    dst, _, _ = prepared
    parser = ConfigParser()
    parser.read_config([str(f) for f in bundle_run_files(BUNDLE)])
    weights = tmp_path / "w.pt"
    torch.save(parser.get_parsed_content("network_def").state_dict(), weights)
    bundle = REPO / "bundles" / "lumiere_glioma_forecasting"
    out = pack_bundle(bundle, tmp_path / "b.zip", weights=weights, dataset_dir=dst)
    with zipfile.ZipFile(out) as z:
        z.extractall(tmp_path / "unzipped")
    (root,) = (tmp_path / "unzipped").iterdir()
    model = BundleForecaster(root, overrides={"dataset_dir": str(tmp_path / "no_data")})
    assert [model.time_range.lo, model.time_range.hi] == training_time_range([dst])
