# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""Figure like the CRONOS paper's Figure 3: ground truth, LCI, forecast and their residuals for 3 patients."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from monai.bundle import ConfigParser

from monai_tfm.apps.bundle_loading import bundle_run_files
from monai_tfm.flows import last_context_image
from monai_tfm.handlers import load_weights

CONFIGS = Path(__file__).resolve().parents[1] / "bundles" / "acdc_cine_forecasting" / "configs"


def make_figure(run_dir: Path, out_png: str, overrides: dict[str, Any], fold: int, n: int = 3) -> None:
    """Forecast ``n`` validation samples of a trained discrete run and plot the middle slice of each.

    Args:
        run_dir: the run folder (``models/model.pt``, ``val_draws.json``).
        out_png: output PNG path.
        overrides: bundle overrides used for the run (dataset, width, ...).
        fold: the run's fold.
        n: number of patients.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parser = ConfigParser()
    parser.read_config([str(f) for f in bundle_run_files(CONFIGS.parent, method="cronos_discrete")])
    for key, value in {**overrides, "fold": fold, "output_dir": str(run_dir), "device": "$torch.device('cpu')"}.items():
        parser[key] = value
    dataset = parser.get_parsed_content("validate#dataset")
    network = load_weights(parser.get_parsed_content("network"), run_dir / "models" / "model.pt").eval()
    prepare = parser.get_parsed_content("validate#prepare_batch")
    inferer = parser.get_parsed_content("validate#inferer")
    picked, seen = [], set()
    for i in range(len(dataset)):
        if dataset.data[i]["subject"] not in seen and dataset.data[i]["draw"] == 0:
            seen.add(dataset.data[i]["subject"])
            picked.append(dataset[i])
        if len(picked) == n:
            break
    batch = {
        k: torch.stack([torch.as_tensor(p[k]) for p in picked])
        for k in ("context", "context_time", "context_mask", "target", "target_time")
    }
    x0, target, _, kw = prepare(batch, torch.device("cpu"))
    with torch.no_grad():
        pred = inferer(x0, network, **kw).clamp(0, 1)
    lci = last_context_image(batch["context"], batch["context_mask"])
    z = target.shape[-1] // 2
    cols = ["ground truth", "LCI", "forecast", "|GT - LCI|", "|GT - forecast|"]
    fig, axes = plt.subplots(len(picked), 5, figsize=(12, 2.6 * len(picked)))
    for r, p in enumerate(picked):
        gt, lc, fc = target[r, 0, ..., z], lci[r, 0, ..., z], pred[r, 0, ..., z]
        panels = [
            (gt, "gray", 0, 1),
            (lc, "gray", 0, 1),
            (fc, "gray", 0, 1),
            ((gt - lc).abs(), "magma", 0, 0.4),
            ((gt - fc).abs(), "magma", 0, 0.4),
        ]
        for c, (img, cmap, lo, hi) in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(img.T.numpy(), cmap=cmap, vmin=lo, vmax=hi, origin="lower")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(cols[c])
        axes[r, 0].set_ylabel(f"{p['subject']}\nt={float(p['target_time']):.2f}")
    fig.suptitle(f"ACDC fold {fold}, discrete CRONOS, middle slice; residual scale 0..0.4")
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
