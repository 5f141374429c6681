# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""Validation/evaluation metric of forecasts: model and LCI side by side, per sample (docs/method.md section 7).

An ignite ``Metric`` (so that MONAI's evaluator can use it as its key metric) that also needs the batch
metadata (subject, draw, target time) and the context: ignite's ``output_transform`` only sees the engine
output, so :meth:`ForecastMetrics.iteration_completed` reads ``engine.state.batch`` as well.

In a multi-process (DDP) run every rank evaluates its share of the samples; at the end of the epoch the rows are
gathered from all ranks and the duplicates that ``DistributedSampler`` adds as padding are dropped by
``(subject, draw)``, so every rank reports the same means over the whole validation set.

LCI's metrics depend only on the sample, and the validation samples are the same fixed draws at every epoch, so they
are computed once per sample and reused (keyed by subject, draw, target time and a checksum of target and LCI, so a
changed sample is never served a stale row).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine
from ignite.metrics import Metric

from monai_tfm.flows.path import last_context_image
from monai_tfm.metrics import compute_forecast_metrics_batch
from monai_tfm.utils.distributed import gather_rows
from monai_tfm.utils.options import per_sample_list

__all__ = ["ForecastMetrics", "last_context_image"]  # last_context_image lives in monai_tfm.flows.path

logger = logging.getLogger(__name__)


def _row_key(row: dict[str, Any]) -> tuple | None:
    """Identity of a per-sample row for dropping the sampler's padding repeats (``None``: never dropped)."""
    if row.get("subject") is None or row.get("draw") is None:
        return None
    return (str(row["subject"]), int(row["draw"]))


class ForecastMetrics(Metric):
    """Per-sample forecast metrics of the model and of LCI; the mean of ``key`` (model) is the metric value.

    ``completed`` also writes ``<prefix>_<method>_<metric>`` means into ``engine.state.metrics`` (e.g.
    ``val_model_psnr``, ``val_lci_psnr``) and keeps the per-sample rows in ``self.rows``. In a distributed run,
    ``completed`` first replaces ``self.rows`` by the rows of all ranks (see the module notes).

    Args:
        key: metric whose model mean is the value of this metric (``nrmse``, ``psnr``, ``ssim``, ...).
        prefix: prefix of the summary names written into ``engine.state.metrics``.
        clip: clip forecasts to [0, 1] before all metrics (the data are on the [0, 1] scale).
    """

    def __init__(self, key: str = "nrmse", prefix: str = "val", clip: bool = False) -> None:
        self.key = key
        self.prefix = prefix
        self.clip = clip
        self.rows: list[dict[str, Any]] = []
        self._lci_cache: dict[tuple, dict[str, float]] = {}
        super().__init__(output_transform=lambda x: x)

    def reset(self) -> None:
        """Forget the rows of the previous epoch."""
        self.rows = []

    def update(self, output: Sequence[torch.Tensor]) -> None:
        """Not used: rows are added in :meth:`iteration_completed`, which also needs the batch.

        Args:
            output: ignored.
        """

    def iteration_completed(self, engine: Engine) -> None:
        """Add the rows of one evaluated batch.

        Args:
            engine: the evaluator (``state.output`` holds ``pred`` and ``label``; ``state.batch`` the batch).
        """
        output, batch = engine.state.output, engine.state.batch
        pred = torch.as_tensor(output["pred"]).detach().float().cpu()
        target = torch.as_tensor(batch["target"]).detach().float().cpu()
        lci = last_context_image(batch["context"], batch["context_mask"]).detach().float().cpu()
        if self.clip:
            pred = pred.clamp(0, 1)
        n = pred.shape[0]
        subjects = per_sample_list(batch.get("subject"), n)
        draws = per_sample_list(batch.get("draw"), n)
        times = per_sample_list(batch.get("target_time"), n)
        model_rows = compute_forecast_metrics_batch(pred, target, lci)
        lci_rows = self._lci_rows(target, lci, subjects, draws, times)
        for i in range(n):
            row: dict[str, Any] = {"subject": subjects[i], "draw": draws[i], "target_time": times[i]}
            row.update({f"model_{k}": v for k, v in model_rows[i].items()})
            row.update({f"lci_{k}": v for k, v in lci_rows[i].items()})
            self.rows.append(row)

    def _lci_rows(
        self, target: torch.Tensor, lci: torch.Tensor, subjects: list, draws: list, times: list
    ) -> list[dict[str, float]]:
        """LCI's metric rows of a batch, computed only for the samples not seen before (see the module notes)."""
        keys: list[tuple | None] = []
        for i in range(target.shape[0]):
            if subjects[i] is None or draws[i] is None:
                keys.append(None)  # no identity: never cached
                continue
            t, c = target[i].double(), lci[i].double()
            checksum = (float(t.sum()), float((t * t).sum()), float(c.sum()), float((c * c).sum()))
            keys.append((str(subjects[i]), int(draws[i]), times[i], checksum))
        missing = [i for i, k in enumerate(keys) if k is None or k not in self._lci_cache]
        fresh = compute_forecast_metrics_batch(lci[missing], target[missing], lci[missing]) if missing else []
        computed = dict(zip(missing, fresh))
        for i, row in computed.items():
            if keys[i] is not None:
                self._lci_cache[keys[i]] = row
        return [dict(computed[i]) if i in computed else dict(self._lci_cache[keys[i]]) for i in range(len(keys))]

    def summary(self) -> dict[str, float]:
        """Mean of every ``<method>_<metric>`` column over the rows (NaN entries ignored).

        Returns:
            dict of means.
        """
        if not self.rows:
            return {}
        out = {}
        for col in self.rows[0]:
            if col.startswith(("model_", "lci_")):
                vals = np.asarray([r[col] for r in self.rows], dtype=np.float64)
                finite = vals[np.isfinite(vals)]
                out[col] = float(finite.mean()) if finite.size else math.nan
        return out

    def compute(self) -> float:
        """Model mean of ``key``.

        Returns:
            the value.

        Raises:
            RuntimeError: no sample was evaluated.
        """
        if not self.rows:
            raise RuntimeError("ForecastMetrics: no sample was evaluated (empty validation set?).")
        return self.summary()[f"model_{self.key}"]

    def completed(self, engine: Engine, name: str) -> None:
        """Store the key value under ``name`` and all summary means under ``<prefix>_<column>``.

        Args:
            engine: the evaluator.
            name: this metric's name.
        """
        self.rows = gather_rows(self.rows, key=_row_key)
        summary = self.summary()
        engine.state.metrics[name] = summary[f"model_{self.key}"]
        for col, value in summary.items():
            engine.state.metrics[f"{self.prefix}_{col}"] = value
        engine.state.forecast_rows = list(self.rows)
        logger.info(
            "%s: model %s, LCI %s (%d samples)",
            self.prefix,
            ", ".join(f"{m}={summary.get(f'model_{m}', math.nan):.4f}" for m in ("nrmse", "psnr", "ssim")),
            ", ".join(f"{m}={summary.get(f'lci_{m}', math.nan):.4f}" for m in ("nrmse", "psnr", "ssim")),
            len(self.rows),
        )
