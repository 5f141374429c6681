# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""Evaluation report: per-sample CSV and a markdown summary with the model and LCI side by side (docs/method.md
section 7)."""

from __future__ import annotations

import json
import logging
import platform
import time
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events
from monai.engines.utils import IterationEvents

from monai_tfm.flows.solvers import is_adaptive
from monai_tfm.metrics import FORECAST_METRICS, format_summary_markdown, summarise, write_per_sample_csv
from monai_tfm.utils.io import atomic_write_text, check_outputs_free
from monai_tfm.utils.options import as_bool

__all__ = ["REPORT_FILES", "ForecastReportWriter", "describe_device"]

logger = logging.getLogger(__name__)


def describe_device(device: torch.device | str) -> str:
    """Human-readable name of the device a number was measured on.

    Args:
        device: torch device.

    Returns:
        e.g. ``"cpu (x86_64, 2 threads)"`` or the CUDA device name.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)"


REPORT_FILES = ("per_sample.csv", "summary.md", "summary.json")


class ForecastReportWriter:
    """Write ``per_sample.csv``, ``summary.md`` and ``summary.json`` when an evaluator finishes.

    Reads the rows that :class:`monai_tfm.handlers.ForecastMetrics` leaves in ``engine.state.forecast_rows``, and
    measures the network evaluations (from the inferer's ``last_nfe``) and wall time per forecast.

    Args:
        output_dir: folder of the report.
        overwrite: replace an existing report (otherwise an existing file raises ``FileExistsError``).
        title: heading of the markdown summary.
        metrics: metrics in the summary table.
    """

    def __init__(
        self,
        output_dir: str | Path,
        overwrite: bool = False,
        title: str = "Forecast evaluation",
        metrics: tuple[str, ...] = FORECAST_METRICS,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.overwrite = as_bool(overwrite, "overwrite")
        check_outputs_free(self.output_dir, REPORT_FILES, self.overwrite, "an evaluation report")
        self.title = title
        self.metrics = tuple(metrics)
        self._t0 = 0.0
        self._seconds = 0.0
        self._samples = 0
        self._nfe = 0
        self._batches = 0
        self.summary: dict[str, Any] = {}

    def attach(self, engine: Engine) -> None:
        """Attach to an evaluator.

        Args:
            engine: the evaluator.
        """
        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_STARTED, self._start_clock)
        engine.add_event_handler(IterationEvents.FORWARD_COMPLETED, self._stop_clock)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._write)

    def _reset(self, engine: Engine) -> None:
        self._seconds, self._samples, self._nfe, self._batches = 0.0, 0, 0, 0

    def _start_clock(self, engine: Engine) -> None:
        if engine.state.device is not None and torch.device(engine.state.device).type == "cuda":
            torch.cuda.synchronize(engine.state.device)
        self._t0 = time.perf_counter()

    def _stop_clock(self, engine: Engine) -> None:
        if engine.state.device is not None and torch.device(engine.state.device).type == "cuda":
            torch.cuda.synchronize(engine.state.device)
        self._seconds += time.perf_counter() - self._t0
        self._samples += int(engine.state.output["pred"].shape[0])
        self._nfe += int(getattr(engine.inferer, "last_nfe", 0))
        self._batches += 1

    def _write(self, engine: Engine) -> None:
        rows = getattr(engine.state, "forecast_rows", None)
        if not rows:
            raise RuntimeError("ForecastReportWriter needs ForecastMetrics as the evaluator's key metric.")
        table = summarise(rows, self.metrics, ("model",))
        inferer = engine.inferer
        solver = getattr(inferer, "method", "?")
        steps = getattr(inferer, "steps", None)
        info = {
            "samples": len(rows),
            "solver": solver,
            "steps": None if is_adaptive(solver) else steps,
            "nfe_per_forecast": self._nfe / max(1, self._batches),
            "seconds_per_forecast": self._seconds / max(1, self._samples),
            "device": describe_device(engine.state.device or "cpu"),
        }
        md = [
            f"# {self.title}",
            "",
            f"{info['samples']} samples; solver {solver}"
            + (f" with {steps} steps" if info["steps"] else " (adaptive)")
            + f", {info['nfe_per_forecast']:.1f} network evaluations per forecast,"
            + f" {info['seconds_per_forecast'] * 1000:.1f} ms per forecast on {info['device']}.",
            "",
            "Cells: mean +- std (median) over samples. LCI = last context image. ssim x100; skill = 1 - MSE/MSE_LCI.",
            "",
            format_summary_markdown(table, self.metrics, ("model",)),
        ]
        self.output_dir.mkdir(parents=True, exist_ok=True)
        write_per_sample_csv(rows, self.output_dir / "per_sample.csv", overwrite=self.overwrite)
        atomic_write_text(self.output_dir / "summary.md", "\n".join(md), overwrite=self.overwrite)
        atomic_write_text(
            self.output_dir / "summary.json",
            json.dumps({"info": info, "summary": table}, indent=1, default=float),
            overwrite=self.overwrite,
        )
        self.summary = {"info": info, "table": table}
        logger.info("evaluation report in %s\n%s", self.output_dir, "\n".join(md[2:]))
