# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""Longitudinal self-supervision (Ren et al., NeurIPS 2022): losses against hand-computed cases, stop-gradient,
shared pair geometry, consistency, STCS/ASPC, the weight mapping to CRONOS, and a tiny bundle run on ACDC
(pretrain -> finetune -> evaluate, plus the forecasting overlay; skipped when ../shared is absent)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from helpers import REPO, SHARED_ACDC, workflow
from monai.bundle import verify_metadata
from monai.losses import DiceCELoss
from monai.transforms import Compose, RandAffine, RandFlip, RandSpatialCrop

from monai_tfm.apps.bundle_loading import bundle_run_files
from monai_tfm.networks import CronosUNet, TFMUNet
from monai_tfm.ssl import (
    ConsistencyLoss,
    CycledZipDataset,
    LongitudinalFinetuneLoss,
    LongitudinalPaird,
    LongitudinalSegmentationMetrics,
    LongitudinalSSLLoss,
    LongitudinalSSLNet,
    LongitudinalUNet,
    SelectLabelledFramed,
    aspc,
    covariance_loss,
    default_geometric_augmentation,
    default_intensity_augmentation,
    few_subjects,
    init_forecaster_from_pretrained,
    load_pretrained_unet,
    negative_cosine,
    orthogonality_loss,
    patch_similarity_loss,
    segmentation_scores,
    select_subjects,
    stcs,
    variance_loss,
)

CONFIGS = REPO / "bundles" / "acdc_cine_longitudinal_ssl" / "configs"
META = CONFIGS / "metadata.json"
FORECAST = REPO / "bundles" / "acdc_cine_forecasting"
needs_shared = pytest.mark.skipif(not SHARED_ACDC.is_dir(), reason="../shared/data/acdc_cine is not available")

# ------------------------------------------------------------------------------------------------ losses


def test_patch_similarity_hand_computed():
    p_a, z_b = torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 1.0]])  # cos = 1/sqrt(2)
    p_b, z_a = torch.tensor([[0.0, 1.0]]), torch.tensor([[0.0, 2.0]])  # cos = 1
    assert negative_cosine(p_a, z_b).item() == pytest.approx(-1 / math.sqrt(2))
    expected = 0.5 * (-1 / math.sqrt(2)) + 0.5 * (-1.0)
    assert patch_similarity_loss(p_a, p_b, z_a, z_b).item() == pytest.approx(expected)
    # averaged over rows (the M locations)
    two = patch_similarity_loss(
        torch.cat([p_a, p_a]), torch.cat([p_b, p_b]), torch.cat([z_a, z_a]), torch.cat([z_b, z_b])
    )
    assert two.item() == pytest.approx(expected)


def test_stop_gradient():
    torch.manual_seed(0)
    x = torch.randn(8, 4)
    w_p = torch.randn(4, 3, requires_grad=True)  # predictor path
    w_z = torch.randn(4, 3, requires_grad=True)  # projection path (target)
    negative_cosine(x @ w_p, x @ w_z).backward()
    assert w_z.grad is None
    assert w_p.grad is not None and w_p.grad.abs().sum() > 0
    # symmetric loss: each projection receives gradient only through the other side's predictor input
    z_a = torch.randn(5, 3, requires_grad=True)
    z_b = torch.randn(5, 3, requires_grad=True)
    p_a, p_b = torch.randn(5, 3, requires_grad=True), torch.randn(5, 3, requires_grad=True)
    patch_similarity_loss(p_a, p_b, z_a, z_b).backward()
    assert z_a.grad is None and z_b.grad is None and p_a.grad.abs().sum() > 0 and p_b.grad.abs().sum() > 0


def test_variance_loss_hand_computed_and_zero_above_threshold():
    z = torch.tensor([[0.0, 0.0], [2.0, 0.0]])  # dim 0: std sqrt(2 + 1e-4) > 1 -> 0; dim 1: std 0.01 -> 0.99
    assert variance_loss(z).item() == pytest.approx(0.5 * (1.0 - math.sqrt(1e-4)), abs=1e-6)
    torch.manual_seed(0)
    wide = 5.0 * torch.randn(64, 16)
    assert torch.sqrt(wide.var(0) + 1e-4).min() > 1.0
    assert variance_loss(wide).item() == 0.0
    assert variance_loss(wide, threshold=100.0).item() > 0.0
    with pytest.raises(ValueError, match="N >= 2"):
        variance_loss(torch.ones(1, 3))


def test_covariance_loss_hand_computed():
    z = torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]])  # cov = [[1, 1], [1, 1]]: off-diagonal 1 + 1, / D = 2
    assert covariance_loss(z).item() == pytest.approx(1.0)
    decorrelated = torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, 0.0]])  # cov_01 = 0
    assert covariance_loss(decorrelated).item() == pytest.approx(0.0, abs=1e-7)


def test_orthogonality_loss():
    z_e = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    z_d = torch.tensor([[0.0, 3.0], [1.0, 0.0]])  # cos 0 and 1/sqrt(2)
    assert orthogonality_loss(z_e, z_d).item() == pytest.approx(0.5 / math.sqrt(2))
    e = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    d = torch.tensor([[0.0, 5.0, 0.0], [0.0, 0.0, -2.0]])
    assert orthogonality_loss(e, d).item() == 0.0
    assert orthogonality_loss(e, -e).item() == pytest.approx(1.0)  # anti-parallel is not orthogonal


def _fake_output():
    z = {"enc0": (torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[1.0, 0.0], [0.0, 1.0]]))}
    z["dec0"] = (torch.tensor([[0.0, 0.0], [2.0, 0.0]]), torch.tensor([[0.0, 0.0], [2.0, 0.0]]))
    p = {"enc0": z["enc0"], "dec0": (torch.tensor([[1.0, 0.0], [1.0, 0.0]]),) * 2}
    return {
        "pred": torch.full((2, 1, 2, 2, 2), 0.5),
        "z": z,
        "p": p,
        "encoder_layers": ["enc0"],
        "decoder_layers": ["dec0"],
        "orthogonal_pairs": [("enc0", "dec0")],
    }


def test_ssl_total_loss_hand_computed():
    out, target = _fake_output(), torch.zeros(2, 1, 2, 2, 2)
    loss = LongitudinalSSLLoss()  # paper defaults: lambda 1, alpha 10, mu 1e-2, gamma 1e-3, beta 100
    terms = loss.terms(out, target)
    # sim: enc0 identical p and z -> -1; dec0: p = (1, 0) vs z rows (0, 0) -> 0 and (2, 0) -> 1: mean -0.5
    assert terms["sim"].item() == pytest.approx(0.5 * (-1.0 + -0.5))
    assert terms["rec"].item() == pytest.approx(0.25)
    assert terms["var"].item() == pytest.approx(0.5 * (1.0 - math.sqrt(1e-4)), abs=1e-6)
    assert terms["cov"].item() == pytest.approx(0.0)  # second column constant
    # orth: rows ((1,0),(0,0)) -> 0 (zero vector), ((0,1),(2,0)) -> 0
    assert terms["orth"].item() == pytest.approx(0.0)
    total = loss(out, target).item()
    expected = -0.75 + 10 * 0.25 + 1e-2 * terms["var"].item()
    assert total == pytest.approx(expected, rel=1e-6)
    assert set(loss.last_terms) == {"sim", "rec", "var", "cov", "orth"}
    custom = LongitudinalSSLLoss(sim_weight=0, rec_weight=1, var_weight=0, cov_weight=0, orth_weight=0)
    assert custom(out, target).item() == pytest.approx(0.25)
    with pytest.raises(ValueError, match=">= 0"):
        LongitudinalSSLLoss(orth_weight=-1)


def test_consistency_loss():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 6, 6, 3)
    assert ConsistencyLoss()(logits, logits.clone()).item() == pytest.approx(0.0, abs=1e-6)
    # hand case on probabilities (no softmax), background excluded: a = (1, 1, 0, 0), b = (1, 0, 0, 0) in class 1
    a = torch.tensor([[0.0, 0.0, 1.0, 1.0], [1.0, 1.0, 0.0, 0.0]]).reshape(1, 2, 2, 2)
    b = torch.tensor([[0.0, 1.0, 1.0, 1.0], [1.0, 0.0, 0.0, 0.0]]).reshape(1, 2, 2, 2)
    assert ConsistencyLoss(softmax=False)(a, b).item() == pytest.approx(1.0 - 2.0 / 3.0, abs=1e-5)
    # gradients reach both timepoints
    la, lb = torch.randn(1, 3, 4, 4, 2, requires_grad=True), torch.randn(1, 3, 4, 4, 2, requires_grad=True)
    ConsistencyLoss()(la, lb).backward()
    assert la.grad.abs().sum() > 0 and lb.grad.abs().sum() > 0


def test_finetune_loss_splits_the_batch():
    torch.manual_seed(0)
    label = torch.randint(0, 4, (2, 1, 6, 6, 3))
    pred = torch.randn(6, 4, 6, 6, 3)
    loss = LongitudinalFinetuneLoss(consistency_weight=0.5)
    sup = DiceCELoss(to_onehot_y=True, softmax=True)(pred[:2], label)
    cs = ConsistencyLoss()(pred[2:4], pred[4:])
    assert loss(pred, label).item() == pytest.approx((sup + 0.5 * cs).item(), rel=1e-6)
    assert loss(pred[:2], label).item() == pytest.approx(sup.item(), rel=1e-6)
    assert set(loss.last_terms) == {"sup"}
    same = torch.cat([pred[:2], pred[2:4], pred[2:4]])
    loss(same, label)
    assert loss.last_terms["cs"] == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="predictions"):
        loss(pred[:4], label)


# ------------------------------------------------------------------------------------------------ transforms


def _coded_series(num_frames: int = 3, shape=(20, 18, 6)) -> torch.Tensor:
    """Frame t, voxel (x, y, z) holds a code of the position plus 1000 t (linear in position and time)."""
    x, y, z = torch.meshgrid(*[torch.arange(s, dtype=torch.float32) for s in shape], indexing="ij")
    code = x * 30 + y + z * 0.01
    return torch.stack([(code + 1000.0 * t)[None] for t in range(num_frames)])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pair_shares_geometry_and_crop(seed):
    series = _coded_series()
    geometric = Compose(
        [
            RandFlip(prob=0.5, spatial_axis=0),
            RandAffine(prob=1.0, rotate_range=(0, 0, 0.3), scale_range=(0.1, 0.1, 0), padding_mode="border"),
            RandSpatialCrop(roi_size=(12, 10, 4), random_size=False),
        ]
    )
    t = LongitudinalPaird(geometric=geometric, intensity=None)
    t.set_random_state(seed)
    out = t({"series": series, "subject": "s"})
    j, k = out["pair_index"].tolist()
    assert k == j + 1 and "series" not in out
    a, b = torch.as_tensor(out["target_a"]), torch.as_tensor(out["target_b"])
    assert a.shape == b.shape == (1, 12, 10, 4)
    # the same warp and crop: the frames differ only by the time offset, voxel for voxel (linear interpolation
    # of a field that is linear in position keeps the offset exact)
    assert torch.allclose(b - a, torch.full_like(a, 1000.0 * (k - j)), atol=1e-2)
    # and without the warp the crop origin decodes to the same coordinates in both timepoints
    crop_only = LongitudinalPaird(geometric=Compose([RandSpatialCrop(roi_size=(12, 10, 4), random_size=False)]))
    crop_only.set_random_state(seed)
    o = crop_only({"series": series})
    ja, ka = o["pair_index"].tolist()
    corner_a = torch.as_tensor(o["image_a"])[0, 0, 0, 0] - 1000.0 * ja
    corner_b = torch.as_tensor(o["image_b"])[0, 0, 0, 0] - 1000.0 * ka
    assert corner_a.item() == pytest.approx(corner_b.item())


def test_pair_independent_intensity_and_clean_targets():
    series = torch.rand(4, 1, 16, 16, 4)
    series[1] = series[0]  # identical timepoints: any difference comes from the intensity augmentation
    t = LongitudinalPaird(
        geometric=default_geometric_augmentation((12, 12, 4)),
        intensity=default_intensity_augmentation(noise_prob=1.0, gamma_prob=1.0),
        max_gap=1,
    )
    t.set_random_state(3)
    for _ in range(10):
        out = t({"series": series})
        if out["pair_index"].tolist() == [0, 1]:
            break
    assert out["pair_index"].tolist() == [0, 1]
    assert torch.equal(torch.as_tensor(out["target_a"]), torch.as_tensor(out["target_b"]))  # shared geometry
    assert not torch.allclose(torch.as_tensor(out["image_a"]), torch.as_tensor(out["image_b"]))  # independent
    with pytest.raises(ValueError, match="max_gap"):
        LongitudinalPaird(max_gap=0)


def test_select_labelled_frame():
    series = torch.arange(3, dtype=torch.float32).reshape(3, 1, 1, 1, 1).expand(3, 1, 2, 2, 2).clone()
    data = {"series": series, "series_label": series.clone(), "series_label_mask": torch.tensor([True, False, True])}
    out = SelectLabelledFramed(index=-1)(data)
    assert out["image"].flatten()[0].item() == 2.0 and out["label"].flatten()[0].item() == 2.0
    with pytest.raises(ValueError, match="no labelled frame"):
        SelectLabelledFramed()({"series": series, "series_label": series, "series_label_mask": torch.zeros(3).bool()})


def test_cycled_zip_dataset_and_subject_selection():
    ds = CycledZipDataset([{"image": 1, "subject": "a"}], [{"image_a": i, "subject": f"u{i}"} for i in range(3)])
    assert len(ds) == 3
    assert ds[2] == {"image": 1, "subject": "a", "image_a": 2, "pair_subject": "u2"}
    with pytest.raises(ValueError, match="share the keys"):
        CycledZipDataset([{"image": 1}], [{"image": 2}])[0]
    items = [{"subject": f"p{i}", "frames": [], "metadata": {"group": "AB"[i % 2]}} for i in range(6)]
    items[0]["frames"] = [{"image": "x", "label": "y", "time": 0.0}]
    assert [i["subject"] for i in select_subjects(items, exclude=["p1", "p2"])] == ["p0", "p3", "p4", "p5"]
    assert select_subjects(items, include=["p0"], require_labels=True)[0]["subject"] == "p0"
    with pytest.raises(ValueError, match="no labelled frame"):
        select_subjects(items, include=["p1"], require_labels=True)
    with pytest.raises(ValueError, match="not found"):
        select_subjects(items, include=["p9"])
    two = few_subjects(items, 2, seed=0)
    assert len(two) == 2 and {i["metadata"]["group"] for i in two} == {"A", "B"}
    assert few_subjects(items, 2, seed=0) == two


# ------------------------------------------------------------------------------------------------ metrics


def test_stcs_aspc_hand_made_masks():
    a = torch.zeros(1, 2, 4, 4, 1, dtype=torch.bool)
    b = torch.zeros_like(a)
    a[0, 0, 0, :4] = True  # 4 voxels
    b[0, 0, 0, 2:4] = True  # 2 voxels, both inside a
    a[0, 1, 1, 0] = True  # class 1: 1 voxel vs 1 disjoint voxel
    b[0, 1, 2, 0] = True
    s = stcs(a, b)
    assert s[0, 0].item() == pytest.approx(2 * 2 / (4 + 2))
    assert s[0, 1].item() == 0.0
    v = aspc(a, b)
    assert v[0, 0].item() == pytest.approx(100 * 2 / 3)  # |2 - 4| / (0.5 * 6)
    assert v[0, 1].item() == 0.0  # same volume
    empty = torch.zeros_like(a)
    assert math.isnan(stcs(empty, empty)[0, 0].item()) and math.isnan(aspc(empty, empty)[0, 0].item())
    assert stcs(a, a).eq(1).all() and aspc(a, a).eq(0).all()
    with pytest.raises(ValueError, match="one shape"):
        stcs(a, b[..., :2, :])


def test_segmentation_scores_and_missing_structure():
    label = torch.zeros(1, 3, 6, 6, 2)
    label[0, 1, 1:3, 1:3] = 1
    label[0, 2, 4:6, 4:6] = 1
    label[0, 0] = 1 - label[0, 1:].sum(0)
    pred = label.clone()
    pred[0, 2] = 0  # class 2 missed entirely
    pred[0, 0] = 1 - pred[0, 1:].sum(0)
    scores = segmentation_scores(pred, label, spacing=[1.0, 1.0, 10.0])
    assert scores["dice"][0, 0].item() == pytest.approx(1.0) and scores["dice"][0, 1].item() == 0.0
    assert scores["iou"][0, 0].item() == pytest.approx(1.0)
    assert scores["hd95"][0, 0].item() == 0.0
    assert scores["hd95"][0, 1].item() == pytest.approx(math.sqrt(36 + 36 + 400))  # the image diagonal


def test_segmentation_metric_rows():
    metric = LongitudinalSegmentationMetrics(num_classes=3, class_names=["A", "B"], use_spacing=False)
    label = torch.zeros(3, 1, 6, 6, 2)
    label[:, 0, 1:4, 1:4] = 1
    label[2, 0, 1:3, 1:3] = 2
    logits = torch.nn.functional.one_hot(label[:, 0].long(), 3).permute(0, 4, 1, 2, 3).float() * 10
    row = metric.score_subject(logits, label, torch.tensor([True, False, True]), None)
    assert row["dice"] == pytest.approx(1.0) and row["hd95"] == pytest.approx(0.0)
    assert row["gt_stcs_edes"] == pytest.approx(row["stcs_edes"]) and row["gt_aspc_edes"] == row["aspc_edes"]
    assert 0 < row["stcs"] <= 1 and row["aspc"] >= 0


# ------------------------------------------------------------------------------------------------ networks


def test_ssl_net_same_locations_in_both_timepoints():
    torch.manual_seed(0)
    unet = LongitudinalUNet(channels=8, channel_mult=(1, 2), norm_groups=4)
    net = LongitudinalSSLNet(unet, encoder_layers=(0, 1), decoder_layers=(0, 1), num_samples=5, hidden=16, bottleneck=4)
    x = torch.rand(2, 1, 12, 12, 4)
    out = net(torch.cat([x, x]))
    assert out["pred"].shape == (4, 1, 12, 12, 4) and out["orthogonal_pairs"] == [("enc1", "dec1")]
    for name, (za, zb) in out["z"].items():
        assert za.shape == (10, 16)
        assert torch.allclose(za, zb), name  # same input, same sampled voxels -> same projections
    loss = LongitudinalSSLLoss()(out, torch.cat([x, x]))
    loss.backward()
    assert all(p.grad is not None for p in net.unet.parameters())
    with pytest.raises(ValueError, match="orthogonal_layers"):
        LongitudinalSSLNet(unet, encoder_layers=(0,), decoder_layers=(1,), orthogonal_layers=(1,))


def test_forecaster_encoder_mapping(tmp_path):
    torch.manual_seed(0)
    ssl = LongitudinalUNet(channels=8, channel_mult=(1, 2, 2), norm_groups=4)
    path = tmp_path / "model.pt"
    torch.save(ssl.state_dict(), path)
    k = 3
    cronos = CronosUNet(
        num_frames=k, channels=8, channel_mult=(1, 2, 2), norm_groups=4, attention=False, film_mode="scale_shift"
    )
    before = {n: v.clone() for n, v in cronos.state_dict().items()}
    init_forecaster_from_pretrained(cronos, path, parts=["encoder"], zero_film=True)
    after = cronos.state_dict()
    assert torch.equal(after["down_blocks.1.conv1.weight"], ssl.state_dict()["down_blocks.1.conv1.weight"])
    assert torch.equal(after["mid_block1.conv1.weight"], before["mid_block1.conv1.weight"])  # not an encoder part
    assert torch.equal(after["up_blocks.0.conv1.weight"], before["up_blocks.0.conv1.weight"])
    assert after["down_blocks.0.film.1.weight"].abs().sum() == 0
    # K copies of one frame through the mapped encoder give the pretrained encoder features exactly
    x = torch.rand(2, 1, 16, 16, 8)
    with torch.no_grad():
        _, enc, _ = ssl.forward_features(x)
        cond = torch.randn(2, 128)  # CronosUNet's default cond_dim; the zeroed FiLM ignores it
        h = cronos.stem(x.repeat(1, k, 1, 1, 1))
        strides = cronos.stride_lists(list(x.shape[2:]))
        for i, block in enumerate(cronos.down_blocks):
            h = block(h, cond)
            assert torch.allclose(h, enc[i], atol=1e-5), i
            if i < len(cronos.down_blocks) - 1:
                h = cronos.downsamples[i](h, strides[i])
    # mismatches fail with a clear message
    with pytest.raises(TypeError, match="TFMUNet uses pre-activation"):
        init_forecaster_from_pretrained(TFMUNet(num_frames=k, channels=8, channel_mult=(1, 2, 2)), path)
    with pytest.raises(ValueError, match="check 'channels'"):
        init_forecaster_from_pretrained(CronosUNet(num_frames=k, channels=16, channel_mult=(1, 2, 2)), path)
    with pytest.raises(ValueError, match="scales"):
        init_forecaster_from_pretrained(CronosUNet(num_frames=k, channels=8, channel_mult=(1, 2)), path)
    with pytest.raises(ValueError, match="parts"):
        init_forecaster_from_pretrained(cronos, path, parts=["head"])
    with pytest.raises(FileNotFoundError, match="pretrain"):
        init_forecaster_from_pretrained(cronos, tmp_path / "missing.pt")
    assert init_forecaster_from_pretrained(cronos, None) is cronos


def test_load_pretrained_unet_skips_the_output_layer(tmp_path):
    torch.manual_seed(0)
    ssl = LongitudinalSSLNet(LongitudinalUNet(channels=8, channel_mult=(1, 2), norm_groups=4), hidden=8, bottleneck=4)
    path = tmp_path / "last.pt"
    torch.save({"network": ssl.state_dict()}, path)  # a resume checkpoint: 'unet.' keys and the heads
    seg = LongitudinalUNet(out_channels=4, channels=8, channel_mult=(1, 2), norm_groups=4)
    fresh_out = seg.out_conv.weight.clone()
    load_pretrained_unet(seg, path)
    assert torch.equal(seg.stem.weight, ssl.unet.stem.weight) and torch.equal(seg.out_conv.weight, fresh_out)
    with pytest.raises(ValueError, match="channel_mult"):
        load_pretrained_unet(LongitudinalUNet(out_channels=4, channels=16, channel_mult=(1, 2), norm_groups=4), path)


# ------------------------------------------------------------------------------------------------ bundle


def test_metadata_verifies():
    verify_metadata(meta_file=str(META), filepath=str(REPO / "bundles" / "schema" / "monai_tfm_meta_schema_v1.json"))


@pytest.fixture(scope="module")
def three_patients(tmp_path_factory) -> Path:
    """A flat folder of symlinks to three shared patients (two labelled), nothing copied."""
    if not SHARED_ACDC.is_dir():
        pytest.skip("../shared/data/acdc_cine is not available")
    src = tmp_path_factory.mktemp("acdc_ssl_src")
    for pid in ("patient001", "patient004", "patient021"):
        (src / pid).symlink_to(SHARED_ACDC / pid, target_is_directory=True)
    return src


@needs_shared
def test_bundle_pretrain_finetune_evaluate(three_patients, tmp_path):
    common = {
        "dataset_dir": str(three_patients),
        "prepared_dir": str(tmp_path / "prepared"),
        "spatial_size": [32, 32, 8],
        "roi_size": [32, 32, 8],
        "eval_patients": ["patient004"],
        "channels": 8,
        "max_epochs": 1,
        "batch_size": 2,
    }
    pre = workflow(
        [CONFIGS / "pretrain.yaml"],
        "train",
        "training",
        META,
        output_dir=str(tmp_path / "pre"),
        mlp_hidden=16,
        mlp_bottleneck=4,
        num_samples=8,
        **common,
    )
    assert pre.check_properties() == []
    items = pre.parser.get_parsed_content("pretrain_items")
    assert sorted(i["subject"] for i in items) == ["patient001", "patient021"]  # evaluation patient held out
    pre.run()
    weights = tmp_path / "pre" / "models" / "model.pt"
    state = torch.load(weights, weights_only=True)
    assert "stem.weight" in state and not any(k.startswith(("projectors", "unet.")) for k in state)
    assert (tmp_path / "pre" / "checkpoints" / "last.pt").is_file()

    run = tmp_path / "ft"
    ft = workflow(
        [CONFIGS / "finetune.yaml"],
        "train",
        "training",
        META,
        output_dir=str(run),
        pretrained_path=str(weights),
        **common,
    )
    assert ft.check_properties() == []
    ft.run()
    assert (run / "models" / "model.pt").is_file()
    ev = workflow(
        [CONFIGS / "finetune.yaml", CONFIGS / "evaluate.yaml"],
        "train",
        "evaluating",
        META,
        output_dir=str(run),
        **common,
    )
    ev.run()
    rows = list(csv.DictReader(open(run / "eval" / "per_subject.csv")))
    assert [r["subject"] for r in rows] == ["patient004"]
    r = rows[0]
    assert 0 <= float(r["dice"]) <= 1 and 0 <= float(r["stcs"]) <= 1 and float(r["aspc"]) >= 0
    assert float(r["hd95"]) > 0 and 0 < float(r["gt_stcs_edes"]) < 1
    # inference: one 4D label map per patient on the prepared grid
    inf = workflow(
        [CONFIGS / "finetune.yaml", CONFIGS / "inference.yaml"],
        "train",
        "inferring",
        META,
        output_dir=str(run),
        infer_split="training",
        infer_patients=["patient004"],
        **common,
    )
    inf.run()
    seg = nib.load(run / "segmentations" / "patient004_seg.nii.gz")
    frame = nib.load(tmp_path / "prepared" / "patient004" / "frame_00.nii.gz")
    assert seg.shape == (32, 32, 8, 12) and np.allclose(seg.affine, frame.affine, atol=1e-5)
    assert set(np.unique(np.asarray(seg.dataobj))) <= {0, 1, 2, 3}
    # resume continues the finetuning run in place
    again = workflow(
        [CONFIGS / "finetune.yaml"],
        "train",
        "training",
        META,
        output_dir=str(run),
        pretrained_path=None,
        resume=True,
        **{**common, "max_epochs": 2},
    )
    again.run()
    assert again.parser.get_parsed_content("train#trainer").state.epoch == 2

    # forecasting overlay: the CRONOS encoder starts from the pretrained UNet; few training patients
    fc = workflow(
        bundle_run_files(FORECAST, overlays=[CONFIGS / "forecasting_encoder_init.yaml"]),
        "train",
        "training",
        REPO / "bundles" / "acdc_cine_forecasting" / "configs" / "metadata.json",
        dataset_dir=str(three_patients),
        prepared_dir=str(tmp_path / "prepared"),
        spatial_size=[32, 32, 8],
        output_dir=str(tmp_path / "fc"),
        ssl_weights=str(weights),
        num_train_patients=1,
        **{"network_def#channels": 8},
    )
    net = fc.parser.get_parsed_content("network")
    assert torch.equal(net.state_dict()["down_blocks.2.conv2.weight"], state["down_blocks.2.conv2.weight"])
    assert len(fc.parser.get_parsed_content("train#data")) == 1
