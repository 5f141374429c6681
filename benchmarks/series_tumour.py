# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""Own-data path on the synthetic tumour phantoms: continuous CRONOS against LCI and linear extrapolation.

The README's worked example at a benchmark size: ``monai-tfm synthetic --kind tumour --csv`` (irregular visits in
weeks), ``monai-tfm prepare series``, then ``bundles/series_forecasting`` trained at several seeds and evaluated on
the test subjects (each subject's last visit forecast from its earlier visits), with the two parameter-free
baselines evaluated on the same samples. Writes ``docs/results/series_tumour.{md,json}``.

    python benchmarks/series_tumour.py --epochs 30 --seeds 0,1,2 --threads 1
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

from common import REPO, gain_text, page_header, provenance, run_bundle, write_results

from monai_tfm.apps.bundle_loading import bundle_run_files
from monai_tfm.data import generate_synthetic_dataset, prepare_series
from monai_tfm.metrics import paired_gain, read_per_sample_csv

BUNDLE = REPO / "bundles" / "series_forecasting"
METRICS = ("nrmse", "psnr", "ssim")
BASELINES = ("linear",)  # evaluated without training; LCI is in every evaluation table


def _files(method: str, evaluate: bool) -> list[str]:
    return [str(f) for f in bundle_run_files(BUNDLE, "evaluate" if evaluate else "train", method)]


def _rows(run: Path) -> dict[str, dict]:
    """Per-sample rows of a test evaluation, by subject (one deterministic sample per subject)."""
    return {r["subject"]: r for r in read_per_sample_csv(run / "eval_test" / "per_sample.csv")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default="runs/bench_series_tumour")
    parser.add_argument("--num-train", type=int, default=20)
    parser.add_argument("--num-val", type=int, default=6)
    parser.add_argument("--num-test", type=int, default=16)
    parser.add_argument("--spatial-size", default="32,32,16")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seeds", default="0,1,2", help="training seeds of the model (the samples are fixed)")
    parser.add_argument("--method", default="cronos_continuous")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(REPO / "docs" / "results" / "series_tumour"))
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # inherited by every bundle run
    work = (REPO / args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in args.seeds.split(",")]
    size = [int(v) for v in args.spatial_size.split(",")]
    prov = provenance()
    t0 = time.perf_counter()

    raw = work / "raw"
    if not (raw / "scans.csv").is_file():
        generate_synthetic_dataset(
            raw, kind="tumour", num_train=args.num_train, num_val=args.num_val, num_test=args.num_test,
            spatial_size=size, csv=True,
        )  # fmt: skip
    prepared = work / "prepared"
    if not (prepared / "datalist.json").is_file():
        prepare_series(raw / "scans.csv", prepared, time_unit="weeks", progress=False)
    common = {"dataset_dir": str(prepared), "eval_split": "test", "overwrite": True}

    runs: dict[str, list[Path]] = {}
    wall: dict[str, float] = {}
    for seed in seeds:
        out = work / f"{args.method}_seed{seed}"
        if not (out / "eval_test" / "per_sample.csv").is_file():
            kw = {**common, "output_dir": str(out), "seed": seed, "max_epochs": args.epochs}
            kw["val_interval"] = max(1, args.epochs // 3)
            wall[str(seed)] = run_bundle("training", _files(args.method, False), work / f"{out.name}_train.log", **kw)
            run_bundle("evaluating", _files(args.method, True), work / f"{out.name}_eval.log", **kw)
        runs.setdefault(args.method, []).append(out)
    for name in BASELINES:
        out = work / name
        if not (out / "eval_test" / "per_sample.csv").is_file():
            run_bundle("evaluating", _files(name, True), work / f"{name}_eval.log", **common, output_dir=str(out))
        runs[name] = [out]

    # per subject: the model's metrics averaged over its training seeds; LCI is the same in every evaluation
    per_seed = {name: [_rows(d) for d in dirs] for name, dirs in runs.items()}
    subjects = sorted(per_seed[args.method][0])
    joined = []
    for s in subjects:
        row = {"subject": s, **{f"lci_{m}": per_seed[args.method][0][s][f"lci_{m}"] for m in METRICS}}
        for name, seeds_rows in per_seed.items():
            for m in METRICS:
                row[f"{name}_{m}"] = statistics.fmean(r[s][f"model_{m}"] for r in seeds_rows)
        joined.append(row)

    unit = "PSNR in dB, SSIM x100, NRMSE as a decrease"
    lines = page_header(
        "Own-data path: forecasting tumour phantoms with irregular visits",
        (
            "CPU, a small budget: the README's worked example at a benchmark size"
            if not prov["device"].startswith("cuda")
            else ""
        ),
        prov,
    )
    n_test = len(subjects)
    lines += [
        f"Data: `monai-tfm synthetic --kind tumour --csv` ({args.num_train} training, {args.num_val} validation, "
        f"{args.num_test} test phantoms, {' x '.join(map(str, size))} voxels, 4-8 visits at irregular weeks in "
        "[0, 60]), prepared by `monai-tfm prepare series --time_unit weeks` (the table's split column kept). Each "
        "test subject's last visit is forecast from all its earlier visits (the bundle's protocol; one deterministic "
        f"sample per subject, {n_test} subjects). Model: `bundles/series_forecasting` with `methods/{args.method}.yaml`"
        f" and its defaults (CRONOS UNet width 32, batch 2, AdamW lr 1e-3, warm-up + cosine, 10-step Euler), "
        f"{args.epochs} epochs, best validation NRMSE; training seeds {seeds}; {args.threads} CPU thread(s) per run. "
        "Baselines: LCI (the last earlier visit) and linear extrapolation through the last two visits to the target "
        "week (`methods/linear.yaml`), no training.",
        "",
        "## Mean over the test subjects",
        "",
        "| method | " + " | ".join(METRICS) + " |",
        "|---" * (len(METRICS) + 1) + "|",
    ]
    for seed, rows in zip(seeds, per_seed[args.method]):
        cells = " | ".join(f"{statistics.fmean(r[f'model_{m}'] for r in rows.values()):.4g}" for m in METRICS)
        lines.append(f"| {args.method}, seed {seed} | {cells} |")
    for name in BASELINES:
        rows = per_seed[name][0]
        lines.append(
            f"| {name} | "
            + " | ".join(f"{statistics.fmean(r[f'model_{m}'] for r in rows.values()):.4g}" for m in METRICS)
            + " |"
        )
    lci = per_seed[args.method][0]
    lines.append(
        "| LCI | " + " | ".join(f"{statistics.fmean(r[f'lci_{m}'] for r in lci.values()):.4g}" for m in METRICS) + " |"
    )

    gains = {}
    seed_gains = [paired_gain(list(rows.values()), "psnr")["mean"] for rows in per_seed[args.method]]
    lines += [
        "",
        f"## Paired gains per subject (mean [bootstrap 95% CI over subjects] (subjects better / subjects); {unit})",
        "",
        f"{args.method}: each subject's metric averaged over the {len(seeds)} training seeds. Per seed, the PSNR "
        "gain over LCI: "
        + ", ".join(f"seed {seed} {g:+.2f} dB" for seed, g in zip(seeds, seed_gains))
        + f" (median {statistics.median(seed_gains):+.2f}).",
        "",
        "| comparison | " + " | ".join(f"{m} gain" for m in METRICS) + " |",
        "|---" * (len(METRICS) + 1) + "|",
    ]
    for method, base in ((args.method, "lci"), (args.method, "linear"), ("linear", "lci")):
        g = {m: paired_gain(joined, m, method=method, baseline=base) for m in METRICS}
        gains[f"{method}_vs_{base}"] = g
        lines.append(f"| {method} vs {base} | " + " | ".join(gain_text(g[m], m) for m in METRICS) + " |")
    lines += [
        "",
        "Training wall time per seed (s, training and its validations): "
        + (", ".join(f"seed {k}: {v:.0f}" for k, v in wall.items()) or "runs reused from an earlier invocation")
        + f"; wall time of this command {(time.perf_counter() - t0) / 60:.1f} min.",
    ]
    write_results(Path(args.out), lines, prov, args, [{"gains": gains, "wall_train_s": wall, "subjects": joined}])
    print("\n".join(lines))  # noqa: T201  (benchmark script output)


if __name__ == "__main__":
    main()
