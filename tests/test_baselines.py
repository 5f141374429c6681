# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""Direct-prediction baselines (docs/method.md section 8): contract, padding, time use, training, and the bundle
overlays."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from monai.bundle import ConfigWorkflow

from monai_tfm.apps.bundle_loading import bundle_run_files
from monai_tfm.engines import DirectPrepareBatch, require_trainable
from monai_tfm.handlers import WeightsLoader
from monai_tfm.inferers import DirectInferer
from monai_tfm.networks import (
    ODELSTM3D,
    ConvLSTM3D,
    DirectForecaster,
    LastContextImage,
    LinearExtrapolation,
    SimVP3D,
    ViViT3D,
)
from monai_tfm.networks.baselines import right_align

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "synthetic_forecasting"
CONFIGS = BUNDLE / "configs"

ODD, THIN = (9, 10, 7), (16, 16, 8)


def _make(name: str, spatial: tuple[int, ...] = THIN, num_frames: int = 5) -> DirectForecaster:
    """Tiny instance of each learned baseline."""
    if name == "convlstm":
        return ConvLSTM3D(hidden_channels=(8, 8), encoder_channels=8, num_down=1)
    if name == "simvp":
        return SimVP3D(num_frames=num_frames, hidden_channels=8, translator_channels=16, num_down=2)
    if name == "vivit":
        patch = (3, 5, 7) if spatial == ODD else (4, 4, 4)
        return ViViT3D(patch_size=patch, hidden_size=24, num_heads=2, mlp_dim=32, head_channels=8, spatial_size=spatial)
    if name == "odelstm":
        return ODELSTM3D(hidden_channels=8, encoder_channels=8, ode_channels=8, num_down=1, solver_steps=1)
    raise KeyError(name)


LEARNED = ("convlstm", "simvp", "vivit", "odelstm")


def _batch(spatial=THIN, b: int = 2, t: int = 5, seed: int = 0):
    """Smooth random series; sample 0 has 3 real frames + 2 padded, sample 1 all 5 real (irregular times)."""
    g = torch.Generator().manual_seed(seed)

    def smooth(scale: float) -> torch.Tensor:  # images are smooth: random 4^3 values, trilinearly upsampled
        coarse = torch.rand(b, 1, 4, 4, 4, generator=g)
        return F.interpolate(coarse, size=spatial, mode="trilinear", align_corners=True).unsqueeze(1) * scale

    base, drift = smooth(1.0), smooth(0.2)
    times = torch.tensor([[0.0, 0.1, 0.3, 0.3, 0.3], [0.0, 0.2, 0.25, 0.4, 0.6]])[:b, :t]
    context = base + drift * times.reshape(b, t, 1, 1, 1, 1)
    mask = torch.tensor([[True, True, True, False, False], [True] * 5])[:b, :t]
    context[0, 3:] = context[0, 2]  # padding repeats the last real frame
    target_time = torch.tensor([0.5, 0.8])[:b]
    target = (base + drift * target_time.reshape(b, 1, 1, 1, 1, 1))[:, 0]
    return context, times, mask, target_time, target


@pytest.mark.parametrize("name", LEARNED)
@pytest.mark.parametrize("spatial", [ODD, THIN], ids=["odd", "thin"])
def test_output_shape(name, spatial):
    context, times, mask, target_time, _ = _batch(spatial)
    out = _make(name, spatial)(context, times, mask, target_time)
    assert out.shape == (2, 1, *spatial) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", LEARNED)
def test_gradients_reach_every_parameter(name):
    torch.manual_seed(0)
    net = _make(name)
    context, times, mask, target_time, target = _batch()
    torch.nn.functional.mse_loss(net(context, times, mask, target_time), target).backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not bool(p.grad.abs().sum() > 0)]
    assert not missing, f"no gradient for {missing}"


@pytest.mark.parametrize("name", LEARNED)
def test_tiny_overfit(name):
    torch.manual_seed(0)
    net = _make(name, (8, 8, 8))
    context, times, mask, target_time, target = _batch((8, 8, 8))
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(100):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(net(context, times, mask, target_time), target)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 10, f"{name}: MSE {losses[0]:.4g} -> {losses[-1]:.4g}"


@pytest.mark.parametrize("name", (*LEARNED, "lci", "linear"))
def test_padding_changes_nothing(name):
    torch.manual_seed(0)
    net = {"lci": LastContextImage(), "linear": LinearExtrapolation()}.get(name) or _make(name)
    net.eval()
    context, times, mask, target_time, _ = _batch()
    with torch.no_grad():
        ref = net(context, times, mask, target_time)
        noisy, noisy_t = context.clone(), times.clone()
        noisy[0, 3:] = torch.rand_like(noisy[0, 3:]) * 5  # padded slots: arbitrary content and times
        noisy_t[0, 3:] = torch.tensor([-3.0, 7.0])
        assert torch.allclose(net(noisy, noisy_t, mask, target_time), ref, atol=1e-5)
        # the same sample without any padding slot
        alone = net(context[:1, :3], times[:1, :3], mask[:1, :3], target_time[:1])
        assert torch.allclose(alone, ref[:1], atol=1e-5)


@pytest.mark.parametrize("name", LEARNED)
def test_target_time_is_used(name):
    torch.manual_seed(0)
    net = _make(name).eval()
    context, times, mask, target_time, _ = _batch()
    with torch.no_grad():
        a = net(context, times, mask, target_time)
        b = net(context, times, mask, target_time + 0.3)
    assert not torch.allclose(a, b, atol=1e-6)


def test_odelstm_uses_context_times():
    torch.manual_seed(0)
    net = _make("odelstm").eval()
    context, times, mask, target_time, _ = _batch()
    shifted = times.clone()
    shifted[:, 1] = times[:, 1] * 0.3  # move one observation in time, same images
    with torch.no_grad():
        a = net(context, times, mask, target_time)
        b = net(context, shifted, mask, target_time)
    assert not torch.allclose(a[1], b[1], atol=1e-6) and not torch.allclose(a[0], b[0], atol=1e-6)
    assert net.last_nfe > 0


def test_linear_and_lci_exact():
    frames = torch.stack([torch.full((1, 2, 3, 4), v) for v in (1.0, 3.0, 4.0, 9.0)])  # (T=4, C, D, H, W)
    context = torch.stack([frames, frames])
    times = torch.tensor([[0.0, 1.0, 1.5, 1.5], [0.0, 1.0, 1.5, 3.0]])
    mask = torch.tensor([[True, True, True, False], [True, False, False, False]])
    target_time = torch.tensor([2.5, 4.0])
    lin = LinearExtrapolation()(context, times, mask, target_time)
    # sample 0: last two real frames 3 (t=1) and 4 (t=1.5): 4 + (2.5 - 1.5) / 0.5 * (4 - 3) = 6
    assert torch.equal(lin[0], torch.full((1, 2, 3, 4), 6.0))
    assert torch.equal(lin[1], frames[0])  # one real frame: LCI
    lci = LastContextImage()(context, times, mask, target_time)
    assert torch.equal(lci[0], frames[2]) and torch.equal(lci[1], frames[0])
    # voxel-wise formula on random frames with irregular times
    g = torch.Generator().manual_seed(1)
    ctx = torch.rand(1, 3, 1, 4, 4, 4, generator=g)
    t = torch.tensor([[0.0, 0.3, 0.7]])
    out = LinearExtrapolation()(ctx, t, None, torch.tensor([1.2]))
    assert torch.allclose(out[0], ctx[0, 2] + (1.2 - 0.7) / (0.7 - 0.3) * (ctx[0, 2] - ctx[0, 1]))
    assert not list(LinearExtrapolation().parameters()) and not list(LastContextImage().parameters())


def test_vivit_patch_error():
    with pytest.raises(ValueError, match=r"patch size \(4, 4, 4\) does not divide the volume size \(9, 10, 7\)"):
        ViViT3D(patch_size=4, spatial_size=ODD)
    net = ViViT3D(patch_size=4, hidden_size=24, num_heads=2, mlp_dim=32)
    context, times, mask, target_time, _ = _batch(ODD)
    with pytest.raises(ValueError, match=r"\(9, 10, 7\)"):
        net(context, times, mask, target_time)


def test_right_align_and_engine_pieces():
    context, times, mask, target_time, target = _batch()
    aligned, t_al, m_al = right_align(context, times, mask, 5)
    assert m_al.tolist() == [[False, False, True, True, True], [True] * 5]
    assert torch.equal(aligned[0, 2:], context[0, :3]) and torch.equal(
        aligned[0, :2], context[0, :1].expand(2, -1, -1, -1, -1)
    )
    assert torch.equal(t_al[1], times[1])

    batch = {
        "context": context,
        "context_time": times * 2,
        "context_mask": mask,
        "target": target,
        "target_time": target_time * 2,
    }
    inputs, label, args, kwargs = DirectPrepareBatch(time_scale=0.5)(batch)
    assert torch.equal(inputs, context) and torch.equal(label, target) and args == ()
    assert torch.allclose(kwargs["frame_times"], times) and torch.allclose(kwargs["target_time"], target_time)
    inferer = DirectInferer()
    pred = inferer(inputs, LastContextImage(), *args, **kwargs)
    assert inferer.last_nfe == 1 and torch.equal(pred[0], context[0, 2])
    with pytest.raises(ValueError, match="nothing to train: run evaluating"):
        require_trainable(LastContextImage(), "lci")
    WeightsLoader(LastContextImage(), None)._load(None)  # nothing to load, no file needed
    WeightsLoader(LinearExtrapolation(), "/nonexistent/model.pt")._load(None)


# ---------------------------------------------------------------- bundle overlays (tiny grid, one epoch)

_NETS = {
    "convlstm": {"network_def#hidden_channels": [4, 4], "network_def#encoder_channels": 4},
    "lci": {},
    "lci_fm": {"network_def#channels": 8},
}


def _overrides(run: Path, data: Path, method: str) -> dict:
    return {
        "bundle_root": str(BUNDLE),
        "dataset_dir": str(data),
        "output_dir": str(run),
        "max_epochs": 1,
        "num_train": 3,
        "num_val": 2,
        "num_test": 2,
        "spatial_size": [16, 16, 8],
        "val_draws": 1,
        "eval_draws": 2,
        "batch_size": 2,
        **_NETS[method],
    }


def _workflow(method: str, run_id: str, run: Path, data: Path, evaluate: bool = False) -> ConfigWorkflow:
    files = bundle_run_files(BUNDLE, "evaluate" if evaluate else "train", method)
    wf = ConfigWorkflow(
        config_file=[str(f) for f in files],
        meta_file=str(CONFIGS / "metadata.json"),
        workflow_type="train",
        run_id=run_id,
        **_overrides(run, data, method),
    )
    wf.initialize()
    return wf


def _rows(run: Path) -> list[dict]:
    return list(csv.DictReader(open(run / "eval_test" / "per_sample.csv")))


def test_bundle_convlstm_lci_and_lci_fm(tmp_path):
    data = tmp_path / "data"
    cols = {"model_nrmse", "model_psnr", "model_ssim", "lci_nrmse", "lci_psnr", "lci_ssim"}

    run = tmp_path / "convlstm"
    wf = _workflow("convlstm", "training", run, data)
    wf.run()
    wf.finalize()
    assert (run / "models" / "model.pt").is_file()
    _workflow("convlstm", "evaluating", run, data, evaluate=True).run()
    conv_rows = _rows(run)
    assert len(conv_rows) == 4 and cols <= set(conv_rows[0])
    assert "solver direct with 1 steps, 1.0 network evaluations" in (run / "eval_test" / "summary.md").read_text()

    lci_run = tmp_path / "lci"
    with pytest.raises(RuntimeError) as err:
        _workflow("lci", "training", lci_run, data).run()
    cause = err.value
    while cause.__cause__ is not None:
        cause = cause.__cause__
    assert isinstance(cause, ValueError) and "nothing to train: run evaluating" in str(cause)
    _workflow("lci", "evaluating", lci_run, data, evaluate=True).run()  # no weights file anywhere
    lci_rows = _rows(lci_run)
    assert len(lci_rows) == 4 and cols <= set(lci_rows[0])
    for r in lci_rows:
        for m in ("nrmse", "psnr", "ssim", "rmse"):
            assert float(r[f"model_{m}"]) == pytest.approx(float(r[f"lci_{m}"]), rel=1e-6)
    # same fixed draws, same LCI for every method
    assert [r["lci_nrmse"] for r in lci_rows] == [r["lci_nrmse"] for r in conv_rows]

    fm_run = tmp_path / "lci_fm"  # the K = 1 flow: trains and evaluates through the discrete overlay
    wf = _workflow("lci_fm", "training", fm_run, data)
    wf.run()
    assert wf.parser.get_parsed_content("network_def").num_frames == 1
    _workflow("lci_fm", "evaluating", fm_run, data, evaluate=True).run()
    assert [r["lci_nrmse"] for r in _rows(fm_run)] == [r["lci_nrmse"] for r in conv_rows]
