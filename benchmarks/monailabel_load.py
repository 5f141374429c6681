# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""MONAI Label under load: latency and throughput of forecast requests from 1, 4 and 20 concurrent clients.

Starts this package's MONAI Label app on 127.0.0.1 (``monai_tfm.apps.monailabel.local_server``) with a copy of the
synthetic bundle (its freshly built network; the bundle's own solver and aggregation, so every request does the
bundle's real work) and one phantom series, then for each concurrency ``c`` lets ``c`` client threads send requests
back to back until ``--requests`` answers per level are in. Latency: from sending a request to its full answer (p50,
p95, max); throughput: answers per second over the level; plus the time of ``GET /info/`` while the level runs.
Needs the ``monailabel`` extra.

    python benchmarks/monailabel_load.py --out docs/results/monailabel_load
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import REPO, page_header, provenance, write_results

from monai_tfm.apps.monailabel.local_server import demo_study, http_request, local_server


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def run_level(server, clients: int, requests: int, params: dict) -> dict:
    """``requests`` forecasts from ``clients`` threads; latencies, throughput and /info/ times."""
    latencies: list[float] = []
    statuses: list[int] = []
    lock = threading.Lock()
    sent = iter(range(requests))

    def client() -> None:
        while True:
            with lock:
                if next(sent, None) is None:
                    return
            t0 = time.monotonic()
            status, _ = server.infer("p1_t3", params, output="json")
            with lock:
                latencies.append(time.monotonic() - t0)
                statuses.append(status)

    info = []
    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        jobs = [pool.submit(client) for _ in range(clients)]
        while not all(j.done() for j in jobs):
            t0 = time.monotonic()
            http_request(f"{server.url}/info/", timeout=60)
            info.append(time.monotonic() - t0)
            time.sleep(0.5)
        for j in jobs:
            j.result()
    wall = time.monotonic() - start
    return {
        "clients": clients,
        "requests": len(latencies),
        "ok": sum(s == 200 for s in statuses),
        "p50_s": statistics.median(latencies),
        "p95_s": _percentile(latencies, 95),
        "max_s": max(latencies),
        "throughput_per_s": len(latencies) / wall,
        "info_max_s": max(info) if info else float("nan"),
        "wall_s": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", default="1,4,20", help="concurrency levels")
    parser.add_argument("--requests", type=int, default=40, help="answers per level")
    parser.add_argument("--workers", type=int, default=None, help="the app's worker pool (default: its own)")
    parser.add_argument("--threads", type=int, default=2, help="torch/OpenMP threads of the server")
    parser.add_argument("--steps", type=int, default=None, help="solver steps per forecast (default: the bundle's)")
    parser.add_argument("--out", default=str(REPO / "docs" / "results" / "monailabel_load"))
    args = parser.parse_args()
    prov = provenance()
    params = {"target_time": 0.5, **({"steps": args.steps} if args.steps else {})}
    rows = []
    with tempfile.TemporaryDirectory(prefix="monailabel_load_") as tmp:
        bundle, studies, _ = demo_study(tmp, REPO / "bundles" / "synthetic_forecasting", num_scans=6)
        conf = {"bundle": str(bundle), "device": "cpu", **({"workers": str(args.workers)} if args.workers else {})}
        with local_server(Path(tmp) / "server", studies, conf, threads=args.threads) as server:
            run_level(server, 1, 3, params)  # warm-up: the forecaster of each worker is built on first use
            for c in (int(v) for v in args.clients.split(",")):
                rows.append(run_level(server, c, max(args.requests, c), params))
                print(rows[-1])  # noqa: T201  (benchmark script output)
            workers_line = next(
                (line for line in server.log.read_text().splitlines() if "worker(s), off the server's" in line), ""
            )
    lines = page_header(
        "MONAI Label under load",
        f"CPU, {args.threads} torch threads in the server; synthetic bundle (16 x 14 x 6 phantom, 11 slots)",
        prov,
    )
    lines += [
        "One phantom series of 6 scans; every request forecasts t = 0.5 with the bundle's solver"
        + (f" at {args.steps} steps" if args.steps else "")
        + f". Server: {workers_line.split(' - ')[-1].strip() or 'see the log'}. Clients on the same machine "
        "(127.0.0.1), each sending its next request when the last is answered.",
        "",
        "| clients | answers | ok | p50 latency (s) | p95 (s) | max (s) | throughput (answers/s) | /info/ max (s) |",
        "|---|---|---|---|---|---|---|---|",
        *[
            f"| {r['clients']} | {r['requests']} | {r['ok']} | {r['p50_s']:.3f} | {r['p95_s']:.3f} | {r['max_s']:.3f} "
            f"| {r['throughput_per_s']:.2f} | {r['info_max_s']:.3f} |"
            for r in rows
        ],
        "",
    ]
    write_results(Path(args.out), lines, prov, args, rows)
    print("\n".join(lines))  # noqa: T201


if __name__ == "__main__":
    main()
