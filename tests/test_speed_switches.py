# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""Speed switches of the training config do not change results beyond tolerance (CPU, tiny CronosUNet)."""

from __future__ import annotations

import contextlib
import copy
import time
from pathlib import Path

import pytest
import torch
from helpers import workflow

from monai_tfm.apps.bundle_loading import bundle_run_files
from monai_tfm.engines import FlowMatchingPrepareBatch, configure_network
from monai_tfm.losses import FlowMatchingLoss
from monai_tfm.networks import CronosUNet

CONFIGS = Path(__file__).resolve().parents[1] / "bundles" / "synthetic_forecasting" / "configs"
# the numerical checks also run on a GPU where there is one (benchmarks/gpu_speed.sh runs them there)
DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")),
]


def _net(**kw) -> CronosUNet:
    torch.manual_seed(0)
    net = CronosUNet(num_frames=3, channels=8, attention=False, **kw)
    torch.nn.init.normal_(net.out_conv.weight, std=0.1)  # a non-zero head so that outputs and gradients are informative
    return net


@contextlib.contextmanager
def _no_tf32():
    """Real fp32 convolutions on a GPU (cuDNN uses TF32 by default), so references are exact to float32 rounding."""
    old = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = old


def _inputs(device: str = "cpu"):
    g = torch.Generator().manual_seed(1)
    return torch.rand(2, 3, 1, 16, 16, 8, generator=g).to(device), torch.rand(2, generator=g).to(device)


@pytest.mark.parametrize("device", DEVICES)
def test_channels_last_same_outputs(device):
    net = _net().eval().to(device)
    x, tau = _inputs(device)
    fast = configure_network(copy.deepcopy(net), channels_last=True)
    assert any(p.ndim == 5 and p.is_contiguous(memory_format=torch.channels_last_3d) for p in fast.parameters())
    with _no_tf32():
        torch.testing.assert_close(fast(x, tau), net(x, tau), rtol=0, atol=1e-5)


def test_activation_checkpointing_same_gradients():
    x, tau = _inputs()
    target = torch.rand_like(x)
    grads = []
    for ckpt in (False, True):
        net = configure_network(_net(), activation_checkpointing=ckpt).train()
        assert net.activation_checkpointing is ckpt
        torch.nn.functional.mse_loss(net(x, tau), target).backward()
        grads.append({n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name, g in grads[0].items():
        torch.testing.assert_close(grads[1][name], g, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="activation checkpointing"):
        configure_network(torch.nn.Linear(2, 2), activation_checkpointing=True)


@pytest.mark.parametrize("device", DEVICES)
def test_bf16_autocast_loss_close_to_fp32(device):
    """bf16 autocast (8 mantissa bits) changes the flow-matching loss by well under 2 % relative on this net."""
    net = _net().train().to(device)
    g = torch.Generator().manual_seed(2)
    batch = {
        "context": torch.rand(2, 3, 1, 16, 16, 8, generator=g),
        "context_time": torch.rand(2, 3, generator=g),
        "context_mask": torch.ones(2, 3, dtype=torch.bool),
        "target": torch.rand(2, 1, 16, 16, 8, generator=g),
        "target_time": torch.ones(2),
    }
    x, targets, _, kwargs = FlowMatchingPrepareBatch(seed=0)(batch, torch.device(device))
    loss_fn = FlowMatchingLoss()
    with _no_tf32():
        fp32 = loss_fn(net(x, **kwargs), targets)
    with torch.autocast(device, dtype=torch.bfloat16):
        out = net(x, **kwargs)
    bf16 = loss_fn(out, targets)  # the loss itself in float32 (FlowMatchingLoss casts)
    assert out.dtype == torch.bfloat16 and bf16.dtype == torch.float32
    assert abs(bf16.item() - fp32.item()) <= 0.02 * fp32.item()


@pytest.mark.slow
@pytest.mark.parametrize("device", DEVICES)
def test_compile_same_outputs(device):
    if not hasattr(torch, "compile"):
        pytest.skip("torch.compile unavailable")
    net = _net().eval().to(device)
    x, tau = _inputs(device)
    t0 = time.perf_counter()
    with _no_tf32():
        ref = net(x, tau)
        try:
            out = torch.compile(net)(x, tau)
        except Exception as e:  # no C++ compiler or unsupported platform
            pytest.skip(f"torch.compile failed here: {type(e).__name__}")
    if time.perf_counter() - t0 > 60:
        pytest.skip("torch.compile took more than 60 s")
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-4)


@pytest.mark.parametrize("device", DEVICES)
def test_fused_adamw_same_weights(device):
    """The fused AdamW kernel takes the same steps as the default kernel given the same gradients (rounding only).

    The gradients are computed once per step and given to both optimizers: cuDNN's backward is not deterministic on a
    GPU, and Adam turns a tiny gradient difference into a full-size step difference for near-zero gradients.
    """
    nets = [_net().to(device), _net().to(device)]
    opts = [torch.optim.AdamW(n.parameters(), lr=1e-2, weight_decay=1e-4, fused=f) for n, f in zip(nets, (None, True))]
    ctx, tau = _inputs(device)
    for _ in range(3):
        for opt in opts:
            opt.zero_grad()
        nets[0](ctx, tau).square().mean().backward()
        for a, b in zip(nets[0].parameters(), nets[1].parameters()):
            b.grad = a.grad.clone()
        for opt in opts:
            opt.step()
    start = _net().to(device)
    # biases right before a GroupNorm have a mathematically zero gradient (~1e-9 of rounding noise), which Adam
    # divides by ~eps: their steps are noise in both kernels, so only parameters with a real gradient are compared
    pairs = [(a, b, c) for a, b, c in zip(nets[0].parameters(), nets[1].parameters(), start.parameters())]
    real = [(a, b, c) for a, b, c in pairs if a.grad.abs().max() > 1e-6]
    assert len(real) > 0.8 * len(pairs)
    moved = max((a - c).abs().max().item() for a, _, c in real)
    diff = max((a - b).abs().max().item() for a, b, _ in real)
    assert moved > 1e-3 and diff < 1e-5, (moved, diff)


def test_config_wiring(tmp_path):
    overrides = {
        "bundle_root": str(CONFIGS.parent),
        "dataset_dir": str(tmp_path / "d"),
        "output_dir": str(tmp_path / "r"),
        "num_train": 2,
        "num_val": 1,
        "num_test": 1,
        "spatial_size": [16, 16, 8],
        "network_def#channels": 8,
        "amp": True,
        "channels_last": True,
        "activation_checkpointing": True,
        "compile": True,
        "sample_seed": 3,
        "fused_optimizer": True,
    }
    wf = workflow(bundle_run_files(CONFIGS.parent), "train", "training", CONFIGS / "metadata.json", **overrides)
    trainer = wf.parser.get_parsed_content("train#trainer")
    assert trainer.amp and trainer.amp_kwargs["dtype"] == torch.bfloat16 and trainer.compile
    net = wf.parser.get_parsed_content("network")
    assert net.activation_checkpointing
    assert any(p.ndim == 5 and p.is_contiguous(memory_format=torch.channels_last_3d) for p in net.parameters())
    assert wf.parser.get_parsed_content("train#prepare_batch").seed == 3
    assert wf.parser.get_parsed_content("train#optimizer").defaults["fused"] is True
    evaluator = wf.parser.get_parsed_content("validate#evaluator")
    assert evaluator.amp and evaluator.compile
