# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""The flows of the package (docs/method.md section 2): one home for the interpolation path.

Both the trainers (prepare-batch) and the inferers import these functions; nothing else in the package computes
``X_tau``, the target velocity or the flowed frame times.

Notation: the flow step is ``tau`` in [0, 1]. Forecasting (TFM / CRONOS): ``x0`` is the context stack
``(B, K, C, D, H, W)``, ``x1`` the target broadcast to the same shape. Generation (MOTFM): ``x0`` is
Gaussian noise from :func:`noise_source` with the shape of the image batch ``x1`` ``(B, C, *spatial)``; the same
:func:`interpolate` and :func:`target_velocity` give the straight path and its velocity.
"""

from __future__ import annotations

import torch

from monai_tfm.utils.errors import MonaiTFMError

__all__ = [
    "broadcast_target",
    "noise_source",
    "sample_tau",
    "sigma_at",
    "interpolate",
    "target_velocity",
    "PREDICTIONS",
    "check_prediction",
    "predicts_endpoint",
    "velocity_from_endpoint",
    "endpoint_loss_weight",
    "flowed_times",
    "distance_weights",
    "select_frames",
    "last_context_image",
    "reduce_frames",
    "last_real_index",
    "tie_padding",
]

SIGMA_SCHEDULES = ("constant", "bridge")
# what a velocity network's last layer predicts: the velocity u itself, the way left to the end point X1 - X_tau
# (the velocity follows as (X1 - X_tau) / (1 - tau)), or a displacement field and an intensity residual per frame
# whose warped frame is the end point ("warp": the way left is warp(X_tau, ddf) + residual - X_tau)
PREDICTIONS = ("velocity", "endpoint", "warp")


def _expand(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape a per-sample ``(B,)`` tensor so that it broadcasts against ``like`` ``(B, ...)``."""
    return v.reshape(v.shape[0], *([1] * (like.ndim - 1))).to(like.dtype)


def broadcast_target(target: torch.Tensor, num_frames: int) -> torch.Tensor:
    """Repeat the target volume ``(B, C, D, H, W)`` ``num_frames`` times: ``(B, K, C, D, H, W)``.

    Args:
        target: target volumes ``(B, C, D, H, W)``.
        num_frames: K, the number of context slots.

    Returns:
        a view ``(B, K, C, D, H, W)`` (no copy).
    """
    return target.unsqueeze(1).expand(-1, num_frames, *target.shape[1:])


def noise_source(like: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """The noise source of a noise-to-image flow, ``X0 ~ N(0, I)`` with the shape, dtype and device of ``like``.

    Args:
        like: the target batch ``X1`` (any shape, e.g. ``(B, C, H, W)`` or ``(B, C, D, H, W)``).
        generator: optional torch generator for reproducible draws (drawn on the generator's device, then moved).

    Returns:
        standard normal noise shaped like ``like``.
    """
    if generator is None:
        return torch.randn_like(like)
    dtype = like.dtype if like.is_floating_point() else torch.float32
    noise = torch.randn(like.shape, generator=generator, device=generator.device, dtype=dtype)
    return noise.to(device=like.device, dtype=dtype)


def sample_tau(batch_size: int, device: torch.device | str | None = None, generator: torch.Generator | None = None):
    """Draw one flow step per sample, ``tau ~ U(0, 1)``.

    Args:
        batch_size: number of samples B.
        device: device of the result.
        generator: optional torch generator for reproducible draws.

    Returns:
        ``(B,)`` float32 tensor.
    """
    return torch.rand(batch_size, device=device, generator=generator)


def sigma_at(tau: torch.Tensor, sigma: float, schedule: str = "constant") -> torch.Tensor:
    """Noise scale of the path at flow step ``tau``.

    Args:
        tau: ``(B,)`` flow steps.
        sigma: noise level; 0 gives the deterministic straight path (paper default).
        schedule: ``"constant"`` (``sigma``) or ``"bridge"`` (``sigma * sqrt(tau (1 - tau))``: zero at both ends).

    Returns:
        ``(B,)`` noise scales.

    Raises:
        ValueError: unknown schedule or negative sigma.
    """
    if sigma < 0:
        raise MonaiTFMError(f"sigma must be >= 0, got {sigma}.")
    if schedule == "constant":
        return torch.full_like(tau, float(sigma))
    if schedule == "bridge":
        return sigma * torch.sqrt(torch.clamp(tau * (1.0 - tau), min=0.0))
    raise MonaiTFMError(f"unknown sigma schedule {schedule!r}; expected one of {SIGMA_SCHEDULES}.")


def interpolate(
    x0: torch.Tensor,
    x1: torch.Tensor,
    tau: torch.Tensor,
    sigma: float = 0.0,
    schedule: str = "constant",
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """Point on the path, ``X_tau = (1 - tau) X0 + tau X1 + sigma(tau) eps``.

    Args:
        x0: source (context stack) ``(B, K, ...)``.
        x1: target stack, same shape as ``x0``.
        tau: ``(B,)`` flow steps.
        sigma: noise level (0: deterministic).
        schedule: see :func:`sigma_at`.
        noise: optional ``eps`` (standard normal, shape of ``x0``); drawn when ``None`` and ``sigma > 0``.

    Returns:
        ``X_tau`` with the shape of ``x0``.
    """
    t = _expand(tau, x0)
    x = (1.0 - t) * x0 + t * x1
    if sigma > 0:
        eps = torch.randn_like(x0) if noise is None else noise
        x = x + _expand(sigma_at(tau, sigma, schedule), x0) * eps
    return x


def target_velocity(x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
    """Velocity of the straight path, ``u = X1 - X0`` (independent of ``tau``).

    Args:
        x0: source stack.
        x1: target stack.

    Returns:
        ``x1 - x0``.
    """
    return x1 - x0


def check_prediction(prediction: str) -> str:
    """Validate the name of a network parameterisation.

    Args:
        prediction: one of :data:`PREDICTIONS`.

    Returns:
        ``prediction``.

    Raises:
        ValueError: an unknown name.
    """
    if prediction not in PREDICTIONS:
        raise MonaiTFMError(f"unknown prediction {prediction!r}; expected one of {PREDICTIONS}.")
    return prediction


def predicts_endpoint(prediction: str) -> bool:
    """Whether a parameterisation predicts the end point (and so trains on the end-point error).

    Args:
        prediction: one of :data:`PREDICTIONS`.

    Returns:
        ``True`` for ``"endpoint"`` and ``"warp"``, ``False`` for ``"velocity"``.

    Raises:
        ValueError: an unknown name.
    """
    return check_prediction(prediction) != "velocity"


def velocity_from_endpoint(remaining: torch.Tensor, tau: torch.Tensor, min_remaining: float = 1e-3) -> torch.Tensor:
    """Velocity of the straight path from a predicted remaining way ``X1 - X_tau``: ``u = (X1 - X_tau) / (1 - tau)``.

    On the straight path ``X_tau = (1 - tau) X0 + tau X1`` the remaining way is ``(1 - tau) u``, so a network that
    predicts it (an "x1-prediction", as in the x-/v-parameterisations of diffusion models) gives the same velocity
    field.

    Args:
        remaining: ``(B, ...)`` predicted ``X1 - X_tau``.
        tau: ``(B,)`` flow steps.
        min_remaining: ``1 - tau`` is clamped at this value (the velocity at ``tau = 1`` stays finite).

    Returns:
        the velocity, shaped like ``remaining``.
    """
    shape = [remaining.shape[0]] + [1] * (remaining.dim() - 1)  # TorchScript-compatible (networks call this)
    return remaining / torch.clamp(1.0 - tau, min=min_remaining).reshape(shape).to(remaining.dtype)


def endpoint_loss_weight(tau: torch.Tensor) -> torch.Tensor:
    """Per-sample weight ``(1 - tau)^2`` that turns the velocity MSE into the end-point MSE.

    ``|| X_tau + (1 - tau) v - X1 ||^2 = (1 - tau)^2 || v - u ||^2``: weighting the velocity loss of an
    endpoint-parameterised network (:func:`velocity_from_endpoint`) by this factor trains it on the error of the
    end point it implies.

    Args:
        tau: ``(B,)`` flow steps.

    Returns:
        ``(B,)`` weights.
    """
    return (1.0 - tau) ** 2


def distance_weights(context_time: torch.Tensor, target_time: torch.Tensor, scale: float) -> torch.Tensor:
    """Per-frame loss weights that decay with the frame's distance in time to the target, ``exp(-|t - t_k| / scale)``.

    Args:
        context_time: ``(B, K)`` frame (slot) times.
        target_time: ``(B,)`` target times, in the same unit.
        scale: decay length (> 0), in that unit.

    Returns:
        ``(B, K)`` weights in (0, 1].

    Raises:
        ValueError: a scale that is not positive.
    """
    if not scale > 0:
        raise MonaiTFMError(f"the distance weighting scale must be > 0, got {scale!r}.")
    return torch.exp(-(target_time.reshape(-1, 1) - context_time).abs() / scale)


def flowed_times(context_time: torch.Tensor, target_time: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    """Per-frame times moving with the flow, ``T_tau,i = (1 - tau) t_i + tau t_target`` (CRONOS eq. 9).

    Args:
        context_time: ``(B, K)`` context times.
        target_time: ``(B,)`` target times.
        tau: ``(B,)`` flow steps (or a 0-d tensor).

    Returns:
        ``(B, K)`` flowed times.
    """
    tau = tau.reshape(-1, 1) if tau.ndim else tau
    return (1.0 - tau) * context_time + tau * target_time.reshape(-1, 1)


def last_real_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of the last True entry per row of a ``(B, K)`` boolean mask.

    Args:
        mask: ``(B, K)`` bool.

    Returns:
        ``(B,)`` long indices.

    Raises:
        ValueError: a row without any True entry.
    """
    mask = mask.bool()
    if not bool(mask.any(dim=1).all()):
        raise MonaiTFMError("every sample needs at least one real context frame; got a row with none.")
    k = mask.shape[1]
    positions = torch.arange(k, device=mask.device).expand_as(mask)
    return torch.where(mask, positions, torch.full_like(positions, -1)).max(dim=1).values


def select_frames(context: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Pick one frame per sample.

    Args:
        context: ``(B, T, C, *S)``.
        index: ``(B,)`` long frame index per sample.

    Returns:
        ``(B, C, *S)``.
    """
    return context[torch.arange(context.shape[0], device=context.device), index.to(context.device)]


def last_context_image(context: torch.Tensor, context_mask: torch.Tensor) -> torch.Tensor:
    """The Last Context Image (LCI) of each sample: its latest real context frame, the baseline every forecast is
    compared with (TFM and CRONOS papers) and the forecast of the ``LastContextImage`` baseline.

    Args:
        context: ``(B, T, C, *S)``.
        context_mask: ``(B, T)`` bool.

    Returns:
        ``(B, C, *S)``.

    Raises:
        ValueError: a sample without any real frame.
    """
    context = torch.as_tensor(context)
    return select_frames(context, last_real_index(torch.as_tensor(context_mask).bool()))


def reduce_frames(x: torch.Tensor, mask: torch.Tensor | None = None, mode: str = "mean") -> torch.Tensor:
    """Reduce the K end states ``(B, K, C, D, H, W)`` to one volume per sample (docs/method.md section 2).

    Args:
        x: end states.
        mask: ``(B, K)`` bool, the frames that count; ``None`` means all.
        mode: ``"mean"`` over counted frames or ``"last"`` counted frame.

    Returns:
        ``(B, C, D, H, W)``.

    Raises:
        ValueError: unknown mode or a sample without counted frames.
    """
    if mask is None:
        mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
    mask = mask.to(x.device).bool()
    if mode == "mean":
        if not bool(mask.any(dim=1).all()):
            raise MonaiTFMError("cannot average: a sample has no counted frame.")
        w = mask.to(x.dtype).reshape(*mask.shape, *([1] * (x.ndim - 2)))
        return (x * w).sum(dim=1) / w.sum(dim=1)
    if mode == "last":
        idx = last_real_index(mask)
        return x[torch.arange(x.shape[0], device=x.device), idx]
    raise MonaiTFMError(f"unknown aggregation {mode!r}; expected 'mean' or 'last'.")


def tie_padding(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Replace every non-real slot by the closest earlier real slot (the first real slot for leading ones).

    In the continuous variant padded slots repeat the last real frame, so along the training path their state
    ``X_tau`` equals the last real slot's. The inferer re-ties them before every network evaluation, so that the
    forecast depends on the real frames only (padding cannot drift and leak into the real slots' velocities).

    Args:
        x: ``(B, K, ...)`` slot states.
        mask: ``(B, K)`` bool, real slots.

    Returns:
        ``x`` with padded slots replaced (a new tensor; ``x`` itself when every slot is real).

    Raises:
        ValueError: a sample without any real slot.
    """
    mask = mask.to(x.device).bool()
    if bool(mask.all()):
        return x
    if not bool(mask.any(dim=1).all()):
        raise MonaiTFMError("every sample needs at least one real context frame; got a row with none.")
    k = mask.shape[1]
    positions = torch.arange(k, device=x.device).expand_as(mask)
    marked = torch.where(mask, positions, torch.full_like(positions, -1))
    source = torch.cummax(marked, dim=1).values
    first = torch.argmax(mask.to(torch.uint8), dim=1, keepdim=True).expand_as(source)
    source = torch.where(source < 0, first, source)
    index = source.reshape(*source.shape, *([1] * (x.ndim - 2))).expand_as(x)
    return torch.gather(x, 1, index)
