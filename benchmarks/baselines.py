# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""Train and evaluate every method of a bundle (flow methods and direct baselines) and compare them with LCI.

Writes into ``--out`` (default ``docs/results``), named after the bundle:

* ``baselines_<bundle>.md``: the results table in the format of CRONOS Table 2 (NRMSE [10^-2], SSIM [%], PSNR [dB],
  mean +- std over the test samples; LCI included) and a compute table (training wall time, peak memory of the
  training and evaluation processes: peak RSS on CPU, ``torch.cuda.max_memory_allocated`` on GPU; parameters;
  forecast time per sample; network evaluations; device);
* ``baselines_<bundle>.json``: the same numbers and the provenance;
* ``baselines_<bundle>_memory.png`` (needs the ``plot`` extra, matplotlib): peak memory of ONE training-style forward
  pass (batch 1, autograd on, the bundle's volume size) against the number of context frames T, per method; every
  point is measured in a fresh process.

Parameter-free methods (``lci``, ``linear``) are only evaluated. Every method uses the bundle's fixed test draws, so
the LCI row is the same for all of them (checked).

    python benchmarks/baselines.py                                   # all methods, bundle defaults
    python benchmarks/baselines.py --methods convlstm,lci --epochs 1 --out /tmp/bench
    python benchmarks/baselines.py --bundle bundles/acdc_cine_forecasting --epochs 20 --flow-channels 16 \
        --set dataset_dir=../shared/data/acdc_cine --set fold=0 --spatial-size 96,96,8

A method whose ``<work>/<method>/result.json`` exists is not run again (``--rerun`` forces it), so an interrupted
benchmark resumes where it stopped.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
from common import REPO, provenance, run_bundle

from monai_tfm.apps.bundle_loading import bundle_methods, bundle_run_files
from monai_tfm.utils.io import atomic_write_text

logger = logging.getLogger("benchmarks.baselines")

# table order: heuristics, direct baselines, the K = 1 flow ablation, the flow methods
ORDER = ("lci", "linear", "convlstm", "simvp", "vivit", "odelstm", "lci_fm", "tfm", "cronos_discrete")
ORDER += ("cronos_continuous",)
TABLE2 = (
    ("nrmse", "NRMSE [10^-2] (lower)", 100.0),
    ("ssim", "SSIM [%] (higher)", 1.0),
    ("psnr", "PSNR [dB] (higher)", 1.0),
)
CONTEXT_SIZES = (3, 5, 7, 11, 16)


def _files(bundle: Path, method: str, evaluate: bool = False) -> list[str]:
    return [str(f) for f in bundle_run_files(bundle, "evaluate" if evaluate else "train", method)]


def _parser(files: list[str], **overrides: Any):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(files)
    for key, value in overrides.items():
        parser[key] = value
    return parser


def _network(bundle: Path, method: str, **overrides: Any) -> torch.nn.Module:
    """The method's network as the bundle builds it (on CPU)."""
    parser = _parser(_files(bundle, method), **overrides)
    return parser.get_parsed_content("network_def", instantiate=True)


def method_overrides(bundle: Path, method: str, common: dict[str, Any], flow_channels: int | None) -> dict[str, Any]:
    """``common`` plus the UNet width for the methods whose network has a ``channels`` argument (the flow UNets)."""
    overrides = dict(common)
    if flow_channels is not None and "channels" in (_parser(_files(bundle, method)).get("network_def") or {}):
        overrides["network_def#channels"] = int(flow_channels)
    return overrides


def _parse_sets(items: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings (VALUE read as YAML: numbers, lists, null) into config overrides."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set expects KEY=VALUE, got {item!r}.")
        out[key] = yaml.safe_load(value)
    return out


def _methods(bundle: Path, wanted: str) -> list[str]:
    available = bundle_methods(bundle)
    if wanted == "all":
        chosen = available
    else:
        chosen = [m.strip() for m in wanted.split(",") if m.strip()]
        missing = [m for m in chosen if m not in available]
        if missing:
            raise SystemExit(f"no method overlay for {missing} in bundle {bundle} (available: {available}).")
    rank = {m: i for i, m in enumerate(ORDER)}
    return sorted(chosen, key=lambda m: (rank.get(m, len(ORDER)), m))


def _probe_overlay(files: list[str], run_id_finalize_path: Path, overlay_path: Path) -> str:
    """An extra config file that appends a peak-memory record to the workflow's ``finalize`` list.

    The record (JSON at ``run_id_finalize_path``) holds the process's peak RSS (bytes) and, on GPU,
    ``torch.cuda.max_memory_allocated()``; the bundle's own ``finalize`` items are kept in front.
    """
    finalize = list(_parser(files).get("finalize", []) or [])
    rss = "__import__('resource').getrusage(__import__('resource').RUSAGE_SELF).ru_maxrss"
    rss_bytes = rss + (" if __import__('sys').platform == 'darwin' else 1024 * " + rss)
    cuda = "__import__('torch').cuda"
    probe = (
        f"$__import__('pathlib').Path({str(run_id_finalize_path)!r}).write_text(__import__('json').dumps("
        f"{{'peak_rss_bytes': {rss_bytes}, "
        f"'cuda_max_allocated_bytes': {cuda}.max_memory_allocated() if {cuda}.is_available() else None}}))"
    )
    atomic_write_text(overlay_path, json.dumps({"finalize": finalize + [probe]}, indent=1), overwrite=True)
    return str(overlay_path)


def _peak_bytes(record: dict | None) -> float | None:
    if not record:
        return None
    cuda = record.get("cuda_max_allocated_bytes")
    return float(cuda) if cuda is not None else float(record["peak_rss_bytes"])


def run_method(
    bundle: Path, method: str, work: Path, epochs: int | None, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Train (unless parameter-free) and evaluate one method; returns its numbers.

    ``overrides`` (config id -> value) apply to training, evaluation and the parameter count.
    """
    out = work / method
    out.mkdir(parents=True, exist_ok=True)
    extra = dict(overrides or {})
    overrides = {**extra, "output_dir": str(out), "overwrite": True}
    if epochs is not None:
        overrides["max_epochs"] = int(epochs)
    params = sum(p.numel() for p in _network(bundle, method, **extra).parameters() if p.requires_grad)
    result: dict[str, Any] = {"method": method, "parameters": params, "train_seconds": None, "train_memory": None}
    if params > 0:
        files = _files(bundle, method)
        probe = _probe_overlay(files, out / "train_memory.json", work / f"{method}_train_probe.json")
        logger.info("training %s (%d parameters)", method, params)
        result["train_seconds"] = run_bundle("training", files + [probe], work / f"{method}_train.log", **overrides)
        result["train_memory"] = json.loads((out / "train_memory.json").read_text())
    files = _files(bundle, method, evaluate=True)
    probe = _probe_overlay(files, out / "eval_memory.json", work / f"{method}_eval_probe.json")
    logger.info("evaluating %s", method)
    result["eval_seconds"] = run_bundle("evaluating", files + [probe], work / f"{method}_eval.log", **overrides)
    result["eval_memory"] = json.loads((out / "eval_memory.json").read_text())
    split = _parser(files, **extra).get("eval_split", "test")
    summary = json.loads((out / f"eval_{split}" / "summary.json").read_text())
    result["summary"], result["info"] = summary["summary"], summary["info"]
    result["eval_split"], result["overrides"] = split, extra
    atomic_write_text(out / "result.json", json.dumps(result, indent=1, default=float), overwrite=True)
    return result


# ------------------------------------------------------------------ one forward pass, in a fresh process


def _current_rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise OSError("no VmRSS in /proc/self/status")


def _peak_rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise OSError("no VmHWM in /proc/self/status")


def measure_forward(
    bundle: Path, method: str, num_frames: int, spatial_size: list[int] | None, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Peak memory of one training-style forward pass (batch 1, autograd on) with ``num_frames`` context frames.

    CPU: growth of the peak RSS over the RSS before the pass (the kernel's peak counter is reset first, Linux
    ``/proc/self/clear_refs``). GPU: ``max_memory_allocated`` growth over the allocation before the pass.
    """
    from monai_tfm.networks import DirectForecaster

    parser = _parser(_files(bundle, method), **{**(overrides or {}), "num_slots": int(num_frames)})
    size = spatial_size or parser.get_parsed_content("spatial_size")
    if not size:
        raise SystemExit(f"{bundle.name}: the config has no spatial_size; pass --spatial-size D,H,W.")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    net = parser.get_parsed_content("network_def", instantiate=True).to(device).train()
    times = torch.linspace(0.0, 0.5, num_frames, device=device).unsqueeze(0)
    mask = torch.ones(1, num_frames, dtype=torch.bool, device=device)
    target_time = torch.tensor([0.8], device=device)
    if isinstance(net, DirectForecaster):
        inputs = (torch.rand(1, num_frames, 1, *size, device=device), times, mask, target_time)
        kwargs: dict[str, Any] = {}
    else:
        k = int(getattr(net, "num_frames", num_frames))  # LCI + FM sees one slot whatever T is
        inputs = (torch.rand(1, k, 1, *size, device=device), torch.full((1,), 0.5, device=device))
        kwargs = {}
        if parser.get_parsed_content("variant") == "continuous":
            kwargs = {"frame_times": times[:, :k], "frame_mask": mask[:, :k], "target_time": target_time}
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        out = net(*inputs, **kwargs)
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - before
        kind = "cuda max_memory_allocated growth"
    else:
        try:
            Path("/proc/self/clear_refs").write_text("5")  # reset the peak RSS counter (VmHWM) to the current RSS
        except OSError:
            pass
        before = _current_rss()
        out = net(*inputs, **kwargs)
        peak = _peak_rss() - before
        kind = "peak RSS growth"
    del out
    return {"method": method, "T": int(num_frames), "bytes": int(max(peak, 0)), "kind": kind, "size": list(size)}


def memory_curve(
    bundle: Path, methods: list[str], sizes: list[int], spatial: list[int] | None, flow_channels: int | None = None
) -> list[dict]:
    """Run :func:`measure_forward` for every (method, T) in a fresh interpreter each."""
    points = []
    for method in methods:
        for t in sizes:
            cmd = [sys.executable, __file__, "--bundle", str(bundle), "--measure-forward", f"{method}:{t}"]
            if flow_channels is not None:
                cmd += ["--flow-channels", str(flow_channels)]
            if spatial:
                cmd += ["--spatial-size", ",".join(str(s) for s in spatial)]
            # glibc: serve every allocation >= 64 KiB by mmap and unmap it on free (no adaptive threshold), so that the
            # resident set follows the live tensors and the peak RSS growth measures the pass, not allocator caching
            env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
            proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env)
            if proc.returncode != 0:
                logger.warning("forward memory of %s at T=%d failed:\n%s", method, t, proc.stderr[-2000:])
                continue
            points.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            logger.info("forward memory %s T=%d: %.1f MiB", method, t, points[-1]["bytes"] / 2**20)
    return points


def plot_memory(points: list[dict], path: Path, device: str) -> bool:
    """Plot peak forward memory against T per method; False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib is not installed (pip install -e '.[plot]'): no memory plot")
        return False
    fig, ax = plt.subplots(figsize=(7, 4.5))
    methods = list(dict.fromkeys(p["method"] for p in points))
    for method in methods:
        pts = sorted((p["T"], p["bytes"] / 2**20) for p in points if p["method"] == method)
        ax.plot([p[0] for p in pts], [max(p[1], 1e-2) for p in pts], marker="o", label=method)
    ax.set_xlabel("context frames T")
    ax.set_ylabel("peak memory of one forward pass [MiB]")
    ax.set_yscale("log")
    kind = points[0]["kind"] if points else ""
    size = "x".join(str(s) for s in points[0]["size"]) if points else ""
    ax.set_title(f"one training forward pass, batch 1, {size} voxels\n{kind}; {device}", fontsize=9)
    ax.set_xticks(sorted({p["T"] for p in points}))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


# ------------------------------------------------------------------ tables


def _cell(stats: dict[str, float], factor: float) -> str:
    mean, std = stats["mean"] * factor, stats["std"] * factor
    return f"{mean:.2f} +- {std:.2f}" if math.isfinite(std) else f"{mean:.2f}"


def _mib(value: float | None) -> str:
    return "-" if value is None else f"{value / 2**20:.0f}"


def results_markdown(results: list[dict], info: dict, bundle: Path, epochs: int | None, plot: str | None) -> str:
    """Both tables and the provenance as markdown."""
    lci = results[0]["summary"]["lci"]
    device = results[0]["info"]["device"]
    on_gpu = device.startswith("cuda")
    md = [f"# {bundle.name}: flow methods and direct baselines against LCI", ""]
    md += [f"* command: `{info['command']}`", f"* commit: {info['commit']}", f"* device: {info['device']}"]
    md += [f"* torch {info['torch']}, MONAI {info['monai']}, Python {info['python']}"]
    md += [
        f"* epochs: {epochs if epochs is not None else 'bundle default'}; {results[0].get('eval_split', 'test')} split"
        f" with the bundle's fixed draws ({results[0]['info']['samples']} samples, the same for every method)",
        f"* overrides: `{json.dumps(results[0].get('overrides', {}))}` (flow UNets: `network_def#channels` as in the"
        " compute table's parameter counts)",
        "",
    ]
    md += ["## Forecast quality (CRONOS Table 2 format)", ""]
    md += [
        "Mean +- std over the evaluated samples of one run (the papers report mean +- std over three runs). NRMSE ="
        " RMSE /"
        " (max - min of the target); SSIM 3D x100 and PSNR (data range 1) on the prediction clipped to [0, 1].",
        "",
    ]
    md += ["| model | " + " | ".join(h for _, h, _ in TABLE2) + " |", "|---" * (len(TABLE2) + 1) + "|"]
    md.append("| LCI | " + " | ".join(_cell(lci[k], f) for k, _, f in TABLE2) + " |")
    for r in results:
        if r["method"] == "lci":
            continue
        md.append(f"| {r['method']} | " + " | ".join(_cell(r["summary"]["model"][k], f) for k, _, f in TABLE2) + " |")
    mem = "CUDA max allocated" if on_gpu else "peak RSS"
    md += ["", "## Compute", ""]
    md += [
        f"Peak memory: {mem} of the whole training / evaluation process [MiB]. Forecast time: evaluator forward "
        "time per test sample.",
        "",
    ]
    md += [
        f"| method | parameters | training wall time [s] | training {mem} | evaluation {mem} | forecast [ms/sample] "
        "| NFE | device |",
        "|---" * 8 + "|",
    ]
    for r in results:
        t_train = "-" if r["train_seconds"] is None else f"{r['train_seconds']:.0f}"
        md.append(
            f"| {r['method']} | {r['parameters']:,} | {t_train} | {_mib(_peak_bytes(r['train_memory']))} | "
            f"{_mib(_peak_bytes(r['eval_memory']))} | {1000 * r['info']['seconds_per_forecast']:.1f} | "
            f"{r['info']['nfe_per_forecast']:.0f} | {r['info']['device']} |"
        )
    if plot:
        md += ["", "## Memory of one forward pass against the number of context frames", "", f"![memory]({plot})", ""]
        md += [
            "One training-style forward pass (batch 1, autograd on) at the bundle's volume size, each point in a "
            "fresh process. Flow methods: one velocity evaluation (a forecast makes NFE of them, without autograd);"
            " LCI + FM always sees one frame.",
            "",
        ]
    return "\n".join(md) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", default=str(REPO / "bundles" / "synthetic_forecasting"), help="bundle folder")
    parser.add_argument("--methods", default="all", help="comma-separated overlays of configs/methods, or 'all'")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (default: the bundle's max_epochs)")
    parser.add_argument("--work", default=None, help="run folders (default runs/bench_baselines_<bundle>)")
    parser.add_argument("--out", default=str(REPO / "docs" / "results"), help="folder of the tables and the plot")
    parser.add_argument("--context-sizes", default=",".join(map(str, CONTEXT_SIZES)), help="T values of the plot")
    parser.add_argument("--spatial-size", default=None, help="D,H,W of the memory plot (default: the bundle's)")
    parser.add_argument("--skip-memory-plot", action="store_true", help="no forward-memory measurements")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeat)")
    parser.add_argument("--flow-channels", type=int, default=None, help="base width of the flow UNets")
    parser.add_argument("--rerun", action="store_true", help="run methods again even when result.json exists")
    parser.add_argument("--measure-forward", default=None, help=argparse.SUPPRESS)  # internal: METHOD:T
    args = parser.parse_args()
    bundle = Path(args.bundle).resolve()
    spatial = [int(s) for s in args.spatial_size.split(",")] if args.spatial_size else None
    common = _parse_sets(args.set)

    if args.measure_forward:  # worker mode: one measurement, JSON on stdout
        method, t = args.measure_forward.rsplit(":", 1)
        overrides = method_overrides(bundle, method, {}, args.flow_channels)
        print(json.dumps(measure_forward(bundle, method, int(t), spatial, overrides)))  # noqa: T201
        return

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    methods = _methods(bundle, args.methods)
    name = bundle.name.replace("_forecasting", "")
    work = Path(args.work or REPO / "runs" / f"bench_baselines_{name}").resolve()
    out = Path(args.out).resolve()
    work.mkdir(parents=True, exist_ok=True)
    info = provenance()
    t0 = time.perf_counter()
    results = []
    for method in methods:
        done = work / method / "result.json"
        if done.is_file() and not args.rerun:
            logger.info("%s: finished earlier, reading %s", method, done)
            results.append(json.loads(done.read_text()))
            continue
        results.append(
            run_method(bundle, method, work, args.epochs, method_overrides(bundle, method, common, args.flow_channels))
        )
    lci_means = {json.dumps(r["summary"]["lci"]["nrmse"]["mean"]) for r in results}
    if len(lci_means) != 1:
        logger.warning("LCI differs between methods (%s): the runs did not share the test draws", lci_means)

    points: list[dict] = []
    plot_name = None
    if not args.skip_memory_plot:
        sizes = [int(s) for s in args.context_sizes.split(",")]
        points = memory_curve(bundle, methods, sizes, spatial, args.flow_channels)
        png = out / f"baselines_{name}_memory.png"
        if points and plot_memory(points, png, results[0]["info"]["device"]):
            plot_name = png.name
    md = results_markdown(results, info, bundle, args.epochs, plot_name)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / f"baselines_{name}.md", md, overwrite=True)
    record = {"provenance": info, "epochs": args.epochs, "results": results, "forward_memory": points}
    atomic_write_text(out / f"baselines_{name}.json", json.dumps(record, indent=1, default=float), overwrite=True)
    logger.info("done in %.0f s: %s", time.perf_counter() - t0, out / f"baselines_{name}.md")
    print(md)  # noqa: T201  (benchmark script output)


if __name__ == "__main__":
    main()
