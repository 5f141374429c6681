# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""Noise-to-image generation: the noise-source flow, conditioning, ControlNet, samplers, a tiny overfit,
the evaluation metrics, the generation bundles and ``monai-tfm generate``."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from helpers import REPO, SHARED_ACDC, assert_one_line_error, run_cli, workflow
from monai.bundle import ConfigParser, verify_metadata
from monai.data import DataLoader, Dataset
from monai.engines import SupervisedTrainer
from monai.networks.schedulers import DDPMScheduler

from monai_tfm.apps.bundle_loading import bundle_run_files
from monai_tfm.flows import interpolate, noise_source, sample_tau, target_velocity
from monai_tfm.generation import (
    ConditionalDiffusionUNet,
    DiffusionSampler,
    FlowSampler,
    GenerationPrepareBatch,
    acdc_generation_items,
    class_accuracy,
    class_context,
    default_eval_samplers,
    encode_mask,
    feature_distances,
    generate_images,
    make_shape_items,
    mask_dice,
    ms_ssim_diversity,
    subsample,
)

pytestmark = pytest.mark.usefixtures("fresh_log_handler")  # conftest.py

SYN = REPO / "bundles" / "synthetic_generation"
ACDC = REPO / "bundles" / "acdc_cine_generation"
SCHEMA = REPO / "bundles" / "schema" / "monai_tfm_meta_schema_v1.json"
needs_shared = pytest.mark.skipif(not SHARED_ACDC.is_dir(), reason="../shared/data/acdc_cine is not available")


def _net(spatial_dims: int = 2, num_classes: int = 3, mask_channels: int = 2) -> ConditionalDiffusionUNet:
    torch.manual_seed(0)
    return ConditionalDiffusionUNet(
        spatial_dims,
        channels=(8, 16),
        attention_levels=(False, True),
        num_head_channels=8,
        num_classes=num_classes,
        mask_channels=mask_channels,
    )


def _randomise(module: torch.nn.Module, seed: int = 1, scale: float = 0.2) -> torch.nn.Module:
    """Perturb every parameter (MONAI zero-initialises the output and attention projections and ControlNet's zero
    convolutions, so a fresh network answers zero and ignores its conditions)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * scale)
    return module


def _masks(b: int = 2, size=(16, 16), seed: int = 0) -> torch.Tensor:
    items = make_shape_items(b, size, seed=seed)
    return torch.as_tensor(np.stack([it["mask"] for it in items])).long()


# ------------------------------------------------------------------------------------------------ the noise path


class TestNoiseSourceFlow:
    @pytest.mark.parametrize("shape", [(4, 1, 8, 8), (2, 1, 6, 6, 4)])
    def test_noise_source_interpolation_and_target(self, shape):
        x1 = torch.rand(shape)
        x0 = noise_source(x1, torch.Generator().manual_seed(3))
        assert x0.shape == x1.shape and x0.dtype == x1.dtype
        torch.testing.assert_close(x0, noise_source(x1, torch.Generator().manual_seed(3)))
        big = noise_source(torch.zeros(20000), torch.Generator().manual_seed(0))
        assert abs(float(big.mean())) < 0.03 and abs(float(big.std()) - 1.0) < 0.03
        tau = torch.linspace(0, 1, shape[0])
        xt = interpolate(x0, x1, tau)
        torch.testing.assert_close(xt[0], x0[0])
        torch.testing.assert_close(xt[-1], x1[-1])
        t = tau.reshape(-1, *([1] * (len(shape) - 1)))
        torch.testing.assert_close(xt, (1 - t) * x0 + t * x1)
        torch.testing.assert_close(target_velocity(x0, x1), x1 - x0)
        h = 1e-3
        fd = (interpolate(x0, x1, tau.clamp(max=1 - h) + h) - interpolate(x0, x1, tau.clamp(max=1 - h))) / h
        torch.testing.assert_close(fd, x1 - x0, atol=2e-3, rtol=2e-3)

    def test_prepare_batch_flow_matches_the_path(self):
        items = make_shape_items(4, (16, 16), seed=0)
        batch = {
            "image": torch.as_tensor(np.stack([it["image"] for it in items])) * 2 - 1,
            "class": torch.tensor([it["class"] for it in items]),
            "mask": torch.as_tensor(np.stack([it["mask"] for it in items])),
        }
        pb = GenerationPrepareBatch("flow", 3, 2, generator=torch.Generator().manual_seed(5))
        xt, u, args, kwargs = pb(batch)
        g = torch.Generator().manual_seed(5)  # same draws in the same order: noise, then tau
        x0 = noise_source(batch["image"], g)
        tau = sample_tau(4, generator=g)
        torch.testing.assert_close(xt, interpolate(x0, batch["image"], tau))
        torch.testing.assert_close(u, target_velocity(x0, batch["image"]))
        torch.testing.assert_close(kwargs["timesteps"], tau * 1000)
        assert args == ()
        torch.testing.assert_close(kwargs["context"], class_context(batch["class"], 3))
        torch.testing.assert_close(kwargs["mask"], encode_mask(batch["mask"], 2))

    def test_prepare_batch_ddpm_and_dropout(self):
        x1 = torch.rand(3, 1, 8, 8) * 2 - 1
        sched = DDPMScheduler(num_train_timesteps=100)
        pb = GenerationPrepareBatch("ddpm", scheduler=sched, generator=torch.Generator().manual_seed(2))
        xt, eps, _, kwargs = pb({"image": x1})
        g = torch.Generator().manual_seed(2)
        noise = noise_source(x1, g)
        steps = torch.randint(0, 100, (3,), generator=g)
        torch.testing.assert_close(eps, noise)
        torch.testing.assert_close(kwargs["timesteps"], steps)
        torch.testing.assert_close(xt, sched.add_noise(x1, noise, steps))
        assert "context" not in kwargs and "mask" not in kwargs
        batch = {"image": x1, "class": torch.tensor([0, 1, 2]), "mask": torch.ones(3, 1, 8, 8, dtype=torch.long)}
        _, _, _, kw = GenerationPrepareBatch("flow", 3, 1, class_dropout=1.0, mask_dropout=1.0)(batch)
        assert not kw["context"].any() and not kw["mask"].any()

    def test_prepare_batch_errors(self):
        with pytest.raises(ValueError, match="objective"):
            GenerationPrepareBatch("score")
        with pytest.raises(ValueError, match="scheduler"):
            GenerationPrepareBatch("ddpm")
        with pytest.raises(ValueError, match="class_dropout"):
            GenerationPrepareBatch("flow", class_dropout=1.5)
        with pytest.raises(KeyError, match="class"):
            GenerationPrepareBatch("flow", num_classes=2)({"image": torch.zeros(1, 1, 4, 4)})


# ------------------------------------------------------------------------------------------------ the network


class TestNetwork:
    def test_conditions_encoding(self):
        ctx = class_context(torch.tensor([2, -1, 0]), 3)
        assert ctx.shape == (3, 1, 3)
        assert ctx[:, 0].tolist() == [[0, 0, 1], [0, 0, 0], [1, 0, 0]]
        m = encode_mask(torch.tensor([[[[0, 1], [2, 2]]]]), 2)
        assert m.shape == (1, 2, 2, 2) and m[0, 0].tolist() == [[0, 1], [0, 0]] and m[0, 1].tolist() == [[0, 0], [1, 1]]
        with pytest.raises(ValueError, match="0 .. 2"):
            encode_mask(torch.full((1, 1, 2, 2), 3), 2)
        with pytest.raises(ValueError, match="-1 .. 2"):
            class_context(torch.tensor([3]), 3)

    def test_controlnet_starts_as_a_noop(self):
        net = _net()
        cn = net.controlnet
        zero_parts = [cn.controlnet_down_blocks, cn.controlnet_mid_block, cn.controlnet_cond_embedding.conv_out]
        assert all(not p.any() for part in zero_parts for p in part.parameters())
        unet_state = net.unet.state_dict()
        copied = [k for k, v in cn.state_dict().items() if k in unet_state and unet_state[k].shape == v.shape]
        assert len(copied) > 50 and all(torch.equal(cn.state_dict()[k], unet_state[k]) for k in copied)
        _randomise(net.unet)  # a non-trivial UNet; the ControlNet keeps its zero convolutions
        x, t = torch.randn(2, 1, 16, 16), torch.tensor([100.0, 700.0])
        ctx = class_context(torch.tensor([0, 2]), 3)
        with torch.no_grad():
            plain = net.unet(x, t, context=ctx)
            a = net(x, t, ctx, encode_mask(_masks(seed=0), 2))
            b = net(x, t, ctx, encode_mask(_masks(seed=9), 2))
        assert plain.abs().max() > 1e-3
        torch.testing.assert_close(a, plain)
        torch.testing.assert_close(b, plain)
        # trained (here: perturbed) zero convolutions make the mask matter; re-initialising from the UNet undoes it
        _randomise(cn, seed=2)
        with torch.no_grad():
            assert (net(x, t, ctx, encode_mask(_masks(seed=0), 2)) - plain).abs().max() > 1e-3
            net.copy_unet_to_controlnet()
            torch.testing.assert_close(net(x, t, ctx, encode_mask(_masks(seed=0), 2)), plain)
        assert torch.equal(cn.conv_in.conv.weight, net.unet.conv_in.conv.weight)

    @pytest.mark.parametrize("spatial_dims", [2, 3])
    def test_class_and_mask_change_the_output(self, spatial_dims):
        net = _randomise(_net(spatial_dims))
        size = (16, 16) if spatial_dims == 2 else (16, 16, 8)
        x, t = torch.randn(2, 1, *size), torch.tensor([300.0, 300.0])
        m1, m2 = encode_mask(_masks(2, size, 0), 2), encode_mask(_masks(2, size, 4), 2)
        c0, c1 = class_context(torch.tensor([0, 0]), 3), class_context(torch.tensor([1, 1]), 3)
        with torch.no_grad():
            base = net(x, t, c0, m1)
            assert base.shape == x.shape
            assert (net(x, t, c1, m1) - base).abs().max() > 1e-3  # class
            assert (net(x, t, c0, m2) - base).abs().max() > 1e-3  # mask
            assert (net(x, t, None, m1) - base).abs().max() > 1e-3  # null class
            torch.testing.assert_close(net(x, t, c0, m1), base)  # deterministic

    def test_network_errors(self):
        with pytest.raises(ValueError, match="cross-attention"):
            ConditionalDiffusionUNet(2, channels=(8, 16), attention_levels=(False, False), num_classes=2)
        plain = ConditionalDiffusionUNet(2, channels=(8, 16), attention_levels=(False, False), num_head_channels=8)
        assert plain.controlnet is None
        x = torch.randn(1, 1, 8, 8)
        with pytest.raises(ValueError, match="not class-conditional"):
            plain(x, 1.0, context=torch.zeros(1, 1, 2))
        with pytest.raises(ValueError, match="no mask"):
            plain(x, 1.0, mask=torch.zeros(1, 1, 8, 8))


# ------------------------------------------------------------------------------------------------ samplers


class TestSamplers:
    def test_one_step_euler_is_x0_plus_v(self):
        net = _randomise(_net()).eval()
        x0 = torch.randn(2, 1, 16, 16)
        ctx, mask = class_context(torch.tensor([1, 2]), 3), encode_mask(_masks(), 2)
        sampler = FlowSampler("euler", 1, time_scale=1000.0, clip=False)
        with torch.no_grad():
            out = sampler(x0, net, context=ctx, mask=mask)
            expected = x0 + net(x0, torch.zeros(2), ctx, mask)
        assert sampler.last_nfe == 1
        torch.testing.assert_close(out, expected)

    def test_nfe_per_solver_and_steps(self):
        net = _randomise(_net()).eval()
        x0 = torch.randn(1, 1, 16, 16)
        for solver, per_step in (("euler", 1), ("midpoint", 2), ("rk4", 4)):
            for steps in (1, 5, 10):
                sampler = FlowSampler(solver, steps)
                with torch.no_grad():
                    out = sampler(x0, net)
                assert sampler.last_nfe == per_step * steps and out.abs().max() <= 1.0
        with pytest.raises(ValueError, match="unknown solver"):
            FlowSampler("heun9", 2)

    def test_classifier_free_guidance(self):
        net = _randomise(_net()).eval()
        x0 = torch.randn(2, 1, 16, 16)
        ctx = class_context(torch.tensor([1, 2]), 3)
        with torch.no_grad():
            cond = FlowSampler("euler", 1, clip=False)(x0, net, context=ctx)
            uncond = FlowSampler("euler", 1, clip=False)(x0, net, context=torch.zeros_like(ctx))
            g1 = FlowSampler("euler", 1, guidance_scale=1.0, clip=False)(x0, net, context=ctx)
            g0 = FlowSampler("euler", 1, guidance_scale=0.0, clip=False)(x0, net, context=ctx)
            g3 = FlowSampler("euler", 1, guidance_scale=3.0, clip=False)(x0, net, context=ctx)
        torch.testing.assert_close(g1, cond)
        torch.testing.assert_close(g0, uncond, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(g3, uncond + 3.0 * (cond - uncond), atol=1e-4, rtol=1e-4)

    def test_diffusion_sampler(self):
        net = _randomise(
            ConditionalDiffusionUNet(2, channels=(8, 16), attention_levels=(False, False), num_head_channels=8)
        )
        net.eval()
        noise = torch.randn(2, 1, 8, 8)
        args = {"num_train_timesteps": 100}
        for kind in ("ddpm", "ddim"):
            a = DiffusionSampler(kind, 4, args, seed=1)(noise, net)
            b = DiffusionSampler(kind, 4, args, seed=1)(noise, net)
            torch.testing.assert_close(a, b)
            assert a.shape == noise.shape and a.abs().max() <= 1.0
        sampler = DiffusionSampler("ddim", 5, args)
        sampler(noise, net)
        assert sampler.last_nfe == 5
        with pytest.raises(ValueError, match="1 .. 100"):
            DiffusionSampler("ddpm", 1000, args)
        with pytest.raises(ValueError, match="unknown diffusion scheduler"):
            DiffusionSampler("pndm", 10, args)

    def test_generate_images_seeded(self):
        net = _randomise(_net()).eval()
        kw = {"classes": [0, 1, 2], "masks": _masks(3), "num_classes": 3, "num_labels": 2, "batch_size": 2}
        a, nfe, _ = generate_images(net, FlowSampler("euler", 2), (1, 16, 16), seed=4, **kw)
        b, _, _ = generate_images(net, FlowSampler("euler", 2), (1, 16, 16), seed=4, **kw)
        c, _, _ = generate_images(net, FlowSampler("euler", 2), (1, 16, 16), seed=5, **kw)
        assert a.shape == (3, 1, 16, 16) and nfe == 2
        torch.testing.assert_close(a, b)
        assert not torch.allclose(a, c)
        with pytest.raises(ValueError, match="not class-conditional"):
            generate_images(_net(num_classes=0), FlowSampler(), (1, 16, 16), classes=[0])
        names = [s["name"] for s in default_eval_samplers("ddpm")]
        assert names == ["ddpm_10", "ddpm_50", "ddpm_1000", "ddim_10", "ddim_50"]
        assert [s["steps"] for s in default_eval_samplers("flow")][:3] == [1, 5, 10]


# ------------------------------------------------------------------------------------------------ tiny overfit


@pytest.mark.slow
def test_tiny_overfit_generates_the_training_image():
    """Flow matching on a single image (MONAI SupervisedTrainer): every sample from fresh noise lands near it."""
    item = make_shape_items(1, (16, 16), seed=3, noise=0.0)[0]
    target = torch.as_tensor(item["image"]) * 2 - 1
    data = [{"image": target, "class": 0}] * 16
    torch.manual_seed(0)
    net = ConditionalDiffusionUNet(
        2, channels=(16, 16), attention_levels=(False, True), num_head_channels=16, num_classes=1
    )
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=100,
        train_data_loader=DataLoader(Dataset(data), batch_size=16),
        network=net,
        optimizer=torch.optim.Adam(net.parameters(), lr=3e-3),
        loss_function=torch.nn.MSELoss(),
        prepare_batch=GenerationPrepareBatch("flow", num_classes=1, generator=torch.Generator().manual_seed(0)),
        decollate=False,
    )
    trainer.run()
    samples, nfe, _ = generate_images(
        net, FlowSampler("euler", 10), (1, 16, 16), classes=[0] * 4, num_classes=1, seed=11
    )
    err = (samples - target).abs().mean(dim=(1, 2, 3))
    noise_err = (torch.randn(4, 1, 16, 16).clamp(-1, 1) - target).abs().mean()
    assert nfe == 10
    assert float(err.mean()) < 0.08 and float(err.max()) < 0.12, err  # close to the training image ([-1, 1] scale)
    assert float(err.max()) < 0.2 * float(noise_err)


# ------------------------------------------------------------------------------------------------ evaluation


def test_evaluation_metrics():
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(40, 4, generator=g)
    same = feature_distances(feats, feats)
    assert abs(same["fid"]) < 1e-6
    other = feature_distances(torch.randn(40, 4, generator=g), feats)  # unbiased MMD: about 0 for one distribution
    assert abs(other["mmd"]) < 0.5 and other["fid"] < 1.5
    shifted = feature_distances(feats + 3.0, feats)
    assert shifted["fid"] > 30 and shifted["mmd"] > 5
    images = torch.rand(4, 1, 32, 32, generator=g)
    assert ms_ssim_diversity(images[[0, 0, 0]]) == pytest.approx(1.0, abs=1e-4)
    assert ms_ssim_diversity(images) < 0.5
    assert np.isnan(ms_ssim_diversity(images, classes=[0, 1, 2, 3]))
    masks = _masks(2, (16, 16))
    assert mask_dice(masks, masks, 2)["dice"] == pytest.approx(1.0)
    assert mask_dice(torch.zeros_like(masks), masks, 2)["dice"] == pytest.approx(0.0)
    assert class_accuracy(torch.tensor([0, 1, 1]), [0, 1, 2]) == pytest.approx(2 / 3)
    items = make_shape_items(6, (16, 16))
    repeated = items + items[:2]  # mask_repeat lists the same item object again
    assert subsample(repeated, None) == items
    shuffled = subsample(repeated, 4, seed=1, shuffle=True)
    assert len(shuffled) == 4 and len({id(it) for it in shuffled}) == 4
    assert [it["subject"] for it in subsample(repeated, 6, shuffle=True)] != [it["subject"] for it in items]


# ------------------------------------------------------------------------------------------------ bundles


@pytest.mark.parametrize("bundle", [SYN, ACDC])
def test_metadata_verifies(bundle):
    verify_metadata(meta_file=str(bundle / "configs" / "metadata.json"), filepath=str(SCHEMA))


@pytest.mark.parametrize(
    "overlays, dims, sampler",
    [((), 2, "FlowSampler"), (("methods/ddpm.yaml",), 2, "DiffusionSampler"), (("volumes_3d.yaml",), 3, "FlowSampler")],
)
def test_acdc_inference_config_builds(overlays, dims, sampler):
    parser = ConfigParser()
    parser.read_config([str(f) for f in bundle_run_files(ACDC, "inference", overlays=overlays)])
    parser["bundle_root"] = str(ACDC)
    net = parser.get_parsed_content("network_def")
    assert net.spatial_dims == dims and net.num_classes == 5 and net.mask_channels == 3
    assert type(parser.get_parsed_content("sampler")).__name__ == sampler
    assert len(parser.get_parsed_content("image_size")) == dims


def _small(out: Path) -> dict:
    return {
        "bundle_root": str(SYN),
        "output_dir": str(out),
        "max_epochs": 1,
        "num_train": 8,
        "num_val": 6,
        "batch_size": 4,
        "image_size": [16, 16],
        "network_def#channels": [8, 16],
        "network_def#attention_levels": [False, True],
        "network_def#num_head_channels": 8,
    }


@pytest.mark.parametrize("method", ["flow", "ddpm"])
def test_synthetic_bundle_one_epoch(tmp_path, method):
    meta = SYN / "configs" / "metadata.json"
    files = bundle_run_files(SYN, method=method)
    run = tmp_path / "run"
    wf = workflow(files, "train", "training", meta, **_small(run))
    assert wf.check_properties() == []
    wf.run()
    wf.finalize()
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert state["trainer"]["iteration"] == state["trainer"]["epoch_length"] == 2  # one epoch of 2 steps
    weights = torch.load(run / "models" / "model.pt", weights_only=True)
    assert all(torch.is_tensor(v) for v in weights.values())
    if method == "ddpm":
        return
    sampler = {"name": "euler_2", "kind": "flow", "solver": "euler", "steps": 2}
    ev = workflow(
        bundle_run_files(SYN, "evaluate", method),
        "train",
        "evaluating",
        meta,
        **_small(run),
        eval_samplers=[sampler],
        num_eval=3,
        num_mask_eval=3,
        judge_classifier_epochs=1,
        judge_segmenter_epochs=1,
    )
    ev.run()
    summary = json.loads((run / "eval" / "summary.json").read_text())
    assert [r["name"] for r in summary["rows"]] == ["real_train", "real_heldout", "euler_2"]
    assert "dice" in summary["rows"][1]  # the judge segmenter on real held-out images
    row = summary["rows"][2]
    assert row["nfe"] == 2 and row["num_samples"] == 3 and row["num_mask_samples"] == 3
    assert {"fid", "mmd", "ms_ssim", "class_acc", "dice", "sec_per_sample"} <= set(row)
    assert "| euler_2 | 2 | 2 | 3 |" in (run / "eval" / "summary.md").read_text()
    assert (run / "eval" / "samples_euler_2.png").is_file() and (run / "judges" / "classifier.pt").is_file()
    inf = workflow(
        bundle_run_files(SYN, "inference", "flow"),
        "infer",
        "run",
        meta,
        **{k: v for k, v in _small(run).items() if k not in ("max_epochs", "num_train", "num_val", "batch_size")},
        samples_per_class=1,
        solver_steps=1,
    )
    inf.run()
    outs = sorted((run / "generated").glob("*.nii.gz"))
    assert [p.name for p in outs] == ["bright_core_000.nii.gz", "dark_core_000.nii.gz", "striped_wall_000.nii.gz"]
    assert nib.load(outs[0]).shape == (16, 16)


@needs_shared
def test_acdc_generation_items(tmp_path):
    from monai_tfm.data import prepare_acdc

    src = tmp_path / "src"
    src.mkdir()
    for pid in ("patient001", "patient021"):  # DCM with masks, HCM without
        (src / pid).symlink_to(SHARED_ACDC / pid, target_is_directory=True)
    dl = prepare_acdc(src, tmp_path / "prep", spatial_size=(16, 16, 4), num_frames=2, num_folds=2, progress=False)
    two = acdc_generation_items(dl, 2, mask_repeat=3)
    assert {it["class"] for it in two} == {0, 1}  # DCM, HCM
    assert all(it["image"].shape == (1, 16, 16) and it["mask"].shape == (1, 16, 16) for it in two)
    masked = [it for it in two if it["has_mask"]]
    assert masked and all(it["class"] == 0 and it["mask"].max() <= 3 for it in masked)
    assert len(two) == 2 * 2 * 4 + 2 * len({it["subject"] for it in masked})  # frames x slices + 2 repeats
    three = acdc_generation_items(dl, 3, masked_only=True)
    assert len(three) == 2 and three[0]["image"].shape == (1, 16, 16, 4)
    with pytest.raises(ValueError, match="not one of the classes"):
        acdc_generation_items(dl, 2, class_names=["NOR"])


# ------------------------------------------------------------------------------------------------ command line


@pytest.fixture(scope="module")
def syn_weights(tmp_path_factory) -> Path:
    """Weights of the synthetic bundle's inference network (as configured, with perturbed parameters)."""
    parser = ConfigParser()
    parser.read_config([str(f) for f in bundle_run_files(SYN, "inference")])
    parser["bundle_root"] = str(SYN)
    path = tmp_path_factory.mktemp("gen_weights") / "model.pt"
    torch.save(_randomise(parser.get_parsed_content("network_def"), scale=0.05).state_dict(), path)
    return path


def _mask_file(folder: Path, values=(0, 1, 2), shape=(32, 32), name="mask.nii.gz") -> Path:
    arr = np.zeros(shape, np.uint8)
    arr[8:24, 8:24] = values[1]
    arr[12:20, 12:20] = values[2]
    affine = np.diag([1.5, 1.5, 5.0, 1.0])
    affine[:3, 3] = [-10, 4, 2]
    path = folder / name
    nib.save(nib.Nifti1Image(arr, affine), path)
    return path


def test_generate_writes_nifti_and_previews(tmp_path, capsys, syn_weights):
    mask = _mask_file(tmp_path, shape=(64, 64))  # resized to the model grid (32 x 32)
    out = tmp_path / "out"
    argv = ["generate", "--bundle", SYN, "--weights", syn_weights, "--class", "dark_core", "--mask", mask]
    rc, stdout, err = run_cli([*argv, "--n", 2, "--steps", 2, "--output", out], capsys)
    assert rc == 0, err
    files = sorted(out.iterdir())
    assert [p.name for p in files] == [
        "dark_core_000.nii.gz",
        "dark_core_000.png",
        "dark_core_001.nii.gz",
        "dark_core_001.png",
    ]
    assert stdout.split() == [str(out / "dark_core_000.nii.gz"), str(out / "dark_core_001.nii.gz")]
    img = nib.load(files[0])
    data = img.get_fdata()
    assert img.shape == (32, 32) and 0.0 <= data.min() and data.max() <= 1.0
    np.testing.assert_allclose(np.diag(img.affine)[:2], [3.0, 3.0])  # the mask's spacing, doubled by the resize
    # never replaces outputs, unless --overwrite
    rc, _, err = run_cli([*argv, "--n", 2, "--steps", 2, "--output", out], capsys)
    assert_one_line_error(rc, err, "dark_core_000.nii.gz", "--overwrite")
    rc, _, err = run_cli([*argv, "--n", 2, "--steps", 2, "--output", out, "--overwrite"], capsys)
    assert rc == 0, err
    # the same network trained as DDPM: sampled with DDIM through the method overlay; class by index, no mask
    rc, _, err = run_cli(
        [
            "generate",
            "--bundle",
            SYN,
            "--weights",
            syn_weights,
            "--method",
            "ddpm",
            "--solver",
            "ddim",
            "--class",
            0,
            "--steps",
            2,
            "--output",
            tmp_path / "ddim",
            "--preview",
            "false",
        ],
        capsys,
    )
    assert rc == 0, err
    assert [p.name for p in (tmp_path / "ddim").iterdir()] == ["bright_core_000.nii.gz"]


def _bad_cases(tmp_path: Path, weights: Path) -> dict[str, tuple[list, tuple[str, ...]]]:
    broken = tmp_path / "broken.pt"
    broken.write_text("not a checkpoint")
    three_d = tmp_path / "vol.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((32, 32, 4), np.uint8), np.eye(4)), three_d)
    return {
        "no output": (["--class", "dark_core", "--no-output"], ("--output is required",)),
        "zero images": (["--class", "dark_core", "--n", 0], ("--n must be a positive integer",)),
        "zero steps": (["--class", "dark_core", "--steps", 0], ("--steps must be a positive integer",)),
        "unknown class": (["--class", "HCM"], ("unknown class 'HCM'", "bright_core")),
        "missing class": ([], ("class-conditional", "--class")),
        "unknown solver": (["--class", "dark_core", "--solver", "dopri99"], ("unknown solver 'dopri99'",)),
        "missing mask": (["--class", 1, "--mask", tmp_path / "nope.nii.gz"], ("nope.nii.gz", "does not exist")),
        "mask labels": (
            ["--class", 1, "--mask", _mask_file(tmp_path, (0, 1, 7), name="bad.nii.gz")],
            ("bad.nii.gz", "0 .. 2"),
        ),
        "3D mask": (["--class", 1, "--mask", three_d], ("vol.nii.gz", "2D images")),
        "missing weights": (["--class", 1, "--weights", tmp_path / "none.pt"], ("no weights at", "none.pt")),
        "broken weights": (["--class", 1, "--weights", broken], ("cannot load weights", "broken.pt")),
        "unknown option": (["--class", 1, "--colour", "red"], ("unknown option '--colour'",)),
        "unknown method": (["--class", 1, "--method", "gan"], ("unknown method 'gan'", "ddpm")),
        "ddpm steps": (["--class", 1, "--method", "ddpm", "--steps", 5000], ("bad sampler settings", "1 .. 1000")),
    }


BAD = [
    "no output",
    "zero images",
    "zero steps",
    "unknown class",
    "missing class",
    "unknown solver",
    "missing mask",
    "mask labels",
    "3D mask",
    "missing weights",
    "broken weights",
    "unknown option",
    "unknown method",
    "ddpm steps",
]


@pytest.mark.parametrize("case", BAD)
def test_generate_errors_are_one_line_and_write_nothing(tmp_path, capsys, syn_weights, case):
    extra, needles = _bad_cases(tmp_path, syn_weights)[case]
    out = tmp_path / "out"
    defaults = {"--weights": syn_weights, "--n": 1, "--steps": 1, "--output": out}
    if "--no-output" in extra:
        extra = [e for e in extra if e != "--no-output"]
        del defaults["--output"]
    flags = [a for k, v in defaults.items() if k not in extra for a in (k, v)]
    rc, _, err = run_cli(["generate", "--bundle", SYN, *flags, *extra], capsys)
    assert_one_line_error(rc, err, *needles)
    assert not out.exists() or not any(out.iterdir())


def test_generate_output_is_a_file(tmp_path, capsys, syn_weights):
    target = tmp_path / "file.txt"
    target.write_text("x")
    rc, _, err = run_cli(
        ["generate", "--bundle", SYN, "--weights", syn_weights, "--class", 0, "--output", target], capsys
    )
    assert_one_line_error(rc, err, "must be a folder")
    rc, _, err = run_cli(["generate", "--bundle", tmp_path, "--class", 0, "--output", tmp_path / "o"], capsys)
    assert_one_line_error(rc, err, "is not a monai_tfm bundle")


def test_generate_previews_without_matplotlib(tmp_path, capsys, syn_weights, monkeypatch):
    """Without matplotlib, previews end in a one-line error before anything is written; --preview false works."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    out = tmp_path / "out"
    args = ["generate", "--bundle", SYN, "--weights", syn_weights, "--class", 0, "--n", 1, "--steps", 1]
    rc, _, err = run_cli([*args, "--output", out], capsys)
    assert_one_line_error(rc, err, "needs matplotlib", "--preview false")
    assert not out.exists()
    rc, _, err = run_cli([*args, "--output", out, "--preview", "false"], capsys)
    assert rc == 0, err
    assert [p.name for p in out.iterdir()] == ["bright_core_000.nii.gz"]  # class 0, no preview
