# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""Where a CPU training step of the ACDC bundle goes: data, network, optimiser, handlers.

Builds the bundle's ``train#trainer`` with MONAI's config parser (the ACDC bundle and a method overlay, any
``--set id=value`` overrides), runs a few hundred optimiser steps and reports

* ignite's :class:`~ignite.handlers.BasicTimeProfiler`: time per iteration in the data loader ("dataflow"), in the
  iteration function (prepare-batch, forward, loss, backward, optimiser step: "processing") and in every event's
  handlers (checkpointing, lr schedule, gradient clipping, progress bar, TensorBoard, ...);
* :mod:`torch.profiler` over a window of steps: the operators with the most self CPU time.

    OMP_NUM_THREADS=2 python benchmarks/profile_train_step.py --set dataset_dir=../shared/data/acdc_cine \
        --set prepared_dir=runs/bench_acdc_main/prepared_64x64x8 --set "spatial_size=[64,64,8]" \
        --set network_def#channels=16 --set batch_size=2 --out docs/results/profile_train_step
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import torch
from ignite.engine import Events
from ignite.handlers import BasicTimeProfiler
from monai.bundle import ConfigParser

from monai_tfm.apps.bundle_loading import bundle_run_files

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import REPO, page_header, parse_overrides, provenance, write_results  # noqa: E402

CONFIGS = REPO / "bundles" / "acdc_cine_forecasting" / "configs"


def build_trainer(method: str, overrides: dict, output_dir: str):
    """The bundle's trainer with ``overrides`` (validation pushed beyond the run, output in ``output_dir``)."""
    parser = ConfigParser()
    parser.read_config([str(f) for f in bundle_run_files(CONFIGS.parent, "train", method)])
    for key, value in {**overrides, "output_dir": output_dir, "val_interval": 10**6}.items():
        parser[key] = value
    parser.get_parsed_content("initialize")  # determinism + logging, as a bundle run does
    return parser.get_parsed_content("train#trainer"), parser


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--method", default="cronos_discrete")
    parser.add_argument("--set", action="append", default=[], help="bundle override id=value (JSON values)")
    parser.add_argument("--steps", type=int, default=200, help="optimiser steps timed by ignite's profiler")
    parser.add_argument("--warmup", type=int, default=20, help="steps before the torch.profiler window")
    parser.add_argument("--window", type=int, default=10, help="steps recorded by torch.profiler")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--label", default="")
    parser.add_argument("--out", default=str(REPO / "docs" / "results" / "profile_train_step"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    overrides = parse_overrides(parser, args.set)
    overrides["max_steps"] = args.steps
    info = provenance()
    info["command"] = "python " + " ".join(sys.argv)
    info["device"] = f"cpu: {os.uname().machine}, {args.threads} threads"

    with tempfile.TemporaryDirectory() as tmp:
        trainer, cfg = build_trainer(args.method, overrides, tmp)
        profiler = BasicTimeProfiler()
        profiler.attach(trainer)
        torch_prof = torch.profiler.profile(
            activities=[torch.profiler.ProfilerActivity.CPU],
            schedule=torch.profiler.schedule(wait=args.warmup, warmup=2, active=args.window, repeat=1),
        )
        torch_prof.start()
        trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda _: torch_prof.step())
        trainer.run()
        torch_prof.stop()
        results = profiler.get_results()
        batch_size = cfg.get_parsed_content("batch_size")

    names = results["event_handlers_names"]
    rows = []
    for key in ("dataflow_stats", "processing_stats"):
        st = results[key]
        rows.append(
            {"part": key.replace("_stats", ""), "total_s": float(st["total"]), "mean_ms": 1000 * float(st["mean"])}
        )
    for event, st in results["event_handlers_stats"].items():
        if event == "total_time" or isinstance(st["total"], str):  # "not yet triggered"
            continue
        handlers = ", ".join(str(n) for n in names.get(f"{event}_names", []))
        mean = float(st.get("mean", st["total"]))  # one call: ignite gives only the total
        rows.append({"part": f"{event} handlers ({handlers})", "total_s": float(st["total"]), "mean_ms": 1000 * mean})
    total = sum(r["total_s"] for r in rows)
    averages = torch_prof.key_averages()
    ops = sorted(averages, key=lambda e: e.self_cpu_time_total, reverse=True)[:15]
    op_total = sum(e.self_cpu_time_total for e in averages)
    op_rows = [
        {
            "op": e.key,
            "calls_per_step": e.count / args.window,
            "self_ms_per_step": e.self_cpu_time_total / 1000 / args.window,
            "share": e.self_cpu_time_total / op_total,
        }
        for e in ops
    ]
    lines = page_header("Where a CPU training step goes (ACDC bundle)", args.label, info)
    lines += [
        f"Method `{args.method}`, batch {batch_size}, {args.steps} optimiser steps; overrides: "
        + ", ".join(f"`{k}={v}`" for k, v in overrides.items()),
        "",
        "## ignite BasicTimeProfiler (whole run)",
        "",
        "| part | total s | mean ms per event | share |",
        "|---|---|---|---|",
    ]
    lines += [f"| {r['part']} | {r['total_s']:.2f} | {r['mean_ms']:.2f} | {r['total_s'] / total:.1%} |" for r in rows]
    lines += [
        "",
        f"## torch.profiler: top operators by self CPU time ({args.window} steps after {args.warmup + 2})",
        "",
        "| operator | calls per step | self ms per step | share of all operator time |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| `{r['op']}` | {r['calls_per_step']:.0f} | {r['self_ms_per_step']:.1f} | {r['share']:.1%} |" for r in op_rows
    ]
    write_results(Path(args.out), lines, info, args, rows + op_rows)
    print("\n".join(lines))  # noqa: T201  (benchmark script output)


if __name__ == "__main__":
    main()
