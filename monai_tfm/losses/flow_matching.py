# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""Flow-matching loss over the frames that count (docs/method.md section 2)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch.nn.modules.loss import _Loss

from monai_tfm.utils.errors import MonaiTFMError

__all__ = ["FlowMatchingLoss"]


class FlowMatchingLoss(_Loss):
    """Mean squared error of the predicted velocity against ``u = X1 - X0`` over counted frames and all voxels.

    MONAI's MSE losses have no per-frame mask over a ``(B, K, ...)`` stack, hence this class. The target is the
    dict produced by :class:`monai_tfm.engines.FlowMatchingPrepareBatch`.
    """

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
        per_frame = (input.float() - u.float()).pow(2).flatten(2).mean(dim=2)  # (B, K)
        if scale is not None:
            per_frame = per_frame * scale.to(per_frame.dtype).reshape(-1, 1)
        if w is None:
            return per_frame.mean()
        w = w.to(per_frame.dtype)
        total = w.sum()
        if float(total) <= 0:
            raise MonaiTFMError("no frame counts for the loss in this batch (all weights are zero).")
        return (per_frame * w).sum() / total
