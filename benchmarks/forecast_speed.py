# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""Few-step forecasts on ACDC: quality against network evaluations and CPU latency of ``monai-tfm forecast``.

Two parts, one page (``docs/results/forecast_speed.md`` + ``.json`` + ``.png``):

* **Quality vs NFE** from the evaluation-only solver settings that ``benchmarks/acdc.py`` ran on trained discrete
  CRONOS folds (``eval_<setting>`` folders; :func:`acdc.nfe_quality`): each setting paired per (patient, draw)
  with 10-step Euler, per-patient bootstrap CI.
* **Latency** of one forecast on the ACDC development grid, measured here in a fresh process per thread count
  (so that ``torch.set_num_threads`` is the only difference): the command line end to end (a new process: imports,
  bundle, weights, reading, resampling, normalising, solving, writing), the same work in a warm process
  (``forecast_series`` with a built ``BundleForecaster``: what a CSV batch or the MONAI Label server pays per
  patient), the solve alone (``BundleForecaster.predict``) and building the model.

Example (the page; the run folders of ``benchmarks/acdc.py --budget-steps 1600`` at 64 x 64 x 8, width 16)::

    python benchmarks/forecast_speed.py --work runs/bench_acdc_main --run cronos_discrete_steps1600 --folds 0,1 \
        --threads 1,2 --set "spatial_size=[64,64,8]" --set network_def#channels=16 --out docs/results/forecast_speed
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from acdc import BUNDLE, NFE, PAPERS_SOLVER, nfe_quality  # noqa: E402
from common import gain_text, page_header, parse_overrides, provenance, write_results  # noqa: E402

__all__ = ["main"]

logger = logging.getLogger("forecast_speed")
# settings timed for latency (a subset of acdc.NFE plus the papers' 10 steps); dopri5 is timed on its own row
TIMED = ("euler_1", "euler_2", "euler_5", "midpoint_1", "heun2_2", "euler_10", "dopri5")


def _setting(name: str) -> dict:
    return PAPERS_SOLVER if name == "euler_10" else NFE[name]


def _series(prepared: Path, subject: str | None) -> tuple[list[str], list[float], float, str]:
    """The scans of one validation patient of the prepared datalist: phases 0..8 as context, the target at ES."""
    datalist = json.loads((prepared / "datalist.json").read_text())
    item = next((i for i in datalist["training"] if subject in (None, i["subject"])), None)
    if item is None:
        raise SystemExit(f"subject {subject!r} is not in {prepared / 'datalist.json'}")
    frames = item["frames"]
    context = frames[: len(frames) - 3]  # the protocol's gap 3: the last context phase is 3 before the target
    return (
        [str(prepared / f["image"]) for f in context],
        [f["time"] for f in context],
        frames[-1]["time"],
        item["subject"],
    )


def _worker(args: argparse.Namespace, overrides: dict) -> None:
    """Time one thread count in this process; prints one JSON row per setting."""
    import torch

    torch.set_num_threads(args.threads)
    from monai_tfm.apps.forecast import BundleForecaster, forecast_series, read_scan
    from monai_tfm.transforms import IntensityScaling

    scans, times, target, _ = _series(Path(args.prepared), args.subject)
    tmp = Path(tempfile.mkdtemp(prefix="forecast_speed_"))
    rows = []
    for name in args.settings.split(","):
        t0 = time.perf_counter()
        model = BundleForecaster(args.bundle, weights=args.weights, overrides=overrides, **_solver_kwargs(name))
        build = time.perf_counter() - t0
        frames = torch.stack([read_scan(s).as_tensor() for s in scans])
        normalised = IntensityScaling.from_series(frames, model.normalise).forward(frames).float()
        e2e, solve, nfe = [], [], 0
        for k in range(args.warmup + args.repeats):
            t0 = time.perf_counter()
            forecast_series(model, scans, times, target, tmp / "forecast.nii.gz", overwrite=True)
            t1 = time.perf_counter()
            _, _, nfe = model.predict(normalised, times, target)
            t2 = time.perf_counter()
            if k >= args.warmup:
                e2e.append(t1 - t0)
                solve.append(t2 - t1)
        rows.append(
            {
                "setting": name,
                "threads": args.threads,
                "nfe": nfe,
                "build_s": build,
                "warm_e2e_ms": 1000 * statistics.median(e2e),
                "solve_ms": 1000 * statistics.median(solve),
                "repeats": args.repeats,
            }
        )
    print(json.dumps(rows))  # noqa: T201  (read by the parent process)


def _solver_kwargs(name: str) -> dict:
    s = _setting(name)
    return {"solver": s["solver"], "steps": s["solver_steps"]}


def _cli_seconds(args: argparse.Namespace, overrides: dict, threads: int, name: str, out: Path) -> float:
    """Wall time of ``monai-tfm forecast`` in a new process (median of ``--cli-repeats``)."""
    scans, times, target, _ = _series(Path(args.prepared), args.subject)
    s = _setting(name)
    cmd = [sys.executable, "-m", "monai_tfm.cli", "forecast", "--bundle", str(args.bundle), "--weights", args.weights]
    cmd += ["--scans", *scans, "--times", *[repr(t) for t in times], "--target-time", repr(target)]
    cmd += ["--output", str(out), "--overwrite", "true", "--solver", s["solver"], "--steps", str(s["solver_steps"])]
    for key, value in overrides.items():
        cmd += [f"--{key}", json.dumps(value) if isinstance(value, (list, dict, bool)) else str(value)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    walls = []
    for _ in range(args.cli_repeats):
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        walls.append(time.perf_counter() - t0)
        if proc.returncode != 0:
            raise RuntimeError(f"monai-tfm forecast failed:\n{proc.stderr[-2000:]}")
    return statistics.median(walls)


def _plot(quality: list[dict], latency: dict, threads: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for r in quality:
        lat = latency.get((r["setting"], threads))
        if lat is None or r["setting"] == "last_aggregation":
            continue
        g = r.get("gain_psnr") or {"mean": 0.0, "ci_low": 0.0, "ci_high": 0.0}
        ax.errorbar(
            lat["solve_ms"],
            g["mean"],
            yerr=[[g["mean"] - g["ci_low"]], [g["ci_high"] - g["mean"]]],
            fmt="o",
            capsize=3,
        )
        ax.annotate(
            f"{r['setting']} ({r['nfe']:.0f} NFE)",
            (lat["solve_ms"], g["mean"]),
            fontsize=8,
            xytext=(4, 4),
            textcoords="offset points",
        )
    ax.axhline(0.0, color="grey", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel(f"solve time per forecast, ms ({threads} CPU threads, log scale)")
    ax.set_ylabel("PSNR vs 10-step Euler, dB (95% CI)")
    ax.set_title("ACDC discrete CRONOS: quality vs cost of the ODE solve")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default="runs/bench_acdc_main", help="benchmarks/acdc.py work folder")
    parser.add_argument("--run", default="cronos_discrete_steps1600", help="run name without _fold<k>")
    parser.add_argument("--folds", default="0,1", help="folds whose solver evaluations are pooled")
    parser.add_argument("--threads", default="1,2", help="CPU thread counts to time")
    parser.add_argument("--subject", default=None, help="patient timed (default: the first of the datalist)")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--cli-repeats", type=int, default=3)
    parser.add_argument("--cli-settings", default="euler_2,euler_10", help="settings timed through the command line")
    parser.add_argument(
        "--straight-run",
        default="recipe_endpoint_steps1600",
        help="a run trained for straighter paths (end-point prediction) whose solver evaluations are compared with "
        "the main run's 10-step Euler (folds where it exists)",
    )
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="bundle override")
    parser.add_argument("--out", default="docs/results/forecast_speed")
    # worker mode (one thread count in a fresh process)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--bundle", default=str(BUNDLE), help=argparse.SUPPRESS)
    parser.add_argument("--weights", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--prepared", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--settings", default=",".join(TIMED), help=argparse.SUPPRESS)
    args = parser.parse_args()
    overrides = parse_overrides(parser, args.set)
    work = Path(args.work)
    folds = [int(f) for f in args.folds.split(",")]
    run_dirs = [work / f"{args.run}_fold{f}" for f in folds]
    args.weights = args.weights or str(run_dirs[0] / "models" / "model.pt")
    if args.prepared is None:
        size = overrides.get("spatial_size")
        args.prepared = str(work / ("prepared" + ("_" + "x".join(str(v) for v in size) if size else "")))
    if args.worker:
        args.threads = int(args.threads)
        _worker(args, overrides)
        return
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    prov = provenance()
    quality = nfe_quality(run_dirs)
    if not quality:
        raise SystemExit(f"no solver evaluations under {run_dirs}: run benchmarks/acdc.py first")

    latency: dict = {}
    cli: dict = {}
    thread_counts = [int(t) for t in args.threads.split(",")]
    for threads in thread_counts:
        cmd = [sys.executable, __file__, "--worker", "--threads", str(threads), "--work", args.work, "--run", args.run]
        cmd += ["--folds", args.folds, "--weights", args.weights, "--prepared", args.prepared, "--bundle", args.bundle]
        cmd += ["--repeats", str(args.repeats), "--warmup", str(args.warmup), "--settings", ",".join(TIMED)]
        cmd += [*(["--subject", args.subject] if args.subject else []), *[a for s in args.set for a in ("--set", s)]]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        logger.info("timing %d thread(s) in a fresh process", threads)
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"worker failed:\n{proc.stderr[-3000:]}")
        for row in json.loads(proc.stdout.strip().splitlines()[-1]):
            latency[(row["setting"], threads)] = row
        with tempfile.TemporaryDirectory() as tmp:
            for name in args.cli_settings.split(","):
                logger.info("timing monai-tfm forecast (%s, %d thread(s))", name, threads)
                cli[(name, threads)] = _cli_seconds(args, overrides, threads, name, Path(tmp) / "f.nii.gz")

    _, _, _, subject = _series(Path(args.prepared), args.subject)
    shape = "x".join(str(v) for v in overrides.get("spatial_size", ["bundle default"]))
    t_hi = max(thread_counts)
    lines = page_header(
        "Few-step forecasts: quality vs network evaluations vs CPU time (ACDC, discrete CRONOS)",
        "CPU only (no GPU was lent to this task); latency on an otherwise idle machine",
        prov,
    )
    lines += [
        f"Model: `{args.run}` folds {folds} (benchmarks/acdc.py at its main budget; overrides {overrides}). Latency:"
        f" patient {subject} of `{args.prepared}` ({shape} voxels), 9 phases of context, target ES; weights of fold "
        f"{folds[0]}; medians of {args.repeats} forecasts after {args.warmup} warm-up(s), "
        f"{args.cli_repeats} command-line runs.",
        "",
        "## Quality vs NFE (paired with 10-step Euler, pooled over the folds)",
        "",
        "| setting | NFE | PSNR | SSIM | NRMSE | PSNR vs euler_10 (dB) | SSIM vs euler_10 (points) | "
        + " | ".join(f"solve ms ({t} thr)" for t in thread_counts)
        + " |",
        "|---" * (7 + len(thread_counts)) + "|",
    ]
    for r in quality:
        timed = [latency.get((r["setting"], t)) for t in thread_counts]
        lines.append(
            f"| {r['setting']} | {r['nfe']:.1f} | {r['psnr']:.2f} | {r['ssim']:.2f} | {r['nrmse']:.4f} | "
            f"{gain_text(r.get('gain_psnr'))} | {gain_text(r.get('gain_ssim'))} | "
            + " | ".join("-" if x is None else f"{x['solve_ms']:.0f}" for x in timed)
            + " |"
        )
    lines += [
        "",
        "NFE: network evaluations per forecast (dopri5: counted, rtol = atol = 1e-5). last_aggregation: 10-step Euler "
        "with the last slot instead of the mean over slots (not timed). PSNR/SSIM/NRMSE: means over the folds' "
        "validation draws.",
        "",
        "## Latency of one forecast",
        "",
        "| setting | threads | NFE | solve (ms) | warm end to end (ms) | build model (s) | `monai-tfm forecast` (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for (name, threads), row in latency.items():
        c = cli.get((name, threads))
        lines.append(
            f"| {name} | {threads} | {row['nfe']} | {row['solve_ms']:.0f} | {row['warm_e2e_ms']:.0f} | "
            f"{row['build_s']:.2f} | {'-' if c is None else f'{c:.2f}'} |"
        )
    lines += [
        "",
        "solve: `BundleForecaster.predict` (slots, variant transforms, prepare-batch, ODE solve). Warm end to end: "
        "`forecast_series` with a built model (read the NIfTI scans, resample onto the latest scan's grid, "
        "normalise, solve, invert the intensity scaling, write the NIfTI atomically): the cost per patient of a CSV "
        "batch or of the MONAI Label server. Build: parse the bundle config, build the network, load the weights. "
        "`monai-tfm forecast`: a new Python process end to end (interpreter, imports, build, forecast, write).",
        "",
    ]
    straight_folds = [f for f in folds if (work / f"{args.straight_run}_fold{f}").is_dir()]
    straight = nfe_quality(
        [work / f"{args.straight_run}_fold{f}" for f in straight_folds],
        [work / f"{args.run}_fold{f}" for f in straight_folds],
    )
    if straight:
        lines += [
            f"## Training for straighter paths: `{args.straight_run}` (folds {straight_folds})",
            "",
            "The network predicts the end point X1 - X_tau and the velocity is derived from it "
            "(`prediction: endpoint`, loss on the end point), so each Euler step jumps to the current end-point "
            "estimate. Paired with the main run's 10-step Euler on the same draws:",
            "",
            "| setting | NFE | PSNR | SSIM | PSNR vs main euler_10 (dB) | SSIM vs main euler_10 (points) |",
            "|---|---|---|---|---|---|",
            *[
                f"| {r['setting']} | {r['nfe']:.1f} | {r['psnr']:.2f} | {r['ssim']:.2f} | "
                f"{gain_text(r.get('gain_psnr'))} | {gain_text(r.get('gain_ssim'))} |"
                for r in straight
            ],
            "",
        ]
    fig = Path(args.out).with_suffix(".png")
    _plot(quality, latency, t_hi, fig)
    lines += [f"![quality vs solve time]({fig.name})", ""]
    rows = {
        "quality": quality,
        "straight": straight,
        "latency": list(latency.values()),
        "cli": [{"setting": n, "threads": t, "seconds": s} for (n, t), s in cli.items()],
    }
    write_results(Path(args.out), lines, prov, args, [rows])
    print("\n".join(lines))  # noqa: T201  (benchmark script output)


if __name__ == "__main__":
    main()
