# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""ACDC cine MRI benchmark: cross-validated flow methods vs LCI, NFE and design ablations, example figure.

Writes ``docs/results/acdc.md`` (rewritten after every finished run, so partial results survive), ``acdc.json`` (the
per-fold means of every run with the commit and device that trained it, so the tables can be recomputed without the
run folders) and ``docs/results/acdc_examples.png``. Finished runs are skipped when the script is started again.

    python benchmarks/acdc.py --src ../shared/data/acdc_cine --folds 0,1,2 --epochs 20 --channels 16

Budgets (one per invocation): ``--epochs`` (whole epochs), ``--budget-steps N`` (optimiser steps; the lr schedule
spans them) or ``--budget-seconds S`` (a wall-clock budget of training steps: each method's seconds per step is
measured by a short calibration run on the same machine and threads, and S is turned into that method's steps;
``--seconds-as-steps N`` gives the step count instead, when S was timed on another machine than this one). The
main CPU budget of the quality study: ``--spatial-size 64,64,8 --channels 16 --batch-size 2 --threads 2
--budget-steps 1600`` (about what the authors' CRONOS does in 15 CPU minutes at that setting).

The ``reference_cronos`` row trains the authors' CRONOS (MIC-DKFZ/Longitudinal4DMed at b63304f, an optional
dependency that is never part of this project) on the same fold, steps or seconds, and scores it on the same fixed
draws with the same metrics, through the comparison harness of the development workspace
(``--reference-tools DIR``, default ``../shared/tools/reference``; its README says how to build its venv and where to
put the snapshot). Without the harness, its venv or the snapshot the row is skipped with a note.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import time
from pathlib import Path

from common import REPO, gain_text, provenance, run_bundle
from monai.bundle import ConfigParser

from monai_tfm.apps.bundle_loading import bundle_run_files
from monai_tfm.data import ensure_acdc_prepared
from monai_tfm.metrics import aggregate_runs, paired_gain, read_per_sample_csv
from monai_tfm.utils.io import atomic_write_text

BUNDLE = REPO / "bundles" / "acdc_cine_forecasting"
CONFIGS = BUNDLE / "configs"
METRICS = ("nrmse", "ssim", "psnr", "change_rmse", "skill")

# the ACDC bundle's `protocol`, spelled out so that a recipe can change one field of the training draws
TRAIN_PROTOCOL = {
    "_target_": "monai_tfm.transforms.ContextProtocol",
    "gap": 3,
    "keep_prob": 0.5,
    "min_keep": 1,
    "max_context": "@num_slots",
}
FLIPS = [
    {
        "_target_": "RandFlipd",
        "keys": ["series", "series_label"],
        "spatial_axis": axis,
        "prob": 0.5,
        "allow_missing_keys": True,
    }
    for axis in (1, 2)
]
# frames as channels (C = 1 squeezed) so that one MONAI affine moves every frame alike, then the channel back
AFFINE = [
    {"_target_": "SqueezeDimd", "keys": "series", "dim": 1},
    {
        "_target_": "RandAffined",
        "keys": "series",
        "prob": 0.5,
        "rotate_range": [0.0, 0.0, 0.26],
        "scale_range": [0.1, 0.1, 0.0],
        "translate_range": [3, 3, 0],
        "padding_mode": "border",
    },
    {"_target_": "Lambdad", "keys": "series", "func": "$lambda x: x.unsqueeze(1)"},
]
# the bundle's default share of training samples at tau = 0, for the runs built on that default
P90 = {"tau_zero_prob": 0.9}
# a fifth UNet level: a 4 x 4 x 4 bottleneck at 64 x 64 x 8, 3.7x the parameters, about 1.1x the step cost
FIFTH_LEVEL = {"network_def#channel_mult": [1, 1, 2, 4, 8]}
# AdamW's second-moment average over about 100 steps instead of 1000 (beta2 0.99 instead of 0.999)
BETA2_99 = {"train#optimizer#betas": [0.9, 0.99]}
# name -> (method overlay, extra overlay files, overrides)
RUNS = {
    # the papers' recipe (uniform tau; the runs archived under this name); the bundle's discrete default trains
    # 90 % of its samples at tau = 0, its runs are `recipe_tau0_p90` below
    "cronos_discrete": ("cronos_discrete", [], {"tau_zero_prob": 0.0}),
    # the papers' recipe of the other two flow methods (uniform tau, as archived; their bundle default is 0.9, the
    # recipe_*_tau0_p90 runs)
    "cronos_continuous": ("cronos_continuous", [], {"tau_zero_prob": 0.0}),
    "tfm": ("tfm", [], {"tau_zero_prob": 0.0}),
    "cronos_discrete_no_locf": ("cronos_discrete", [], {"fill": "zeros"}),
    "ct_protocol_discrete": ("cronos_discrete", ["protocols/continuous_time.yaml"], {}),
    "ct_protocol_continuous": ("cronos_continuous", ["protocols/continuous_time.yaml"], {}),
    # training-recipe screen (one change at a time against the discrete default, on the ablation folds)
    "recipe_lr_3e-3": ("cronos_discrete", [], {"learning_rate": 0.003}),
    "recipe_lr_3e-4": ("cronos_discrete", [], {"learning_rate": 0.0003}),
    "recipe_lr_2e-3": ("cronos_discrete", [], {"learning_rate": 0.002}),
    "recipe_ema": ("cronos_discrete", [], {"use_ema": True}),
    "recipe_keep_slices": ("cronos_discrete", [], {"network_def#slice_axis": 2}),
    "recipe_real_frames": ("cronos_discrete", [], {"loss_frames": "real"}),
    "recipe_sigma_0.01": ("cronos_discrete", [], {"sigma": 0.01}),
    "recipe_attention": ("cronos_discrete", [], {"network_def#attention": True}),
    # training draws hide 0..3 frames (nearer targets too); validation keeps the protocol's gap 3
    "recipe_all_gaps": ("cronos_discrete", [], {"train_protocol": {**TRAIN_PROTOCOL, "min_gap": 0}}),
    # the network predicts the end point X1 - X_tau, loss on the end point (velocity derived from it)
    "recipe_endpoint": ("cronos_discrete", [], {"prediction": "endpoint"}),
    # learning curve of the discrete default (validation every 5 epochs; benchmarks/acdc_curves.py plots it)
    "curve_cronos_discrete": ("cronos_discrete", [], {"val_interval": 5}),
    # a second training seed of continuous CRONOS (its fold-0 run at seed 0 did not train); same evaluation draws
    "seed1_cronos_continuous": ("cronos_continuous", [], {"train_seed": 1}),
    # in-plane flips of the whole series (the same flip for every frame)
    "recipe_flips": ("cronos_discrete", [], {"train_augmentation": FLIPS}),
    # network capacity: UNet width 32 (the papers' width; about 2.5x the step cost of 16 on a CPU)
    "recipe_width32": ("cronos_discrete", [], {"network_def#channels": 32}),
    # more training series from the same patients: their diastole (ES -> ED), forward or played backwards (a
    # contraction like the systole that is forecast); prepared from the download next to the systolic folder
    "recipe_diastole": ("cronos_discrete", [], {"extra_train_phases": ["diastole"]}),
    "recipe_diastole_reversed": ("cronos_discrete", [], {"extra_train_phases": ["diastole_reversed"]}),
    # the network is told the target time (gamma(t_target) in its FiLM code): on the fixed grid of the discrete
    # variant nothing else says which of the phases 4..11 a draw forecasts
    "recipe_target_time": ("cronos_discrete", [], {"network_def#use_target_time": True}),
    # ... and, told the target time, trained on targets at every gap 0..3 (validation keeps the protocol's gap 3)
    "recipe_target_time_all_gaps": (
        "cronos_discrete",
        [],
        {"network_def#use_target_time": True, "train_protocol": {**TRAIN_PROTOCOL, "min_gap": 0}},
    ),
    # the loss of each sample in the log domain (mean of log MSE_b, like the mean per-sample PSNR of the evaluation)
    "recipe_log_loss": ("cronos_discrete", [], {"train#loss#sample_reduction": "log"}),
    # half of the training samples at tau = 0, where a few-step Euler forecast takes its first (largest) step
    "recipe_tau0_half": ("cronos_discrete", [], {"train#prepare_batch#tau_zero_prob": 0.5}),
    # a small random in-plane affine (rotation up to 15 degrees, scale +-10 %, shift up to 3 voxels), the same for
    # every frame of the series, half of the time (MONAI RandAffined on the frames as channels)
    "recipe_affine": ("cronos_discrete", [], {"train_augmentation": AFFINE}),
    # the two screen winners together
    "recipe_tau0_affine": (
        "cronos_discrete",
        [],
        {"train#prepare_batch#tau_zero_prob": 0.5, "train_augmentation": AFFINE},
    ),
    # half of the training samples at tau = 0 for continuous CRONOS (paired with cronos_continuous)
    "recipe_continuous_tau0_half": ("cronos_continuous", [], {"tau_zero_prob": 0.5}),
    # 90 % of them (paired with cronos_continuous)
    "recipe_continuous_tau0_p90": ("cronos_continuous", [], {"tau_zero_prob": 0.9}),
    # ... with the affine augmentation (paired with cronos_continuous)
    "recipe_continuous_tau0_affine": (
        "cronos_continuous",
        [],
        {"train#prepare_batch#tau_zero_prob": 0.5, "train_augmentation": AFFINE},
    ),
    # more of the training samples at tau = 0 (0.9 paired with recipe_tau0_half, 0.97 with 0.9; see BUILT_ON)
    "recipe_tau0_p90": ("cronos_discrete", [], {"train#prepare_batch#tau_zero_prob": 0.9}),
    "recipe_tau0_p97": ("cronos_discrete", [], {"train#prepare_batch#tau_zero_prob": 0.97}),
    # 90 % at tau = 0 with the authors' path noise sigma = 0.01 (the noise alone screened +0.09 dB [+0.00, +0.18]; at
    # tau = 0 it is a small Gaussian noise on the context; paired with recipe_tau0_p90)
    "recipe_tau0_p90_sigma": ("cronos_discrete", [], {"train#prepare_batch#tau_zero_prob": 0.9, "sigma": 0.01}),
    # recipe_p90_*: on top of the discrete default (90 % at tau = 0; paired with recipe_tau0_p90, see BUILT_ON): twice
    # the learning rate, and a fifth UNet level (FIFTH_LEVEL)
    "recipe_p90_lr2e-3": ("cronos_discrete", [], {**P90, "learning_rate": 0.002}),
    "recipe_p90_deep": ("cronos_discrete", [], {**P90, **FIFTH_LEVEL}),
    # the fifth level with BETA2_99, or with a 20 % learning-rate warm-up instead of 5 %: both against the loss spike
    # after which the deeper UNet collapses
    "recipe_p90_deep_beta99": ("cronos_discrete", [], {**P90, **FIFTH_LEVEL, **BETA2_99}),
    "recipe_p90_deep_warm20": ("cronos_discrete", [], {**P90, **FIFTH_LEVEL, "warmup_fraction": 0.2}),
    # the default with the 20 % warm-up (the fifth level with it did not collapse)
    "recipe_p90_warm20": ("cronos_discrete", [], {**P90, "warmup_fraction": 0.2}),
    # twice the learning rate with the 20 % warm-up (with 5 % it collapsed)
    "recipe_p90_warm20_lr2e-3": ("cronos_discrete", [], {**P90, "warmup_fraction": 0.2, "learning_rate": 0.002}),
    # window attention in the UNet bottleneck (about no extra step cost at 64 x 64 x 8); GroupNorm of 4 groups
    # instead of 8 (4 channels per group at width 16)
    "recipe_p90_attention": ("cronos_discrete", [], {**P90, "network_def#attention": True}),
    "recipe_p90_groups4": ("cronos_discrete", [], {**P90, "network_def#norm_groups": 4}),
    # twice the samples per optimiser step (1.8x the step cost on 1 CPU thread: at the wall clock, fewer steps)
    "recipe_p90_batch4": ("cronos_discrete", [], {**P90, "batch_size": 4}),
    # the global gradient norm clipped at 0.1 instead of 1.0 (about 3x its median here, 0.02-0.04; the loss spikes
    # before the collapses above reach norms of 3-14, and the clipped step still inflates AdamW's second moment),
    # alone and with twice the learning rate
    "recipe_p90_clip0.1": ("cronos_discrete", [], {**P90, "grad_clip": 0.1}),
    "recipe_p90_clip0.1_lr2e-3": ("cronos_discrete", [], {**P90, "grad_clip": 0.1, "learning_rate": 0.002}),
    # a wider UNet (24 channels instead of 16) at the same wall clock: 2.36x the step cost on 1 CPU thread, so
    # 1069 of the default's 2524 steps
    "recipe_p90_width24": ("cronos_discrete", [], {**P90, "network_def#channels": 24}),
    # a 1 % learning-rate warm-up instead of 5 % (a 20 % one lost 0.30 dB: more steps at the full rate)
    "recipe_p90_warm1": ("cronos_discrete", [], {**P90, "warmup_fraction": 0.01}),
    # 1.4x the learning rate (between the default 1e-3 and the 2e-3 that collapses)
    "recipe_p90_lr1.4e-3": ("cronos_discrete", [], {**P90, "learning_rate": 0.0014}),
    # AdamW weight decay 0.05 instead of 1e-4 (a regulariser: the validation gain saturates while the training loss
    # still falls); BETA2_99 on the default itself
    "recipe_p90_wd0.05": ("cronos_discrete", [], {**P90, "weight_decay": 0.05}),
    "recipe_p90_beta99": ("cronos_discrete", [], {**P90, **BETA2_99}),
    # an L1 loss instead of the squared error (mostly an image regression at tau = 0)
    "recipe_p90_l1": ("cronos_discrete", [], {**P90, "train#loss#distance": "absolute"}),
    # the end point as the frame warped by a predicted displacement plus a residual (about 1.23x the step cost)
    "recipe_p90_warp": ("cronos_discrete", [], {**P90, "prediction": "warp"}),
    # the loss over slots weighted by their distance in time to the target, exp(-|t - t_k| / 0.5) (frame times 0..1)
    "recipe_p90_distance0.5": ("cronos_discrete", [], {**P90, "loss_distance_scale": 0.5}),
    # two seeds of the default for an ensemble at the same total budget (each with half of the steps;
    # benchmarks/acdc_ensemble.py averages them)
    "ensemble_half_seed0": ("cronos_discrete", [], {**P90}),
    "ensemble_half_seed1": ("cronos_discrete", [], {**P90, "train_seed": 1}),
    # a second training seed of the continuous and discrete defaults (the spread between seeds; same evaluation draws)
    "seed1_continuous_tau0_p90": ("cronos_continuous", [], {**P90, "train_seed": 1}),
    "seed1_tau0_p90": ("cronos_discrete", [], {**P90, "train_seed": 1}),
    # 90 % of TFM's training samples at tau = 0 (paired with tfm)
    "recipe_tfm_tau0_p90": ("tfm", [], {"tau_zero_prob": 0.9}),
    # TFM's UNet told the target time
    "recipe_tfm_target_time": ("tfm", [], {"network_def#use_target_time": True}),
    # twice the samples per optimiser step
    "recipe_batch4": ("cronos_discrete", [], {"batch_size": 4}),
    # one random gamma (contrast) for the whole training series, half of the time (data-limited: 4000 steps do not
    # beat 2524 on folds 0 and 3)
    "recipe_contrast": (
        "cronos_discrete",
        [],
        {
            "train_augmentation": [
                {"_target_": "RandAdjustContrastd", "keys": "series", "prob": 0.5, "gamma": [0.7, 1.5]}
            ]
        },
    ),
    # 5 % of the training series held still (every frame one frame): a still context should forecast no motion
    "recipe_still": (
        "cronos_discrete",
        [],
        {"train_augmentation": [{"_target_": "monai_tfm.transforms.RandHoldStilld", "keys": "series", "prob": 0.05}]},
    ),
}
RECIPE_BASE = "cronos_discrete"
# recipes that change the bundle's discrete default rather than the papers' recipe: paired with that default's runs
BUILT_ON = {
    "recipe_tau0_p90": "recipe_tau0_half",
    "recipe_tau0_p97": "recipe_tau0_p90",
    "recipe_tau0_p90_sigma": "recipe_tau0_p90",
    **{n: "recipe_tau0_p90" for n in RUNS if n.startswith("recipe_p90_")},
}
# another training seed of a run (same data, folds and evaluation draws): name -> the seed-0 run
SEED_OF = {
    "seed1_cronos_continuous": "cronos_continuous",
    "seed1_continuous_tau0_p90": "recipe_continuous_tau0_p90",
    "seed1_tau0_p90": "recipe_tau0_p90",
}
REFERENCE = "reference_cronos"  # the authors' CRONOS through the comparison harness (optional)
# recipe_tau0_p90, recipe_continuous_tau0_p90, recipe_tfm_tau0_p90: the flow methods with the bundle's default recipe
# (90 % of the training samples at tau = 0); recipe_tau0_half: the previous discrete default (half of them)
MAIN = (
    "cronos_discrete",
    "recipe_tau0_half",
    "recipe_tau0_p90",
    "cronos_continuous",
    "recipe_continuous_tau0_p90",
    "tfm",
    "recipe_tfm_tau0_p90",
    REFERENCE,
)
# the main tables evaluate with the papers' 10 Euler steps (CRONOS sec. 4); the bundle's default solver, where it
# differs, is evaluated as well (DEFAULT_EVAL) and reported in its own table
PAPERS_SOLVER = {"solver": "euler", "solver_steps": 10}
DEFAULT_EVAL = "eval_bundle_default"
CALIBRATION_STEPS = 40  # training steps timed to turn a wall-clock budget into steps
# evaluation-only ablations of the trained discrete model: name -> overrides
NFE = {
    "euler_1": {"solver": "euler", "solver_steps": 1},
    "euler_2": {"solver": "euler", "solver_steps": 2},
    "euler_5": {"solver": "euler", "solver_steps": 5},
    "midpoint_1": {"solver": "midpoint", "solver_steps": 1},
    "heun2_1": {"solver": "heun2", "solver_steps": 1},
    "midpoint_2": {"solver": "midpoint", "solver_steps": 2},
    "heun2_2": {"solver": "heun2", "solver_steps": 2},
    "dopri5": {"solver": "dopri5", "solver_steps": 10},
    "last_aggregation": {"aggregation": "last"},
}


def _files(method: str, extra: list[str], evaluate: bool = False) -> list[str]:
    files = bundle_run_files(BUNDLE, "evaluate" if evaluate else "train", method, overlays=extra)
    return [str(f) for f in files]


def bundle_solver() -> dict:
    """The solver and steps of the ACDC bundle's ``train.yaml`` (its validation and, through inference.yaml, the
    forecast command's default)."""
    parser = ConfigParser()
    parser.read_config([str(f) for f in bundle_run_files(BUNDLE)])
    return {"solver": parser["solver"], "solver_steps": int(parser["solver_steps"])}


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _summary(run_dir: Path, eval_name: str = "eval_validation") -> dict | None:
    return _read_json(run_dir / eval_name / "summary.json")


def _means(result: dict) -> dict:
    return {m: {k: v["mean"] for k, v in cells.items()} for m, cells in result["summary"].items()}


def _evaluate_as(
    out: Path, files: list[str], kw: dict, eval_name: str, log_name: str, settings: dict, report_only: bool
) -> dict | None:
    """An evaluation-only run of the trained run ``out`` with other solver settings (once), and its summary."""
    if _summary(out, eval_name) is None and not report_only:
        run_bundle(
            "evaluating",
            files,
            out.parent / f"{out.name}_{log_name}.log",
            **{**kw, **settings},
            eval_dir=str(out / eval_name),
        )
    return _summary(out, eval_name)


def _run_reference(args: argparse.Namespace, datalist: str, fold: int, out: Path, info: dict) -> bool:
    """Train and score the authors' CRONOS through the comparison harness; False (with a note) when unavailable."""
    tools = Path(args.reference_tools)
    python = Path(os.environ.get("REFERENCE_VENV", REPO / ".venv-reference")) / "bin" / "python"
    snapshot = os.environ.get("L4DM_DIR")
    missing = [
        what
        for what, ok in (
            (f"harness {tools / 'quality.py'}", (tools / "quality.py").is_file()),
            (f"venv {python} (bash {tools / 'setup.sh'} $L4DM_DIR .)", python.is_file()),
            ("L4DM_DIR (a snapshot of MIC-DKFZ/Longitudinal4DMed at b63304f)", bool(snapshot)),
        )
        if not ok
    ]
    if missing:
        print(f"skipping {REFERENCE}: no " + "; no ".join(missing))  # noqa: T201  (benchmark script output)
        return False
    cmd = [str(python), str(tools / "quality.py"), "--datalist", datalist, "--fold", str(fold), "--model", "cronos"]
    cmd += ["--width", str(args.channels), "--out", str(out), "--overwrite", "--l4dm", snapshot]
    cmd += ["--batch", str(args.batch_size or 4)] + (["--threads", str(args.threads)] if args.threads else [])
    if args.reference_solver != "dopri5":  # the release's validation_step solves with dopri5; its paper, 10 steps
        cmd += ["--solver", args.reference_solver, "--solver-steps", "10"]
    if args.budget_seconds:
        cmd += ["--seconds", f"{args.budget_seconds:g}"]
    else:
        cmd += ["--steps", str(args.budget_steps or 0)]
    t0 = time.perf_counter()
    with open(out.parent / f"{out.name}.log", "w") as log:
        proc = subprocess.run(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise RuntimeError(f"{REFERENCE} failed; see {out.parent / (out.name + '.log')}")
    summary = _read_json(out / "summary.json") or {}
    training = summary.get("training", {})
    run_info = {
        **{k: info[k] for k in ("commit", "device", "torch", "monai")},
        "wall_train_s": time.perf_counter() - t0,
        "budget_steps": args.budget_steps,
        "budget_seconds": args.budget_seconds,
        "steps_done": training.get("steps"),
        "threads": args.threads,
        "reference": summary.get("reference"),
    }
    atomic_write_text(out / "run_info.json", json.dumps(run_info, indent=1, default=str), overwrite=True)
    # the harness writes summary.json at the top of its folder; the tables read eval_validation/summary.json
    (out / "eval_validation").mkdir(exist_ok=True)
    for name in ("summary.json", "per_sample.csv"):
        atomic_write_text(out / "eval_validation" / name, (out / name).read_text(), overwrite=True)
    return True


ARCHIVED = ("run_info.json", "summary.json", "per_sample.csv")


def sync_archive(work: Path, archive: Path) -> None:
    """Keep the small result files of every run (summaries, per-sample metrics, run info) in ``archive`` too.

    Run folders (checkpoints, logs) live under ``--work`` and are not committed; the archive is, so the tables can be
    recomputed with ``--report-only`` on a fresh clone. Files missing from ``work`` are restored from the archive and
    files new in ``work`` are copied into it; nothing is ever overwritten in either direction.
    """
    for src_root, dst_root in ((archive, work), (work, archive)):
        if not src_root.is_dir():
            continue
        for path in src_root.glob("*_fold*/**/*"):
            if path.name not in ARCHIVED or not path.is_file() or path.is_relative_to(dst_root):
                continue
            dst = dst_root / path.relative_to(src_root)
            if not dst.exists():
                dst.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_text(dst, path.read_text(), overwrite=False)


def _per_sample_rows(run_dirs: list[Path], eval_name: str = "eval_validation") -> list[dict]:
    paths = [run_dir / eval_name / "per_sample.csv" for run_dir in run_dirs]
    return [row for path in paths if path.is_file() for row in read_per_sample_csv(path)]


def _paired_rows(rows: list[dict], base_rows: list[dict]) -> list[dict]:
    """Rows of one run joined with another's on (subject, draw): ``model_*`` = this run, ``lci_*`` = the other."""
    base = {(r["subject"], r["draw"]): r for r in base_rows}
    joined = []
    for r in rows:
        b = base.get((r["subject"], r["draw"]))
        if b is not None:
            joined.append(
                {
                    "subject": r["subject"],
                    **{f"lci_{k[6:]}": v for k, v in b.items() if k.startswith("model_")},
                    **{k: v for k, v in r.items() if k.startswith("model_")},
                }
            )
    return joined


def _setting_eval(run_dir: Path, setting: str, default_solver: dict) -> str:
    """The evaluation folder of solver setting ``setting`` (:data:`NFE`) of a run: ``eval_<setting>``, unless only the
    bundle's default solver evaluation (``DEFAULT_EVAL``) has it (the setting is that solver)."""
    own = f"eval_{setting}"
    if _summary(run_dir, own) is None and NFE.get(setting) == default_solver and _summary(run_dir, DEFAULT_EVAL):
        return DEFAULT_EVAL
    return own


def nfe_quality(run_dirs: list[Path], base_dirs: list[Path] | None = None) -> list[dict]:
    """Quality and cost of every evaluation-only solver setting of trained runs (:data:`NFE`).

    The reference is the main evaluation (``eval_validation``: 10-step Euler); each setting is paired with it per
    (patient, draw), and the gain is pooled over the runs (folds) with a per-patient bootstrap CI.

    Args:
        run_dirs: run folders of one run (one per fold) with their ``eval_<setting>`` folders.
        base_dirs: the runs whose 10-step Euler evaluation the gains are paired with (default: ``run_dirs``; another
            recipe's runs compare that recipe's solver settings with the default model).

    Returns:
        one row per setting found (``euler_10`` first): ``setting``, ``folds``, ``nfe``, ``eval_ms`` (ms per forecast
        during the evaluation), the mean ``nrmse``/``ssim``/``psnr`` and ``gain_<metric>`` (``paired_gain`` against
        10-step Euler: mean, ci_low, ci_high, better, subjects).
    """
    out = []
    base_rows = _per_sample_rows(base_dirs or run_dirs)
    default_solver = bundle_solver()
    for name in ("euler_10", *NFE):
        evals = [
            (d, "eval_validation" if name == "euler_10" else _setting_eval(d, name, default_solver)) for d in run_dirs
        ]
        found = [(d, e, summary) for d, e in evals if (summary := _summary(d, e))]  # each summary read once
        per = [summary for _, _, summary in found]
        if not per:
            continue
        m = [_means(r)["model"] for r in per]
        row = {
            "setting": name,
            "folds": len(per),
            "nfe": sum(r["info"]["nfe_per_forecast"] for r in per) / len(per),
            "eval_ms": 1000 * sum(r["info"]["seconds_per_forecast"] for r in per) / len(per),
            **{k: sum(x[k] for x in m) / len(m) for k in METRICS},
        }
        if name != "euler_10" or base_dirs:
            rows = _paired_rows([r for d, e, _ in found for r in _per_sample_rows([d], e)], base_rows)
            row.update({f"gain_{k}": paired_gain(rows, k) for k in METRICS})
        out.append(row)
    return out


def _by_target_section(work: Path, names: list[str], folds: list[int], tag: str) -> list:
    """Markdown: the mean PSNR gain over LCI per target phase (every (patient, draw) of the folds pooled)."""
    per = {n: _per_sample_rows([work / f"{n}{tag}_fold{f}" for f in folds]) for n in names}
    per = {n: rows for n, rows in per.items() if rows}
    if not per:
        return []
    phases = sorted({round(float(r["target_time"]) * 11) for rows in per.values() for r in rows})
    lines = [
        "### PSNR gain over LCI by target phase",
        "",
        "Mean over every (patient, draw) whose target is phase k of 0..11 (time k/11; the context ends at least 4 "
        "phases earlier: for k = 4 it is ED alone; k = 11 is ES), all folds pooled; the LCI PSNR of the same draws "
        "for scale.",
        "",
        "| target phase | draws | LCI PSNR | " + " | ".join(per) + " |",
        "|---" * (len(per) + 3) + "|",
    ]
    for k in phases:
        cells, lci, n_draws = [], [], 0
        for rows in per.values():
            sel = [r for r in rows if round(float(r["target_time"]) * 11) == k]
            gains = [float(r["model_psnr"]) - float(r["lci_psnr"]) for r in sel]
            cells.append(f"{sum(gains) / len(gains):+.2f}" if gains else "-")
            lci = lci or [float(r["lci_psnr"]) for r in sel]
            n_draws = n_draws or len(sel)
        lci_text = f"{sum(lci) / len(lci):.2f}" if lci else "-"
        lines.append(f"| {k} | {n_draws} | {lci_text} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _head_to_head_section(work: Path, names: list[str], folds: list[int], tag: str) -> list:
    """Markdown: each method paired with the reference on the same (patient, draw); every run's rows read once."""
    ref_rows = _per_sample_rows([work / f"{REFERENCE}{tag}_fold{f}" for f in folds])
    lines = []
    for n in names:
        if n == REFERENCE:
            continue
        paired = _paired_rows(_per_sample_rows([work / f"{n}{tag}_fold{f}" for f in folds]), ref_rows)
        lines.append(f"| {n} | " + " | ".join(_gain_cell(paired, m) for m in ("psnr", "ssim", "nrmse")) + " |")
    if not lines:
        return []
    return [
        "### Head to head with the authors' CRONOS",
        "",
        "Each method paired with `reference_cronos` on the same (patient, draw) of the folds both ran; a "
        "positive gain means this method forecasts better than the authors' code:",
        "",
        "| method | PSNR gain | SSIM gain | NRMSE decrease |",
        "|---|---|---|---|",
        *lines,
        "",
    ]


def _budget_rows(
    work: Path, names: list[str], folds: list[int], tag: str, btag: str, others: dict[str, str] | None = None
) -> tuple[list[str], set[str], set[str]]:
    """Table rows of the main runs trained at another budget (run tag ``btag``): their gain over LCI, and paired on
    the same (patient, draw) with ``reference_cronos`` and with the same method at the page's budget (``tag``) and
    at every budget of ``others`` (run tag -> column label).

    Returns:
        the rows, the commits/devices that trained the runs, and ``"<run>: N steps"`` for the runs whose step count
        was given (``--seconds-as-steps``) instead of calibrated.
    """
    ref_rows = _per_sample_rows([work / f"{REFERENCE}{tag}_fold{f}" for f in folds])
    rows, trained_by, given = [], set(), set()
    for n in names:
        if n not in MAIN or n == REFERENCE:
            continue
        done = [f for f in folds if _summary(work / f"{n}{btag}_fold{f}")]
        if not done:
            continue
        dirs = [work / f"{n}{btag}_fold{f}" for f in done]
        infos = [_read_json(d / "run_info.json") or {} for d in dirs]
        trained_by |= {f"{i.get('commit', '?')} on {i.get('device', '?')}" for i in infos}
        given |= {f"{n}: {i['seconds_as_steps']} steps" for i in infos if i.get("seconds_as_steps")}
        steps = sorted(int(i.get("steps_done") or 0) for i in infos)
        per = _per_sample_rows(dirs)
        pairs = [ref_rows] + [
            _per_sample_rows([work / f"{n}{t}_fold{f}" for f in done]) for t in (tag, *(others or {}))
        ]
        gains = " | ".join(_gain_cell(per, m) for m in ("psnr", "ssim", "nrmse"))
        versus = " | ".join(_gain_cell(_paired_rows(per, other), "psnr") if other else "-" for other in pairs)
        rows.append(f"| {n}{btag} | {len(dirs)} | {steps[len(steps) // 2]} | {gains} | {versus} |")
    return rows, trained_by, given


def _budget_table(rows: list[str], other_labels: tuple[str, ...] = ()) -> list[str]:
    head = "| run | folds | steps (median) | PSNR gain over LCI | SSIM gain | NRMSE decrease "
    head += f"| PSNR vs {REFERENCE} (main budget) | PSNR vs the same method (main budget) |"
    head += "".join(f" PSNR vs the same method ({label}) |" for label in other_labels)
    return [head, "|---" * (8 + len(other_labels)) + "|", *rows, ""]


def _wall_clock_section(work: Path, names: list[str], folds: list[int], tag: str, wtag: str, seconds: float) -> list:
    """Markdown of the main runs trained for ``seconds`` (run tag ``wtag``) next to the reference at ``tag``."""
    ref_seconds = [
        s["training"]["seconds"]
        for s in (_read_json(work / f"{REFERENCE}{tag}_fold{f}" / "summary.json") for f in folds)
        if s and s.get("training", {}).get("seconds")
    ]
    rows, trained_by, given = _budget_rows(work, names, folds, tag, wtag)
    if not rows:
        return []
    given_text = (
        " Runs whose step count was given instead of calibrated here (`--seconds-as-steps`: the steps those seconds "
        "bought on the machine that timed the reference, reused on a faster one with the same step cost): "
        + "; ".join(sorted(given))
        + "."
        if given
        else ""
    )
    ref_text = (
        f"the authors' CRONOS above needed a median {sorted(ref_seconds)[len(ref_seconds) // 2]:.0f} s of training "
        f"steps for its budget (folds: {', '.join(f'{x:.0f}' for x in ref_seconds)} s)"
        if ref_seconds
        else "the reference's training time is not recorded"
    )
    return [
        f"## At the same wall-clock budget ({seconds:g} s of training steps)",
        "",
        f"Our methods trained for {seconds:g} s of training steps per run (`--budget-seconds {seconds:g}`: each "
        "method's median step time from a 40-step calibration on the same machine and threads, turned into a step "
        f"budget), the same setting as the table above otherwise; {ref_text}. Gains paired per patient as above; "
        f"the last columns pair each run with `{REFERENCE}` and with the same method at the main budget on the same "
        f"(patient, draw). Trained by {'; '.join(sorted(trained_by))}.{given_text}",
        "",
        *_budget_table(rows),
        *_default_solver_table(_default_solver_rows(work, names, folds, wtag, wtag)),
    ]


def _default_solver_table(rows: list[str]) -> list[str]:
    if not rows:
        return []
    return [
        "The same runs evaluated with the bundle's default solver (the one `monai-tfm forecast` uses), gains over LCI:",
        "",
        "| run | folds | PSNR gain | SSIM gain | NRMSE decrease |",
        "|---|---|---|---|---|",
        *rows,
        "",
    ]


def _default_solver_rows(work: Path, names: list[str], folds: list[int], btag: str, label_tag: str = "") -> list:
    """Table rows (gains over LCI) of the main runs with run tag ``btag`` evaluated with the bundle's solver
    (``DEFAULT_EVAL``: this script evaluates its main runs that way too, at whatever budget it ran); each row is
    labelled with the run name plus ``label_tag``."""
    rows = []
    for n in names:
        if n not in MAIN:
            continue
        dirs = [work / f"{n}{btag}_fold{f}" for f in folds if _summary(work / f"{n}{btag}_fold{f}", DEFAULT_EVAL)]
        if dirs:
            per = _per_sample_rows(dirs, DEFAULT_EVAL)
            cells = " | ".join(_gain_cell(per, m) for m in ("psnr", "ssim", "nrmse"))
            rows.append(f"| {n}{label_tag} | {len(dirs)} | {cells} |")
    return rows


def _step_budget_section(
    work: Path, names: list[str], folds: list[int], tag: str, steps: int, wall_clock: float | None = None
) -> list:
    """Markdown of the main runs of a finished ``--budget-steps steps`` invocation (a longer CPU budget), paired with
    the runs at the page's budget and, when the page has them, with the ``wall_clock`` (``--budget-seconds``) runs."""
    others = {f"_sec{wall_clock:g}": f"{wall_clock:g} s"} if wall_clock else {}
    rows, trained_by, _ = _budget_rows(work, names, folds, tag, f"_steps{steps}", others)
    if not rows:
        return []
    return [
        f"## A longer step budget ({steps} optimiser steps)",
        "",
        f"The same setting as the main table with `--budget-steps {steps}` (the learning-rate schedule spans the "
        f"longer budget); gains paired per patient as above, the last columns paired with `{REFERENCE}` and with "
        f"the same method at the main budget{' and at the wall-clock budget' if others else ''} on the same "
        f"(patient, draw). Trained by {'; '.join(sorted(trained_by))}.",
        "",
        *_budget_table(rows, tuple(others.values())),
    ]


def _seeds_section(work: Path, names: list[str], folds: list[int], tag: str) -> list[str]:
    """Markdown: each other-seed run against its seed-0 run (:data:`SEED_OF`) on the folds both finished.

    Args:
        work: the work folder.
        names: other-seed runs of this invocation.
        folds: folds of the page.
        tag: budget tag of the run folders.

    Returns:
        the section's lines (none when no pair has a fold in common).
    """
    lines = []
    for name in names:
        base = SEED_OF[name]
        both = [f for f in folds if _summary(work / f"{name}{tag}_fold{f}") and _summary(work / f"{base}{tag}_fold{f}")]
        if not both:
            continue
        for eval_name, solver in (("eval_validation", "10-step Euler"), (DEFAULT_EVAL, "the bundle's default solver")):
            per = {n: _per_sample_rows([work / f"{n}{tag}_fold{f}" for f in both], eval_name) for n in (base, name)}
            if not all(per.values()):
                continue
            if not lines:
                lines = [
                    "## Training seeds",
                    "",
                    "The same recipe trained with another `train_seed` (initialisation, data order, tau draws); same "
                    "folds and evaluation draws. Gains: per patient, pooled over the folds both finished, mean "
                    "[bootstrap 95% CI] (patients better / patients).",
                    "",
                    "| run | seed-0 run | folds | solver | seed 0 PSNR vs LCI | this seed PSNR vs LCI "
                    "| this seed vs seed 0 | SSIM: seed 0 vs LCI | this seed vs LCI |",
                    "|---|---|---|---|---|---|---|---|---|",
                ]
            cells = [_gain_cell(per[base], "psnr"), _gain_cell(per[name], "psnr")]
            cells += [_gain_cell(_paired_rows(per[name], per[base]), "psnr")]
            cells += [_gain_cell(per[base], "ssim"), _gain_cell(per[name], "ssim")]
            lines.append(f"| {name} | {base} | {both} | {solver} | " + " | ".join(cells) + " |")
    return lines + [""] if lines else []


def _gain_cell(rows: list[dict], metric: str) -> str:
    return gain_text(paired_gain(rows, metric), metric) if rows else "-"


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
    parser.add_argument(
        "--ablation-folds", default="0", help="folds on which the non-main runs are trained ('' for none)"
    )
    parser.add_argument("--report-only", action="store_true", help="collect finished runs and write the report")
    parser.add_argument("--no-figure", action="store_true")
    parser.add_argument("--spatial-size", default=None, help="prepared grid x,y,z (default: the bundle's)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the bundle's")
    parser.add_argument("--val-interval", type=int, default=None, help="epochs between validations (bundle's)")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--budget-steps", type=int, default=None, help="optimiser steps per run (instead of epochs)")
    budget.add_argument("--budget-seconds", type=float, default=None, help="seconds of training steps per run")
    parser.add_argument(
        "--seconds-as-steps",
        type=int,
        default=None,
        help="with --budget-seconds: the step count those seconds stand for, fixed beforehand instead of calibrated "
        "here (a budget timed on the machine that timed the reference, reused on another machine)",
    )
    parser.add_argument("--threads", type=int, default=None, help="CPU threads of every run (OMP_NUM_THREADS)")
    parser.add_argument(
        "--reference-solver",
        default="euler",
        choices=("euler", "midpoint", "rk4", "dopri5"),
        help="solver of the reference forecasts: 10 fixed steps (the papers' and the bundle's setting) or the "
        "release's adaptive dopri5 (about 14 s per forecast on 2 CPU threads)",
    )
    parser.add_argument(
        "--wall-clock-rows",
        type=float,
        default=None,
        help="also report the main runs of a finished '--budget-seconds S' invocation (same --work or archive) "
        "against LCI and against this page's reference_cronos runs",
    )
    parser.add_argument(
        "--step-budget-rows",
        type=int,
        default=None,
        help="also report the main runs of a finished '--budget-steps N' invocation (same --work or archive) "
        "against LCI, this page's reference_cronos runs and the same method at this page's budget",
    )
    parser.add_argument(
        "--solver-runs",
        default="cronos_discrete",
        help="runs whose evaluation-only solver settings (--solver-settings) are evaluated on the ablation folds",
    )
    parser.add_argument("--solver-settings", default=",".join(NFE), help=f"a subset of {list(NFE)}")
    parser.add_argument("--reference-tools", default=str(REPO.parent / "shared" / "tools" / "reference"))
    parser.add_argument("--out", default=str(REPO / "docs" / "results" / "acdc.md"))
    parser.add_argument(
        "--archive",
        default=str(REPO / "docs" / "results" / "acdc_runs"),
        help="folder that keeps (and restores) every run's summaries and per-sample metrics ('' for none)",
    )
    parser.add_argument("--figure", default=str(REPO / "docs" / "results" / "acdc_examples.png"))
    args = parser.parse_args()
    if args.seconds_as_steps is not None and (not args.budget_seconds or args.seconds_as_steps < 1):
        parser.error("--seconds-as-steps N needs --budget-seconds S and N >= 1")
    unknown = [n for n in args.runs.split(",") if n != REFERENCE and n not in RUNS]
    if unknown:  # before any folder is made or data prepared
        parser.error(f"--runs: unknown run(s) {unknown}; known: {[*RUNS, REFERENCE]}")
    unknown = [n for n in args.solver_runs.split(",") if n and n not in RUNS]
    if unknown:
        parser.error(f"--solver-runs: unknown run(s) {unknown}; known: {list(RUNS)}")
    unknown = [n for n in args.solver_settings.split(",") if n and n not in NFE]
    if unknown:
        parser.error(f"--solver-settings: unknown setting(s) {unknown}; known: {list(NFE)}")
    work = (REPO / args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    archive = (REPO / args.archive).resolve() if args.archive else None
    if archive is not None:
        sync_archive(work, archive)
    folds = [int(f) for f in args.folds.split(",")]
    ablation_folds = [int(f) for f in args.ablation_folds.split(",") if f.strip()]
    names = args.runs.split(",")
    solver_runs = [n for n in args.solver_runs.split(",") if n]
    solver_settings = {n: NFE[n] for n in args.solver_settings.split(",") if n}
    info = provenance()
    prepared = work / ("prepared" + (f"_{args.spatial_size.replace(',', 'x')}" if args.spatial_size else ""))
    t0 = time.perf_counter()
    spatial = [int(v) for v in args.spatial_size.split(",")] if args.spatial_size else None
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # inherited by every run's process
    datalist_path = ensure_acdc_prepared(args.src, prepared, spatial_size=spatial)
    common = {
        "dataset_dir": args.src,
        "prepared_dir": str(prepared),
        "max_epochs": args.epochs,
        "network_def#channels": args.channels,
        "overwrite": True,
        **PAPERS_SOLVER,  # the main evaluation: the papers' solver, whatever the bundle's default
        **({"spatial_size": spatial} if spatial else {}),
        **({"batch_size": args.batch_size} if args.batch_size else {}),
        **({"val_interval": args.val_interval} if args.val_interval else {}),
    }
    tag = (
        f"_steps{args.budget_steps}"
        if args.budget_steps
        else (f"_sec{args.budget_seconds:g}" if args.budget_seconds else "")
    )
    results: dict = {}
    nfe_results: dict = {}  # run -> solver setting -> fold -> summary (evaluation only)
    default_results: dict = {}  # main and other-seed runs evaluated with the bundle's solver (when not the papers')
    default_solver = bundle_solver()
    run_infos: dict = {}  # (name, fold) -> provenance and training wall time of the run (its run_info.json)

    n_patients = len(json.loads(Path(datalist_path).read_text()).get("training", []))
    grid = " x ".join(str(v) for v in spatial) if spatial else "the bundle's default"
    budget_text = (
        f"{args.budget_steps} optimiser steps per run"
        if args.budget_steps
        else (
            f"{args.budget_seconds:g} s of training steps per run (steps from each method's measured s/step)"
            if args.budget_seconds
            else f"{args.epochs} epochs"
        )
    )

    def write() -> None:
        if archive is not None:
            sync_archive(work, archive)
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
            f"Data: the {n_patients}-patient cropped development copy (`../shared/data/acdc_cine`), prepared by the "
            f"bundle to 12 phases ED..ES of {grid} voxels. Folds {folds} of the bundle's 5 stratified folds (each "
            "fold validates on its patients x 4 fixed draws); the table reports mean +- std over folds of the per-fold "
            "means (CRONOS Table 2 format). Protocol as the papers: 11 context slots, gap 3, keep-probability 0.5, "
            f"sigma 0, 10-step Euler, mean aggregation. Budget: {budget_text}; UNet width {args.channels} (paper: 32), "
            f"batch {args.batch_size or 4}, AdamW lr 1e-3 with warm-up + cosine over the budget, CPU threads "
            f"{args.threads or 'torch default'}; model.pt = best validation NRMSE over the validations (every "
            f"{args.val_interval or 5} epochs and at the end; with an interval past the budget: the final weights). "
            "The numbers are on the held-out fold with 4 draws per patient (the same draws for every method); the "
            "development copy has no test split.",
            "",
            "## Main table",
            "",
            _table([n for n in names if n in MAIN], results, folds),
            "",
            "Paired gain over LCI, per patient (the mean over its draws), pooled over the folds: mean [bootstrap 95% "
            "CI over patients] (patients better / patients); PSNR in dB, SSIM x100, NRMSE as a decrease:",
            "",
            "| method | PSNR gain | SSIM gain | NRMSE decrease |",
            "|---|---|---|---|",
            *[
                f"| {n} | "
                + " | ".join(
                    _gain_cell(_per_sample_rows([work / f"{n}{tag}_fold{f}" for f in folds]), m)
                    for m in ("psnr", "ssim", "nrmse")
                )
                + " |"
                for n in names
                if n in MAIN and results.get(n)
            ],
            "",
            "Per fold (NRMSE / SSIM / PSNR on the fold's validation patients; LCI from the same draws):",
            "",
            _fold_table([n for n in names if n in MAIN], results, folds),
            "",
        ]
        md += _by_target_section(work, [n for n in names if n in MAIN and results.get(n)], folds, tag)
        if results.get(REFERENCE):
            md += _head_to_head_section(work, [n for n in names if n in MAIN and results.get(n)], folds, tag)
        if args.wall_clock_rows:
            md += _wall_clock_section(work, names, folds, tag, f"_sec{args.wall_clock_rows:g}", args.wall_clock_rows)
        if args.step_budget_rows:
            md += _step_budget_section(work, names, folds, tag, args.step_budget_rows, args.wall_clock_rows)
        if any(n in MAIN for n in default_results):
            solver = default_solver
            md += [
                f"### With the bundle's default solver ({solver['solver']}, {solver['solver_steps']} steps)",
                "",
                "The same trained runs, evaluated on the same draws with the solver `monai-tfm forecast` uses by "
                "default (chosen on the solver table below / docs/results/forecast_speed.md); paired gain over LCI "
                "as above:",
                "",
                "| method | folds | PSNR gain | SSIM gain | NRMSE decrease |",
                "|---|---|---|---|---|",
                *_default_solver_rows(work, [n for n in names if n in default_results], folds, tag),
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
        for solver_run in [n for n in solver_runs if nfe_results.get(n)]:
            nfe = nfe_quality([work / f"{solver_run}{tag}_fold{f}" for f in ablation_folds])
            if len(nfe) < 2:
                continue
            label = "discrete CRONOS" if solver_run == "cronos_discrete" else solver_run
            md += [
                f"## Solver steps and aggregation ({label}, evaluation only; folds {ablation_folds})",
                "",
                "| setting | NFE per forecast | ms per forecast | nrmse | ssim | psnr | PSNR vs euler_10 "
                "| SSIM vs euler_10 |",
                "|---|---|---|---|---|---|---|---|",
                *[
                    f"| {r['setting']} | {r['nfe']:.1f} | {r['eval_ms']:.0f} | {r['nrmse']:.4f} | {r['ssim']:.2f} | "
                    f"{r['psnr']:.2f} | " + " | ".join(gain_text(r.get(f"gain_{k}")) for k in ("psnr", "ssim")) + " |"
                    for r in nfe
                ],
                "",
                "euler_10 is the main evaluation; dopri5 (rtol = atol = 1e-5) reports the network evaluations it "
                "actually made; last_aggregation = 10-step Euler with the last slot instead of the mean over slots. "
                "Gains: paired per (patient, draw) with the euler_10 forecasts, mean over patients [bootstrap 95% CI] "
                "(patients better / patients). ms per forecast as measured during the evaluation (CPU shared with "
                "another run); `benchmarks/forecast_speed.py` times them on a quiet machine.",
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
        recipes = [n for n in names if n.startswith("recipe_") and results.get(n)]
        if recipes and results.get(RECIPE_BASE):
            # each change is paired with the run it changes: BUILT_ON's entry, else the papers' recipe of its own
            # method (a continuous-CRONOS recipe with cronos_continuous, a TFM one with tfm, the others RECIPE_BASE)
            base_of = {n: BUILT_ON.get(n, RUNS[n][0] if RUNS[n][0] in RUNS else RECIPE_BASE) for n in recipes}
            base_rows = {
                b: _per_sample_rows([work / f"{b}{tag}_fold{f}" for f in ablation_folds]) for b in set(base_of.values())
            }
            md += [
                f"## Training-recipe screen (one change at a time; fold(s) {ablation_folds})",
                "",
                "Paired per-patient gain of each change over the same method with the papers' recipe (uniform tau, "
                f"no augmentation; `{RECIPE_BASE}` unless the base column says otherwise; same patients and draws), "
                "mean [bootstrap 95% CI] (patients better / patients), and the recipe's own gain over LCI. A screen: "
                "the ablation folds only and one seed; a change is adopted only after all five folds confirm it. "
                "Training wall times below are not speed figures when runs shared the machine with other work.",
                "",
                "| change | base | PSNR vs base | SSIM vs base | PSNR vs LCI | SSIM vs LCI |",
                "|---|---|---|---|---|---|",
            ]
            for n in recipes:
                rows = _per_sample_rows([work / f"{n}{tag}_fold{f}" for f in ablation_folds])
                joined = _paired_rows(rows, base_rows[base_of[n]])
                cells = [_gain_cell(joined, m) for m in ("psnr", "ssim")] + [
                    _gain_cell(rows, m) for m in ("psnr", "ssim")
                ]
                md.append(f"| {n} ({RUNS[n][2]}) | {base_of[n]} | " + " | ".join(cells) + " |")
            md.append("")
        md += _seeds_section(work, [n for n in names if n in SEED_OF], folds, tag)
        md += [
            "## Training wall time per run (s)",
            "",
            "| run | " + " | ".join(f"fold {f}" for f in folds) + " |",
            "|---" * (len(folds) + 1) + "|",
        ]
        for name in names:
            walls = [run_infos[(name, f)]["wall_train_s"] if (name, f) in run_infos else math.nan for f in folds]
            if any((name, f) in run_infos for f in folds):
                steps = [run_infos.get((name, f), {}).get("steps_done") for f in folds]
                md.append(
                    f"| {name} | "
                    + " | ".join(f"{w:.0f}" + (f" ({s} steps)" if s else "") for w, s in zip(walls, steps))
                    + " |"
                )
        md += ["", *([] if args.no_figure else ["![examples](acdc_examples.png)", ""])]
        atomic_write_text(args.out, "\n".join(md), overwrite=True)
        runs = [
            {"run": name, "fold": fold, **run_infos.get((name, fold), {}), "metrics": _means(result)}
            for name, per_fold in results.items()
            for fold, result in per_fold.items()
            if result
        ]
        runs += [
            {"run": f"{name}_{abl}", "fold": fold, "evaluation_only": True, "metrics": _means(result)}
            for name, per_setting in nfe_results.items()
            for abl, per_fold in per_setting.items()
            for fold, result in per_fold.items()
            if result
        ]
        atomic_write_text(
            Path(args.out).with_suffix(".json"),
            json.dumps({"provenance": info, "args": vars(args), "runs": runs}, indent=1),
            overwrite=True,
        )

    def steps_for(name: str, method: str, extra: list[str], overrides: dict, fold: int) -> int | None:
        """The run's step budget: --budget-steps, or --budget-seconds over its calibrated seconds per step."""
        if not args.budget_seconds:
            return args.budget_steps
        if args.seconds_as_steps:
            return args.seconds_as_steps
        calib = work / f"calibration_{name}"
        if _read_json(calib / "budget.json") is None:
            kw = {**common, **overrides, "fold": fold, "output_dir": str(calib), "max_steps": CALIBRATION_STEPS}
            kw["val_interval"] = 10**6  # timing only: no validation before the end
            run_bundle("training", _files(method, extra), work / f"{calib.name}.log", **kw)
        timing = _read_json(calib / "budget.json")
        per_step = timing.get("median_seconds_per_step") or timing["seconds_per_step"]  # median: robust to warm-up
        return max(1, int(args.budget_seconds / per_step))

    for fold in folds:
        for name in names:
            if name not in MAIN and fold not in ablation_folds:
                continue
            out = work / f"{name}{tag}_fold{fold}"
            if _summary(out) is None and args.report_only:
                continue
            if name == REFERENCE:
                if _summary(out) is None and not _run_reference(args, datalist_path, fold, out, info):
                    continue
                run_info = _read_json(out / "run_info.json")
                if run_info is not None:
                    run_infos[(name, fold)] = run_info
                results.setdefault(name, {})[fold] = _summary(out)
                write()
                continue
            method, extra, overrides = RUNS[name]
            kw = {**common, **overrides, "fold": fold, "output_dir": str(out)}
            if _summary(out) is None:
                max_steps = steps_for(name, method, extra, overrides, fold)
                if max_steps:
                    kw["max_steps"] = max_steps
                wall = run_bundle("training", _files(method, extra), work / f"{out.name}_train.log", **kw)
                run_bundle("evaluating", _files(method, extra, True), work / f"{out.name}_eval.log", **kw)
                keys = ("commit", "device", "torch", "monai")
                state = _read_json(out / "budget.json") or {}
                run_info = {
                    **{k: info[k] for k in keys},
                    "wall_train_s": wall,
                    "budget_steps": max_steps,
                    "budget_seconds": args.budget_seconds,
                    "seconds_as_steps": args.seconds_as_steps,
                    "steps_done": state.get("steps_timed"),
                    "train_step_seconds": state.get("train_seconds"),
                    "threads": state.get("threads"),
                }
                atomic_write_text(out / "run_info.json", json.dumps(run_info, indent=1), overwrite=True)
            run_info = _read_json(out / "run_info.json")
            if run_info is not None:
                run_infos[(name, fold)] = run_info
            results.setdefault(name, {})[fold] = _summary(out)

            files = _files(method, extra, True)
            # the main runs and the other seeds of a run (the seeds table) are also scored with the bundle's solver
            if (name in MAIN or name in SEED_OF) and default_solver != PAPERS_SOLVER and _summary(out) is not None:
                default_results.setdefault(name, {})[fold] = _evaluate_as(
                    out, files, kw, DEFAULT_EVAL, DEFAULT_EVAL, default_solver, args.report_only
                )
            if name in solver_runs and fold in ablation_folds:
                for abl, ov in solver_settings.items():  # (a setting evaluated already is not evaluated again)
                    nfe_results.setdefault(name, {}).setdefault(abl, {})[fold] = _evaluate_as(
                        out, files, kw, _setting_eval(out, abl, default_solver), abl, ov, args.report_only
                    )
            write()
    if "cronos_discrete" in names and not args.no_figure and (work / f"cronos_discrete_fold{folds[0]}").is_dir():
        from acdc_figure import make_figure

        make_figure(work / f"cronos_discrete_fold{folds[0]}", args.figure, common, folds[0])
    write()
    print(Path(args.out).read_text())  # noqa: T201  (benchmark script output)


if __name__ == "__main__":
    main()
