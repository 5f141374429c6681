# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""Learning curves on ACDC: validation PSNR/SSIM against optimiser steps and CPU seconds.

* **monai_tfm**: a run of ``benchmarks/acdc.py`` with validation every few epochs (the ``curve_cronos_discrete``
  entry of its ``RUNS``: the discrete default, validation every 5 epochs); its TensorBoard scalars
  ``val_model_psnr`` / ``val_model_ssim`` / ``val_lci_*`` per epoch, epochs turned into steps (``budget.json``: steps
  per epoch from the datalist, seconds per step measured).
* **The authors' CRONOS** through ``../shared/tools/reference/quality.py`` (optional; needs ``REFERENCE_VENV`` and
  ``L4DM_DIR`` as for ``benchmarks/acdc.py``): trained in segments of ``--segment`` steps, each continuing from the
  previous segment's weights (``--init``) with a fresh seed for its draws, and scored after each segment on the same
  validation draws as our run (``make_fixed_draws`` seed 0, ``val_draws`` per patient, Euler 10 steps). The harness
  keeps no optimiser state between segments (AdamW moments restart; the reference uses a constant learning rate, so
  the schedule itself is unchanged); the page says so.

    python benchmarks/acdc_curves.py --work runs/bench_acdc_main --run curve_cronos_discrete_steps1600_fold0 \
        --fold 0 --steps 1600 --segment 400 --threads 1 --out docs/results/acdc_curves
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import REPO, page_header, provenance, write_results  # noqa: E402


def our_curve(run_dir: Path) -> list[dict]:
    """Validation points of a monai_tfm run from its TensorBoard events (step = epoch x steps per epoch)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    budget = json.loads((run_dir / "budget.json").read_text())
    acc = EventAccumulator(str(run_dir / "tensorboard"))
    acc.Reload()
    train_steps = len(acc.Scalars("train_loss"))  # one point per optimiser step
    epochs = acc.Scalars("val_model_psnr")
    last_epoch = max(e.step for e in epochs)
    per_epoch = train_steps / last_epoch
    series = {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in ("val_model_psnr", "val_model_ssim")}
    lci = {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in ("val_lci_psnr", "val_lci_ssim")}
    points = []
    for epoch in sorted(series["val_model_psnr"]):
        steps = min(train_steps, round(epoch * per_epoch))
        points.append(
            {
                "model": "monai_tfm cronos_discrete",
                "steps": steps,
                "seconds": steps * budget["seconds_per_step"],
                "psnr": series["val_model_psnr"][epoch],
                "ssim": series["val_model_ssim"][epoch],
                "lci_psnr": lci["val_lci_psnr"][epoch],
                "lci_ssim": lci["val_lci_ssim"][epoch],
            }
        )
    return points


def reference_curve(args: argparse.Namespace, datalist: Path) -> list[dict]:
    """Train the reference CRONOS in segments and score it after each (empty without the harness)."""
    tools = Path(args.reference_tools)
    python = Path(os.environ.get("REFERENCE_VENV", REPO / ".venv-reference")) / "bin" / "python"
    snapshot = os.environ.get("L4DM_DIR")
    if not (tools / "quality.py").is_file() or not python.is_file() or not snapshot:
        print("skipping the reference curve: needs the harness, REFERENCE_VENV and L4DM_DIR")  # noqa: T201
        return []
    points, done, seconds, init = [], 0, 0.0, None
    work = Path(args.work)
    for k in range(1, args.steps // args.segment + 1):
        out = work / f"reference_curve_fold{args.fold}_seg{k}"
        if not (out / "summary.json").is_file():
            cmd = [str(python), str(tools / "quality.py"), "--datalist", str(datalist), "--fold", str(args.fold)]
            cmd += ["--model", "cronos", "--width", str(args.channels), "--batch", str(args.batch_size)]
            cmd += ["--steps", str(args.segment), "--seed", str(k), "--num-draws", str(args.val_draws)]
            cmd += ["--solver", "euler", "--solver-steps", "10", "--save-model", "--overwrite", "--l4dm", snapshot]
            cmd += ["--out", str(out), "--threads", str(args.threads)] + (["--init", str(init)] if init else [])
            with open(work / f"{out.name}.log", "w") as log:
                if subprocess.run(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT).returncode != 0:
                    raise RuntimeError(f"reference segment {k} failed; see {work / (out.name + '.log')}")
        summary = json.loads((out / "summary.json").read_text())
        done += summary["training"]["steps"]
        seconds += summary["training"]["seconds"]
        means = summary["summary"]
        points.append(
            {
                "model": "authors' CRONOS (reference)",
                "steps": done,
                "seconds": seconds,
                "psnr": means["model"]["psnr"]["mean"],
                "ssim": means["model"]["ssim"]["mean"],
                "lci_psnr": means["lci"]["psnr"]["mean"],
                "lci_ssim": means["lci"]["ssim"]["mean"],
            }
        )
        init = out / "model.pt"
    return points


def plot(points: list[dict], path: Path) -> None:
    """Two rows (PSNR, SSIM) x two columns (against steps, against CPU seconds), LCI as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(10, 7), sharey="row")
    for name in dict.fromkeys(p["model"] for p in points):
        pts = [p for p in points if p["model"] == name]
        for row, metric in enumerate(("psnr", "ssim")):
            for col, x in enumerate(("steps", "seconds")):
                axes[row, col].plot([p[x] for p in pts], [p[metric] for p in pts], marker="o", label=name)
    lci = points[0]
    for row, metric in enumerate(("psnr", "ssim")):
        for col, x in enumerate(("optimiser steps", "CPU seconds of training")):
            ax = axes[row, col]
            ax.axhline(lci[f"lci_{metric}"], color="gray", linestyle="--", label="LCI")
            ax.set_xlabel(x)
            ax.set_ylabel(f"validation {metric.upper()}" + (" (x100)" if metric == "ssim" else " (dB)"))
            ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--work", default="runs/bench_acdc_main")
    parser.add_argument("--run", default="curve_cronos_discrete_steps1600_fold0", help="our run folder in --work")
    parser.add_argument("--prepared", default="prepared_64x64x8", help="prepared data folder in --work")
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--steps", type=int, default=1600)
    parser.add_argument("--segment", type=int, default=400)
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--val-draws", type=int, default=2, help="validation draws per patient (the bundle's 2)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--reference-tools", default=str(REPO.parent / "shared" / "tools" / "reference"))
    parser.add_argument("--out", default=str(REPO / "docs" / "results" / "acdc_curves"))
    args = parser.parse_args()
    work = Path(args.work)
    ours = our_curve(work / args.run) if (work / args.run / "budget.json").is_file() else []
    points = ours + reference_curve(args, work / args.prepared / "datalist.json")
    if not points:
        raise SystemExit(f"nothing to plot: no finished run {work / args.run} and no reference harness")
    out = Path(args.out)
    plot(points, out.with_suffix(".png"))
    info = provenance()
    info["command"] = "python " + " ".join(sys.argv)
    info["device"] = f"cpu: {os.uname().machine}, {args.threads} thread(s) per run"
    lines = page_header("ACDC learning curves (validation fold, fixed draws)", "", info)
    lines += [
        f"Fold {args.fold}, 64 x 64 x 8, width {args.channels}, batch {args.batch_size}, {args.val_draws} fixed draws "
        "per validation patient, Euler 10 steps. CPU seconds are those of the training steps only (validation "
        "excluded). The reference is trained in segments of "
        f"{args.segment} steps, each continuing from the previous weights with a fresh optimiser (AdamW moments "
        "restart; its learning rate is constant) and a fresh seed for its draws.",
        "",
        f"![learning curves]({out.with_suffix('.png').name})",
        "",
        "| model | steps | CPU s | PSNR | SSIM | LCI PSNR | LCI SSIM |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {p['model']} | {p['steps']} | {p['seconds']:.0f} | {p['psnr']:.2f} | {p['ssim']:.2f} | "
        f"{p['lci_psnr']:.2f} | {p['lci_ssim']:.2f} |"
        for p in points
    ]
    write_results(out, lines, info, args, points)
    print("\n".join(lines))  # noqa: T201  (benchmark script output)


if __name__ == "__main__":
    main()
