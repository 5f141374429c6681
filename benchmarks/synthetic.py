# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""Train and evaluate every flow method of the synthetic bundle with its defaults; write docs/results/synthetic.md.

python benchmarks/synthetic.py [--methods cronos_discrete,cronos_continuous,tfm] [--work runs/bench_synthetic]
"""

from __future__ import annotations

import argparse
import json

from common import REPO, provenance, run_bundle

from monai_tfm.apps.bundle_loading import bundle_run_files
from monai_tfm.utils.io import atomic_write_text

CONFIGS = REPO / "bundles" / "synthetic_forecasting" / "configs"
METRICS = ("nrmse", "psnr", "ssim", "change_rmse", "skill")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--methods", default="cronos_discrete,cronos_continuous,tfm")
    parser.add_argument("--work", default="runs/bench_synthetic")
    parser.add_argument("--out", default=str(REPO / "docs" / "results" / "synthetic.md"))
    args = parser.parse_args()
    work = (REPO / args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    info = provenance()
    lines = []
    for method in args.methods.split(","):
        out = work / method
        files = [str(f) for f in bundle_run_files(CONFIGS.parent, "train", method)]
        t_train = run_bundle("training", files, work / f"{method}_train.log", output_dir=str(out), overwrite=True)
        t_eval = run_bundle(
            "evaluating",
            [str(f) for f in bundle_run_files(CONFIGS.parent, "evaluate", method)],
            work / f"{method}_eval.log",
            output_dir=str(out),
            overwrite=True,
        )
        result = json.loads((out / "eval_test" / "summary.json").read_text())
        lines.append((method, result, t_train, t_eval))

    md = ["# Synthetic bundle: every flow method against LCI", ""]
    md += [f"* command: `{info['command']}`", f"* commit: {info['commit']}", f"* device: {info['device']}"]
    md += [f"* torch {info['torch']}, MONAI {info['monai']}, Python {info['python']}", ""]
    md += [
        "Bundle defaults (24 training phantoms, 20 epochs, batch 4, 10-step Euler, mean aggregation); test split: 6",
        "subjects x 4 fixed draws = 24 samples, the same draws for every method. Cells: mean +- std over samples.",
        "",
        "| method | " + " | ".join(f"model {m}" for m in METRICS) + " | LCI nrmse | LCI psnr | LCI ssim |"
        " train s | ms / forecast | NFE |",
        "|---" * (len(METRICS) + 7) + "|",
    ]
    for method, result, t_train, _ in lines:
        table, meta = result["summary"], result["info"]
        cells = [f"{table['model'][m]['mean']:.4g} +- {table['model'][m]['std']:.2g}" for m in METRICS]
        lci = [f"{table['lci'][m]['mean']:.4g}" for m in ("nrmse", "psnr", "ssim")]
        md.append(
            f"| {method} | "
            + " | ".join(cells + lci)
            + f" | {t_train:.0f} | {1000 * meta['seconds_per_forecast']:.0f} | {meta['nfe_per_forecast']:.0f} |"
        )
    md += ["", "Full per-method summaries (mean +- std (median)):", ""]
    for method, _, _, _ in lines:
        md += [f"## {method}", "", (work / method / "eval_test" / "summary.md").read_text(), ""]
    atomic_write_text(args.out, "\n".join(md), overwrite=True)
    print("\n".join(md))  # noqa: T201  (benchmark script output)


if __name__ == "__main__":
    main()
