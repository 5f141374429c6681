# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""Same numbers after a redesign: train and evaluate the same runs with a baseline commit's code and this checkout's,
and compare the trained weights and the per-sample metrics bit for bit.

python benchmarks/reproduce.py --baseline 92a253f --acdc-src ../shared/data/acdc_cine

Three runs, each with both trees (two processes side by side, one thread each, so each run is deterministic):

* ``synthetic_cronos_continuous`` (the model of ``monai-tfm quickstart``) and ``synthetic_cronos_discrete``: the
  synthetic bundle with its defaults, evaluated on its test split;
* ``acdc_fold0``: ACDC fold 0 at the quality study's CPU setting (64 x 64 x 8, width 16, batch 2) for ``--epochs``
  epochs (an epoch budget: older commits have no step budget), evaluated with 10-step Euler on the fold's fixed
  draws. The prepared data come from one preparation (this checkout's) so that both trees read the same files; the
  page also says whether the baseline prepares the same voxels.

The baseline tree is a detached ``git worktree`` of ``--baseline``; each run uses its own tree's package
(``PYTHONPATH``) and bundles; runs finished by an earlier invocation in ``--work`` are reused. Writes
``docs/results/reproduce.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from common import REPO, page_header, provenance, run_bundle, write_results

from monai_tfm.apps.bundle_loading import bundle_run_files
from monai_tfm.data import ensure_acdc_prepared

logger = logging.getLogger("reproduce")

SPATIAL = [64, 64, 8]


def _files(bundle: Path, method: str, run: str) -> list[str]:
    """The config files of a run of ``bundle`` (a tree's bundle folder): this checkout's file rule, which also reads
    a baseline's one-folder-per-bundle layout (no shared folders: ``configs/train.yaml``, the overlay, ...)."""
    return [str(f) for f in bundle_run_files(bundle, run, method)]


Job = tuple[str, Path, str, dict]


def _jobs(tree: Path, work: Path, prepared: Path, acdc_src: str | None, epochs: int) -> list[Job]:
    """(name, bundle folder, method, overrides) of the runs, with ``tree``'s bundles."""
    syn = tree / "bundles" / "synthetic_forecasting"
    jobs = [
        (f"synthetic_{method}", syn, method, {"dataset_dir": str(work / "synthetic_data")})
        for method in ("cronos_continuous", "cronos_discrete")  # the quickstart's model first
    ]
    if acdc_src:
        acdc = tree / "bundles" / "acdc_cine_forecasting"
        kw = {
            "dataset_dir": acdc_src,
            "prepared_dir": str(prepared),
            "spatial_size": SPATIAL,
            "network_def#channels": 16,
            "batch_size": 2,
            "fold": 0,
            "max_epochs": epochs,
            "solver": "euler",
            "solver_steps": 10,
        }
        jobs.append(("acdc_fold0", acdc, "cronos_discrete", kw))
    return jobs


def _run_tree(tree: Path, work: Path, prepared: Path, acdc_src: str | None, epochs: int) -> dict[str, Path]:
    """Train and evaluate every run with ``tree``'s code; returns the evaluation folder of each run."""
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1"}
    evals = {}
    work.mkdir(parents=True, exist_ok=True)
    for name, bundle, method, kw in _jobs(tree, work, prepared, acdc_src, epochs):
        out = work / name
        evals[name] = out
        if (out / "eval" / "summary.json").is_file():  # finished by an earlier invocation
            continue
        kw = {**kw, "output_dir": str(out), "overwrite": True}
        logger.info("%s: training %s", work.name, name)
        run_bundle("training", _files(bundle, method, "train"), work / f"{name}_train.log", cwd=tree, env=env, **kw)
        run_bundle(
            "evaluating",
            _files(bundle, method, "evaluate"),
            work / f"{name}_eval.log",
            cwd=tree,
            env=env,
            **kw,
            eval_dir=str(out / "eval"),
        )
    return evals


def _weights(run: Path) -> dict[str, torch.Tensor]:
    state = torch.load(run / "models" / "model.pt", map_location="cpu", weights_only=True)
    return state.get("network", state)


def _same_weights(a: Path, b: Path) -> bool:
    wa, wb = _weights(a), _weights(b)
    return sorted(wa) == sorted(wb) and all(torch.equal(wa[k], wb[k]) for k in wa)


def _means(run: Path) -> dict[str, float]:
    summary = json.loads((run / "eval" / "summary.json").read_text())["summary"]["model"]
    return {m: summary[m]["mean"] for m in ("nrmse", "psnr", "ssim")}


def _cell(means: dict[str, float]) -> str:
    return f"{means['nrmse']:.6f} / {means['psnr']:.6f} / {means['ssim']:.6f}"


def _same_voxels(a: Path, b: Path) -> tuple[int, float]:
    """Files compared and the largest voxel or affine difference between two prepared ACDC folders."""
    files = sorted(a.glob("patient*/frame_*.nii.gz"))
    worst = 0.0
    for f in files:
        x, y = nib.load(f), nib.load(b / f.relative_to(a))
        worst = max(worst, float(np.abs(x.get_fdata() - y.get_fdata()).max()), float(np.abs(x.affine - y.affine).max()))
    return len(files), worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default="92a253f", help="commit whose numbers must be reproduced")
    parser.add_argument("--acdc-src", default=None, help="ACDC data (the ACDC run is skipped without it)")
    parser.add_argument("--epochs", type=int, default=8, help="ACDC training epochs")
    parser.add_argument("--work", default="runs/reproduce")
    parser.add_argument("--out", default=str(REPO / "docs" / "results" / "reproduce"))
    args = parser.parse_args()
    if args.epochs < 1:
        parser.error(f"--epochs must be a positive integer, got {args.epochs}")
    known = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{args.baseline}^{{commit}}"], cwd=REPO)
    if known.returncode != 0:
        parser.error(f"--baseline {args.baseline!r} is not a commit of this repository")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    prov = provenance()
    if args.acdc_src:
        args.acdc_src = str(Path(args.acdc_src).resolve())  # the runs start in other folders
    work = (REPO / args.work).resolve()
    base_tree = work / f"tree_{args.baseline}"
    if not base_tree.is_dir():
        subprocess.run(["git", "worktree", "add", "--detach", str(base_tree), args.baseline], cwd=REPO, check=True)
    prepared = work / "acdc_prepared"
    voxels = None
    if args.acdc_src:
        ensure_acdc_prepared(args.acdc_src, prepared, spatial_size=SPATIAL)
        check = work / "acdc_prepared_by_baseline"
        code = (
            "from monai_tfm.data import ensure_acdc_prepared; "
            f"ensure_acdc_prepared({args.acdc_src!r}, {str(check)!r}, spatial_size={SPATIAL})"
        )
        env = {**os.environ, "PYTHONPATH": str(base_tree)}
        subprocess.run([sys.executable, "-c", code], cwd=base_tree, env=env, check=True, capture_output=True)
        voxels = _same_voxels(prepared, check)
    trees = {args.baseline: base_tree, prov["commit"]: REPO}
    with ThreadPoolExecutor(2) as pool:
        futures = {
            label: pool.submit(
                _run_tree, tree, work / ("baseline" if tree != REPO else "this"), prepared, args.acdc_src, args.epochs
            )
            for label, tree in trees.items()
        }
        runs = {label: f.result() for label, f in futures.items()}
    base, this = runs[args.baseline], runs[prov["commit"]]
    rows = []
    for name in base:
        same_csv = (base[name] / "eval" / "per_sample.csv").read_bytes() == (
            this[name] / "eval" / "per_sample.csv"
        ).read_bytes()
        rows.append(
            {
                "run": name,
                "baseline": _means(base[name]),
                "this": _means(this[name]),
                "same_weights": _same_weights(base[name], this[name]),
                "same_per_sample": same_csv,
            }
        )
    lines = page_header(f"Same numbers: {args.baseline} against {prov['commit']}", "", prov)
    lines += [
        "Each run trained and evaluated once with the baseline's code and bundles and once with this checkout's "
        "(two processes side by side, one thread each); identical means bit for bit (every weight `torch.equal`, "
        "the per-sample metrics file byte for byte).",
        "",
        "| run | NRMSE / PSNR / SSIM, baseline | NRMSE / PSNR / SSIM, this checkout | weights identical "
        "| per-sample metrics identical |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['run']} | {_cell(r['baseline'])} | {_cell(r['this'])} | {r['same_weights']} "
            f"| {r['same_per_sample']} |"
        )
    if voxels is not None:
        lines += [
            "",
            f"ACDC preparation: the baseline's and this checkout's prepared folders ({voxels[0]} NIfTI files) "
            f"differ by at most {voxels[1]:g} in any voxel or affine entry.",
        ]
    lines += [
        "",
        "Runs: `synthetic_<method>` = the synthetic bundle with its defaults (`synthetic_cronos_continuous` is the "
        "model of `monai-tfm quickstart`); `acdc_fold0` = ACDC fold 0, "
        f"64 x 64 x 8, width 16, batch 2, {args.epochs} epochs, 10-step Euler.",
    ]
    write_results(Path(args.out), lines, prov, args, rows)
    logger.info("\n".join(lines))


if __name__ == "__main__":
    main()
