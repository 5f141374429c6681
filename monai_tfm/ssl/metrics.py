# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""Segmentation and longitudinal-consistency metrics (Ren et al., NeurIPS 2022, section 4).

* Dice, IoU and HD95 against the ground truth: MONAI's ``compute_dice``, ``compute_iou`` and
  ``compute_hausdorff_distance(percentile=95)`` (in mm with the image spacing). A structure the prediction misses
  entirely gets the image diagonal as HD95 (MONAI returns NaN there, which would reward missing it).
* STCS (spatiotemporal consistency of segmentation): ``2 |S1 n S2| / (|S1| + |S2|)`` between two predicted
  segmentations of one subject. It is the Dice of two predictions, written out here because it is symmetric in its
  arguments, whereas MONAI's Dice treats its second argument as the ground truth when one mask is empty.
* ASPC (absolute symmetrised percent change): ``100 |V2 - V1| / (0.5 (V1 + V2))`` of the structure volumes.

Both consistency scores are NaN when both masks are empty. For cine MRI the heart moves between timepoints, so,
unlike the registered brain scans of the paper, a perfect model does not reach STCS 1 / ASPC 0: compare methods
with each other and with the ground truth's scores between ED and ES.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine
from ignite.metrics import Metric
from monai.metrics import compute_dice, compute_hausdorff_distance, compute_iou
from monai.networks.utils import one_hot

from monai_tfm.utils.errors import MonaiTFMError
from monai_tfm.utils.options import per_sample_list

__all__ = [
    "LongitudinalSegmentationMetrics",
    "aspc",
    "segmentation_scores",
    "spacing_from_affine",
    "stcs",
    "summarise_rows",
]

logger = logging.getLogger(__name__)


def _check_pair(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    if a.shape != b.shape or a.dim() < 3:
        raise MonaiTFMError(
            f"expected two one-hot masks (B, K, *spatial) of one shape, got {tuple(a.shape)}, {tuple(b.shape)}."
        )
    return a.bool(), b.bool()


def stcs(seg_a: torch.Tensor, seg_b: torch.Tensor) -> torch.Tensor:
    """Spatiotemporal consistency ``2 |A n B| / (|A| + |B|)`` per item and class.

    Args:
        seg_a: one-hot (or boolean) masks ``(B, K, *S)``.
        seg_b: the same of the other timepoint.

    Returns:
        ``(B, K)`` float, NaN where both masks are empty.
    """
    a, b = _check_pair(seg_a, seg_b)
    dims = tuple(range(2, a.dim()))
    inter = (a & b).sum(dims).double()
    total = a.sum(dims).double() + b.sum(dims).double()
    out = 2 * inter / total
    return torch.where(total > 0, out, torch.full_like(out, math.nan)).float()


def aspc(seg_a: torch.Tensor, seg_b: torch.Tensor, voxel_volume: float | torch.Tensor = 1.0) -> torch.Tensor:
    """Absolute symmetrised percent volume change ``100 |V2 - V1| / (0.5 (V1 + V2))`` per item and class.

    The voxel volume cancels; it is accepted for completeness (per item as a ``(B,)`` tensor).

    Args:
        seg_a: one-hot (or boolean) masks ``(B, K, *S)`` of the first timepoint.
        seg_b: the same of the second timepoint.
        voxel_volume: volume of one voxel.

    Returns:
        ``(B, K)`` float, NaN where both volumes are zero.
    """
    a, b = _check_pair(seg_a, seg_b)
    dims = tuple(range(2, a.dim()))
    vv = torch.as_tensor(voxel_volume, dtype=torch.float64).reshape(-1, 1)
    v1 = a.sum(dims).double() * vv
    v2 = b.sum(dims).double() * vv
    mean = 0.5 * (v1 + v2)
    out = 100.0 * (v2 - v1).abs() / mean
    return torch.where(mean > 0, out, torch.full_like(out, math.nan)).float()


def spacing_from_affine(affine: Any) -> list[float]:
    """Voxel spacing (column norms of the 3x3 part) of a voxel-to-world affine.

    Args:
        affine: ``(4, 4)`` array or tensor.

    Returns:
        one spacing per spatial axis.
    """
    a = np.asarray(torch.as_tensor(affine).detach().cpu(), dtype=np.float64)
    n = a.shape[-1] - 1
    return [float(v) for v in np.sqrt((a[:n, :n] ** 2).sum(axis=0))]


def segmentation_scores(
    pred: torch.Tensor, label: torch.Tensor, spacing: Sequence[float] | None = None, include_background: bool = False
) -> dict[str, torch.Tensor]:
    """Dice, IoU and HD95 (MONAI) of one-hot predictions against one-hot labels.

    Args:
        pred: one-hot ``(B, K, *S)``.
        label: one-hot ``(B, K, *S)``.
        spacing: voxel spacing for HD95 (None: voxel units).
        include_background: score the background class too.

    Returns:
        ``{"dice", "iou", "hd95"}``, each ``(B, K')`` (NaN where the ground truth is empty; HD95 of a structure
        present in the ground truth but missing from the prediction is the image diagonal).
    """
    pred, label = torch.as_tensor(pred).float(), torch.as_tensor(label).float()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dice = compute_dice(pred, label, include_background=include_background, ignore_empty=True)
        iou = compute_iou(pred, label, include_background=include_background, ignore_empty=True)
        hd = compute_hausdorff_distance(
            pred, label, include_background=include_background, percentile=95, spacing=spacing
        )
    start = 0 if include_background else 1
    dims = tuple(range(2, pred.dim()))
    gt_present = label[:, start:].sum(dims) > 0
    pred_empty = pred[:, start:].sum(dims) == 0
    sp = np.ones(pred.dim() - 2) if spacing is None else np.asarray(spacing, dtype=np.float64)
    diagonal = float(np.sqrt(((np.asarray(pred.shape[2:]) * sp) ** 2).sum()))
    hd = torch.where(gt_present & pred_empty, torch.full_like(hd, diagonal), hd)
    hd = torch.where(gt_present, hd, torch.full_like(hd, math.nan))
    return {"dice": dice, "iou": iou, "hd95": hd}


def _nanmean(values: Any) -> float:
    arr = np.asarray(values, dtype=np.float64).ravel()
    arr = arr[np.isfinite(arr)]
    return float(arr.mean()) if arr.size else math.nan


def summarise_rows(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> dict[str, dict]:
    """Mean, std (ddof 1), median and count of numeric columns over rows (NaN skipped).

    Args:
        rows: per-subject rows.
        columns: columns to summarise (default every numeric column).

    Returns:
        column -> ``{"mean", "std", "median", "n"}``.
    """
    if not rows:
        return {}
    if columns is None:
        columns = [k for k, v in rows[0].items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    out = {}
    for col in columns:
        arr = np.asarray([r.get(col, math.nan) for r in rows], dtype=np.float64)
        arr = arr[np.isfinite(arr)]
        out[col] = {
            "mean": float(arr.mean()) if arr.size else math.nan,
            "std": float(arr.std(ddof=1)) if arr.size > 1 else math.nan,
            "median": float(np.median(arr)) if arr.size else math.nan,
            "n": int(arr.size),
        }
    return out


class LongitudinalSegmentationMetrics(Metric):
    """Per-subject segmentation and consistency scores of whole predicted series; mean Dice is the value.

    Each evaluated batch holds ``B`` subjects' series (``SeriesPrepareBatch`` flattens them to ``B * N`` frames).
    Per subject (one row):

    * ``dice``, ``iou``, ``hd95`` (and per class ``dice_<name>``, ...): over the labelled frames (ACDC: ED, ES);
    * ``stcs``, ``aspc``: means over the adjacent predicted timepoints ``(j, j + 1)`` and the classes;
    * ``stcs_edes``, ``aspc_edes``: between the predictions of the first and last labelled frames, beside the same
      scores of the ground truth (``gt_stcs_edes``, ``gt_aspc_edes``) as the reference.

    ``completed`` writes ``<prefix>_<column>`` means to ``engine.state.metrics`` and the rows to
    ``engine.state.segmentation_rows``.

    Args:
        num_classes: classes including the background.
        class_names: names of the foreground classes (default ``class1`` ...).
        key: column whose mean is the metric value.
        prefix: prefix of the summary names.
        series_key: batch key of the series (its affine gives the spacing).
        label_key: batch key of the label maps ``(B, N, 1, *S)``.
        mask_key: batch key of the label availability ``(B, N)``.
        use_spacing: HD95 in mm from the image affine (False: voxel units).
        spacing_overrides: subject -> spacing, for images whose header spacing is wrong.
    """

    def __init__(
        self,
        num_classes: int,
        class_names: Sequence[str] | None = None,
        key: str = "dice",
        prefix: str = "val",
        series_key: str = "series",
        label_key: str = "series_label",
        mask_key: str = "series_label_mask",
        use_spacing: bool = True,
        spacing_overrides: Mapping[str, Sequence[float]] | None = None,
    ) -> None:
        self.num_classes = int(num_classes)
        names = list(class_names) if class_names is not None else [f"class{i}" for i in range(1, self.num_classes)]
        if len(names) != self.num_classes - 1:
            raise MonaiTFMError(f"class_names {names} must name the {self.num_classes - 1} foreground classes.")
        self.class_names = names
        self.key = key
        self.prefix = prefix
        self.series_key = series_key
        self.label_key = label_key
        self.mask_key = mask_key
        self.use_spacing = use_spacing
        self.spacing_overrides = {str(k): [float(x) for x in v] for k, v in (spacing_overrides or {}).items()}
        self.rows: list[dict[str, Any]] = []
        super().__init__(output_transform=lambda x: x)

    def reset(self) -> None:
        """Forget the rows of the previous epoch."""
        self.rows = []

    def update(self, output: Any) -> None:
        """Not used: rows are added in :meth:`iteration_completed`, which also needs the batch.

        Args:
            output: ignored.
        """

    def _onehot(self, labels: torch.Tensor) -> torch.Tensor:
        return one_hot(labels.long(), num_classes=self.num_classes, dim=1).bool()

    def score_subject(
        self,
        logits: torch.Tensor,
        label: torch.Tensor | None,
        mask: torch.Tensor | None,
        spacing: Sequence[float] | None,
    ) -> dict[str, float]:
        """Scores of one subject's series.

        Args:
            logits: ``(N, K, *S)`` network outputs.
            label: ``(N, 1, *S)`` label maps (or None).
            mask: ``(N,)`` bool, frames with a label.
            spacing: voxel spacing (or None).

        Returns:
            the row (without the subject id).
        """
        pred = self._onehot(logits.argmax(dim=1, keepdim=True))
        row: dict[str, float] = {}
        fg = slice(1, None)
        if pred.shape[0] >= 2:
            s = stcs(pred[:-1, fg], pred[1:, fg])
            a = aspc(pred[:-1, fg], pred[1:, fg])
            row["stcs"], row["aspc"] = _nanmean(s), _nanmean(a)
        if label is not None and mask is not None and bool(mask.any()):
            idx = torch.nonzero(mask.bool(), as_tuple=False).flatten()
            gt = self._onehot(label[idx])
            scores = segmentation_scores(pred[idx], gt, spacing)
            for name, values in scores.items():
                row[name] = _nanmean(values)
                for c, cname in enumerate(self.class_names):
                    row[f"{name}_{cname}"] = _nanmean(values[:, c])
            if len(idx) >= 2:
                first, last = int(idx[0]), int(idx[-1])
                row["stcs_edes"] = _nanmean(stcs(pred[first : first + 1, fg], pred[last : last + 1, fg]))
                row["aspc_edes"] = _nanmean(aspc(pred[first : first + 1, fg], pred[last : last + 1, fg]))
                row["gt_stcs_edes"] = _nanmean(stcs(gt[:1, fg], gt[-1:, fg]))
                row["gt_aspc_edes"] = _nanmean(aspc(gt[:1, fg], gt[-1:, fg]))
        return row

    def iteration_completed(self, engine: Engine) -> None:
        """Add the rows of one evaluated batch.

        Args:
            engine: the evaluator (``state.output["pred"]`` ``(B * N, K, *S)``; ``state.batch`` the series batch).

        Raises:
            ValueError: when the prediction count is not a multiple of the batch's subjects.
        """
        output, batch = engine.state.output, engine.state.batch
        pred = torch.as_tensor(output["pred"]).detach().float().cpu()
        series = batch[self.series_key]
        b, n = int(series.shape[0]), int(series.shape[1])
        if pred.shape[0] != b * n:
            raise MonaiTFMError(f"expected {b * n} frame predictions ({b} series of {n}), got {pred.shape[0]}.")
        labels = batch.get(self.label_key)
        masks = batch.get(self.mask_key)
        subjects = per_sample_list(batch.get("subject"), b)
        affines = getattr(series, "affine", None)
        for i in range(b):
            subject = subjects[i]
            spacing = None
            if self.use_spacing:
                if subject is not None and str(subject) in self.spacing_overrides:
                    spacing = self.spacing_overrides[str(subject)]
                elif affines is not None:
                    aff = torch.as_tensor(affines)
                    spacing = spacing_from_affine(aff[i] if aff.dim() == 3 else aff)
            label = None if labels is None else torch.as_tensor(labels[i]).cpu()
            mask = None if masks is None else torch.as_tensor(masks[i]).cpu()
            row: dict[str, Any] = {"subject": subject}
            row.update(self.score_subject(pred[i * n : (i + 1) * n], label, mask, spacing))
            self.rows.append(row)

    def summary(self) -> dict[str, float]:
        """Mean of every numeric column over the subjects (NaN skipped).

        Returns:
            column -> mean.
        """
        return {k: v["mean"] for k, v in summarise_rows(self.rows).items()}

    def compute(self) -> float:
        """Mean of ``key``.

        Returns:
            the value.

        Raises:
            RuntimeError: no subject was evaluated, or none had the key column.
        """
        summary = self.summary()
        if self.key not in summary:
            raise RuntimeError(f"LongitudinalSegmentationMetrics: no subject with {self.key!r} was evaluated.")
        return summary[self.key]

    def completed(self, engine: Engine, name: str) -> None:
        """Store the key value under ``name`` and all means under ``<prefix>_<column>``.

        Args:
            engine: the evaluator.
            name: this metric's name.
        """
        summary = self.summary()
        engine.state.metrics[name] = summary.get(self.key, math.nan)
        for col, value in summary.items():
            engine.state.metrics[f"{self.prefix}_{col}"] = value
        engine.state.segmentation_rows = list(self.rows)
        logger.info(
            "%s: %s (%d subjects)",
            self.prefix,
            ", ".join(f"{c}={summary.get(c, math.nan):.4f}" for c in ("dice", "iou", "hd95", "stcs", "aspc")),
            len(self.rows),
        )
