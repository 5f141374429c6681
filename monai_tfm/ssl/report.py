# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""Evaluation report of segmentation runs: per-subject CSV, summary JSON and markdown."""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from pathlib import Path
from typing import Any

from ignite.engine import Engine, Events

from monai_tfm.handlers.report import describe_device
from monai_tfm.ssl.metrics import summarise_rows
from monai_tfm.utils.io import atomic_write_text

__all__ = ["SEGMENTATION_COLUMNS", "SegmentationReportWriter"]

logger = logging.getLogger(__name__)

#: columns of the markdown summary (lower is better for hd95 and aspc)
SEGMENTATION_COLUMNS = ("dice", "iou", "hd95", "stcs", "aspc", "stcs_edes", "aspc_edes", "gt_stcs_edes", "gt_aspc_edes")


def _fmt(v: float) -> str:
    return "nan" if v is None or not math.isfinite(v) else f"{v:.4g}"


class SegmentationReportWriter:
    """Write ``per_subject.csv``, ``summary.json`` and ``summary.md`` when an evaluator finishes.

    Reads the rows that :class:`monai_tfm.ssl.LongitudinalSegmentationMetrics` leaves in
    ``engine.state.segmentation_rows``.

    Args:
        output_dir: folder of the report.
        overwrite: replace an existing report (otherwise an existing file raises ``FileExistsError``).
        title: heading of the markdown summary.
        columns: columns of the markdown table.
    """

    def __init__(
        self,
        output_dir: str | Path,
        overwrite: bool = False,
        title: str = "Segmentation evaluation",
        columns: tuple[str, ...] = SEGMENTATION_COLUMNS,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.overwrite = overwrite
        self.title = title
        self.columns = tuple(columns)
        self.summary: dict[str, Any] = {}

    def attach(self, engine: Engine) -> None:
        """Attach to an evaluator.

        Args:
            engine: the evaluator.
        """
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._write)

    def _write(self, engine: Engine) -> None:
        rows = getattr(engine.state, "segmentation_rows", None)
        if not rows:
            raise RuntimeError("SegmentationReportWriter needs LongitudinalSegmentationMetrics as the key metric.")
        table = summarise_rows(rows)
        info = {"subjects": len(rows), "device": describe_device(engine.state.device or "cpu")}
        cols = [c for c in self.columns if c in table]
        md = [
            f"# {self.title}",
            "",
            f"{len(rows)} subjects on {info['device']}. Cells: mean +- std (median). Dice/IoU/HD95 (mm) on the "
            "labelled frames; STCS/ASPC between adjacent predicted timepoints; *_edes between the first and last "
            "labelled frames (gt_*: the same for the ground truth).",
            "",
            "| " + " | ".join(cols) + " |",
            "|" + "---|" * len(cols),
            "| "
            + " | ".join(
                f"{_fmt(table[c]['mean'])} +- {_fmt(table[c]['std'])} ({_fmt(table[c]['median'])})" for c in cols
            )
            + " |",
        ]
        keys: list[str] = []
        for r in rows:
            keys += [k for k in r if k not in keys]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
        self.output_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.output_dir / "per_subject.csv", buf.getvalue(), overwrite=self.overwrite)
        atomic_write_text(
            self.output_dir / "summary.json",
            json.dumps({"info": info, "summary": table}, indent=1, default=float),
            overwrite=self.overwrite,
        )
        atomic_write_text(self.output_dir / "summary.md", "\n".join(md) + "\n", overwrite=self.overwrite)
        self.summary = {"info": info, "table": table}
        logger.info("segmentation report in %s\n%s", self.output_dir, "\n".join(md[4:]))
