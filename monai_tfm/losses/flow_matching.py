# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""Flow-matching loss over the frames that count (docs/method.md section 2)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch.nn.modules.loss import _Loss

from monai_tfm.utils.errors import MonaiTFMError

__all__ = ["DISTANCES", "SAMPLE_REDUCTIONS", "FlowMatchingLoss"]


SAMPLE_REDUCTIONS = ("mean", "log")
DISTANCES = ("squared", "absolute")


class FlowMatchingLoss(_Loss):
    """Squared (or absolute) error of the predicted velocity against ``u = X1 - X0`` over counted frames and voxels.

    MONAI's MSE losses have no per-frame mask over a ``(B, K, ...)`` stack, hence this class. The target is the
    dict produced by :class:`monai_tfm.engines.FlowMatchingPrepareBatch`.

    Two reductions over the batch:

    * ``"mean"`` (default; Lipman et al., eq. 23 of TFM): the squared error averaged over every counted frame and
      voxel of the batch, so samples with much change (a large ``u``) dominate the gradient;
    * ``"log"``: the mean over samples of ``log(MSE_b + eps)``, ``MSE_b`` the sample's error over its counted frames.
      The gradient of a sample is its MSE gradient divided by ``MSE_b + eps``: every sample weighs by its relative
      error, as in the per-sample PSNR (``-10 log10 MSE``) that the evaluation averages, so samples with little
      change (a pause of the heart, a still series) are not drowned by those with much.

    Two distances per voxel: ``"squared"`` (default; the papers) or ``"absolute"`` (L1). An L1 loss no longer
    targets the conditional mean velocity of a stochastic path, but at ``tau = 0`` (most samples with a
    ``tau_zero_prob`` near 1) the loss is a plain image regression, where training with L1 has given a lower squared
    error than training with L2 itself (Zhao et al., *Loss Functions for Image Restoration with Neural Networks*,
    IEEE TCI 2017; Lim et al., EDSR, CVPRW 2017).

    Args:
        sample_reduction: ``"mean"`` or ``"log"`` (see above).
        eps: ``"log"`` only: added to every sample's MSE (bounds the weight of an already perfect sample).
        distance: ``"squared"`` or ``"absolute"`` (see above).

    Raises:
        ValueError: an unknown reduction or distance, or a negative ``eps``.
    """

    def __init__(self, sample_reduction: str = "mean", eps: float = 1e-6, distance: str = "squared") -> None:
        super().__init__()
        if sample_reduction not in SAMPLE_REDUCTIONS:
            raise MonaiTFMError(f"sample_reduction must be one of {SAMPLE_REDUCTIONS}, got {sample_reduction!r}.")
        if distance not in DISTANCES:
            raise MonaiTFMError(f"distance must be one of {DISTANCES}, got {distance!r}.")
        if not eps >= 0:
            raise MonaiTFMError(f"eps must be >= 0, got {eps!r}.")
        self.sample_reduction = sample_reduction
        self.eps = float(eps)
        self.distance = distance

    def forward(self, input: torch.Tensor, target: Mapping[str, torch.Tensor] | torch.Tensor) -> torch.Tensor:
        """Compute the loss.

        Args:
            input: predicted velocity ``(B, K, C, D, H, W)``.
            target: ``{"velocity": u, "weight": (B, K)}`` (optionally ``"scale": (B,)``, a per-sample factor of
                the squared error that does not enter the normaliser, e.g. the end-point weight ``(1 - tau)^2``) or
                a plain velocity tensor (all frames count).

        Returns:
            scalar loss.

        Raises:
            ValueError: shape mismatch or no counted frame in the batch.
        """
        scale = None
        if isinstance(target, Mapping):
            u, w, scale = target["velocity"], target.get("weight"), target.get("scale")
        else:
            u, w = target, None
        if input.shape != u.shape:
            raise MonaiTFMError(f"velocity shape {tuple(input.shape)} differs from target {tuple(u.shape)}.")
        diff = input.float() - u.float()
        per_frame = (diff.pow(2) if self.distance == "squared" else diff.abs()).flatten(2).mean(dim=2)  # (B, K)
        if scale is not None:
            per_frame = per_frame * scale.to(per_frame.dtype).reshape(-1, 1)
        if w is None and self.sample_reduction == "mean":
            return per_frame.mean()
        w = torch.ones_like(per_frame) if w is None else w.to(per_frame.dtype)
        total = w.sum()
        if float(total) <= 0:
            raise MonaiTFMError("no frame counts for the loss in this batch (all weights are zero).")
        if self.sample_reduction == "mean":
            return (per_frame * w).sum() / total
        counted = w.sum(dim=1)  # (B,)
        has = counted > 0
        per_sample = (per_frame * w).sum(dim=1)[has] / counted[has]
        return torch.log(per_sample + self.eps).mean()
