# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""Prepare-batch callables that turn a SPEC batch into MONAI engine inputs (SPEC section 11).

* :class:`FlowMatchingPrepareBatch` (training): draws ``tau``, builds ``X_tau`` and the target velocity, and
  returns the keyword arguments of the velocity network.
* :class:`ForecastPrepareBatch` (validation, test, inference): returns the context stack ``X0`` and the keyword
  arguments of :class:`monai_tfm.inferers.ForecastInferer`.

Both follow MONAI's ``PrepareBatch`` protocol: ``(inputs, targets, args, kwargs)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from monai.engines import PrepareBatch

from monai_tfm.flows.path import broadcast_target, flowed_times, interpolate, sample_tau, target_velocity, tie_padding

__all__ = ["VARIANTS", "FlowMatchingPrepareBatch", "ForecastPrepareBatch", "counted_frames"]

VARIANTS = ("discrete", "continuous")
REQUIRED_KEYS = ("context", "context_time", "context_mask", "target", "target_time")


def _check_variant(variant: str) -> str:
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}.")
    return variant


def _get(batch: Mapping, key: str) -> Any:
    if key not in batch:
        raise KeyError(f"batch is missing key {key!r}; a forecasting batch needs {REQUIRED_KEYS}.")
    return batch[key]


def counted_frames(context_mask: torch.Tensor, variant: str, loss_frames: str = "all") -> torch.Tensor:
    """The frames that count for the loss and the aggregation (SPEC sections 3.4 and 4.1).

    Args:
        context_mask: ``(B, K)`` bool, real frames (discrete: occupied slots).
        variant: ``"discrete"`` or ``"continuous"``.
        loss_frames: discrete only: ``"all"`` K slots (paper default) or ``"real"`` occupied slots (ablation).
            The continuous variant always counts real frames (padding never counts).

    Returns:
        ``(B, K)`` bool.

    Raises:
        ValueError: unknown option.
    """
    if loss_frames not in ("all", "real"):
        raise ValueError(f"loss_frames must be 'all' or 'real', got {loss_frames!r}.")
    mask = context_mask.bool()
    if _check_variant(variant) == "continuous" or loss_frames == "real":
        return mask
    return torch.ones_like(mask)


class _FlowBatchBase(PrepareBatch):
    def __init__(self, variant: str = "discrete", time_scale: float = 1.0, loss_frames: str = "all") -> None:
        self.variant = _check_variant(variant)
        self.time_scale = float(time_scale)
        counted_frames(torch.ones(1, 1, dtype=torch.bool), variant, loss_frames)  # validates the option
        self.loss_frames = loss_frames

    def _unpack(self, batchdata: Mapping, device, non_blocking: bool):
        if not isinstance(batchdata, Mapping):
            raise TypeError(f"expected a batch dict with keys {REQUIRED_KEYS}, got {type(batchdata).__name__}.")
        x0 = torch.as_tensor(_get(batchdata, "context")).to(device=device, non_blocking=non_blocking)
        target = torch.as_tensor(_get(batchdata, "target")).to(device=device, non_blocking=non_blocking)
        ctx_t = torch.as_tensor(_get(batchdata, "context_time"), dtype=torch.float32).to(device) * self.time_scale
        tgt_t = torch.as_tensor(_get(batchdata, "target_time"), dtype=torch.float32).to(device) * self.time_scale
        mask = torch.as_tensor(_get(batchdata, "context_mask")).to(device).bool()
        if x0.ndim != 6 or target.ndim != 5:
            raise ValueError(
                f"expected context (B, T, C, D, H, W) and target (B, C, D, H, W), got {tuple(x0.shape)} and "
                f"{tuple(target.shape)}."
            )
        return x0.as_subclass(torch.Tensor).float(), target.as_subclass(torch.Tensor).float(), ctx_t, tgt_t, mask


class FlowMatchingPrepareBatch(_FlowBatchBase):
    """Training batch of the sequence-to-image flow (SPEC section 2).

    Returns ``(X_tau, {"velocity": u, "weight": w}, (), net_kwargs)`` where ``w`` ``(B, K)`` marks the frames
    that count; use it with :class:`monai_tfm.engines.FlowMatchingLoss`.

    Args:
        variant: ``"discrete"`` (time only through slot and ``tau``) or ``"continuous"`` (flowed frame times).
        sigma: path noise (0: deterministic straight path).
        sigma_schedule: ``"constant"`` or ``"bridge"``.
        time_scale: multiplies all times (dataset unit to about [0, 1]).
        loss_frames: discrete variant: ``"all"`` slots or ``"real"`` (occupied) slots.
        generator: optional torch generator for ``tau`` and noise (reproducible tests).
    """

    def __init__(
        self,
        variant: str = "discrete",
        sigma: float = 0.0,
        sigma_schedule: str = "constant",
        time_scale: float = 1.0,
        loss_frames: str = "all",
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(variant, time_scale, loss_frames)
        self.sigma = float(sigma)
        self.sigma_schedule = sigma_schedule
        self.generator = generator

    def __call__(
        self,
        batchdata: Mapping[str, torch.Tensor],
        device: str | torch.device | None = None,
        non_blocking: bool = False,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], tuple, dict[str, Any]]:
        """Build one training batch.

        Args:
            batchdata: SPEC batch dict.
            device: target device.
            non_blocking: non-blocking copies.
            kwargs: unused (MONAI passes ``to_kwargs``).

        Returns:
            inputs, targets, args, kwargs for MONAI's ``SupervisedTrainer``.
        """
        x0, target, ctx_t, tgt_t, mask = self._unpack(batchdata, device, non_blocking)
        if self.variant == "continuous":
            x0 = tie_padding(x0, mask)  # padding repeats the last real frame, whatever the dataset put there
        b, k = x0.shape[:2]
        x1 = broadcast_target(target, k)
        gen_device = None if self.generator is None else self.generator.device
        tau = sample_tau(b, device=gen_device, generator=self.generator).to(x0.device)
        noise = None
        if self.sigma > 0 and self.generator is not None:
            noise = torch.randn(x0.shape, generator=self.generator, device=gen_device).to(x0.device)
        x_tau = interpolate(x0, x1, tau, self.sigma, self.sigma_schedule, noise)
        targets = {
            "velocity": target_velocity(x0, x1),
            "weight": counted_frames(mask, self.variant, self.loss_frames).to(x0.dtype),
        }
        net_kwargs: dict[str, Any] = {"tau": tau}
        if self.variant == "continuous":
            net_kwargs.update(frame_times=flowed_times(ctx_t, tgt_t, tau), frame_mask=mask, target_time=tgt_t)
        return x_tau, targets, (), net_kwargs


class ForecastPrepareBatch(_FlowBatchBase):
    """Forecasting batch: the context stack ``X0`` and the inferer's keyword arguments.

    Returns ``(X0, target, (), inferer_kwargs)``; ``target`` is ``None`` when the batch has none (inference).

    Args:
        variant: ``"discrete"`` or ``"continuous"``.
        time_scale: multiplies all times.
        loss_frames: which frames count for the aggregation (same option as training).
    """

    def __call__(
        self,
        batchdata: Mapping[str, torch.Tensor],
        device: str | torch.device | None = None,
        non_blocking: bool = False,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor | None, tuple, dict[str, Any]]:
        """Build one forecasting batch.

        Args:
            batchdata: SPEC batch dict (``target`` optional).
            device: target device.
            non_blocking: non-blocking copies.
            kwargs: unused.

        Returns:
            inputs, targets, args, kwargs for MONAI's ``SupervisedEvaluator`` with a ``ForecastInferer``.
        """
        data = dict(batchdata)
        has_target = "target" in data
        if not has_target:
            data["target"] = torch.zeros_like(torch.as_tensor(_get(data, "context"))[:, 0])
        x0, target, ctx_t, tgt_t, mask = self._unpack(data, device, non_blocking)
        inf_kwargs: dict[str, Any] = {"count_mask": counted_frames(mask, self.variant, self.loss_frames)}
        if self.variant == "continuous":
            inf_kwargs.update(frame_times=ctx_t, frame_mask=mask, target_time=tgt_t)
        return x0, (target if has_target else None), (), inf_kwargs
