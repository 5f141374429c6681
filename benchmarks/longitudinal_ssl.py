# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""Longitudinal self-supervision on ACDC (Ren et al., NeurIPS 2022): one/few-shot segmentation and forecasting.

1. Pretraining (``bundles/acdc_cine_longitudinal_ssl/configs/pretrain.yaml``) on the prepared phases of every
   development patient except the held-out segmentation patients (004-010) and the forecasting validation fold.
2. Segmentation finetuning (``finetune.yaml`` + ``evaluate.yaml``) on patient001 (one-shot) or 001-003 (few-shot),
   evaluated on 004-010: random initialisation vs pretrained weights, each without / with the consistency loss,
   all with the same number of steps.
3. Forecasting (``bundles/acdc_cine_forecasting`` with the overlay ``forecasting_encoder_init.yaml``): discrete
   CRONOS trained on few patients of fold 0 with a random or a pretrained encoder, evaluated on the fold-0
   validation patients.

Writes ``docs/results/longitudinal_ssl.md`` (rewritten after every finished run; finished runs are skipped when the
script is started again, so it resumes).

    nice -n 5 python benchmarks/longitudinal_ssl.py --src ../shared/data/acdc_cine
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import REPO, provenance, run_bundle

from monai_tfm.apps.bundle_loading import bundle_run_files
from monai_tfm.data import ensure_acdc_prepared, fold_split
from monai_tfm.utils.io import atomic_write_text

SSL = REPO / "bundles" / "acdc_cine_longitudinal_ssl" / "configs"
FORECAST = REPO / "bundles" / "acdc_cine_forecasting"
EVAL_PATIENTS = [f"patient{i:03d}" for i in range(4, 11)]
SETTINGS = {"one_shot": ["patient001"], "few_shot": ["patient001", "patient002", "patient003"]}
# name -> (pretrained, consistency weight)
VARIANTS = {
    "random": (False, 0.0),
    "random_cs": (False, 1.0),
    "ssl": (True, 0.0),
    "ssl_cs": (True, 1.0),
}
LABELS = {
    "random": "random init, Dice+CE",
    "random_cs": "random init, Dice+CE + L_cs",
    "ssl": "pretrained, Dice+CE",
    "ssl_cs": "pretrained, Dice+CE + L_cs (paper)",
}
SEG_COLUMNS = ("dice", "hd95", "stcs", "aspc", "iou", "stcs_edes", "aspc_edes")
FC_METRICS = ("nrmse", "psnr", "ssim", "skill")


def spacing_overrides(src: Path, datalist: str) -> dict[str, list[float]]:
    """Prepared-grid spacing of the patients whose header spacing is a dummy 1 mm (manifest ``true_spacing_mm``)."""
    manifest = src / "manifest.csv"
    if not manifest.is_file():
        return {}
    meta = json.loads(Path(datalist).read_text())
    grid = meta["metadata"]["spatial_size"]
    out = {}
    for row in csv.DictReader(open(manifest)):
        if row.get("header_geometry_ok") == "True" or not row.get("true_spacing_mm"):
            continue
        true = [float(v) for v in row["true_spacing_mm"].split("x")]
        shape = [int(v) for v in row["shape"].split("x")[:3]]
        out[row["patient"]] = [round(t * n / m, 6) for t, n, m in zip(true, shape, grid)]
    return out


def _cell(stats: dict | None, fmt: str = "{:.3f}") -> str:
    if not stats or stats.get("mean") is None:
        return "-"
    return (
        f"{fmt.format(stats['mean'])} +- {fmt.format(stats['std'])}"
        if stats.get("n", 0) > 1
        else fmt.format(stats["mean"])
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--src", default=str(REPO.parent / "shared" / "data" / "acdc_cine"))
    parser.add_argument("--work", default="runs/bench_ssl")
    parser.add_argument("--channels", type=int, default=8)
    parser.add_argument("--roi", default="64,64,8")
    parser.add_argument("--pretrain-epochs", type=int, default=24)
    parser.add_argument("--mlp-hidden", type=int, default=256)
    parser.add_argument("--mlp-bottleneck", type=int, default=64)
    parser.add_argument("--num-samples", type=int, default=128)
    parser.add_argument("--finetune-epochs", type=int, default=10)
    parser.add_argument("--samples-per-epoch", type=int, default=24)
    parser.add_argument("--variants", default="random,ssl,ssl_cs", help=f"of {list(VARIANTS)}")
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument("--forecast-epochs", type=int, default=12)
    parser.add_argument("--forecast-patients", default="5,10")
    parser.add_argument("--parallel", type=int, default=2, help="runs at a time (each on one thread)")
    parser.add_argument("--out", default=str(REPO / "docs" / "results" / "longitudinal_ssl.md"))
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    work = (REPO / args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    info = provenance()
    started = work / "started_at.txt"  # the first start of this work folder (the script resumes)
    if not started.is_file():
        started.write_text(f"{time.time():.0f}\n{info['command']}\n")
    t_start, first_command = started.read_text().split("\n", 1)
    t_start = float(t_start)
    first_command = first_command.strip() or info["command"]
    src = Path(args.src).resolve()
    prepared = work / "prepared"
    datalist = ensure_acdc_prepared(str(src), str(prepared), progress=False)
    fc_val = sorted(i["subject"] for i in fold_split(datalist, 0)[1])
    fc_train = sorted(i["subject"] for i in fold_split(datalist, 0)[0])
    exclude = sorted(set(EVAL_PATIENTS) | set(fc_val))
    roi = [int(v) for v in args.roi.split(",")]
    overrides = spacing_overrides(src, datalist)
    common = {"dataset_dir": str(src), "prepared_dir": str(prepared), "overwrite": True, "num_workers": 0}
    ssl_common = {**common, "channels": args.channels, "roi_size": roi, "eval_patients": EVAL_PATIENTS}
    pre_dir = work / "pretrain"
    weights = pre_dir / "models" / "model.pt"
    walls: dict[str, float] = {}
    lock = threading.Lock()
    variants = [v for v in args.variants.split(",") if v]
    settings = [s for s in args.settings.split(",") if s]
    fc_counts = [int(n) for n in args.forecast_patients.split(",") if n]

    def timed(name: str, fn) -> None:
        marker = work / f"{name}.done"
        if marker.is_file():
            walls[name] = float(marker.read_text())
            return
        start = time.perf_counter()
        fn()
        walls[name] = time.perf_counter() - start
        marker.write_text(f"{walls[name]:.1f}")
        with lock:
            write()

    def pretrain() -> None:
        run_bundle(
            "training",
            [str(SSL / "pretrain.yaml")],
            work / "pretrain.log",
            **ssl_common,
            output_dir=str(pre_dir),
            pretrain_exclude=exclude,
            max_epochs=args.pretrain_epochs,
            mlp_hidden=args.mlp_hidden,
            mlp_bottleneck=args.mlp_bottleneck,
            num_samples=args.num_samples,
        )

    def finetune(setting: str, variant: str) -> None:
        pretrained, cw = VARIANTS[variant]
        out = work / f"{setting}_{variant}"
        kw = {
            **ssl_common,
            "output_dir": str(out),
            "finetune_patients": SETTINGS[setting],
            "pretrained_path": str(weights) if pretrained else "null",  # None would be dropped by the CLI
            "consistency_weight": cw,
            "max_epochs": args.finetune_epochs,
            "samples_per_epoch": args.samples_per_epoch,
        }
        run_bundle("training", [str(SSL / "finetune.yaml")], work / f"{out.name}_train.log", **kw)
        run_bundle(
            "evaluating",
            [str(SSL / "finetune.yaml"), str(SSL / "evaluate.yaml")],
            work / f"{out.name}_eval.log",
            **kw,
            spacing_overrides=overrides,
        )

    def forecast(n: int, pretrained: bool) -> None:
        out = work / f"forecast_{n}_{'ssl' if pretrained else 'random'}"
        init = [SSL / "forecasting_encoder_init.yaml"]
        files = [str(f) for f in bundle_run_files(FORECAST, overlays=init)]
        kw = {
            **common,
            "output_dir": str(out),
            "fold": 0,
            "max_epochs": args.forecast_epochs,
            "val_interval": args.forecast_epochs,
            "network_def#channels": args.channels,
            "num_train_patients": n,
            "ssl_weights": str(weights) if pretrained else "null",
            "val_draws": 1,
        }
        run_bundle("training", files, work / f"{out.name}_train.log", **kw)
        files = [str(f) for f in bundle_run_files(FORECAST, "evaluate", overlays=init)]
        run_bundle("evaluating", files, work / f"{out.name}_eval.log", **kw)

    def seg_summary(setting: str, variant: str) -> dict | None:
        p = work / f"{setting}_{variant}" / "eval" / "summary.json"
        return json.loads(p.read_text())["summary"] if p.is_file() else None

    def fc_summary(n: int, init: str) -> dict | None:
        p = work / f"forecast_{n}_{init}" / "eval_validation" / "summary.json"
        return json.loads(p.read_text())["summary"] if p.is_file() else None

    def last_done() -> float:
        times = [p.stat().st_mtime for p in work.glob("*.done")]
        return max(times) if times else time.time()

    def per_subject(run: str) -> dict[str, dict]:
        p = work / run / "eval" / "per_subject.csv"
        return {r["subject"]: r for r in csv.DictReader(open(p))} if p.is_file() else {}

    def per_sample(run: str) -> dict[tuple, float]:
        p = work / run / "eval_validation" / "per_sample.csv"
        if not p.is_file():
            return {}
        return {(r["subject"], r["draw"]): float(r["model_nrmse"]) for r in csv.DictReader(open(p))}

    def paired(a: dict, b: dict, better_higher: bool, fmt: str = "{:+.3f}") -> str:
        keys = sorted(set(a) & set(b))
        if not keys:
            return "-"
        diff = [b[k] - a[k] for k in keys]
        wins = sum((d > 0) if better_higher else (d < 0) for d in diff)
        return f"{fmt.format(sum(diff) / len(diff))} ({wins}/{len(keys)} better)"

    def write() -> None:
        md = [
            "# Longitudinal self-supervision on ACDC cine MRI (Ren et al., NeurIPS 2022)",
            "",
            f"* command: `{first_command}` (under `nice -n 5`)"
            + (f"; this page written by `{info['command']}`" if info["command"] != first_command else ""),
            f"* commit: {info['commit']}",
            f"* device: {info['device']}; {args.parallel} runs at a time, one thread each, on a 2-core machine shared "
            "with other jobs (wall times are rough)",
            f"* torch {info['torch']}, MONAI {info['monai']}; "
            f"wall time {(last_done() - t_start) / 60:.0f} min from the first start to the last finished run",
            "",
            "## Setting (a reduced CPU budget: read the numbers as a smoke-scale comparison, not as the paper's)",
            "",
            "Data: the 29-patient cropped development copy, prepared by the package (ED..ES resampled to 12 phases of "
            "96 x 96 x 8 voxels; ED/ES masks on the first/last phase). Every phase is a timepoint; pairs are adjacent "
            "phases. The paper assumes registered timepoints; here the heart contracts between phases, so "
            "corresponding voxels are only approximately the same tissue, and consistency scores between phases "
            "measure smoothness of a real motion, not agreement of a static anatomy.",
            "",
            f"* Pretraining: {args.pretrain_epochs} epochs on {29 - len(exclude)} patients (all but the segmentation "
            f"evaluation patients {EVAL_PATIENTS[0]}-{EVAL_PATIENTS[-1][-3:]} and the forecasting validation fold "
            f"{', '.join(fc_val)}), crops {roi}, batch 3 pairs, Adam lr 2e-4; UNet width {args.channels} x "
            f"(1, 1, 2, 4) (paper: a larger UNet, 30k steps on a GPU); projector {args.mlp_hidden} x 3, predictor "
            f"{args.mlp_hidden}-{args.mlp_bottleneck}-{args.mlp_hidden} (paper 2048/256), M = {args.num_samples} "
            "locations per scale; all four scales tapped in encoder and decoder; loss weights as the paper "
            "(lambda 1, alpha 10, mu 1e-2, gamma 1e-3, beta 100). The weights of the last epoch are used (no "
            "validation-based selection).",
            f"* Finetuning: {args.finetune_epochs} epochs x {args.samples_per_epoch} samples (batch 3; the same "
            "number of steps for every variant), Adam lr 2e-4 (beta1 0.5) with linear decay, crops as above; "
            "L_cs on adjacent phases of the 22 non-evaluation patients. Evaluation on the ED/ES masks of "
            f"{len(EVAL_PATIENTS)} held-out patients (all 12 phases segmented for STCS/ASPC); the last epoch is "
            "evaluated (no spare labelled patient for model selection).",
            "* Columns: Dice / IoU (mean over RV, myocardium, LV and the two labelled frames), HD95 in mm (the two "
            "patients with a dummy 1 mm header, 009 and 010, use the manifest's true spacing), STCS / ASPC between "
            "adjacent predicted phases (mean over the 11 pairs and 3 structures), and the same between the ED and "
            "ES predictions. Cells: mean +- std over the evaluation patients.",
            "",
        ]
        for setting in settings:
            md += [
                f"## {setting.replace('_', '-')} ({', '.join(SETTINGS[setting])})",
                "",
                "| variant | Dice | HD95 (mm) | STCS | ASPC | IoU | STCS ED-ES | ASPC ED-ES | run s |",
                "|---|---|---|---|---|---|---|---|---|",
            ]
            gt = None
            for variant in variants:
                s = seg_summary(setting, variant)
                if s is None:
                    continue
                gt = gt or s
                fmt = {"hd95": "{:.1f}", "aspc": "{:.2f}", "aspc_edes": "{:.1f}"}
                cells = " | ".join(_cell(s.get(c), fmt.get(c, "{:.3f}")) for c in SEG_COLUMNS)
                wall = walls.get(f"{setting}_{variant}")
                md.append(f"| {LABELS[variant]} | {cells} | {'-' if wall is None else f'{wall:.0f}'} |")
            if gt is not None:
                md.append(
                    f"| ground truth (reference) | | | | | | {_cell(gt.get('gt_stcs_edes'))} | "
                    f"{_cell(gt.get('gt_aspc_edes'), '{:.1f}')} | |"
                )
            md.append("")
        md += [
            "### Paired differences (same evaluation patients)",
            "",
            "Mean difference of the per-patient scores against the reference run, and on how many patients the "
            "second run is better (Dice up, HD95 / ASPC down).",
            "",
            "| setting | comparison | Dice | HD95 | ASPC |",
            "|---|---|---|---|---|",
        ]
        pairs = [("random", "ssl"), ("random", "ssl_cs"), ("ssl", "ssl_cs"), ("random", "random_cs")]
        for setting in settings:
            for ref, new in pairs:
                ra, rb = per_subject(f"{setting}_{ref}"), per_subject(f"{setting}_{new}")
                if not ra or not rb:
                    continue
                cells = [
                    paired(
                        {k: float(v[c]) for k, v in ra.items()}, {k: float(v[c]) for k, v in rb.items()}, c == "dice"
                    )
                    for c in ("dice", "hd95", "aspc")
                ]
                md.append(f"| {setting} | {LABELS[new]} vs {LABELS[ref]} | " + " | ".join(cells) + " |")
        md += [
            "",
            "## Forecasting: CRONOS encoder from the pretrained UNet vs random, few training patients",
            "",
            f"Discrete CRONOS (bundle `acdc_cine_forecasting`, width {args.channels}, {args.forecast_epochs} epochs, "
            "the papers' protocol otherwise), trained on n patients of fold 0's training split picked across the "
            "diagnostic groups (`few_subjects`, seed 0), evaluated on the fold-0 validation patients "
            f"({', '.join(fc_val)}; 4 fixed draws each, the last epoch). Pretrained = stem, encoder blocks and "
            "strided convolutions from the pretraining run above (`forecasting_encoder_init.yaml`), which never saw "
            "the validation patients. ssim x100; skill = 1 - MSE/MSE_LCI.",
            "",
            "| n patients | init | " + " | ".join(FC_METRICS) + " | LCI nrmse | run s |",
            "|---" * (len(FC_METRICS) + 4) + "|",
        ]
        for n in fc_counts:
            for init in ("random", "ssl"):
                s = fc_summary(n, init)
                if s is None:
                    continue
                cells = " | ".join(_cell(s["model"].get(m), "{:.4f}") for m in FC_METRICS)
                wall = walls.get(f"forecast_{n}_{init}")
                md.append(
                    f"| {n} | {'pretrained encoder' if init == 'ssl' else 'random'} | {cells} | "
                    f"{_cell(s['lci'].get('nrmse'), '{:.4f}')} | {'-' if wall is None else f'{wall:.0f}'} |"
                )
        fc_pairs = []
        for n in fc_counts:
            a, b = per_sample(f"forecast_{n}_random"), per_sample(f"forecast_{n}_ssl")
            if a and b:
                fc_pairs.append(f"n = {n}: {paired(a, b, better_higher=False, fmt='{:+.5f}')}")
        if fc_pairs:
            md += [
                "",
                "Paired NRMSE difference pretrained - random over the same forecasts (negative: pretrained better): "
                + "; ".join(fc_pairs)
                + ".",
            ]
        md += ["", "## Wall time per run (s, training + evaluation)", ""]
        md += [f"* {k}: {v:.0f}" for k, v in sorted(walls.items())]
        md += ["", f"Forecasting fold 0 training patients available: {len(fc_train)}.", ""]
        atomic_write_text(args.out, "\n".join(md), overwrite=True)

    with ThreadPoolExecutor(max_workers=max(1, args.parallel)) as pool:
        pre = pool.submit(timed, "pretrain", pretrain)
        jobs = []
        for setting in settings:
            for variant in variants:
                if not VARIANTS[variant][0]:
                    jobs.append(pool.submit(timed, f"{setting}_{variant}", lambda s=setting, v=variant: finetune(s, v)))
        for n in fc_counts:
            jobs.append(pool.submit(timed, f"forecast_{n}_random", lambda n=n: forecast(n, False)))
        pre.result()
        for setting in settings:
            for variant in variants:
                if VARIANTS[variant][0]:
                    jobs.append(pool.submit(timed, f"{setting}_{variant}", lambda s=setting, v=variant: finetune(s, v)))
        for n in fc_counts:
            jobs.append(pool.submit(timed, f"forecast_{n}_ssl", lambda n=n: forecast(n, True)))
        for job in jobs:
            job.result()
    write()
    print(Path(args.out).read_text())  # noqa: T201  (benchmark script output)


if __name__ == "__main__":
    main()
