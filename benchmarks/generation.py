# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""ACDC 2D generation: flow matching (MOTFM) at 1/5/10 Euler steps vs DDPM at 10/50/1000 steps (and DDIM at 10/50)
on the same UNet, data and training budget; writes ``docs/results/generation.md`` and
``docs/results/generation_samples.png``.

Both models are the ``acdc_cine_generation`` bundle (class = ACDC group, mask = ED/ES segmentation through the
ControlNet), trained with the same overrides, then evaluated by the bundle's ``evaluate.yaml`` with one set of
judges (classifier features for FID/MMD, segmenter for Dice) trained once on the real training slices.

    nice -n 5 python benchmarks/generation.py --src ../shared/data/acdc_cine --epochs 2

Finished steps are skipped when the script is started again (``--report-only`` rewrites the page from the runs).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import REPO, provenance, run_bundle

from monai_tfm.apps.bundle_loading import bundle_run_files
from monai_tfm.utils.io import atomic_write_text

CONFIGS = REPO / "bundles" / "acdc_cine_generation" / "configs"
FLOW_SAMPLERS = [
    {"name": "euler_1", "kind": "flow", "solver": "euler", "steps": 1},
    {"name": "euler_5", "kind": "flow", "solver": "euler", "steps": 5},
    {"name": "euler_10", "kind": "flow", "solver": "euler", "steps": 10},
    {"name": "midpoint_5", "kind": "flow", "solver": "midpoint", "steps": 5},
    {"name": "rk4_5", "kind": "flow", "solver": "rk4", "steps": 5},
]


def diffusion_samplers(num_small: int) -> list[dict]:
    """DDPM at 10/50/1000 steps (1000 steps on the first ``num_small`` class samples only, no mask set: the CPU budget),
    DDIM at 10/50. ``masks: 0`` rather than false: the override travels through the command line."""
    return [
        {"name": "ddpm_10", "kind": "ddpm", "steps": 10},
        {"name": "ddpm_50", "kind": "ddpm", "steps": 50},
        {"name": "ddpm_1000", "kind": "ddpm", "steps": 1000, "num_eval": num_small, "masks": 0},
        {"name": "ddim_10", "kind": "ddim", "steps": 10},
        {"name": "ddim_50", "kind": "ddim", "steps": 50},
    ]


def _files(method: str, evaluate: bool = False) -> list[str]:
    return [str(f) for f in bundle_run_files(CONFIGS.parent, "evaluate" if evaluate else "train", method)]


def _timed(path: Path, fn, *args, **kwargs) -> float:
    """Run ``fn`` unless ``path`` records an earlier run; store and return its wall time."""
    if path.is_file():
        return float(json.loads(path.read_text())["seconds"])
    seconds = fn(*args, **kwargs)
    atomic_write_text(path, json.dumps({"seconds": seconds}) + "\n", overwrite=True)
    return seconds


def train_judges(common: dict, evaluation: dict) -> float:
    """Train the evaluation's judges once, from the bundle's own config (so both evaluations then load them)."""
    import torch
    from monai.bundle import ConfigParser

    torch.set_num_threads(1)
    start = time.perf_counter()
    parser = ConfigParser()
    parser.read_config(_files("flow", evaluate=True))
    parser["bundle_root"] = str(CONFIGS.parent)
    for key, value in {**common, **evaluation}.items():
        parser[key] = value
    parser.get_parsed_content("evaluate#judges").prepare()
    return time.perf_counter() - start


def _fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def _figure(work: Path, out: Path, names: list[tuple[str, str]]) -> None:
    """Stack the evaluation's sample grids (first class samples, then mask samples) into one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.image as mpimg
    import matplotlib.pyplot as plt

    panels = [(label, work / run / "eval" / f"samples_{name}.png") for label, run, name in names]
    panels = [(label, p) for label, p in panels if p.is_file()]
    if not panels:
        return
    fig, axes = plt.subplots(len(panels), 1, figsize=(13, 3.6 * len(panels)), squeeze=False)
    for ax, (label, path) in zip(axes[:, 0], panels):
        ax.imshow(mpimg.imread(path))
        ax.set_axis_off()
        ax.set_title(label, fontsize=10, loc="left")
    fig.tight_layout()
    tmp = out.with_name(".tmp-" + out.name)
    fig.savefig(tmp, dpi=70)
    os.replace(tmp, out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", default=str(REPO.parent / "shared" / "data" / "acdc_cine"))
    parser.add_argument("--work", default="runs/generation_bench")
    parser.add_argument("--size", type=int, default=32, help="in-plane size of the prepared grid (size x size x 8)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=None, help="train this many iterations (one short epoch)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--channels", default="16,32,32")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--num-eval", type=int, default=64)
    parser.add_argument("--num-small", type=int, default=16)
    parser.add_argument("--num-mask-eval", type=int, default=32)
    parser.add_argument("--judge-epochs", type=int, default=5)
    parser.add_argument("--segmenter-epochs", type=int, default=30)
    parser.add_argument("--sequential", action="store_true", help="train/evaluate the two models one after the other")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--notes", default=None, help="markdown bullets with the findings of the run, for the page")
    parser.add_argument("--out", default=str(REPO / "docs" / "results" / "generation.md"))
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # one thread per process: 2 cores, two processes at a time
    work = (REPO / args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    channels = [int(c) for c in args.channels.split(",")]
    spatial = [args.size, args.size, 8]
    common = {
        "dataset_dir": str(Path(args.src).resolve()),
        "prepared_dir": str(work / f"prepared_{args.size}x{args.size}x8_12"),
        "spatial_size": spatial,
        "fold": args.fold,
        "network_def#channels": channels,
        "network_def#num_head_channels": channels[-1],
        "batch_size": args.batch_size,
        "max_epochs": args.epochs,
        "learning_rate": args.lr,
        "num_workers": 0,
    }
    if args.iterations:
        common.update(
            {"max_epochs": 1, "train#trainer#epoch_length": args.iterations, "train#total_steps": args.iterations}
        )
    evaluation = {
        "judges_dir": str(work / "judges"),
        "num_eval": args.num_eval,
        "num_small": args.num_small,
        "num_mask_eval": args.num_mask_eval,
        "eval_batch_size": args.num_eval,
        "judge_classifier_epochs": args.judge_epochs,
        "judge_segmenter_epochs": args.segmenter_epochs,
    }
    samplers = {"flow": FLOW_SAMPLERS, "ddpm": diffusion_samplers(args.num_small)}
    t_start = time.perf_counter()
    times: dict[str, float] = {}
    if not args.report_only:
        from monai_tfm.data import ensure_acdc_prepared

        ensure_acdc_prepared(
            common["dataset_dir"], common["prepared_dir"], spatial_size=spatial, num_frames=12, progress=False
        )

        def train(method: str) -> float:
            return _timed(
                work / method / "train_seconds.json",
                run_bundle,
                "training",
                _files(method),
                work / f"{method}_train.log",
                output_dir=str(work / method),
                overwrite=True,
                **common,
            )

        def evaluate(method: str) -> float:
            return _timed(
                work / method / "eval_seconds.json",
                run_bundle,
                "evaluating",
                _files(method, evaluate=True),
                work / f"{method}_eval.log",
                output_dir=str(work / method),
                overwrite=True,
                eval_samplers=samplers[method],
                **common,
                **evaluation,
            )

        workers = 1 if args.sequential else 2
        with ThreadPoolExecutor(workers) as pool:
            times.update(zip(("flow_train", "ddpm_train"), pool.map(train, ("flow", "ddpm"))))
        times["judges"] = _timed(work / "judges" / "seconds.json", train_judges, common, evaluation)
        with ThreadPoolExecutor(workers) as pool:  # both evaluations load the same judges
            times.update(zip(("flow_eval", "ddpm_eval"), pool.map(evaluate, ("flow", "ddpm"))))
    else:
        for name, path in (
            ("flow_train", work / "flow" / "train_seconds.json"),
            ("ddpm_train", work / "ddpm" / "train_seconds.json"),
            ("judges", work / "judges" / "seconds.json"),
            ("flow_eval", work / "flow" / "eval_seconds.json"),
            ("ddpm_eval", work / "ddpm" / "eval_seconds.json"),
        ):
            if path.is_file():
                times[name] = float(json.loads(path.read_text())["seconds"])
    total = time.perf_counter() - t_start
    summaries = {m: json.loads((work / m / "eval" / "summary.json").read_text()) for m in ("flow", "ddpm")}
    write_report(Path(args.out), summaries, times, total, args, provenance(), work)


def write_report(out: Path, summaries: dict, times: dict, total: float, args, info: dict, work: Path) -> None:
    """The results page: provenance, budget, the combined table, notes on what the numbers can and cannot say."""
    flow, ddpm = summaries["flow"], summaries["ddpm"]
    budget = f"{args.iterations} iterations" if args.iterations else f"{args.epochs} epochs"
    k = flow.get("num_small")
    judges = flow["judges"]
    md = ["# ACDC 2D generation: flow matching (MOTFM) vs DDPM on the same UNet", ""]
    md += [
        f"* command: `nice -n 5 {info['command']}`",
        f"* commit: {info['commit']} (`git rev-parse HEAD`)",
        f"* device: {info['device'].split(',')[0]}, one thread per process (`OMP_NUM_THREADS=1`; the two trainings, "
        "then the two evaluations, ran side by side) on a 2-core machine shared with other jobs: wall times are rough "
        "magnitudes",
        f"* torch {info['torch']}, MONAI {info['monai']}, Python {info['python']}",
        "* wall time: "
        + ", ".join(f"{name.replace('_', ' ')} {seconds / 60:.1f} min" for name, seconds in times.items())
        + (f"; this invocation {total / 60:.1f} min" if total > 60 else ""),
        "",
        "## Setup (reduced CPU budget)",
        "",
        f"* data: the 29-patient cropped development copy, prepared by the bundle to 12 phases ED..ES on a "
        f"{args.size} x {args.size} x 8 grid (one intensity scale per patient); 2D items are the short-axis slices of "
        f"every phase. Patients of fold {args.fold} (of 5, stratified by group) are held out: {flow['num_reference']} "
        f"of their slices are the FID/MMD reference, {flow['num_mask_reference']} masked slices the Dice reference. "
        "Classes: the group (DCM, HCM, MINF, NOR, RV; the held-out fold has no MINF patient); masks: the expert ED/ES "
        "segmentation, present for patients 001-010 only (all DCM), oversampled 4x in training.",
        f"* model (both objectives): MONAI `DiffusionModelUNet` channels {args.channels}, attention (with the class "
        "cross-attention) at the lowest level, one residual block per level, plus a MONAI `ControlNet` for the mask "
        "(initialised from the UNet, zero convolutions); class dropout 0.1 (classifier-free guidance is trained but "
        "not used here: guidance 1), mask dropout 0.3 (so the class set is sampled without a mask).",
        f"* training (identical for both): {budget}, batch {args.batch_size}, AdamW lr {args.lr} with "
        "warm-up + cosine, gradient clipping 1. Flow matching: noise-to-image straight path, velocity target, time "
        "code tau x 1000; DDPM: epsilon prediction, MONAI `DDPMScheduler` (1000 steps, linear betas 1e-4..0.02).",
        f"* judges (own, nothing downloaded): FID/MMD features are the {judges['image_shape']} -> "
        f"{flow['feature_extractor']}, trained for {judges['classifier_epochs']} epochs; Dice from a MONAI `UNet` "
        f"segmenter trained for {judges['segmenter_epochs']} epochs on the {judges['num_train_masks']} masked "
        "training slices (each once). FID = MONAI `FIDMetric`, MMD = MONAI `MMDMetric` (unbiased, linear "
        "kernel; can be negative), both on those features.",
        f"* sampling: the same seeded noise for every sampler; {flow['num_reference']} class-conditional samples "
        f"(the held-out slices' classes, no mask) per sampler and {flow['num_mask_reference']} class + mask samples; "
        f"1000-step DDPM only on the first {k} class samples (no mask set) to fit the budget, so its full-size FID/MMD "
        f"are missing and the `@{k}` columns (first {k} samples of every row against the first {k} references) are "
        "the comparison that includes it.",
        "",
        "## Results",
        "",
        f"| model | sampler | steps | NFE | N | FID | MMD | FID@{k} | MMD@{k} | MS-SSIM | class acc | Dice "
        "| s / sample |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    real_rows = [r for r in flow["rows"] if r["name"].startswith("real")]
    labels = {"real_train": "training slices", "real_heldout": "other held-out slices"}
    for model, summary in (("real data", None), ("flow matching", flow), ("DDPM", ddpm)):
        rows = real_rows if summary is None else [r for r in summary["rows"] if not r["name"].startswith("real")]
        for r in rows:
            ms = _fmt(r.get("ms_ssim"))
            sampler = labels.get(r["name"], r["name"])
            cells = [
                model,
                sampler,
                _fmt(r.get("steps")),
                _fmt(r.get("nfe")),
                _fmt(r.get("num_samples")),
                _fmt(r.get("fid")),
                _fmt(r.get("mmd")),
                _fmt(r.get("fid_small")),
                _fmt(r.get("mmd_small")),
                ms,
                _fmt(r.get("class_acc")),
                _fmt(r.get("dice")),
                _fmt(r.get("sec_per_sample")),
            ]
            md.append("| " + " | ".join(cells) + " |")
    md += [
        "",
        "Columns: NFE = network evaluations per sample (one batched forward per step); N = class samples; FID/MMD at "
        f"N = {flow['num_reference']}; MS-SSIM = mean over pairs of same-class samples (lower = more diverse); class "
        "acc = the judge classifier's accuracy on the images; Dice = judge segmenter on mask-conditional samples vs "
        "the "
        "conditioning mask (real held-out row: on the masked reference slices vs their expert masks); s / sample = "
        "sampling wall time per image in batches of 64 on the CPU above. Real rows: `training slices` are images the "
        "judges (and the generators) were trained on; `other held-out slices` are held-out slices disjoint from the "
        "reference (same patients): the floor of FID/MMD at this N.",
        "",
        "![samples](generation_samples.png)",
        "",
        "`generation_samples.png`: the first 16 class samples (titles: requested group) and 8 mask-conditional samples "
        "(outlined: the conditioning mask) of a few samplers.",
        "",
        "## What these numbers can and cannot say",
        "",
        *(
            Path(args.notes).read_text().strip().splitlines()
            if args.notes
            else ["* Findings: none recorded for this page (pass --notes FILE)."]
        ),
        f"* The budget is tiny (minutes of CPU training, a {args.size} x {args.size} grid, a small UNet): both models "
        "are far from "
        "converged and the absolute quality is low. The table compares the objectives and samplers under the same "
        "small budget; it does not reproduce the paper's setting (GPU, long training, full resolution), and the "
        "ranking could change with more training.",
        "* The judges are small networks trained on about 20 patients' slices. Their features are not Inception "
        "features, so FID/MMD values are only comparable within this page; with N = "
        f"{flow['num_reference']} (and {k}) samples FID has a large positive bias and a spread of several units "
        "between seeds, so small differences mean nothing; the `other held-out slices` row is the floor at this N.",
        "* Class accuracy is bounded by the judge's own accuracy on held-out real slices (a single slice says little "
        "about the group); Dice is bounded by the judge segmenter's Dice on real slices and measured on the masks of "
        "two DCM patients only.",
        "* Wall times were measured on a shared 2-core CPU while other jobs ran; they rank the samplers (time per "
        "sample is proportional to NFE) but are not speeds of this code on an idle machine or a GPU.",
        "* MONAI's `DDPMScheduler.step` uses `alphas_cumprod[t - 1]` as the previous step whatever the number of "
        "inference steps, so DDPM with 10 or 50 of its 1000 training steps is not a proper strided sampler (its "
        "rows show what MONAI's scheduler gives); DDIM is the strided sampler for those budgets.",
    ]
    atomic_write_text(out, "\n".join(md) + "\n", overwrite=True)
    _figure(
        work,
        out.with_name("generation_samples.png"),
        [
            ("flow matching, Euler 1 step", "flow", "euler_1"),
            ("flow matching, Euler 10 steps", "flow", "euler_10"),
            ("DDIM, 50 steps", "ddpm", "ddim_50"),
            (f"DDPM, 1000 steps (first {k} class samples only)", "ddpm", "ddpm_1000"),
        ],
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
