# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""What the direct-prediction baselines share (docs/method.md section 8): the forward contract and small helpers.

Every baseline maps the context to the target in one call::

    forward(context (B, T, C, *S), frame_times (B, T), frame_mask (B, T) bool, target_time (B,)) -> (B, C, *S)

``frame_times`` and ``target_time`` are scaled times (the prepare-batch multiplies by the dataset's
``time_scale``); ``frame_mask`` marks real frames. Padded slots (mask False; the data pipeline makes them repeat the
last real frame) never change the output: recurrent models skip them, the others replace them (see
:func:`right_align`) or mask them out of attention.

The convolutional encoder/decoder use the per-axis strides of :mod:`monai_tfm.networks.blocks.resample` (MONAI's
blocks take one fixed stride per level, which breaks on thin volumes such as 8 slices and on odd sizes).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from monai.networks.layers import Conv
from torch import nn

from monai_tfm.networks.blocks.resample import StridedConvDownsample, compute_down_strides, resize_to
from monai_tfm.utils.errors import MonaiTFMError

__all__ = [
    "DirectForecaster",
    "ConvEncoder",
    "ConvDecoder",
    "check_direct_inputs",
    "right_align",
    "time_to_target",
    "group_norm",
]


def group_norm(channels: int, groups: int = 8) -> nn.GroupNorm:
    """GroupNorm whose group count divides ``channels`` (the largest divisor of ``channels`` up to ``groups``).

    Args:
        channels: number of channels.
        groups: wanted number of groups.

    Returns:
        the norm layer.
    """
    return nn.GroupNorm(math.gcd(max(1, int(groups)), int(channels)), int(channels))


def check_direct_inputs(
    context: torch.Tensor,
    frame_times: torch.Tensor | None,
    frame_mask: torch.Tensor | None,
    target_time: torch.Tensor | None,
    spatial_dims: int = 3,
    in_channels: int | None = None,
    needs_time: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor | None]:
    """Validate the inputs of a direct forecaster and fill the optional ones.

    Args:
        context: ``(B, T, C, *S)``.
        frame_times: ``(B, T)`` scaled times (``None`` only when ``needs_time`` is False).
        frame_mask: ``(B, T)`` bool real frames (``None``: all real).
        target_time: ``(B,)`` scaled target time (``None`` only when ``needs_time`` is False).
        spatial_dims: number of spatial dimensions.
        in_channels: expected ``C`` (``None``: any).
        needs_time: whether the model uses the times.

    Returns:
        ``(context, frame_times, frame_mask, target_time)`` with the mask as bool on the context's device and times
        as floating tensors of the context's dtype.

    Raises:
        ValueError: mis-shaped inputs, missing times, or a sample without any real frame.
    """
    if context.ndim != 3 + spatial_dims:
        raise MonaiTFMError(f"expected context (B, T, C, {spatial_dims} spatial dims), got {tuple(context.shape)}.")
    b, t, c = context.shape[:3]
    if in_channels is not None and c != in_channels:
        raise MonaiTFMError(
            f"expected {in_channels} channel(s) per frame, got context of shape {tuple(context.shape)}."
        )
    if frame_mask is None:
        frame_mask = torch.ones(b, t, dtype=torch.bool, device=context.device)
    frame_mask = torch.as_tensor(frame_mask, device=context.device).bool()
    if frame_mask.shape != (b, t):
        raise MonaiTFMError(f"frame_mask must be (B, T) = {(b, t)}, got {tuple(frame_mask.shape)}.")
    if not bool(frame_mask.any(dim=1).all()):
        raise MonaiTFMError("every sample needs at least one real context frame; got a row of frame_mask with none.")
    if needs_time and (frame_times is None or target_time is None):
        raise MonaiTFMError("this model uses acquisition times: pass frame_times (B, T) and target_time (B,).")
    if frame_times is not None:
        frame_times = torch.as_tensor(frame_times, device=context.device).to(context.dtype)
        if frame_times.shape != (b, t):
            raise MonaiTFMError(f"frame_times must be (B, T) = {(b, t)}, got {tuple(frame_times.shape)}.")
    if target_time is not None:
        target_time = torch.as_tensor(target_time, device=context.device).to(context.dtype).reshape(-1)
        if target_time.numel() == 1 and b > 1:
            target_time = target_time.expand(b)
        if target_time.shape != (b,):
            raise MonaiTFMError(f"target_time must be (B,) = ({b},), got {tuple(target_time.shape)}.")
    return context, frame_times, frame_mask, target_time


def time_to_target(frame_times: torch.Tensor, target_time: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
    """Time from each real frame to the target, ``t_target - t_i`` (0 on padded slots).

    Args:
        frame_times: ``(B, T)``.
        target_time: ``(B,)``.
        frame_mask: ``(B, T)`` bool.

    Returns:
        ``(B, T)``.
    """
    return (target_time.reshape(-1, 1) - frame_times) * frame_mask.to(frame_times.dtype)


def right_align(
    context: torch.Tensor, frame_times: torch.Tensor, frame_mask: torch.Tensor, num_slots: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Move the real frames (in order) to the last slots of a ``num_slots`` stack, latest frame in the last slot.

    Leading empty slots repeat the first real frame and its time and are marked False; when a sample has more than
    ``num_slots`` real frames the latest ones are kept. The result depends on the real frames only, so the content
    of padded input slots (and their number) cannot change anything downstream. Fixed-width models (frames
    flattened into channels) thus always see the most recent frame at the same position.

    Args:
        context: ``(B, T, ...)``.
        frame_times: ``(B, T)``.
        frame_mask: ``(B, T)`` bool.
        num_slots: output slots.

    Returns:
        ``(context (B, num_slots, ...), frame_times (B, num_slots), frame_mask (B, num_slots))``.
    """
    b, t = frame_mask.shape
    mask = frame_mask.bool()
    n = mask.sum(dim=1, keepdim=True)  # (B, 1) real frames per sample
    # real positions first, in time order (stable sort of "is padding")
    order = torch.argsort((~mask).to(torch.uint8), dim=1, stable=True)
    slots = torch.arange(num_slots, device=mask.device).expand(b, -1)
    rank = (slots - num_slots + n).clamp(min=0)  # rank of the real frame shown in each slot
    index = torch.gather(order, 1, rank.clamp(max=t - 1))
    new_mask = slots >= (num_slots - n)
    gathered = torch.gather(
        context, 1, index.reshape(b, num_slots, *([1] * (context.ndim - 2))).expand(b, num_slots, *context.shape[2:])
    )
    return gathered, torch.gather(frame_times, 1, index), new_mask


class DirectForecaster(nn.Module):
    """Base class of the direct-prediction baselines (the contract in the module docstring).

    Attributes:
        spatial_dims: number of spatial dimensions.
        in_channels: channels ``C`` per frame.
        needs_time: whether :meth:`forward` requires ``frame_times`` and ``target_time``.
    """

    spatial_dims: int = 3
    in_channels: int | None = None
    needs_time: bool = True

    def check_inputs(
        self,
        context: torch.Tensor,
        frame_times: torch.Tensor | None,
        frame_mask: torch.Tensor | None,
        target_time: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor | None]:
        """Validate the inputs (see :func:`check_direct_inputs`).

        Args:
            context: ``(B, T, C, *S)``.
            frame_times: ``(B, T)``.
            frame_mask: ``(B, T)``.
            target_time: ``(B,)``.

        Returns:
            the checked inputs.
        """
        return check_direct_inputs(
            context, frame_times, frame_mask, target_time, self.spatial_dims, self.in_channels, self.needs_time
        )

    def forward(
        self,
        context: torch.Tensor,
        frame_times: torch.Tensor | None = None,
        frame_mask: torch.Tensor | None = None,
        target_time: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Forecast the target volume.

        Args:
            context: ``(B, T, C, *S)`` context frames in time order.
            frame_times: ``(B, T)`` scaled acquisition times.
            frame_mask: ``(B, T)`` bool, real frames.
            target_time: ``(B,)`` scaled target time.

        Returns:
            ``(B, C, *S)``.
        """
        context, times, mask, target_time = self.check_inputs(context, frame_times, frame_mask, target_time)
        return self.predict(context, times, mask, target_time)

    def predict(
        self, context: torch.Tensor, times: torch.Tensor, mask: torch.Tensor, target_time: torch.Tensor
    ) -> torch.Tensor:
        """The model on checked inputs (see :meth:`forward`).

        Args:
            context: ``(B, T, C, *S)``.
            times: ``(B, T)`` scaled times.
            mask: ``(B, T)`` bool real frames.
            target_time: ``(B,)`` scaled target time.

        Returns:
            ``(B, C, *S)``.
        """
        raise NotImplementedError


class ConvEncoder(nn.Module):
    """Per-frame convolutional encoder: stem conv, then strided convs with per-axis strides.

    Each stage is ``Conv(k3) - GroupNorm - SiLU``; stage ``i > 0`` halves an axis only while it stays
    ``>= min_size`` voxels.

    Args:
        spatial_dims: number of spatial dimensions.
        in_channels: input channels.
        channels: width of every stage.
        num_down: number of downsampling stages.
        min_size: smallest size an axis may be halved to.
        norm_groups: GroupNorm groups.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        channels: int,
        num_down: int = 2,
        min_size: int = 4,
        norm_groups: int = 8,
    ) -> None:
        super().__init__()
        conv = Conv[Conv.CONV, spatial_dims]
        self.num_down = int(num_down)
        self.min_size = int(min_size)
        self.stem = nn.Sequential(
            conv(in_channels, channels, kernel_size=3, padding=1), group_norm(channels, norm_groups), nn.SiLU()
        )
        self.downs = nn.ModuleList(StridedConvDownsample(spatial_dims, channels) for _ in range(self.num_down))
        self.norms = nn.ModuleList(
            nn.Sequential(group_norm(channels, norm_groups), nn.SiLU()) for _ in range(self.num_down)
        )

    def strides(self, spatial_size: Sequence[int]) -> list[tuple[int, ...]]:
        """Per-axis strides of the downsampling stages for an input of ``spatial_size``.

        Args:
            spatial_size: spatial size of the input.

        Returns:
            one stride tuple per stage.
        """
        return compute_down_strides(spatial_size, self.num_down, self.min_size)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Size], torch.Tensor]:
        """Encode.

        Args:
            x: ``(N, C_in, *S)``.

        Returns:
            the features ``(N, channels, *s)``, the spatial size before every downsampling stage (for the decoder)
            and the full-resolution stem features (for a skip connection).
        """
        stem = h = self.stem(x)
        sizes = []
        for down, norm, stride in zip(self.downs, self.norms, self.strides(x.shape[2:])):
            sizes.append(h.shape[2:])
            h = norm(down(h, stride))
        return h, sizes, stem


class ConvDecoder(nn.Module):
    """Decoder of :class:`ConvEncoder` features: per stage resize to the recorded size and ``Conv(k3) - GN - SiLU``,
    then ``Conv(k3) - SiLU - Conv(k1)`` to the output channels.

    Args:
        spatial_dims: number of spatial dimensions.
        in_channels: channels of the latent features.
        channels: width of every stage.
        out_channels: output channels.
        num_up: number of upsampling stages (the encoder's ``num_down``).
        skip_channels: channels concatenated before the head (a full-resolution skip), 0 for none.
        norm_groups: GroupNorm groups.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        channels: int,
        out_channels: int,
        num_up: int = 2,
        skip_channels: int = 0,
        norm_groups: int = 8,
    ) -> None:
        super().__init__()
        conv = Conv[Conv.CONV, spatial_dims]
        self.ups = nn.ModuleList()
        for i in range(int(num_up)):
            cin = in_channels if i == 0 else channels
            self.ups.append(
                nn.Sequential(
                    conv(cin, channels, kernel_size=3, padding=1), group_norm(channels, norm_groups), nn.SiLU()
                )
            )
        head_in = (channels if num_up > 0 else in_channels) + int(skip_channels)
        self.head = nn.Sequential(
            conv(head_in, channels, kernel_size=3, padding=1), nn.SiLU(), conv(channels, out_channels, kernel_size=1)
        )

    def forward(
        self, h: torch.Tensor, sizes: Sequence[Sequence[int]], skip: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Decode.

        Args:
            h: ``(N, in_channels, *s)``.
            sizes: the encoder's recorded sizes (the last entry is resized to first).
            skip: optional full-resolution features concatenated before the head.

        Returns:
            ``(N, out_channels, *S)``.
        """
        for up, size in zip(self.ups, reversed(list(sizes))):
            h = up(resize_to(h, size))
        if skip is not None:
            h = torch.cat([resize_to(h, skip.shape[2:]), skip], dim=1)
        return self.head(h)
