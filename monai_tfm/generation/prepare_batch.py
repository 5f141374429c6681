# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""Training batches of the generator: noise-to-image flow matching (MOTFM) or the DDPM baseline, one prepare-batch.

Flow matching uses the package's one flow (:mod:`monai_tfm.flows.path`) with the noise source: ``X0 ~ N(0, I)``
(:func:`~monai_tfm.flows.path.noise_source`), ``tau ~ U(0, 1)``, ``X_tau = (1 - tau) X0 + tau X1`` and the target
velocity ``X1 - X0`` (:func:`~monai_tfm.flows.path.interpolate`, :func:`~monai_tfm.flows.path.target_velocity`).
Noise and images are paired independently (the straight conditional path, no minibatch optimal-transport
re-pairing). DDPM noises the image with MONAI's scheduler (``add_noise``) at a uniform integer step and targets
the noise (epsilon prediction). Both return MONAI's ``(inputs, targets, args, kwargs)``; with ``SimpleInferer`` the
network is called as ``network(inputs, timesteps=..., context=..., mask=...)`` and ``torch.nn.MSELoss`` is the loss.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from monai.engines import PrepareBatch
from monai.networks.schedulers import Scheduler

from monai_tfm.flows.path import interpolate, noise_source, sample_tau, target_velocity
from monai_tfm.generation.networks import class_context, encode_mask
from monai_tfm.utils.errors import MonaiTFMError

__all__ = ["OBJECTIVES", "GenerationPrepareBatch"]

OBJECTIVES = ("flow", "ddpm")


class GenerationPrepareBatch(PrepareBatch):
    """Training batch of a conditional image generator.

    The batch is a dict with ``image`` ``(B, C, *spatial)`` (on the model's intensity scale, [-1, 1] in the bundles),
    ``class`` ``(B,)`` (when ``num_classes > 0``) and ``mask`` ``(B, 1, *spatial)`` integer label maps (when
    ``num_labels > 0``; all-zero maps mean "no mask").

    Args:
        objective: ``"flow"`` (flow matching from noise) or ``"ddpm"`` (epsilon prediction).
        num_classes: classes of the cross-attention condition (0: unconditional in class).
        num_labels: foreground labels of the mask condition (0: no mask).
        class_dropout: probability of replacing a sample's class by "no class" (classifier-free guidance training).
        mask_dropout: probability of replacing a sample's mask by "no mask" (the model learns class-only sampling).
        time_scale: flow matching: the network gets ``tau * time_scale`` as its time step (MONAI's sinusoidal
            embedding is made for steps in 0 .. 1000).
        sigma: flow matching: optional path noise (0: the straight path).
        scheduler: DDPM: MONAI scheduler whose ``add_noise`` and ``num_train_timesteps`` are used.
        generator: optional CPU generator for all draws (reproducible tests).

    Raises:
        ValueError: unknown objective, DDPM without a scheduler, or probabilities outside [0, 1].
    """

    def __init__(
        self,
        objective: str = "flow",
        num_classes: int = 0,
        num_labels: int = 0,
        class_dropout: float = 0.0,
        mask_dropout: float = 0.0,
        time_scale: float = 1000.0,
        sigma: float = 0.0,
        scheduler: Scheduler | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        if objective not in OBJECTIVES:
            raise MonaiTFMError(f"objective must be one of {OBJECTIVES}, got {objective!r}.")
        if objective == "ddpm" and scheduler is None:
            raise MonaiTFMError("the ddpm objective needs a MONAI scheduler (e.g. DDPMScheduler).")
        for name, p in (("class_dropout", class_dropout), ("mask_dropout", mask_dropout)):
            if not 0.0 <= float(p) <= 1.0:
                raise MonaiTFMError(f"{name} must lie in [0, 1], got {p}.")
        self.objective = objective
        self.num_classes = int(num_classes)
        self.num_labels = int(num_labels)
        self.class_dropout = float(class_dropout)
        self.mask_dropout = float(mask_dropout)
        self.time_scale = float(time_scale)
        self.sigma = float(sigma)
        self.scheduler = scheduler
        self.generator = generator

    def _rand(self, n: int) -> torch.Tensor:
        return torch.rand(n, generator=self.generator)

    def conditions(self, batchdata: Mapping, device: Any = None, train: bool = True) -> dict[str, torch.Tensor]:
        """The network's conditioning keyword arguments (``context``, ``mask``) of a batch, with dropout if ``train``.

        Args:
            batchdata: the batch dict.
            device: target device.
            train: apply class/mask dropout.

        Returns:
            dict with ``context`` and/or ``mask`` (absent when the model has no such condition).

        Raises:
            KeyError: the batch lacks ``class`` or ``mask`` that the model needs.
        """
        out: dict[str, torch.Tensor] = {}
        b = len(batchdata["image"])
        if self.num_classes:
            if "class" not in batchdata:
                raise KeyError("a class-conditional batch needs the key 'class' (integer labels).")
            labels = torch.as_tensor(batchdata["class"]).reshape(-1).long().cpu()
            if train and self.class_dropout > 0:
                labels = torch.where(self._rand(b) < self.class_dropout, torch.full_like(labels, -1), labels)
            out["context"] = class_context(labels, self.num_classes).to(device)
        if self.num_labels:
            if "mask" not in batchdata:
                raise KeyError("a mask-conditional batch needs the key 'mask' (integer label maps, zeros: no mask).")
            mask = encode_mask(torch.as_tensor(batchdata["mask"]).as_subclass(torch.Tensor).cpu(), self.num_labels)
            if train and self.mask_dropout > 0:
                keep = (self._rand(b) >= self.mask_dropout).float()
                mask = mask * keep.reshape(b, *([1] * (mask.ndim - 1)))
            out["mask"] = mask.to(device)
        return out

    def __call__(
        self, batchdata: Mapping, device: Any = None, non_blocking: bool = False, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor, tuple, dict[str, torch.Tensor]]:
        """Draw the noise and the time step of every sample and build the network input and target.

        Args:
            batchdata: the batch dict.
            device: target device.
            non_blocking: non-blocking transfer.
            kwargs: further ``Tensor.to`` arguments (ignored).

        Returns:
            ``(x_t, target, (), {"timesteps", "context"?, "mask"?})``.

        Raises:
            TypeError: the batch is not a dict.
            KeyError: no ``image`` key.
        """
        if not isinstance(batchdata, Mapping):
            raise TypeError(f"expected a batch dict with an 'image' key, got {type(batchdata).__name__}.")
        if "image" not in batchdata:
            raise KeyError("a generation batch needs the key 'image'.")
        x1 = torch.as_tensor(batchdata["image"]).as_subclass(torch.Tensor).float()
        x1 = x1.to(device=device, non_blocking=non_blocking)
        b = x1.shape[0]
        x0 = noise_source(x1, self.generator)
        if self.objective == "flow":
            tau = sample_tau(b, generator=self.generator).to(x1.device)
            eps = noise_source(x1, self.generator) if self.sigma > 0 else None
            inputs = interpolate(x0, x1, tau, self.sigma, noise=eps)
            target = target_velocity(x0, x1)
            timesteps = tau * self.time_scale
        else:
            assert self.scheduler is not None
            steps = int(self.scheduler.num_train_timesteps)
            timesteps = torch.randint(0, steps, (b,), generator=self.generator).to(x1.device)
            inputs = self.scheduler.add_noise(original_samples=x1, noise=x0, timesteps=timesteps)
            target = x0
        net_kwargs = {"timesteps": timesteps, **self.conditions(batchdata, x1.device, train=True)}
        return inputs, target, (), net_kwargs
