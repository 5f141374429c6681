# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""Evaluation-only: an ensemble of trained ACDC runs (benchmarks/acdc.py) against each of its members.

The ensemble averages its members' velocity fields at every solver step (one flow whose velocity is the mean of the
members'), on the bundle's evaluation (the held-out fold, its fixed draws, the bundle's solver), and is scored like
every other run (per-sample metrics, per-patient paired bootstrap CIs). Each member is evaluated the same way, alone.

    python benchmarks/acdc_ensemble.py --folds 0,1,2,3,4 --label "two seeds at the wall clock" \\
        --member "runs/nfe/recipe_tau0_p90_sec1100_fold{fold}" --member "runs/lane_p*/seed1_tau0_p90_sec1100_fold{fold}"

``--member`` is a run folder pattern (``{fold}`` and shell-style wildcards; it must match one folder with
``models/model.pt`` per fold). ``--baseline`` (same form) adds a run that every row is also paired with, e.g. one
model trained with the ensemble's whole budget. The evaluations go to ``--work`` (one folder per fold and member /
ensemble / baseline) and the page to ``--out``.
"""

from __future__ import annotations

import argparse
import glob
import sys
from pathlib import Path
from typing import Any

import torch
from monai.bundle import ConfigParser
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import acdc  # noqa: E402
from common import REPO, int_list, page_header, provenance, write_results  # noqa: E402

__all__ = ["MeanVelocity", "evaluate_members", "main"]


class MeanVelocity(nn.Module):
    """The mean of several velocity networks' outputs, with their call signature.

    MONAI's ensembles (``EnsembleEvaluator`` with ``MeanEnsembled``) average final predictions, each from its own
    solve; averaging the velocity inside one solve needs a module that stands for one network, hence this class.

    Args:
        networks: the members, same input and output shapes.
    """

    def __init__(self, networks: list[nn.Module]) -> None:
        super().__init__()
        self.networks = nn.ModuleList(networks)

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        """The members' mean output for the same inputs.

        Args:
            args: positional inputs of every member.
            kwargs: keyword inputs of every member.

        Returns:
            the mean of the members' outputs.
        """
        return torch.stack([net(*args, **kwargs) for net in self.networks]).mean(dim=0)


def _member_dir(option: str, pattern: str, fold: int) -> Path:
    matches = [Path(p) for p in sorted(glob.glob(pattern.format(fold=fold))) if (Path(p) / "models/model.pt").is_file()]
    if len(matches) != 1:
        raise SystemExit(f"{option} {pattern!r}: fold {fold} matches {len(matches)} trained run folders, expected 1.")
    return matches[0]


def evaluate_members(
    method: str, overrides: dict[str, Any], checkpoints: list[Path], eval_dir: Path
) -> dict[str, Any] | None:
    """Evaluate the mean-velocity ensemble of ``checkpoints`` (one checkpoint: that model) with the bundle's evaluator.

    Args:
        method: the bundle method of every member (their network and variant).
        overrides: bundle config overrides (data, grid, width, fold, solver).
        checkpoints: the members' ``model.pt`` files.
        eval_dir: the evaluation folder (``per_sample.csv``, ``summary.json``); an existing one is read, not redone.

    Returns:
        the evaluation summary.
    """
    summary = acdc._summary(eval_dir.parent, eval_dir.name)
    if summary is not None:
        return summary
    parser = ConfigParser()
    parser.read_config(acdc._files(method, [], evaluate=True))
    parser.update({**overrides, "eval_dir": str(eval_dir)})
    networks = []
    for ckpt in checkpoints:
        net = parser.get_parsed_content("network_def", lazy=False)
        net.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=True))
        networks.append(net.eval())
    parser["network"] = MeanVelocity(networks)  # the weights are loaded: drop the bundle's single-file loader
    handlers = parser["evaluate"]["handlers"]
    parser["evaluate"]["handlers"] = [h for h in handlers if "WeightsLoader" not in str(h.get("_target_", ""))]
    parser.get_parsed_content("evaluating")
    return acdc._summary(eval_dir.parent, eval_dir.name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--member", action="append", required=True, help="run folder pattern with {fold}")
    parser.add_argument("--baseline", default=None, help="run folder pattern with {fold}: a run to pair every row with")
    parser.add_argument("--method", default="cronos_discrete", help="bundle method of every member")
    parser.add_argument("--folds", type=int_list, default=[0, 1], help="comma-separated folds")
    parser.add_argument("--label", default="", help="what the members are (page title)")
    parser.add_argument("--src", default=str(REPO.parent / "shared" / "data" / "acdc_cine"))
    parser.add_argument("--prepared-dir", default="runs/report_p90/prepared_64x64x8")
    parser.add_argument("--spatial-size", type=int_list, default=[64, 64, 8], help="prepared grid x,y,z")
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--work", default="runs/ensemble")
    parser.add_argument("--out", default=str(REPO / "docs" / "results" / "acdc_ensemble"), help="page, no suffix")
    args = parser.parse_args()
    if len(args.member) < 2:
        parser.error("an ensemble needs at least two --member patterns")
    torch.set_num_threads(args.threads)
    solver = acdc.bundle_solver()
    common = {
        "dataset_dir": args.src,
        "prepared_dir": str(REPO / args.prepared_dir),
        "spatial_size": args.spatial_size,
        "network_def#channels": args.channels,
        "batch_size": args.batch_size,
        "overwrite": True,
        **solver,
    }
    work = REPO / args.work
    names = [f"member{i}" for i in range(len(args.member))] + ["ensemble"] + (["baseline"] if args.baseline else [])
    dirs: dict[str, list[Path]] = {n: [] for n in names}
    # every run folder is found before anything is evaluated
    found = {
        fold: (
            [_member_dir("--member", p, fold) for p in args.member],
            _member_dir("--baseline", args.baseline, fold) if args.baseline else None,
        )
        for fold in args.folds
    }
    for fold, (members, baseline) in found.items():
        kw = {**common, "fold": fold, "output_dir": str(work / f"unused_fold{fold}")}
        for i, member in enumerate(members):
            out = work / f"member{i}_fold{fold}"
            evaluate_members(args.method, kw, [member / "models/model.pt"], out / "eval")
            dirs[f"member{i}"].append(out)
        out = work / f"ensemble_fold{fold}"
        evaluate_members(args.method, kw, [m / "models/model.pt" for m in members], out / "eval")
        dirs["ensemble"].append(out)
        if baseline is not None:
            out = work / f"baseline_fold{fold}"
            evaluate_members(args.method, kw, [baseline / "models/model.pt"], out / "eval")
            dirs["baseline"].append(out)
    rows = {n: acdc._per_sample_rows(d, "eval") for n, d in dirs.items()}
    refs = ["member0"] + (["baseline"] if args.baseline else [])
    prov = provenance()
    lines = page_header(f"ACDC: an ensemble of trained runs ({args.label or 'members below'})", "", prov)
    lines += [
        f"Method {args.method}; folds {','.join(map(str, args.folds))}; solver {solver['solver']} with "
        f"{solver['solver_steps']} steps "
        f"(the bundle's); {args.threads} CPU thread(s). Members (run folders, `{{fold}}` per fold):",
        "",
        *[f"* member{i}: `{p}`" for i, p in enumerate(args.member)],
        *([f"* baseline: `{args.baseline}`"] if args.baseline else []),
        "",
        "The ensemble averages the members' velocities at every solver step. Gains: mean [95 % per-patient paired "
        "bootstrap CI] (median; patients better / patients).",
        "",
        "| run | PSNR gain over LCI (dB) | SSIM gain over LCI | "
        + " | ".join(f"PSNR vs {r} (dB) | SSIM vs {r}" for r in refs)
        + " |",
        "|---|---|---|" + "---|---|" * len(refs),
    ]
    table = []
    for n in names:
        cells = [acdc._gain_cell(rows[n], "psnr"), acdc._gain_cell(rows[n], "ssim")]
        for r in refs:
            paired = acdc._paired_rows(rows[n], rows[r])
            cells += ["-", "-"] if n == r else [acdc._gain_cell(paired, "psnr"), acdc._gain_cell(paired, "ssim")]
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
        table.append({"run": n, **{f"psnr_vs_{k}": c for k, c in zip(["lci", *refs], cells[::2])}})
    write_results(Path(args.out), lines + [""], prov, args, table)
    print("\n".join(lines))  # noqa: T201  (benchmark script output)


if __name__ == "__main__":
    main()
