# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""Data-pipeline throughput of a bundle's training loader: can it keep a GPU fed?

Builds ``train#dataloader`` of a bundle's ``train.yaml`` with MONAI's config parser, once per setting, and times full
passes over it (no network): plain ``Dataset`` (every transform every epoch) against the bundle's ``CacheDataset``
(deterministic loading/resampling cached, random context draws still per epoch), with 0 or more worker processes,
pinned memory and persistent workers. The first pass with persistent workers includes their start; the table reports
the median of the later passes. Compare the batches per second with the training steps per second of
``docs/results/speed_gpu_switches.md``: a loader slower than the step starves the GPU.

    python benchmarks/data_pipeline.py --bundle bundles/acdc_cine_forecasting \
        --set dataset_dir=../shared/data/acdc_cine --set prepared_dir=runs/acdc_prepared_128 \
        --set "spatial_size=[128,128,32]" --out docs/results/data_pipeline
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from monai.bundle import ConfigParser

from monai_tfm.apps.bundle_loading import bundle_run_files

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import page_header, parse_overrides, provenance, write_results  # noqa: E402

# name -> (dataset class, num_workers, pin_memory, persistent_workers)
SETTINGS = {
    "Dataset, 0 workers": ("Dataset", 0, False, False),
    "CacheDataset, 0 workers (bundle default)": ("CacheDataset", 0, False, False),
    "Dataset, N workers, pinned, persistent": ("Dataset", -1, True, True),
    "CacheDataset, N workers, pinned, persistent": ("CacheDataset", -1, True, True),
}


def measure(config: list[Path], overrides: dict, dataset: str, workers: int, pin: bool, persistent: bool, passes: int):
    """Time ``passes`` full passes over the bundle's training loader with one setting.

    Args:
        config: the config files of the bundle's training (:func:`~monai_tfm.apps.bundle_loading.bundle_run_files`).
        overrides: config ids and values (``dataset_dir``, ``spatial_size``, ...).
        dataset: ``Dataset`` or ``CacheDataset``.
        workers: loader worker processes.
        pin: pinned host memory.
        persistent: keep the workers between passes.
        passes: timed passes (at least 2).

    Returns:
        dict with the build time, per-pass times, batches and samples per second (median over passes after the
        first) and the batch shape.
    """
    parser = ConfigParser()
    parser.read_config([str(f) for f in config])
    parser.update(overrides)
    parser["num_workers"] = workers
    parser["pin_memory"] = pin
    parser["persistent_workers"] = persistent
    if dataset == "Dataset":
        parser["train#dataset"] = {"_target_": "Dataset", "data": "@train#data", "transform": "@train#preprocessing"}
    parser.get_parsed_content("train#data")  # the datalist (and a first-use preparation) is not part of the timing
    t0 = time.perf_counter()
    loader = parser.get_parsed_content("train#dataloader")
    build_s = time.perf_counter() - t0
    times, shape, batches, samples = [], None, 0, 0  # shape: of the first batch
    for _ in range(passes):
        batches = samples = 0
        t0 = time.perf_counter()
        for batch in loader:
            batches += 1
            samples += int(batch["target"].shape[0])
            shape = shape or list(batch["context"].shape)
        times.append(time.perf_counter() - t0)
    steady = statistics.median(times[1:]) if len(times) > 1 else times[0]
    return {
        "build_s": build_s,
        "pass_s": times,
        "batches": batches,
        "samples": samples,
        "batches_per_s": batches / steady,
        "samples_per_s": samples / steady,
        "context_shape": shape,
    }


def main() -> None:
    """Parse the command line, measure every setting, write ``<out>.md`` and ``<out>.json``."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", default="bundles/acdc_cine_forecasting")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (JSON value)")
    p.add_argument("--workers", type=int, default=2, help="N of the worker settings")
    p.add_argument("--passes", type=int, default=3)
    p.add_argument("--label", default="")
    p.add_argument("--out", default="docs/results/data_pipeline")
    args = p.parse_args()
    overrides = parse_overrides(p, args.set)
    try:
        config = bundle_run_files(Path(args.bundle))
    except ValueError as e:
        p.error(str(e))
    torch.manual_seed(0)
    rows = []
    for name, (dataset, workers, pin, persistent) in SETTINGS.items():
        n = args.workers if workers < 0 else workers
        row = measure(config, overrides, dataset, n, pin, persistent, args.passes)
        rows.append({"setting": name.replace("N workers", f"{n} workers"), **row})
        _write(args, rows)


def _write(args: argparse.Namespace, rows: list[dict]) -> None:
    prov = provenance()
    lines = [
        *page_header("Data pipeline throughput (training loader, no network)", args.label, prov),
        f"Bundle `{args.bundle}`, its `train#dataloader` (batch shape {rows[0]['context_shape']}); "
        f"{args.passes} passes per setting, median of the passes after the first (the first includes worker start-up).",
        "",
        "| setting | loader build s (incl. caching) | first pass s | batches/s | samples/s |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['setting']} | {r['build_s']:.1f} | {r['pass_s'][0]:.2f} | {r['batches_per_s']:.1f} | "
            f"{r['samples_per_s']:.1f} |"
        )
    write_results(Path(args.out), lines, prov, args, rows)


if __name__ == "__main__":
    main()
