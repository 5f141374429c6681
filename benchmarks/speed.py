# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""Speed harness: training throughput, peak memory, forecast latency/NFE, parameters and FLOPs.

Every setting (variant x context length T) runs in a fresh subprocess so that the CPU peak RSS
(``resource.getrusage``) belongs to that setting alone; on CUDA the peak is ``torch.cuda.max_memory_allocated``.

* discrete: the CRONOS UNet sees the K grid slots (``--grid-slots``, fixed: the grid spans the series), whatever T;
* continuous: it sees the T real frames only, so its cost grows with T (docs/method.md section 4).

Example (the reduced CPU setting of docs/results/speed.md)::

    python benchmarks/speed.py --grid 32 32 8 --channels 16 --context 3 7 11 --steps 3 --warmup 1 \
        --out docs/results/speed

``--switches`` measures each speed switch of the training configs on its own against the plain fp32 / eager /
unfused-AdamW baseline, for one variant and T (each setting in a fresh process), and writes
``<out>_switches.md/json``::

    python benchmarks/speed.py --switches --variant discrete --t 11 --grid 32 32 8 --channels 16 --steps 5
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import page_header, provenance, write_results  # noqa: E402

from monai_tfm.engines import FlowMatchingPrepareBatch, configure_network  # noqa: E402
from monai_tfm.inferers import ForecastInferer  # noqa: E402
from monai_tfm.losses import FlowMatchingLoss
from monai_tfm.networks import CronosUNet  # noqa: E402

SOLVERS = (("euler", 1), ("euler", 5), ("euler", 10), ("dopri5", 0))
# switch name -> worker flags (the config switch it stands for in brackets in the table)
SWITCHES = {
    "baseline (fp32, eager, AdamW for-loop)": [],
    "bf16 autocast [amp]": ["--bf16"],
    "channels-last-3d [channels_last]": ["--channels-last"],
    "activation checkpointing [activation_checkpointing]": ["--activation-checkpointing"],
    "fused AdamW [fused_optimizer]": ["--fused-adamw", "on"],
    "torch.compile [compile]": ["--compile"],
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _batch(b: int, k: int, t_real: int, grid: list[int], device: torch.device) -> dict:
    mask = torch.zeros(b, k, dtype=torch.bool)
    mask[:, :t_real] = True
    return {
        "context": torch.rand(b, k, 1, *grid, device=device),
        "context_time": torch.linspace(0, 0.8, k).repeat(b, 1).to(device),
        "context_mask": mask.to(device),
        "target": torch.rand(b, 1, *grid, device=device),
        "target_time": torch.ones(b, device=device),
        "subject": [f"s{i}" for i in range(b)],
        "draw": torch.zeros(b, dtype=torch.long),
    }


def matmul_peak_tflops(device: torch.device, n: int = 8192, repeats: int = 10) -> float | None:
    """Measured bf16 matrix-product throughput of ``device`` (TFLOP/s), the reference for "fraction of peak".

    Vendor peaks assume clocks and data that a real product rarely reaches; a dense ``n^3`` bf16 product on the
    same device, timed the same way as the training steps, is the achievable ceiling this harness compares with.

    Args:
        device: where to measure; ``None`` is returned on the CPU (no bf16 tensor cores to compare with).
        n: matrix size.
        repeats: timed products (after 3 warm-ups).

    Returns:
        TFLOP/s, or ``None`` on the CPU.
    """
    if device.type != "cuda":
        return None
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    _sync(device)
    return 2 * n**3 * repeats / (time.perf_counter() - t0) / 1e12


def _peak_note(args: argparse.Namespace, rows: list[dict]) -> list[str]:
    """Lines stating the bf16 peaks the achieved FLOP/s are compared with (empty on the CPU)."""
    peak = next((r.get("matmul_peak_tflops") for r in rows if r.get("matmul_peak_tflops")), None)
    if peak is None:
        return []
    lines = [f"bf16 peak for the fraction columns: measured dense 8192^3 bf16 matrix product {peak:.0f} TFLOP/s"]
    if args.spec_peak_tflops:
        lines[0] += f"; vendor dense bf16 peak {args.spec_peak_tflops:g} TFLOP/s (fraction of it in brackets)"
    return [lines[0] + ". FLOPs are counted with `torch.utils.flop_counter` (forward + backward, fp32 run).", ""]


def _fraction(r: dict, args: argparse.Namespace) -> str:
    peak, achieved = r.get("matmul_peak_tflops"), r.get("achieved_flops_per_s")
    if not peak or not achieved:
        return "-"
    text = f"{achieved / 1e12 / peak:.1%}"
    if args.spec_peak_tflops:
        text += f" ({achieved / 1e12 / args.spec_peak_tflops:.1%})"
    return text


def _add_memory(out: dict, device: torch.device) -> None:
    if device.type == "cuda":
        out["peak_memory_MiB"] = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        out["peak_rss_MiB"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(args: argparse.Namespace) -> dict:
    """One setting, measured in this process.

    Args:
        args: parsed command line (``--variant``, ``--t``, ...).

    Returns:
        the measurements.
    """
    device = torch.device(args.device)
    torch.manual_seed(0)
    k = args.grid_slots if args.variant == "discrete" else args.t
    net = CronosUNet(num_frames=k, channels=args.channels, attention=False, time_mode=args.variant)
    net = configure_network(net, device, args.channels_last, args.activation_checkpointing)
    torch.nn.init.normal_(net.out_conv.weight, std=0.01)
    fused = {"auto": device.type == "cuda", "on": True, "off": None}[args.fused_adamw]
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4, fused=fused)
    if args.compile:
        net = torch.compile(net)
    prep, loss_fn = FlowMatchingPrepareBatch(variant=args.variant), FlowMatchingLoss()
    batch = _batch(args.batch, k, min(args.t, k), args.grid, device)

    def step() -> None:
        x, targets, _, kw = prep(batch, device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
            out = net(x, **kw)
        loss = loss_fn(out, targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    t_first = time.perf_counter()
    for _ in range(args.warmup):
        step()
    warmup_s = time.perf_counter() - t_first  # includes compilation with --compile
    if args.compile:
        flops = None  # FlopCounterMode does not see inside compiled graphs
    else:
        with FlopCounterMode(display=False) as fc:
            step()
        flops = fc.get_total_flops()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(args.steps):
        _sync(device)
        t0 = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    if flops is None and args.flops_per_step:
        flops = args.flops_per_step  # counted in the eager run of the same setting
    out = {
        "variant": args.variant,
        "T": args.t,
        "K_network_frames": k,
        "grid": args.grid,
        "channels": args.channels,
        "batch": args.batch,
        "params": sum(p.numel() for p in net.parameters()),
        "train_step_s_median": med,
        "train_samples_per_s": args.batch / med,
        "flops_per_train_step": flops,
        "achieved_flops_per_s": None if flops is None else flops / med,
        "warmup_s": warmup_s,
    }
    if args.skip_forecast:
        out["forecast"] = []
        _add_memory(out, device)
        return _with_peak(out, args, device)
    _add_memory(out, device)
    net.eval()
    prep_f = __import__("monai_tfm.engines", fromlist=["ForecastPrepareBatch"]).ForecastPrepareBatch(args.variant)
    one = {key: (v[:1] if torch.is_tensor(v) or isinstance(v, list) else v) for key, v in batch.items()}
    x0, _, _, kw = prep_f(one, device)
    out["forecast"] = []
    with torch.no_grad():
        ForecastInferer(method="euler", steps=1)(x0, net, **kw)  # warm-up
    for method, steps in SOLVERS:
        if method == "dopri5" and args.dopri5_context is not None and args.t not in args.dopri5_context:
            continue
        inferer = ForecastInferer(method=method, steps=max(steps, 1))
        with torch.no_grad():
            _sync(device)
            t0 = time.perf_counter()
            inferer(x0, net, **kw)
            _sync(device)
        name = f"{method}-{steps}" if steps else method
        out["forecast"].append({"solver": name, "latency_s": time.perf_counter() - t0, "nfe": inferer.last_nfe})
    return _with_peak(out, args, device)


def _with_peak(out: dict, args: argparse.Namespace, device: torch.device) -> dict:
    """Add the measured bf16 peak to a worker's row when the worker was asked directly (``--measure-peak``); run after
    the memory reading, so the matmul's buffers never count as the setting's peak memory."""
    out["matmul_peak_tflops"] = matmul_peak_tflops(device) if args.measure_peak else None
    return out


def _parent_peak(args: argparse.Namespace) -> float | None:
    """The bf16 peak measured once by the parent for all its rows (the workers are started without the flag)."""
    if not args.measure_peak:
        return None
    device = torch.device(args.device)
    peak = matmul_peak_tflops(device)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return peak


def _markdown(prov: dict, args: argparse.Namespace, rows: list[dict]) -> str:
    lines = [
        *page_header("Speed benchmark", args.label, prov),
        f"CRONOS UNet (channels {args.channels}, no attention), grid {'x'.join(map(str, args.grid))}, batch "
        f"{args.batch}, AdamW, fp32{' + bf16 autocast' if args.bf16 else ''}; median of {args.steps} timed steps after "
        f"{args.warmup} warm-up step(s). Discrete: the network sees the {args.grid_slots} grid slots whatever T; "
        "continuous: the T real frames. Peak memory: "
        + ("CUDA max allocated." if args.device.startswith("cuda") else "peak RSS of a fresh process per setting."),
        "",
        *_peak_note(args, rows),
        "| variant | T | network frames | params | train samples/s | step s | peak MiB | GFLOP/step | "
        "GFLOP/s achieved | fraction of bf16 peak |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        mem = r.get("peak_memory_MiB", r.get("peak_rss_MiB"))
        lines.append(
            f"| {r['variant']} | {r['T']} | {r['K_network_frames']} | {r['params']:,} | {r['train_samples_per_s']:.2f} "
            f"| {r['train_step_s_median']:.3f} | {mem:.0f} | {(r['flops_per_train_step'] or 0) / 1e9:.2f} | "
            f"{(r['achieved_flops_per_s'] or 0) / 1e9:.1f} | {_fraction(r, args)} |"
        )
    lines += ["", "Forecast latency per volume (batch 1) and network evaluations (NFE):", ""]
    solvers = [f"{m}-{n}" if n else m for m, n in SOLVERS]
    lines.append("| variant | T | " + " | ".join(f"{s} s (NFE)" for s in solvers) + " |")
    lines.append("|---|---|" + "---|" * len(solvers))
    for r in rows:
        got = {f["solver"]: f for f in r["forecast"]}
        cells = [f"{got[s]['latency_s']:.3f} ({got[s]['nfe']})" if s in got else "not run" for s in solvers]
        lines.append(f"| {r['variant']} | {r['T']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    """Parse the command line; run every setting in a subprocess (or one setting with ``--worker``)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--grid", type=int, nargs=3, default=[128, 128, 32])
    p.add_argument("--channels", type=int, default=32)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--context", type=int, nargs="+", default=[3, 5, 7, 11, 16])
    p.add_argument("--grid-slots", type=int, default=None, help="discrete grid length (default: max of --context)")
    p.add_argument("--variants", nargs="+", default=["discrete", "continuous"])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--dopri5-context", type=int, nargs="+", default=None, help="T values timed with dopri5 (all)")
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--activation-checkpointing", action="store_true")
    p.add_argument("--compile", action="store_true", help="torch.compile the network")
    p.add_argument("--fused-adamw", choices=["auto", "on", "off"], default="auto", help="auto: fused on CUDA only")
    p.add_argument("--skip-forecast", action="store_true", help="training step only")
    p.add_argument("--measure-peak", action="store_true", help="time a bf16 matmul for the fraction-of-peak column")
    p.add_argument("--spec-peak-tflops", type=float, default=None, help="vendor dense bf16 peak, also reported")
    p.add_argument("--flops-per-step", type=float, default=None, help=argparse.SUPPRESS)
    p.add_argument("--switches", action="store_true", help="one row per speed switch (see the module notes)")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds per setting")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--label", default="")
    p.add_argument("--out", default="docs/results/speed")
    p.add_argument("--worker", action="store_true")
    p.add_argument("--variant", default="discrete")
    p.add_argument("--t", type=int, default=11)
    args = p.parse_args()
    args.grid_slots = args.grid_slots or max(args.context)
    if args.worker:
        sys.stdout.write(json.dumps(worker(args)) + "\n")
        return
    if args.switches:
        run_switches(args)
        return
    rows = []
    peak = _parent_peak(args)
    base = [a for a in sys.argv[1:] if a not in ("--worker", "--measure-peak")]
    for variant in args.variants:
        for t in args.context:
            cmd = [sys.executable, __file__, *base, "--worker", "--variant", variant, "--t", str(t)]
            cmd += ["--grid-slots", str(args.grid_slots)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"{variant} T={t} failed:\n{proc.stderr[-3000:]}")
            rows.append({**json.loads(proc.stdout.strip().splitlines()[-1]), "matmul_peak_tflops": peak})
            _write(args, rows)  # after every setting, so an interrupted run keeps what it measured


def run_switches(args: argparse.Namespace) -> None:
    """Each speed switch alone against the baseline, each in a fresh process; writes ``<out>_switches.md/json``.

    Args:
        args: parsed command line (``--variant``, ``--t``, grid, channels, batch, steps, warm-up, device).
    """
    peak = _parent_peak(args)
    base = [a for a in sys.argv[1:] if a not in ("--switches", "--measure-peak")]
    common = [*base, "--worker", "--skip-forecast", "--fused-adamw", "off", "--grid-slots", str(args.grid_slots)]
    rows: list[dict] = []
    for name, flags in SWITCHES.items():
        cmd = [sys.executable, __file__, *common, *flags]
        if "--compile" in flags and rows and rows[0].get("flops_per_train_step"):
            # FlopCounterMode cannot see inside a compiled graph: the same model does the eager baseline's FLOPs
            cmd += ["--flops-per-step", str(rows[0]["flops_per_train_step"])]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
            ok = proc.returncode == 0
            result = json.loads(proc.stdout.strip().splitlines()[-1]) if ok else {"error": proc.stderr[-400:]}
        except subprocess.TimeoutExpired:
            result = {"error": f"timed out after {args.timeout:g} s"}
        rows.append({"switch": name, **result, "matmul_peak_tflops": peak})
        _write_switches(args, rows)


def _write_switches(args: argparse.Namespace, rows: list[dict]) -> None:
    prov = provenance()
    out = Path(str(args.out) + "_switches")
    base = next((r for r in rows if "error" not in r and r["switch"].startswith("baseline")), None)
    lines = [
        *page_header("Speed switches, one at a time", args.label, prov),
        f"{args.variant} CRONOS UNet (channels {args.channels}, no attention), T = {args.t}, grid "
        f"{'x'.join(map(str, args.grid))}, batch {args.batch}; training step = forward + flow-matching loss + "
        f"backward + AdamW step; median of {args.steps} timed steps after {args.warmup} warm-up step(s); every row "
        "in a fresh process. Peak memory: "
        + (
            "CUDA max allocated."
            if args.device.startswith("cuda")
            else "peak RSS of the process (includes the ~0.5 GB" " Python/torch baseline)."
        ),
        "",
        *_peak_note(args, rows),
        "| switch [config id] | step s | samples/s | vs baseline | peak MiB | warm-up s | TFLOP/s achieved | "
        "fraction of bf16 peak |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['switch']} | failed: {' '.join(r['error'].split())[-160:]} | | | | | | |")
            continue
        mem = r.get("peak_memory_MiB", r.get("peak_rss_MiB"))
        speed = "1.00x" if base is None else f"{base['train_step_s_median'] / r['train_step_s_median']:.2f}x"
        lines.append(
            f"| {r['switch']} | {r['train_step_s_median']:.3f} | {r['train_samples_per_s']:.2f} | {speed} | {mem:.0f} "
            f"| {r['warmup_s']:.1f} | {(r['achieved_flops_per_s'] or 0) / 1e12:.2f} | {_fraction(r, args)} |"
        )
    write_results(out, lines, prov, args, rows)


def _write(args: argparse.Namespace, rows: list[dict]) -> None:
    prov = provenance()
    write_results(Path(args.out), _markdown(prov, args, rows).splitlines(), prov, args, rows)


if __name__ == "__main__":
    main()
