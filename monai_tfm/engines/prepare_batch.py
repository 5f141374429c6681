# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""Prepare-batch callables that turn a batch (docs/method.md section 1) into MONAI engine inputs (docs/DESIGN.md).

* :class:`FlowMatchingPrepareBatch` (training): draws ``tau``, builds ``X_tau`` and the target velocity, and
  returns the keyword arguments of the velocity network.
* :class:`ForecastPrepareBatch` (validation, test, inference): returns the context stack ``X0`` and the keyword
  arguments of :class:`monai_tfm.inferers.ForecastInferer`.

Both follow MONAI's ``PrepareBatch`` protocol: ``(inputs, targets, args, kwargs)``.

Rank-independent random draws (``FlowMatchingPrepareBatch(seed=...)``): by default ``tau`` (and the path noise)
come from the global torch generator, drawn for the whole batch at once, so they depend on how a global batch is
split over processes. With ``seed`` set, each sample draws from its own generator seeded by a hash of
``(seed, epoch, subject, draw, repeat index within the batch)``; the draw of a sample is then the same whether it
is processed by one process in a batch of ``2b`` or by one of two DDP ranks in a batch of ``b``, which makes
multi-process training reproduce single-process training on the same global batch (DDP averages the gradients,
and the flow-matching loss with all frames counted is a plain mean over equally sized per-rank batches). The epoch
comes from the trainer when the prepare-batch is attached to it as a handler (``attach``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import torch
from ignite.engine import Engine, Events
from monai.engines import PrepareBatch

from monai_tfm.flows.path import (
    broadcast_target,
    check_prediction,
    distance_weights,
    endpoint_loss_weight,
    flowed_times,
    interpolate,
    predicts_endpoint,
    sample_tau,
    target_velocity,
    tie_padding,
)
from monai_tfm.utils.errors import MonaiTFMError
from monai_tfm.utils.options import as_float

__all__ = ["VARIANTS", "FlowMatchingPrepareBatch", "ForecastPrepareBatch", "counted_frames"]

VARIANTS = ("discrete", "continuous")
REQUIRED_KEYS = ("context", "context_time", "context_mask", "target", "target_time")


def _check_variant(variant: str) -> str:
    if variant not in VARIANTS:
        raise MonaiTFMError(f"variant must be one of {VARIANTS}, got {variant!r}.")
    return variant


def _get(batch: Mapping, key: str) -> Any:
    if key not in batch:
        raise KeyError(f"batch is missing key {key!r}; a forecasting batch needs {REQUIRED_KEYS}.")
    return batch[key]


def counted_frames(context_mask: torch.Tensor, variant: str, loss_frames: str = "all") -> torch.Tensor:
    """The frames that count for the loss and the aggregation (docs/method.md sections 3.4 and 4.1).

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
        raise MonaiTFMError(f"loss_frames must be 'all' or 'real', got {loss_frames!r}.")
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
            raise MonaiTFMError(
                f"expected context (B, T, C, D, H, W) and target (B, C, D, H, W), got {tuple(x0.shape)} and "
                f"{tuple(target.shape)}."
            )
        return x0.as_subclass(torch.Tensor).float(), target.as_subclass(torch.Tensor).float(), ctx_t, tgt_t, mask


class FlowMatchingPrepareBatch(_FlowBatchBase):
    """Training batch of the sequence-to-image flow (docs/method.md section 2).

    Returns ``(X_tau, {"velocity": u, "weight": w}, (), net_kwargs)`` where ``w`` ``(B, K)`` marks the frames
    that count (and, for an endpoint-parameterised network, ``"scale"``: the ``(B,)`` factor ``(1 - tau)^2`` that
    makes the loss the end-point MSE, :func:`monai_tfm.flows.endpoint_loss_weight`); use it with
    :class:`monai_tfm.losses.FlowMatchingLoss`.

    Args:
        variant: ``"discrete"`` (time only through slot and ``tau``) or ``"continuous"`` (flowed frame times).
        sigma: path noise (0: deterministic straight path).
        sigma_schedule: ``"constant"`` or ``"bridge"``.
        time_scale: multiplies all times (dataset unit to about [0, 1]).
        loss_frames: discrete variant: ``"all"`` slots or ``"real"`` (occupied) slots.
        prediction: the network's parameterisation (:data:`monai_tfm.flows.PREDICTIONS`): ``"velocity"`` (loss on
            the velocity) or ``"endpoint"`` / ``"warp"`` (loss on the end point the velocity implies).
        generator: optional torch generator for ``tau`` and noise (reproducible tests).
        seed: if given, ``tau`` and the noise of every sample come from a generator keyed by
            ``(seed, epoch, subject, draw)`` (see the module notes): draws independent of the batch composition
            and of the process split. Attach the prepare-batch to the trainer so that the epoch enters the key.
        tau_zero_prob: probability that a sample's flow step is ``tau = 0`` instead of ``U(0, 1)`` (0: the papers'
            uniform ``tau``). The first step of a few-step Euler solve evaluates the network at ``tau = 0`` only, and
            on a nearly deterministic forecast that step makes most of the way; a non-uniform ``tau`` density puts
            more of the training there (compare the logit-normal ``tau`` of Esser et al., *Scaling Rectified Flow
            Transformers*, ICML 2024).
        distance_scale: if given, each counted frame's loss weight is ``exp(-|t_target - t_k| / distance_scale)``
            (:func:`monai_tfm.flows.distance_weights`; scaled times): the frames nearest the target in time count most.
            ``None`` (default, the papers): every counted frame counts the same.

    Raises:
        ValueError: both ``generator`` and ``seed`` given, ``tau_zero_prob`` outside [0, 1), or a
            ``distance_scale`` that is not positive.
    """

    def __init__(
        self,
        variant: str = "discrete",
        sigma: float = 0.0,
        sigma_schedule: str = "constant",
        time_scale: float = 1.0,
        loss_frames: str = "all",
        generator: torch.Generator | None = None,
        seed: int | None = None,
        prediction: str = "velocity",
        tau_zero_prob: float = 0.0,
        distance_scale: float | None = None,
    ) -> None:
        super().__init__(variant, time_scale, loss_frames)
        self.prediction = check_prediction(prediction)
        if generator is not None and seed is not None:
            raise MonaiTFMError("give either a generator or a per-sample seed, not both.")
        self.tau_zero_prob = as_float(tau_zero_prob, "tau_zero_prob")
        if not 0.0 <= self.tau_zero_prob < 1.0:
            raise MonaiTFMError(f"tau_zero_prob must be in [0, 1), got {tau_zero_prob!r}.")
        self.distance_scale = None if distance_scale is None else as_float(distance_scale, "loss_distance_scale")
        if self.distance_scale is not None:
            distance_weights(torch.zeros(1, 1), torch.zeros(1), self.distance_scale)  # validates the scale (> 0)
        self.sigma = float(sigma)
        self.sigma_schedule = sigma_schedule
        self.generator = generator
        self.seed = None if seed is None else int(seed)
        self.epoch = 0

    def attach(self, engine: Engine) -> None:
        """Follow the trainer's epoch (it enters the per-sample seed key).

        Args:
            engine: the trainer.
        """
        engine.add_event_handler(Events.EPOCH_STARTED, self._on_epoch)

    def _on_epoch(self, engine: Engine) -> None:
        self.epoch = int(engine.state.epoch)

    def sample_seeds(self, batchdata: Mapping[str, Any], batch_size: int) -> list[int]:
        """Per-sample generator seeds from ``(seed, epoch, subject, draw, repeat index)``.

        Args:
            batchdata: batch dict (docs/method.md section 1) (``subject`` and ``draw`` used when present).
            batch_size: number of samples.

        Returns:
            one 63-bit seed per sample.

        Raises:
            RuntimeError: no ``seed`` was configured.
        """
        if self.seed is None:
            raise RuntimeError("sample_seeds needs FlowMatchingPrepareBatch(seed=...).")
        subjects = batchdata.get("subject")
        draws = batchdata.get("draw")
        subjects = [None] * batch_size if subjects is None else list(subjects)
        draws = [None] * batch_size if draws is None else torch.as_tensor(draws).reshape(-1).tolist()
        seeds, counts = [], {}
        for i in range(batch_size):
            ident = (str(subjects[i]), str(draws[i]))
            counts[ident] = counts.get(ident, -1) + 1  # a sample repeated in one batch gets fresh draws
            text = f"{self.seed}/{self.epoch}/{ident[0]}/{ident[1]}/{counts[ident]}"
            seeds.append(int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1)
        return seeds

    def _draw(self, batchdata: Mapping[str, Any], x0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        b = x0.shape[0]
        need_noise = self.sigma > 0
        if self.seed is not None:
            taus, noises = [], []
            for s in self.sample_seeds(batchdata, b):
                g = torch.Generator().manual_seed(s)
                tau_s = torch.rand(1, generator=g)
                if self.tau_zero_prob > 0 and float(torch.rand(1, generator=g)) < self.tau_zero_prob:
                    tau_s = torch.zeros(1)
                taus.append(tau_s)
                if need_noise:
                    noises.append(torch.randn(x0.shape[1:], generator=g))
            tau = torch.cat(taus).to(x0.device)
            noise = torch.stack(noises).to(x0.device) if need_noise else None
            return tau, noise
        gen_device = None if self.generator is None else self.generator.device
        tau = sample_tau(b, device=gen_device, generator=self.generator).to(x0.device)
        if self.tau_zero_prob > 0:
            zero = torch.rand(b, device=gen_device, generator=self.generator).to(x0.device) < self.tau_zero_prob
            tau = torch.where(zero, torch.zeros_like(tau), tau)
        noise = None
        if need_noise and self.generator is not None:
            noise = torch.randn(x0.shape, generator=self.generator, device=gen_device).to(x0.device)
        return tau, noise

    def __call__(
        self,
        batchdata: Mapping[str, torch.Tensor],
        device: str | torch.device | None = None,
        non_blocking: bool = False,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], tuple, dict[str, Any]]:
        """Build one training batch.

        Args:
            batchdata: batch dict (docs/method.md section 1).
            device: target device.
            non_blocking: non-blocking copies.
            kwargs: unused (MONAI passes ``to_kwargs``).

        Returns:
            inputs, targets, args, kwargs for MONAI's ``SupervisedTrainer``.
        """
        x0, target, ctx_t, tgt_t, mask = self._unpack(batchdata, device, non_blocking)
        if self.variant == "continuous":
            x0 = tie_padding(x0, mask)  # padding repeats the last real frame, whatever the dataset put there
        x1 = broadcast_target(target, x0.shape[1])
        tau, noise = self._draw(batchdata, x0)
        x_tau = interpolate(x0, x1, tau, self.sigma, self.sigma_schedule, noise)
        weight = counted_frames(mask, self.variant, self.loss_frames).to(x0.dtype)
        if self.distance_scale is not None:
            weight = weight * distance_weights(ctx_t, tgt_t, self.distance_scale).to(x0.dtype)
        targets = {"velocity": target_velocity(x0, x1), "weight": weight}
        if predicts_endpoint(self.prediction):
            targets["scale"] = endpoint_loss_weight(tau).to(x0.dtype)
        # the target time goes to every network (a discrete one uses it only with ``use_target_time``)
        net_kwargs: dict[str, Any] = {"tau": tau, "target_time": tgt_t}
        if self.variant == "continuous":
            net_kwargs.update(frame_times=flowed_times(ctx_t, tgt_t, tau), frame_mask=mask)
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
            batchdata: batch dict (docs/method.md section 1) (``target`` optional).
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
        inf_kwargs: dict[str, Any] = {
            "count_mask": counted_frames(mask, self.variant, self.loss_frames),
            "target_time": tgt_t,
        }
        if self.variant == "continuous":
            inf_kwargs.update(frame_times=ctx_t, frame_mask=mask)
        return x0, (target if has_target else None), (), inf_kwargs
