# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""Engine pieces of the direct-prediction baselines (docs/method.md section 8).

The baselines plug into the same MONAI workflow as the flow methods at two points: this prepare-batch (training,
validation, evaluation and inference alike: the network input is the context, the label the target) and
:class:`monai_tfm.inferers.DirectInferer` (one network call). Training uses MONAI's ``SupervisedTrainer`` with
``torch.nn.MSELoss`` (TFM paper eq. 8), the same data pipeline, fixed validation draws and
:class:`monai_tfm.handlers.ForecastMetrics`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from monai.engines import PrepareBatch

from monai_tfm.utils.errors import MonaiTFMError

__all__ = ["DirectPrepareBatch", "require_trainable"]

_KEYS = ("context", "context_time", "context_mask", "target_time")


class DirectPrepareBatch(PrepareBatch):
    """Batch (docs/method.md section 1) -> ``(context, target, (), {"frame_times", "frame_mask", "target_time"})``.

    Times are multiplied by ``time_scale`` (dataset unit to about [0, 1]), as for the flow methods. ``target`` is
    ``None`` when the batch has none (inference).

    Args:
        time_scale: multiplies the context and target times.
    """

    def __init__(self, time_scale: float = 1.0) -> None:
        self.time_scale = float(time_scale)

    def __call__(
        self,
        batchdata: Mapping[str, torch.Tensor],
        device: str | torch.device | None = None,
        non_blocking: bool = False,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor | None, tuple, dict[str, torch.Tensor]]:
        """Build the network inputs of one batch.

        Args:
            batchdata: batch dict (docs/method.md section 1) (``target`` optional).
            device: target device.
            non_blocking: non-blocking copies.
            kwargs: unused (MONAI passes ``to_kwargs``).

        Returns:
            inputs, targets, args, kwargs for MONAI's ``SupervisedTrainer`` / ``SupervisedEvaluator``.

        Raises:
            TypeError: the batch is not a dict.
            KeyError: a required key is missing.
            ValueError: mis-shaped context or target.
        """
        if not isinstance(batchdata, Mapping):
            raise TypeError(f"expected a batch dict with keys {_KEYS}, got {type(batchdata).__name__}.")
        for key in _KEYS:
            if key not in batchdata:
                raise KeyError(f"batch is missing key {key!r}; a forecasting batch needs {_KEYS} (+ 'target').")
        context = torch.as_tensor(batchdata["context"]).as_subclass(torch.Tensor)
        context = context.to(device=device, non_blocking=non_blocking).float()
        if context.ndim != 6:
            raise MonaiTFMError(f"expected context (B, T, C, D, H, W), got {tuple(context.shape)}.")
        target = None
        if "target" in batchdata:
            target = torch.as_tensor(batchdata["target"]).as_subclass(torch.Tensor)
            target = target.to(device=device, non_blocking=non_blocking).float()
            if target.ndim != 5:
                raise MonaiTFMError(f"expected target (B, C, D, H, W), got {tuple(target.shape)}.")
        times = torch.as_tensor(batchdata["context_time"], dtype=torch.float32).to(device) * self.time_scale
        target_time = torch.as_tensor(batchdata["target_time"], dtype=torch.float32).to(device) * self.time_scale
        mask = torch.as_tensor(batchdata["context_mask"]).to(device).bool()
        return context, target, (), {"frame_times": times, "frame_mask": mask, "target_time": target_time.reshape(-1)}


def require_trainable(network: torch.nn.Module, method: str = "this method") -> None:
    """Refuse to train a network without trainable parameters (LCI, linear extrapolation).

    Args:
        network: the network.
        method: method name for the message.

    Raises:
        ValueError: the network has no trainable parameter; the message says to run ``evaluating`` instead.
    """
    if not any(p.requires_grad for p in network.parameters()):
        raise MonaiTFMError(
            f"{method!r} has no trainable parameters: nothing to train: run evaluating, e.g. monai-tfm evaluate "
            f"--bundle BUNDLE --method {method} (no weights file needed)."
        )
