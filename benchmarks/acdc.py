# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""ACDC cine MRI benchmark: cross-validated flow methods vs LCI, NFE and design ablations, example figure.

Writes ``docs/results/acdc.md`` (rewritten after every finished run, so partial results survive), ``acdc.json`` (the
per-fold means of every run with the commit and device that trained it, so the tables can be recomputed without the
run folders) and ``docs/results/acdc_examples.png``. Finished runs are skipped when the script is started again.

    python benchmarks/acdc.py --src ../shared/data/acdc_cine --folds 0,1,2 --epochs 20 --channels 16
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from common import REPO, provenance, run_bundle

from monai_tfm.data import ensure_acdc_prepared
from monai_tfm.metrics import aggregate_runs
from monai_tfm.utils.io import atomic_write_text

BUNDLE = REPO / "bundles" / "acdc_cine_forecasting"
CONFIGS = BUNDLE / "configs"
METRICS = ("nrmse", "ssim", "psnr", "change_rmse", "skill")

# name -> (method overlay, extra overlay files, overrides)
RUNS = {
    "cronos_discrete": ("cronos_discrete", [], {}),
    "cronos_continuous": ("cronos_continuous", [], {}),
    "tfm": ("tfm", [], {}),
    "cronos_discrete_no_locf": ("cronos_discrete", [], {"fill": "zeros"}),
    "ct_protocol_discrete": ("cronos_discrete", ["protocols/continuous_time.yaml"], {}),
    "ct_protocol_continuous": ("cronos_continuous", ["protocols/continuous_time.yaml"], {}),
}
MAIN = ("cronos_discrete", "cronos_continuous", "tfm")
# evaluation-only ablations of the trained discrete model: name -> overrides
NFE = {
    "euler_1": {"solver": "euler", "solver_steps": 1},
    "euler_2": {"solver": "euler", "solver_steps": 2},
    "euler_5": {"solver": "euler", "solver_steps": 5},
    "dopri5": {"solver": "dopri5", "solver_steps": 10},
    "last_aggregation": {"aggregation": "last"},
}


def _files(method: str, extra: list[str], evaluate: bool = False) -> list[str]:
    files = [str(CONFIGS / "train.yaml"), str(CONFIGS / "methods" / f"{method}.yaml")]
    files += [str(CONFIGS / e) for e in extra]
    return files + ([str(CONFIGS / "evaluate.yaml")] if evaluate else [])


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _summary(run_dir: Path, eval_name: str = "eval_validation") -> dict | None:
    return _read_json(run_dir / eval_name / "summary.json")


def _means(result: dict) -> dict:
    return {m: {k: v["mean"] for k, v in cells.items()} for m, cells in result["summary"].items()}


def _table(names: list[str], results: dict, folds: list[int]) -> str:
    """Mean +- std over folds of per-fold means; LCI from the same draws (identical for every method)."""
    md = ["| method | folds | " + " | ".join(METRICS) + " |", "|---" * (len(METRICS) + 2) + "|"]
    lci_row = None
    for name in names:
        per_fold = [results[name][f] for f in folds if results.get(name, {}).get(f)]
        if not per_fold:
            continue
        runs = aggregate_runs([_means(r) for r in per_fold], METRICS, ["model"])
        cells = " | ".join(f"{runs['model'][m]['mean']:.4g} +- {runs['model'][m]['std']:.2g}" for m in METRICS)
        md.append(f"| {name} | {len(per_fold)} | {cells} |")
        if lci_row is None or len(per_fold) > lci_row[0]:
            lci = " | ".join(f"{runs['lci'][m]['mean']:.4g} +- {runs['lci'][m]['std']:.2g}" for m in METRICS)
            lci_row = (len(per_fold), f"| LCI | {len(per_fold)} | {lci} |")
    if lci_row is not None:
        md.append(lci_row[1])
    return "\n".join(md)


def _fold_table(names: list[str], results: dict, folds: list[int]) -> str:
    """NRMSE / SSIM / PSNR of every method and of LCI in each fold (LCI: the draws of the first method listed)."""
    md = ["| fold | " + " | ".join(names) + " | LCI |", "|---" * (len(names) + 2) + "|"]
    for fold in folds:
        done = [n for n in names if results.get(n, {}).get(fold)]
        if not done:
            continue
        cells = []
        for name in [*names, None]:
            result = results.get(name or done[0], {}).get(fold)
            m = _means(result)["model" if name else "lci"] if result else None
            cells.append(f"{m['nrmse']:.4f} / {m['ssim']:.2f} / {m['psnr']:.2f}" if m else "-")
        md.append(f"| {fold} | " + " | ".join(cells) + " |")
    return "\n".join(md)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--src", default=str(REPO.parent / "shared" / "data" / "acdc_cine"))
    parser.add_argument("--work", default="runs/bench_acdc")
    parser.add_argument("--folds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--runs", default=",".join(RUNS))
    parser.add_argument("--ablation-folds", default="0", help="folds on which the non-main runs are trained")
    parser.add_argument("--report-only", action="store_true", help="collect finished runs and write the report")
    parser.add_argument("--no-figure", action="store_true")
    parser.add_argument("--out", default=str(REPO / "docs" / "results" / "acdc.md"))
    parser.add_argument("--figure", default=str(REPO / "docs" / "results" / "acdc_examples.png"))
    args = parser.parse_args()
    work = (REPO / args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    folds = [int(f) for f in args.folds.split(",")]
    ablation_folds = [int(f) for f in args.ablation_folds.split(",")]
    names = args.runs.split(",")
    info = provenance()
    prepared = work / "prepared"
    t0 = time.perf_counter()
    ensure_acdc_prepared(args.src, prepared)
    common = {
        "dataset_dir": args.src,
        "prepared_dir": str(prepared),
        "max_epochs": args.epochs,
        "network_def#channels": args.channels,
        "overwrite": True,
    }
    results: dict = {}
    nfe_results: dict = {}
    run_infos: dict = {}  # (name, fold) -> provenance and training wall time of the run (its run_info.json)

    def write() -> None:
        trained_by = sorted({f"{r['commit']} on {r['device']}, torch {r['torch']}" for r in run_infos.values()})
        cpu_note = " (CPU: a reduced budget, see below)" if info["device"].startswith("cpu") else ""
        md = [
            "# ACDC cine MRI: flow methods against LCI",
            "",
            f"* command of this page: `{info['command']}`",
            f"* commit of this page: {info['commit']}; device {info['device']}{cpu_note}",
            "* runs trained and evaluated by: " + ("; ".join(trained_by) or "-"),
            f"* torch {info['torch']}, MONAI {info['monai']}; "
            f"wall time of this command {(time.perf_counter() - t0) / 60:.0f} min",
            "",
            f"Data: the 29-patient cropped development copy (`../shared/data/acdc_cine`), prepared by the bundle to 12 "
            f"phases ED..ES of 96 x 96 x 8 voxels. Folds {folds} of the bundle's 5 stratified folds "
            "(each fold validates on "
            "5-6 patients x 4 fixed draws); the table reports mean +- std over folds of the per-fold means (CRONOS "
            "Table 2 format). Protocol as the papers: 11 context slots, gap 3, keep-probability 0.5, sigma 0, 10-step "
            f"Euler, mean aggregation. Reduced budget (CPU): {args.epochs} epochs, UNet width {args.channels} "
            "(paper: 32), batch 4, AdamW lr 1e-3 with warm-up + cosine; best epoch by validation NRMSE (validation "
            "every 5 epochs, 2 draws per patient). The reported numbers are on the held-out fold with 4 draws per "
            "patient (the same draws for every method), so selection and report use the same patients: no test split "
            "exists in the development copy.",
            "",
            "## Main table",
            "",
            _table([n for n in names if n in MAIN], results, folds),
            "",
            "Per fold (NRMSE / SSIM / PSNR on the fold's validation patients; LCI from the same draws):",
            "",
            _fold_table([n for n in names if n in MAIN], results, folds),
            "",
        ]
        ablations = [n for n in ("cronos_discrete_no_locf",) if n in names and results.get(n)]
        if ablations:
            md += [
                f"## Ablations (discrete CRONOS, CRONOS Table 4; fold(s) {ablation_folds})",
                "",
                _table(["cronos_discrete", *ablations], results, ablation_folds),
                "",
                "`no_locf`: empty grid slots stay zero instead of last-observation-carried-forward (trained that way).",
                "",
            ]
        nfe_rows = []
        for name in ("euler_1", "euler_2", "euler_5", "euler_10", "dopri5", "last_aggregation"):
            source = {"euler_10": results.get("cronos_discrete", {})}.get(name, nfe_results.get(name, {}))
            per = [source[f] for f in ablation_folds if source.get(f)]
            if per:
                m = [_means(r)["model"] for r in per]
                nfe = sum(r["info"]["nfe_per_forecast"] for r in per) / len(per)
                ms = 1000 * sum(r["info"]["seconds_per_forecast"] for r in per) / len(per)
                nfe_rows.append(
                    f"| {name} | {nfe:.1f} | {ms:.0f} | "
                    + " | ".join(f"{sum(x[k] for x in m) / len(m):.4g}" for k in ("nrmse", "ssim", "psnr"))
                    + " |"
                )
        if nfe_results:
            md += [
                f"## Solver steps and aggregation (discrete CRONOS, evaluation only; fold {ablation_folds})",
                "",
                "| setting | NFE per forecast | ms per forecast | nrmse | ssim | psnr |",
                "|---|---|---|---|---|---|",
                *nfe_rows,
                "",
                "euler_10 is the main evaluation; dopri5 (rtol = atol = 1e-5) reports the network evaluations it "
                "actually made; last_aggregation = 10-step Euler with the last slot instead of the mean over slots.",
                "",
            ]
        ct_runs = [n for n in ("ct_protocol_discrete", "ct_protocol_continuous") if n in names and results.get(n)]
        if ct_runs:
            md += [
                f"## Continuous-time protocol (CRONOS appendix B.6.2; fold(s) {ablation_folds})",
                "",
                "A window of 4 frames: 2 of the 3 frames before the target are context. The discrete model gets the "
                "two frames without times; the continuous one their times and the target time.",
                "",
                _table(ct_runs, results, ablation_folds),
                "",
            ]
        md += [
            "## Training wall time per run (s)",
            "",
            "| run | " + " | ".join(f"fold {f}" for f in folds) + " |",
            "|---" * (len(folds) + 1) + "|",
        ]
        for name in names:
            walls = [run_infos[(name, f)]["wall_train_s"] if (name, f) in run_infos else float("nan") for f in folds]
            if any((name, f) in run_infos for f in folds):
                md.append(f"| {name} | " + " | ".join(f"{w:.0f}" for w in walls) + " |")
        md += ["", *([] if args.no_figure else ["![examples](acdc_examples.png)", ""])]
        atomic_write_text(args.out, "\n".join(md), overwrite=True)
        runs = [
            {"run": name, "fold": fold, **run_infos.get((name, fold), {}), "metrics": _means(result)}
            for name, per_fold in results.items()
            for fold, result in per_fold.items()
            if result
        ]
        runs += [
            {"run": f"cronos_discrete_{abl}", "fold": fold, "evaluation_only": True, "metrics": _means(result)}
            for abl, per_fold in nfe_results.items()
            for fold, result in per_fold.items()
            if result
        ]
        atomic_write_text(
            Path(args.out).with_suffix(".json"),
            json.dumps({"provenance": info, "args": vars(args), "runs": runs}, indent=1),
            overwrite=True,
        )

    for fold in folds:
        for name in names:
            method, extra, overrides = RUNS[name]
            if name not in MAIN and fold not in ablation_folds:
                continue
            out = work / f"{name}_fold{fold}"
            kw = {**common, **overrides, "fold": fold, "output_dir": str(out)}
            if _summary(out) is None and args.report_only:
                continue
            if _summary(out) is None:
                wall = run_bundle("training", _files(method, extra), work / f"{out.name}_train.log", **kw)
                run_bundle("evaluating", _files(method, extra, True), work / f"{out.name}_eval.log", **kw)
                keys = ("commit", "device", "torch", "monai")
                run_info = {**{k: info[k] for k in keys}, "wall_train_s": wall}
                atomic_write_text(out / "run_info.json", json.dumps(run_info, indent=1), overwrite=True)
            run_info = _read_json(out / "run_info.json")
            if run_info is not None:
                run_infos[(name, fold)] = run_info
            results.setdefault(name, {})[fold] = _summary(out)
            if name == "cronos_discrete" and fold in ablation_folds:
                for abl, ov in NFE.items():
                    eval_name = f"eval_{abl}"
                    if _summary(out, eval_name) is None and not args.report_only:
                        run_bundle(
                            "evaluating",
                            _files(method, extra, True),
                            work / f"{out.name}_{abl}.log",
                            **kw,
                            **ov,
                            eval_dir=str(out / eval_name),
                        )
                    nfe_results.setdefault(abl, {})[fold] = _summary(out, eval_name)
            write()
    if "cronos_discrete" in names and not args.no_figure and (work / f"cronos_discrete_fold{folds[0]}").is_dir():
        from acdc_figure import make_figure

        make_figure(work / f"cronos_discrete_fold{folds[0]}", args.figure, common, folds[0])
    write()
    print(Path(args.out).read_text())  # noqa: T201  (benchmark script output)


if __name__ == "__main__":
    main()
