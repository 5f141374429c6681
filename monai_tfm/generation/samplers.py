# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""Samplers of the generator: flow matching with the package's solvers, DDPM/DDIM with MONAI's schedulers.

* :class:`FlowSampler` integrates ``dx/dtau = v_theta(x, tau)`` from noise at ``tau = 0`` to an image at ``tau = 1``
  with :func:`monai_tfm.flows.solvers.integrate` (torchdiffeq's Euler / midpoint / rk4 on a fixed grid, or adaptive
  solvers), which counts the network evaluations (NFE). One Euler step gives ``x0 + v(x0, 0)``.
* :class:`DiffusionSampler` runs MONAI's ``DDPMScheduler`` or ``DDIMScheduler`` for a chosen number of steps
  (one network evaluation per step).

Both accept classifier-free guidance (``guidance_scale`` w: ``u + w (c - u)`` with the unconditional output ``u`` of
the null class and the conditional ``c``; w = 1 is plain conditional sampling): the two branches are evaluated in one
batched forward pass, which counts as one evaluation. The mask (if any) is kept in both branches, so guidance
strengthens the class only.

Note on MONAI's ``DDPMScheduler``: its ``step`` uses ``alphas_cumprod[t - 1]`` as the previous step whatever the
number of inference steps, so DDPM sampling with fewer steps than it was trained with (10 or 50 of 1000) is not a
proper strided sampler; :class:`DiffusionSampler` reports it as MONAI computes it, and DDIM is the strided sampler.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from monai.inferers import Inferer
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler, Scheduler

from monai_tfm.flows.solvers import check_solver, integrate
from monai_tfm.generation.networks import class_context, encode_mask
from monai_tfm.utils.errors import MonaiTFMError

__all__ = [
    "DIFFUSION_SCHEDULERS",
    "DiffusionSampler",
    "FlowSampler",
    "default_eval_samplers",
    "generate_images",
    "make_sampler",
    "make_scheduler",
]

DIFFUSION_SCHEDULERS = {"ddpm": DDPMScheduler, "ddim": DDIMScheduler}

NetFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def make_scheduler(kind: str = "ddpm", **schedule_args: Any) -> Scheduler:
    """A MONAI diffusion scheduler by name.

    Args:
        kind: ``"ddpm"`` or ``"ddim"``.
        schedule_args: scheduler arguments (``num_train_timesteps``, ``schedule``, ``beta_start``, ``beta_end``, ...).

    Returns:
        the scheduler.

    Raises:
        ValueError: unknown kind.
    """
    if kind not in DIFFUSION_SCHEDULERS:
        raise MonaiTFMError(f"unknown diffusion scheduler {kind!r}; expected one of {sorted(DIFFUSION_SCHEDULERS)}.")
    return DIFFUSION_SCHEDULERS[kind](**schedule_args)


def _guided(
    network: Callable[..., torch.Tensor],
    context: torch.Tensor | None,
    mask: torch.Tensor | None,
    guidance_scale: float,
) -> NetFn:
    """``f(x, t)``: the network with the conditions bound, with classifier-free guidance on the class if w != 1."""
    cond: dict[str, torch.Tensor] = {}
    if mask is not None:
        cond["mask"] = mask
    if context is None or guidance_scale == 1.0:
        if context is not None:
            cond["context"] = context

        def plain(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return network(x, t, **cond)

        return plain
    both = {"context": torch.cat([torch.zeros_like(context), context])}
    if mask is not None:
        both["mask"] = torch.cat([mask, mask])

    def guided(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = network(torch.cat([x, x]), torch.cat([t, t]), **both)
        uncond, conditional = out.chunk(2)
        return uncond + guidance_scale * (conditional - uncond)

    return guided


class FlowSampler(Inferer):
    """Generate images by integrating the learned velocity from Gaussian noise over the flow step [0, 1].

    Args:
        solver: ``euler``, ``midpoint``, ``rk4`` (fixed steps) or an adaptive torchdiffeq solver (``dopri5``, ...).
        steps: fixed solver steps.
        time_scale: the network gets ``tau * time_scale`` (as in training).
        guidance_scale: classifier-free guidance weight (1: none).
        clip: clamp the result to [-1, 1], the data range of the bundles (``None``/False: no clamp).
        rtol: adaptive tolerance.
        atol: adaptive tolerance.

    Attributes:
        last_nfe: network evaluations of the last call.

    Raises:
        ValueError: unknown solver or steps < 1.
    """

    def __init__(
        self,
        solver: str = "euler",
        steps: int = 10,
        time_scale: float = 1000.0,
        guidance_scale: float = 1.0,
        clip: bool = True,
        rtol: float = 1e-5,
        atol: float = 1e-5,
    ) -> None:
        super().__init__()
        check_solver(solver)
        if int(steps) < 1:
            raise MonaiTFMError(f"solver steps must be >= 1, got {steps}.")
        self.solver = solver
        self.steps = int(steps)
        self.time_scale = float(time_scale)
        self.guidance_scale = float(guidance_scale)
        self.clip = bool(clip)
        self.rtol = rtol
        self.atol = atol
        self.last_nfe = 0

    def __call__(  # type: ignore[override]
        self,
        inputs: torch.Tensor,
        network: Callable[..., torch.Tensor],
        context: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Integrate from the noise ``inputs``.

        Args:
            inputs: noise ``X0`` ``(B, C, *spatial)``.
            network: ``network(x, timesteps, context=..., mask=...)``.
            context: one-hot class context (``None``: no class).
            mask: encoded mask (``None``: no mask).

        Returns:
            the generated batch.
        """
        b = inputs.shape[0]
        field = _guided(network, context, mask, self.guidance_scale)

        def velocity(tau: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
            return field(x, tau.to(x.dtype).reshape(1).expand(b) * self.time_scale)

        res = integrate(velocity, inputs, self.solver, self.steps, self.rtol, self.atol)
        self.last_nfe = res.nfe
        return res.x.clamp(-1.0, 1.0) if self.clip else res.x


class DiffusionSampler(Inferer):
    """Generate images with a MONAI ``DDPMScheduler`` / ``DDIMScheduler`` from a noise-predicting network.

    The loop is MONAI's ``DiffusionInferer.sample`` loop, written out here (a few lines) because that method cannot
    bind the ControlNet mask to the guided (doubled) batch, does not take a random generator for the DDPM noise and
    does not report the number of network evaluations.

    Args:
        scheduler: ``"ddpm"`` or ``"ddim"``.
        steps: inference steps (<= ``num_train_timesteps``).
        schedule_args: the training scheduler's arguments (``num_train_timesteps``, ``schedule``, betas, ...).
        guidance_scale: classifier-free guidance weight (1: none).
        eta: DDIM noise weight (0: deterministic DDIM).
        seed: seed of the DDPM/DDIM step noise (``None``: torch's global generator).

    Attributes:
        last_nfe: network evaluations of the last call.

    Raises:
        ValueError: unknown scheduler, steps < 1 or more steps than training time steps.
    """

    def __init__(
        self,
        scheduler: str = "ddpm",
        steps: int = 1000,
        schedule_args: Mapping[str, Any] | None = None,
        guidance_scale: float = 1.0,
        eta: float = 0.0,
        seed: int | None = 0,
    ) -> None:
        super().__init__()
        self.kind = scheduler
        self.schedule_args = dict(schedule_args or {})
        self.scheduler = make_scheduler(scheduler, **self.schedule_args)
        if int(steps) < 1 or int(steps) > int(self.scheduler.num_train_timesteps):
            raise MonaiTFMError(
                f"{scheduler} steps must lie in 1 .. {self.scheduler.num_train_timesteps}, got {steps}."
            )
        self.steps = int(steps)
        self.guidance_scale = float(guidance_scale)
        self.eta = float(eta)
        self.seed = seed
        self.last_nfe = 0

    @torch.no_grad()
    def __call__(  # type: ignore[override]
        self,
        inputs: torch.Tensor,
        network: Callable[..., torch.Tensor],
        context: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Denoise from the noise ``inputs``.

        Args:
            inputs: noise ``x_T`` ``(B, C, *spatial)``.
            network: ``network(x, timesteps, context=..., mask=...)`` predicting the noise.
            context: one-hot class context (``None``: no class).
            mask: encoded mask (``None``: no mask).

        Returns:
            the generated batch (clipped to the scheduler's sample range by MONAI's ``clip_sample``).
        """
        b = inputs.shape[0]
        field = _guided(network, context, mask, self.guidance_scale)
        self.scheduler.set_timesteps(self.steps, device=inputs.device)
        generator = None
        if self.seed is not None:
            generator = torch.Generator(device=inputs.device).manual_seed(int(self.seed))
        x, nfe = inputs, 0
        for t in self.scheduler.timesteps:
            eps = field(x, t.float().reshape(1).expand(b).to(inputs.device))
            nfe += 1
            if self.kind == "ddim":
                x, _ = self.scheduler.step(eps, int(t), x, eta=self.eta, generator=generator)
            else:
                x, _ = self.scheduler.step(eps, int(t), x, generator=generator)
        self.last_nfe = nfe
        return x.clamp(-1.0, 1.0)


def make_sampler(
    spec: Mapping[str, Any],
    time_scale: float = 1000.0,
    schedule_args: Mapping[str, Any] | None = None,
    guidance_scale: float = 1.0,
) -> FlowSampler | DiffusionSampler:
    """A sampler from a spec ``{"kind": "flow"|"ddpm"|"ddim", "steps": N, "solver": ...}``.

    Args:
        spec: ``kind`` and ``steps``; flow: optional ``solver`` (default ``euler``); diffusion: optional ``eta``.
        time_scale: flow matching time scale.
        schedule_args: the DDPM training schedule.
        guidance_scale: classifier-free guidance weight.

    Returns:
        the sampler.

    Raises:
        ValueError: unknown kind.
    """
    kind = spec.get("kind", "flow")
    if kind == "flow":
        return FlowSampler(spec.get("solver", "euler"), int(spec["steps"]), time_scale, guidance_scale)
    if kind in DIFFUSION_SCHEDULERS:
        return DiffusionSampler(kind, int(spec["steps"]), schedule_args, guidance_scale, float(spec.get("eta", 0.0)))
    raise MonaiTFMError(f"unknown sampler kind {kind!r}; expected 'flow', 'ddpm' or 'ddim'.")


def default_eval_samplers(objective: str) -> list[dict[str, Any]]:
    """The samplers an evaluation compares (the MOTFM paper's comparison).

    Args:
        objective: ``"flow"`` (Euler at 1, 5, 10 steps, midpoint and rk4 at 5) or ``"ddpm"`` (DDPM at 10, 50, 1000
            steps, DDIM at 10 and 50).

    Returns:
        list of sampler specs with a ``name``.

    Raises:
        ValueError: unknown objective.
    """
    if objective == "flow":
        specs = [("euler", 1), ("euler", 5), ("euler", 10), ("midpoint", 5), ("rk4", 5)]
        return [{"name": f"{s}_{n}", "kind": "flow", "solver": s, "steps": n} for s, n in specs]
    if objective == "ddpm":
        specs = [("ddpm", 10), ("ddpm", 50), ("ddpm", 1000), ("ddim", 10), ("ddim", 50)]
        return [{"name": f"{k}_{n}", "kind": k, "steps": n} for k, n in specs]
    raise MonaiTFMError(f"unknown objective {objective!r}; expected 'flow' or 'ddpm'.")


@torch.no_grad()
def generate_images(
    network: torch.nn.Module,
    sampler: FlowSampler | DiffusionSampler,
    shape: Sequence[int],
    classes: Sequence[int] | torch.Tensor | None = None,
    masks: torch.Tensor | None = None,
    num_classes: int = 0,
    num_labels: int = 0,
    num: int | None = None,
    seed: int = 0,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
) -> tuple[torch.Tensor, int, float]:
    """Generate ``num`` images (on the model's [-1, 1] scale) in batches, with seeded noise.

    The noise comes from one CPU generator seeded with ``seed`` and drawn batch after batch, so two samplers given the
    same seed, count and batch size start from the same noise.

    Args:
        network: the generator network (put in eval mode).
        sampler: a :class:`FlowSampler` or :class:`DiffusionSampler`.
        shape: image shape ``(C, *spatial)``.
        classes: one class per image (``-1``: none); ``None``: no class.
        masks: one label map ``(N, 1, *spatial)`` per image (all zeros: no mask); ``None``: no mask.
        num_classes: the network's classes (0: none).
        num_labels: the network's mask labels (0: none).
        num: number of images (default: ``len(classes)`` or ``len(masks)``).
        seed: noise seed.
        batch_size: images per network batch.
        device: torch device.

    Returns:
        ``(images (N, C, *spatial) on CPU, network evaluations per batch, wall seconds)``.

    Raises:
        ValueError: no count, or conditions the network does not take.
    """
    if num is None:
        num = len(classes) if classes is not None else (len(masks) if masks is not None else None)
    if num is None or int(num) < 1:
        raise MonaiTFMError(f"the number of images must be >= 1, got {num}.")
    if classes is not None and not num_classes:
        raise MonaiTFMError("classes given, but the network is not class-conditional.")
    if masks is not None and not num_labels:
        raise MonaiTFMError("masks given, but the network has no mask conditioning.")
    network.eval()
    generator = torch.Generator().manual_seed(int(seed))
    out, nfe = [], 0
    start = time.perf_counter()
    for lo in range(0, int(num), int(batch_size)):
        hi = min(int(num), lo + int(batch_size))
        noise = torch.randn((hi - lo, *shape), generator=generator).to(device)
        kwargs: dict[str, torch.Tensor] = {}
        if classes is not None:
            kwargs["context"] = class_context(torch.as_tensor(classes)[lo:hi], num_classes).to(device)
        if masks is not None:
            kwargs["mask"] = encode_mask(masks[lo:hi], num_labels).to(device)
        out.append(sampler(noise, network, **kwargs).float().cpu())
        nfe = int(sampler.last_nfe)
    return torch.cat(out), nfe, time.perf_counter() - start
