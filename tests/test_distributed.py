# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""Two-process DDP training on CPU (gloo) through ``torchrun`` and the bundle's ``multi_gpu_train.yaml``.

DDP with 2 ranks x batch 2 must equal one process with batch 4 on the same samples: same initial weights (seed),
same per-step sample sets (no shuffling, fixed context draws), gradients averaged over ranks (the flow-matching
loss with all K slots counted is a plain mean, so the mean of two per-rank means is the global mean), and ``tau``
drawn per sample from ``(seed, epoch, subject, draw)`` (``sample_seed``) so that the draws do not depend on the split.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from helpers import workflow

from monai_tfm.apps.bundle_loading import bundle_run_files
from monai_tfm.utils.distributed import gather_rows

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "synthetic_forecasting"
CONFIGS = BUNDLE / "configs"

# deterministic training data: one fixed context draw per training subject, selected like validation samples
DETERMINISTIC = """
train#data: $monai_tfm.transforms.make_fixed_draws(monai_tfm.data.load_series_datalist(@datalist, 'training'),
  @protocol, seed=@seed, num_draws=1)
train#preprocessing#transforms: $@load_transforms + [monai_tfm.transforms.SelectContextd(max_context=@num_slots)]
  + @variant_transforms
train#dataloader#shuffle: false
"""
# test-only: every rank saves its own weights at the end (rank 0 also writes the normal checkpoint files)
DDP_EXTRA = DETERMINISTIC.replace("train#dataloader#shuffle: false", "train#sampler#shuffle: false") + """
finalize:
  - "$torch.save(@network.module.state_dict(), os.path.join(@output_dir, f'rank{dist.get_rank()}.pt'))"
  - $monai_tfm.utils.distributed.destroy_distributed()
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _overrides(run: Path, data: Path, batch_size: int) -> dict:
    return {
        "bundle_root": str(REPO / "bundles" / "synthetic_forecasting"),
        "dataset_dir": str(data),
        "output_dir": str(run),
        "max_epochs": 1,
        "num_train": 8,
        "num_val": 3,  # 3 validation samples on 2 ranks: the sampler pads with a repeat that must be dropped
        "num_test": 1,
        "spatial_size": [16, 16, 8],
        "network_def#channels": 8,
        "val_draws": 1,
        "batch_size": batch_size,
        "sample_seed": 0,
    }


def test_gather_rows_single_process():
    rows = [{"subject": "a", "draw": 0}, {"subject": "a", "draw": 0}]
    assert gather_rows(rows, key=lambda r: (r["subject"], r["draw"])) == rows  # nothing dropped without DDP
    assert not dist.is_initialized()


@pytest.mark.slow
@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed unavailable")
def test_two_rank_ddp_equals_single_process(tmp_path):
    data = tmp_path / "data"
    (tmp_path / "det.yaml").write_text(DETERMINISTIC)
    (tmp_path / "ddp.yaml").write_text(DDP_EXTRA)

    # reference: one process, global batch 4 (this also generates the phantoms that the DDP run reuses)
    single = tmp_path / "single"
    wf = workflow(
        [*bundle_run_files(BUNDLE), tmp_path / "det.yaml"],
        "train",
        "training",
        CONFIGS / "metadata.json",
        **_overrides(single, data, 4),
    )
    wf.run()
    wf.finalize()

    ddp = tmp_path / "ddp"
    files = [str(f) for f in [*bundle_run_files(BUNDLE, "multi_gpu_train"), tmp_path / "ddp.yaml"]]
    args = ["--backend", "gloo"]
    for key, value in _overrides(ddp, data, 2).items():
        args += [f"--{key}", json.dumps(value) if isinstance(value, list) else str(value)]
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes=1",
        "--nproc_per_node=2",
        "--master_addr=127.0.0.1",
        f"--master_port={_free_port()}",
        "-m",
        "monai.bundle",
        "run",
        "training",
        "--config_file",
        json.dumps(files),
        *args,
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-4000:]

    w0 = torch.load(ddp / "rank0.pt", weights_only=True)
    w1 = torch.load(ddp / "rank1.pt", weights_only=True)
    ref = torch.load(single / "checkpoints" / "last.pt", weights_only=True)
    saved = torch.load(ddp / "checkpoints" / "last.pt", weights_only=True)
    assert set(saved["network"]) == set(ref["network"])  # saved unwrapped: no "module." prefix
    assert saved["trainer"]["iteration"] == ref["trainer"]["iteration"] == 2  # 8 samples / global batch 4
    moved = False
    init = (
        workflow(
            bundle_run_files(BUNDLE),
            "train",
            "training",
            CONFIGS / "metadata.json",
            **_overrides(tmp_path / "x", data, 4),
        )
        .parser.get_parsed_content("network")
        .state_dict()
    )
    for name, ref_w in ref["network"].items():
        torch.testing.assert_close(w0[name], w1[name], rtol=0, atol=0)  # ranks hold identical weights
        torch.testing.assert_close(saved["network"][name], w0[name], rtol=0, atol=0)
        torch.testing.assert_close(w0[name], ref_w, rtol=1e-4, atol=1e-5)  # DDP == single process
        moved |= not torch.equal(ref_w, init[name])
    assert moved  # training changed the weights
    # validation: rows gathered from both ranks, the sampler's padding repeat dropped, same mean as one process
    assert saved["checkpointer"]["best"] == pytest.approx(ref["checkpointer"]["best"], rel=1e-4)
    assert "3 samples" in proc.stdout + proc.stderr
