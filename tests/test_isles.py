# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""ISLES 2024 perfusion CT: preparation (``monai_tfm.data.isles``) of fake downloads in the official layout, the
sampling protocol of the bundle, and one-epoch training + evaluation + inference of ``bundles/isles_ctp_forecasting``.
"""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from helpers import REPO, workflow
from monai.bundle import ConfigParser, verify_metadata
from monai.transforms import Compose
from scipy import ndimage

from monai_tfm.apps.bundle_loading import bundle_methods, bundle_run_files
from monai_tfm.cli import Commands
from monai_tfm.data import ensure_isles_prepared, fold_split, load_series_datalist, prepare_isles
from monai_tfm.data.isles import brain_bounding_box, brain_mask, find_isles_patients
from monai_tfm.data.preparation import hold_out_subjects
from monai_tfm.metrics import compute_forecast_metrics
from monai_tfm.transforms import draw_context

BUNDLE = REPO / "bundles" / "isles_ctp_forecasting"
CONFIGS = BUNDLE / "configs"
META = CONFIGS / "metadata.json"

SHAPE = (28, 24, 6)  # source (x, y, z)
NB_FRAMES = 20  # source frames; 10 are kept (every other frame)
N_PATIENTS = 6  # 20 %: 1 test patient, 5 training patients in 5 folds
SIZE = (16, 16, 8)  # prepared grid of the tests
SPACING = (0.45, 0.45, 5.0)
AIR, BONE, SCALP = -1024.0, 1200.0, 50.0


def _affine() -> np.ndarray:
    aff = np.diag([*SPACING, 1.0])
    aff[0, 0] = -SPACING[0]  # a flipped axis, as in many CT headers
    aff[:3, 3] = (60.0, -40.0, 12.0)
    return aff


def _regions() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boolean brain, skull and scalp masks of the phantom head on the source grid."""
    x, y = np.meshgrid(np.linspace(-1, 1, SHAPE[0]), np.linspace(-1, 1, SHAPE[1]), indexing="ij")
    r = np.sqrt((x / 0.85) ** 2 + (y / 0.8) ** 2)
    brain2d, skull2d, scalp2d = r < 0.6, (r >= 0.6) & (r < 0.8), (r >= 0.8) & (r < 0.9)
    brain = np.zeros(SHAPE, dtype=bool)
    brain[..., 1:-1] = brain2d[..., None]  # the top and bottom slices cut through the skull
    skull = np.repeat(skull2d[..., None], SHAPE[2], axis=2)
    skull[..., [0, -1]] |= brain2d[..., None]
    scalp = np.repeat(scalp2d[..., None], SHAPE[2], axis=2)
    return brain, skull, scalp


def _series(seed: int, n_t: int = NB_FRAMES) -> np.ndarray:
    """A phantom CT perfusion series in HU: air, skull, scalp, and a brain with a contrast bolus and noise."""
    rng = np.random.default_rng(seed)
    brain, skull, scalp = _regions()
    weight = np.linspace(0.2, 1.0, SHAPE[0])[:, None, None] * np.ones(SHAPE)  # perfusion varies over the brain
    bolus = np.exp(-0.5 * ((np.arange(n_t) - 0.45 * n_t - seed % 3) / (0.15 * n_t)) ** 2)
    out = np.full((*SHAPE, n_t), AIR, dtype=np.float32)
    for t in range(n_t):
        frame = out[..., t]
        frame[skull], frame[scalp] = BONE, SCALP
        frame[brain] = 30.0 + 50.0 * bolus[t] * weight[brain] + rng.normal(0.0, 2.0, int(brain.sum()))
    return np.round(out).astype(np.int16)


def _save(path: Path, data: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(data, _affine())
    img.header.set_xyzt_units("mm", "sec")
    if data.ndim == 4:
        img.header["pixdim"][4] = 1.0
    nib.save(img, str(path))


def _make_download(root: Path, n_patients: int = N_PATIENTS, n_t: int = NB_FRAMES) -> Path:
    """The official ISLES 2024 layout: raw_data + derivatives (registered copies, 3D NCCT/CTA, perfusion maps)."""
    for i in range(1, n_patients + 1):
        sid = f"sub-stroke{i:04d}"
        ses = root / "raw_data" / sid / "ses-01"
        ctp = _series(i, n_t)
        _save(ses / f"{sid}_ses-01_ctp.nii.gz", ctp)
        _save(ses / f"{sid}_ses-01_ncct.nii.gz", ctp[..., 0])
        _save(ses / "perfusion-maps" / f"{sid}_ses-01_tmax.nii.gz", ctp[..., 1].astype(np.float32))
        der = root / "derivatives" / sid / "ses-01"
        _save(der / f"{sid}_ses-01_space-ncct_ctp.nii.gz", ctp)
        _save(
            root / "derivatives" / sid / "ses-02" / f"{sid}_ses-02_space-ncct_lesion-msk.nii.gz",
            (ctp[..., 0] > 0).astype(np.uint8),
        )
    return root


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def download(tmp_path_factory) -> Path:
    return _make_download(tmp_path_factory.mktemp("isles") / "train")


@pytest.fixture(scope="module")
def prepared(download, tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """The download prepared once at the test grid, with a snapshot of the source taken before."""
    before = _snapshot(download)
    out = tmp_path_factory.mktemp("isles_prepared") / "prepared"
    return prepare_isles(download, out, spatial_size=SIZE, progress=False), before


# ---------------------------------------------------------------------------------------------------------------------
# preparation


def test_prepared_shapes_frames_times_and_values(download, prepared):
    datalist, before = prepared
    assert _snapshot(download) == before  # the source is never written
    raw = json.loads(datalist.read_text())
    assert raw["time_unit"] == "perfusion frame" and raw["metadata"]["spatial_size"] == list(SIZE)
    assert raw["metadata"]["skipped"] == [] and raw["metadata"]["frame_step"] == 2
    items = load_series_datalist(datalist, "training") + load_series_datalist(datalist, "test")
    assert sorted(i["subject"] for i in items) == [f"sub-stroke{i:04d}" for i in range(1, N_PATIENTS + 1)]
    brain = _regions()[0]
    coords = np.nonzero(brain)
    out_spacing = None
    for item in items:
        meta, frames = item["metadata"], item["frames"]
        sid = item["subject"]
        assert meta["source"] == f"raw_data/{sid}/ses-01/{sid}_ses-01_ctp.nii.gz"  # raw series, not the derivatives
        assert meta["source_shape"] == [*SHAPE, NB_FRAMES] and meta["source_frame_interval_s"] == 1.0
        # every other frame; time = index of the prepared frame
        assert [f["source_frame"] for f in frames] == list(range(0, NB_FRAMES, 2))
        assert [f["time"] for f in frames] == [float(k) for k in range(NB_FRAMES // 2)]
        # brain box: the brain plus the 2-voxel margin, without scalp (the in-plane opening may trim one voxel)
        for (a, b), c, n in zip(meta["crop_box"], coords, SHAPE):
            lo, hi = max(int(c.min()) - 2, 0), min(int(c.max()) + 3, n)
            assert lo <= a <= lo + 1 and hi - 1 <= b <= hi, (meta["crop_box"], sid)
        imgs = [nib.load(f["image"]) for f in frames]
        data = np.stack([np.asanyarray(im.dataobj) for im in imgs], axis=-1)
        assert all(im.shape == SIZE for im in imgs) and data.dtype == np.float32
        assert data.min() == 0.0 and data.max() == pytest.approx(1.0)
        # frame k = crop of source frame 2k, trilinear zoom to SIZE, ONE 2/98 percentile clip over all frames
        box = tuple(slice(a, b) for a, b in meta["crop_box"])
        crop_shape = [b - a for a, b in meta["crop_box"]]
        src = _series(int(sid[-4:])).astype(np.float32)
        refs = np.stack(
            [
                ndimage.zoom(src[..., t][box], np.divide(SIZE, crop_shape), order=1, mode="nearest", grid_mode=True)
                for t in range(0, NB_FRAMES, 2)
            ],
            axis=-1,
        )
        lo, hi = np.percentile(refs, [2, 98])
        np.testing.assert_allclose(meta["intensity_clip"], [lo, hi], rtol=1e-4)
        np.testing.assert_allclose(data, np.clip((refs - lo) / (hi - lo), 0, 1), atol=1e-4)
        # affine: spacing of the box over the new grid, first voxel centre inside the box's first voxel
        spacing = np.linalg.norm(imgs[0].affine[:3, :3], axis=0)
        np.testing.assert_allclose(spacing, np.multiply(SPACING, crop_shape) / SIZE, rtol=1e-5)
        np.testing.assert_allclose(meta["spacing"], spacing, rtol=1e-4)
        corner = _affine() @ np.array([a - 0.5 for a, _ in meta["crop_box"]] + [1.0])  # box edge, world
        np.testing.assert_allclose(imgs[0].affine @ np.array([-0.5, -0.5, -0.5, 1.0]), corner, atol=1e-4)
        assert all(np.allclose(im.affine, imgs[0].affine) for im in imgs)
        out_spacing = spacing
    assert out_spacing is not None


def test_splits_test_fraction_and_folds(prepared):
    datalist, _ = prepared
    training = load_series_datalist(datalist, "training")
    test = load_series_datalist(datalist, "test")
    assert len(test) == 1 and len(training) == 5 and "fold" not in test[0]
    assert sorted(e["fold"] for e in training) == [0, 1, 2, 3, 4]
    for fold in range(5):
        train_items, val_items = fold_split(datalist, fold)
        assert len(train_items) == 4 and [e["fold"] for e in val_items] == [fold]
    # 20 % held out, deterministic and independent of the order of the ids
    ids = [f"sub-stroke{i:04d}" for i in range(1, 150)]
    held = hold_out_subjects(ids, 0.2, seed=0)
    assert len(held) == 30 and held == hold_out_subjects(ids[::-1], 0.2, seed=0)
    assert held != hold_out_subjects(ids, 0.2, seed=1)
    assert hold_out_subjects(ids[:2], 0.0) == set() and len(hold_out_subjects(ids[:1], 0.5)) == 0


def test_brain_mask_and_box():
    series = _series(1).astype(np.float32)
    mean = series.mean(axis=-1)
    brain = _regions()[0]
    mask = brain_mask(mean)
    assert (mask & ~brain).sum() == 0 and (mask & brain).sum() > 0.9 * brain.sum()  # no scalp, no skull
    otsu = brain_bounding_box(mean, window=None, margin=0)  # unit-free threshold: the bright head (skull included)
    assert otsu is not None and otsu[0][0] <= np.nonzero(brain)[0].min()
    assert brain_bounding_box(np.full(SHAPE, AIR)) is None
    with pytest.raises(ValueError, match="low <= high"):
        brain_mask(mean, window=(100, 0))


def test_brain_clip_region(download, tmp_path):
    datalist = prepare_isles(download, tmp_path / "p", spatial_size=SIZE, clip_region="brain", progress=False)
    item = load_series_datalist(datalist, "training")[0]
    lo, hi = item["metadata"]["intensity_clip"]
    assert 20 < lo < hi < 100  # brain tissue and bolus, not air to bone


def test_errors_and_skips(tmp_path, caplog):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="match the pattern"):
        prepare_isles(empty, tmp_path / "o1", progress=False)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        prepare_isles(tmp_path / "missing", tmp_path / "o1", progress=False)

    src = _make_download(tmp_path / "src", n_patients=2, n_t=4)
    raw = src / "raw_data"
    # a 3D file where a 4D series is expected: the message names the file
    flat = raw / "sub-stroke0002" / "ses-01" / "sub-stroke0002_ses-01_ctp.nii.gz"
    _save(flat, _series(2, 3)[..., 0])
    with pytest.raises(ValueError, match=r"sub-stroke0002_ses-01_ctp\.nii\.gz.*expected a 4D perfusion series"):
        prepare_isles(src, tmp_path / "o2", progress=False)
    # an unreadable file
    flat.write_bytes(b"not a nifti file")
    with pytest.raises(ValueError, match=r"cannot read '.*sub-stroke0002_ses-01_ctp\.nii\.gz'"):
        prepare_isles(src, tmp_path / "o3", progress=False)
    # a pattern matching two series of one subject (raw and registered)
    _save(flat, _series(2, 12))
    with pytest.raises(ValueError, match="2 files matching"):
        find_isles_patients(src, "**/sub-stroke0002/ses-01/**/*ctp.nii.gz")
    assert [p.subject for p in find_isles_patients(src, "derivatives/sub-*/ses-01/*_space-ncct_ctp.nii.gz")] == [
        "sub-stroke0001",
        "sub-stroke0002",
    ]
    # a series too short for the protocol is skipped with a logged note (4 frames -> 2 kept < 10)
    with caplog.at_level("WARNING", logger="monai_tfm.data.isles"):
        datalist = prepare_isles(src, tmp_path / "o4", spatial_size=SIZE, min_frames=6, progress=False)
    assert "skipping sub-stroke0001" in caplog.text
    meta = json.loads(datalist.read_text())["metadata"]
    assert meta["skipped"] == ["sub-stroke0001"]
    assert [e["subject"] for e in load_series_datalist(datalist)] == ["sub-stroke0002"]
    with pytest.raises(ValueError, match="no ISLES patient"):
        prepare_isles(src, tmp_path / "o5", min_frames=50, progress=False)
    # output: never inside the source, never over a prepared dataset unless overwrite
    with pytest.raises(ValueError, match="inside"):
        prepare_isles(src, src / "prepared", progress=False)
    with pytest.raises(FileExistsError, match="overwrite"):
        prepare_isles(src, tmp_path / "o4", spatial_size=SIZE, min_frames=6, progress=False)
    prepare_isles(src, tmp_path / "o4", spatial_size=SIZE, min_frames=6, overwrite=True, progress=False)
    # the bundle helper reuses a prepared folder, but not one prepared from another download
    assert ensure_isles_prepared(src, tmp_path / "o4") == str(datalist)
    assert ensure_isles_prepared(tmp_path / "o4", tmp_path / "unused") == str(datalist)
    with pytest.raises(ValueError, match="prepared from"):
        ensure_isles_prepared(empty, tmp_path / "o4")
    with pytest.raises(ValueError, match="frame_step"):
        prepare_isles(src, tmp_path / "o6", frame_step=0)


def test_cli_prepare(download, tmp_path):
    out = Commands().prepare("isles", str(download), str(tmp_path / "cli"), spatial_size=[8, 8, 4], progress=False)
    assert Path(out).is_file() and len(load_series_datalist(out, "test")) == 1


# ---------------------------------------------------------------------------------------------------------------------
# sampling protocol of the bundle


def _parser(*files: Path) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config([str(f) for f in files])
    return parser


def test_protocol_7_consecutive_context_target_3_after():
    parser = _parser(*bundle_run_files(BUNDLE))
    protocol = parser.get_parsed_content("protocol")
    rng = np.random.default_rng(0)
    kept = []
    for n in (10, 16, 23):
        for _ in range(300):
            d = draw_context(rng, n, protocol)
            k, ctx = d.target_index, d.context_indices
            assert 9 <= k < n and 1 <= len(ctx) <= 7
            assert k - 9 <= ctx[0] and ctx[-1] <= k - 3  # inside the 7-frame window ending 3 frames before k
            kept.append(len(ctx))
    assert 3.0 < np.mean(kept) < 4.0  # keep-probability 0.5 of 7 (at least one)
    # discrete grid: 7 one-frame slots ending 3 frames before the target, so frame k - 9 + j is slot j
    grid, fill = parser.get_parsed_content("variant_transforms")
    times = torch.arange(20, dtype=torch.float32)
    frames = times.reshape(-1, 1, 1, 1, 1).expand(-1, 1, 2, 2, 2)
    sample = {
        "context": frames[[5, 8, 9]],
        "context_time": times[[5, 8, 9]],
        "context_mask": torch.ones(3, dtype=torch.bool),
        "target": frames[12],
        "target_time": times[12],
    }
    out = fill(grid(sample))
    assert out["context_mask"].tolist() == [False, False, True, False, False, True, True]
    assert out["context_time"].tolist() == [3.0, 4, 5, 6, 7, 8, 9]
    assert out["context"][:, 0, 0, 0, 0].tolist() == [5.0, 5, 5, 5, 5, 8, 9]  # LOCF


def test_inference_context_hides_the_gap():
    """Inference: target = last frame, context = the 7 frames ending 3 frames before it (as in training)."""
    parser = _parser(*bundle_run_files(BUNDLE, "inference"))
    transforms = parser.get_parsed_content("preprocessing").transforms
    times = torch.arange(12, dtype=torch.float32)
    d = {"subject": "s", "series": times.reshape(-1, 1, 1, 1, 1).expand(-1, 1, 2, 2, 2), "series_time": times}
    for t in transforms[2:]:
        d = t(d)
    assert float(d["target_time"]) == 11.0 and float(d["target"][0, 0, 0, 0]) == 11.0
    assert d["context_time"].tolist() == [2.0, 3, 4, 5, 6, 7, 8] and bool(d["context_mask"].all())


@pytest.mark.parametrize("gap", [0, 1, 2, 4])
def test_the_hidden_gap_is_one_edit(tmp_path, gap):
    """``protocol#gap`` alone moves the training draws, the time grid, the inference context and the context chosen
    by ``monai-tfm forecast``: the last context frame is ``gap + 1`` frames before the target in all of them."""
    from monai_tfm.apps.forecast import BundleForecaster
    from monai_tfm.transforms import draw_context

    files = bundle_run_files(BUNDLE, "inference")
    parser = _parser(*files)
    parser["protocol#gap"] = gap
    parser["network_def#channels"] = 8
    # training draws: every target's latest context frame is exactly gap + 1 frames before it (window complete)
    protocol = parser.get_parsed_content("protocol")
    rng = np.random.default_rng(0)
    for _ in range(50):
        draw = draw_context(rng, 20, protocol)
        assert draw.target_index - max(draw.context_indices) >= gap + 1
    # the time grid of training and inference ends gap + 1 frames before the target
    grid = next(t for t in parser.get_parsed_content("variant_transforms") if hasattr(t, "lead"))
    assert grid.lead == gap + 1
    # inference.yaml: the context of the last frame (11) ends at 10 - gap
    times = torch.arange(12, dtype=torch.float32)
    d = {"subject": "s", "series": times.reshape(-1, 1, 1, 1, 1).expand(-1, 1, 2, 2, 2), "series_time": times}
    for t in parser.get_parsed_content("preprocessing").transforms[2:]:
        d = t(d)
    real = [float(x) for x, m in zip(d["context_time"], d["context_mask"]) if m]
    assert max(real) == 10.0 - gap
    # monai-tfm forecast with the same single override
    weights = tmp_path / "w.pt"
    torch.save(parser.get_parsed_content("network_def").state_dict(), weights)
    model = BundleForecaster(
        REPO / "bundles" / "isles_ctp_forecasting",
        weights=weights,
        overrides={"protocol#gap": gap, "network_def#channels": 8},
    )
    chosen = model.select_context(list(range(12)), 12.0, [f"s{i}" for i in range(12)])
    assert max(chosen) == 11 - gap


# ---------------------------------------------------------------------------------------------------------------------
# bundle


def test_metadata_verifies():
    verify_metadata(meta_file=str(META), filepath=str(REPO / "bundles" / "schema" / "monai_tfm_meta_schema_v1.json"))


@pytest.mark.parametrize("method", bundle_methods(BUNDLE))
def test_method_overlays_build(method):
    parser = _parser(*bundle_run_files(BUNDLE, "train", method))
    net = parser.get_parsed_content("network_def")
    assert isinstance(net, torch.nn.Module) and parser["method"] == method


def test_multi_gpu_overlay_prepares_isles():
    parser = _parser(*bundle_run_files(BUNDLE, "multi_gpu_train"))
    assert "ensure_isles_prepared" in parser["datalist"] and "DistributedSampler" in str(parser["train#sampler"])


def _small(download: Path, tmp: Path, **extra) -> dict:
    return {
        "dataset_dir": str(download),
        "prepared_dir": str(tmp / "prepared"),
        "spatial_size": list(SIZE),
        "output_dir": str(tmp / "run"),
        "fold": 0,
        "max_epochs": 1,
        "network_def#channels": 8,
        "val_draws": 1,
        "eval_draws": 2,
        "batch_size": 2,
        **extra,
    }


@pytest.mark.parametrize("method", ["cronos_discrete", "cronos_continuous"])
def test_bundle_train_evaluate_infer(download, tmp_path, method):
    files = bundle_run_files(BUNDLE, "train", method)
    over = _small(download, tmp_path)
    train = workflow(files, "train", "training", META, **over)
    assert train.check_properties() == []
    train.run()
    run = tmp_path / "run"
    state = torch.load(run / "models" / "model.pt", weights_only=True)
    assert all(torch.is_tensor(v) for v in state.values())
    datalist = tmp_path / "prepared" / "datalist.json"
    _, val_items = fold_split(datalist, 0)

    ev = workflow(
        bundle_run_files(BUNDLE, "evaluate", method), "train", "evaluating", META, eval_split="validation", **over
    )
    ev.run()
    rows = list(csv.DictReader(open(run / "eval_validation" / "per_sample.csv")))
    draws = json.loads((run / "eval_validation" / "draws.json").read_text())["draws"]
    assert len(rows) == 2 and {r["subject"] for r in rows} == {val_items[0]["subject"]}
    series = Compose(ev.parser.get_parsed_content("load_transforms"))(val_items[0])["series"]  # as the bundle
    for r in rows:
        rec = next(d for d in draws if d["draw"] == int(r["draw"]))
        k, ctx = rec["target_index"], rec["context_indices"]
        assert k >= 9 and k - 9 <= ctx[0] and ctx[-1] <= k - 3 and float(r["target_time"]) == k
        assert np.isfinite(float(r["model_nrmse"])) and 0 <= float(r["model_ssim"]) <= 100
        ref = compute_forecast_metrics(series[ctx[-1]], series[k], series[ctx[-1]])  # LCI from the saved draw
        assert float(r["lci_nrmse"]) == pytest.approx(ref["nrmse"], rel=1e-4)

    inf = workflow(
        bundle_run_files(BUNDLE, "inference", method),
        "infer",
        "run",
        META,
        dataset_dir=str(download),
        prepared_dir=str(tmp_path / "prepared"),
        spatial_size=list(SIZE),
        ckpt_path=str(run / "models" / "model.pt"),
        output_dir=str(run),
        **{"network_def#channels": 8},
    )
    inf.run()
    (test_item,) = load_series_datalist(datalist, "test")
    (out,) = sorted((run / "forecasts").glob("*_forecast.nii.gz"))
    assert out.name.startswith(test_item["subject"])
    img, ref = nib.load(out), nib.load(test_item["frames"][-1]["image"])
    assert img.shape == ref.shape == SIZE and np.allclose(img.affine, ref.affine, atol=1e-5)
    assert np.isfinite(img.get_fdata()).all()


def test_bundle_lci_baseline_evaluates_without_training(download, tmp_path):
    files = bundle_run_files(BUNDLE, "evaluate", "lci")
    over = _small(download, tmp_path)
    over.pop("network_def#channels")  # LCI has no parameters
    ev = workflow(files, "train", "evaluating", META, **over)
    ev.run()
    rows = list(csv.DictReader(open(tmp_path / "run" / "eval_test" / "per_sample.csv")))
    assert len(rows) == 2 and all(float(r["model_nrmse"]) == pytest.approx(float(r["lci_nrmse"])) for r in rows)
