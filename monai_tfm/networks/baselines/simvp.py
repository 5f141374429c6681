# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""3D SimVP baseline (Gao et al. 2022, as benchmarked in TFM/CRONOS; docs/method.md section 8).

SimVP is encoder - translator - decoder, all convolutional: a spatial encoder shared by the frames, a temporal
translator that sees the frames flattened into channels, and a decoder. MONAI has no such translator, so its blocks
(inception-style grouped multi-kernel convolutions, or gated convolutions) are written here in 3D.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.layers import Conv
from torch import nn

from monai_tfm.networks.baselines.base import (
    ConvDecoder,
    ConvEncoder,
    DirectForecaster,
    group_norm,
    right_align,
    time_to_target,
)
from monai_tfm.utils.errors import MonaiTFMError

__all__ = ["InceptionBlock", "GatedConvBlock", "SimVP3D"]


def _groups(channels: int, wanted: int) -> int:
    g = max(1, min(int(wanted), int(channels)))
    while channels % g:
        g -= 1
    return g


class InceptionBlock(nn.Module):
    """SimVP's inception translator block in N-D: a 1x1 reduction, then grouped convolutions with several kernel
    sizes whose (normalised, LeakyReLU-activated) outputs are summed, plus a residual connection.

    Args:
        spatial_dims: number of spatial dimensions.
        channels: input and output channels.
        hidden_channels: channels after the 1x1 reduction.
        kernel_sizes: odd kernel sizes of the parallel branches.
        groups: groups of the branch convolutions (reduced until it divides the channels).
    """

    def __init__(
        self,
        spatial_dims: int,
        channels: int,
        hidden_channels: int,
        kernel_sizes: Sequence[int] = (3, 5, 7),
        groups: int = 4,
    ) -> None:
        super().__init__()
        conv = Conv[Conv.CONV, spatial_dims]
        self.reduce = conv(channels, hidden_channels, kernel_size=1)
        g = _groups(hidden_channels, groups)
        g = g if channels % g == 0 else 1
        self.branches = nn.ModuleList(
            nn.Sequential(
                conv(hidden_channels, channels, kernel_size=k, padding=k // 2, groups=g),
                group_norm(channels, g),
                nn.LeakyReLU(0.2),
            )
            for k in kernel_sizes
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block.

        Args:
            x: ``(B, channels, *S)``.

        Returns:
            ``(B, channels, *S)``.
        """
        h = self.reduce(x)
        return x + sum(branch(h) for branch in self.branches)


class GatedConvBlock(nn.Module):
    """Gated convolution translator block: ``x + Conv1x1(a * sigmoid(g))`` with ``a, g = split(Conv_k(GN(x)))``.

    Args:
        spatial_dims: number of spatial dimensions.
        channels: input and output channels.
        hidden_channels: channels of the gated features.
        kernel_size: odd kernel size.
        norm_groups: GroupNorm groups.
    """

    def __init__(
        self, spatial_dims: int, channels: int, hidden_channels: int, kernel_size: int = 5, norm_groups: int = 8
    ) -> None:
        super().__init__()
        conv = Conv[Conv.CONV, spatial_dims]
        self.norm = group_norm(channels, norm_groups)
        self.conv = conv(channels, 2 * hidden_channels, kernel_size=kernel_size, padding=kernel_size // 2)
        self.out = conv(hidden_channels, channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block.

        Args:
            x: ``(B, channels, *S)``.

        Returns:
            ``(B, channels, *S)``.
        """
        a, g = torch.chunk(self.conv(self.norm(x)), 2, dim=1)
        return x + self.out(a * torch.sigmoid(g))


class SimVP3D(DirectForecaster):
    """SimVP in 3D for sequence-to-one forecasting.

    * The real frames are right-aligned into ``num_frames`` slots (latest frame in the last slot; leading empty
      slots repeat the first real frame), so padding never changes the forecast and a fixed channel position always
      holds the most recent frame. Each slot gets two constant extra channels: its mask and ``t_target - t_i``
      (``use_time``).
    * Spatial encoder (shared by the frames): stem conv and ``num_down`` strided convs (per-axis strides).
    * Temporal translator: the encoded frames flattened into channels ``(B, T * F, *s)``, a 1x1 projection to
      ``translator_channels``, ``num_blocks`` inception or gated blocks.
    * Decoder: upsampling convs and a head, with SimVP's skip from the stem features of the latest frame.

    Args:
        spatial_dims: number of spatial dimensions.
        num_frames: context slots ``T`` (fixed: the frames become channels). Fewer input frames are right-aligned.
        in_channels: channels ``C`` per frame.
        hidden_channels: width ``F`` of the spatial encoder and decoder.
        translator_channels: width of the translator.
        num_down: encoder downsampling stages.
        num_blocks: translator blocks.
        translator: ``"inception"`` (SimVP's grouped multi-kernel blocks) or ``"gated"``.
        kernel_sizes: kernel sizes of the inception branches (the gated block uses the largest).
        groups: groups of the inception convolutions.
        min_size: an axis is halved only while it stays at least this large.
        norm_groups: GroupNorm groups.
        use_time: add the ``t_target - t_i`` channel (without it only the slot order carries time).

    Raises:
        ValueError: unknown translator or fewer than one frame.
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        num_frames: int = 11,
        in_channels: int = 1,
        hidden_channels: int = 16,
        translator_channels: int = 64,
        num_down: int = 2,
        num_blocks: int = 2,
        translator: str = "inception",
        kernel_sizes: Sequence[int] = (3, 5, 7),
        groups: int = 4,
        min_size: int = 4,
        norm_groups: int = 8,
        use_time: bool = True,
    ) -> None:
        super().__init__()
        if translator not in ("inception", "gated"):
            raise MonaiTFMError(f"translator must be 'inception' or 'gated', got {translator!r}.")
        if num_frames < 1:
            raise MonaiTFMError(f"num_frames must be >= 1, got {num_frames}.")
        conv = Conv[Conv.CONV, spatial_dims]
        self.spatial_dims = int(spatial_dims)
        self.num_frames = int(num_frames)
        self.in_channels = int(in_channels)
        self.use_time = bool(use_time)
        self.needs_time = self.use_time
        extra = 1 + int(self.use_time)  # mask channel (+ time channel)
        self.encoder = ConvEncoder(spatial_dims, in_channels + extra, hidden_channels, num_down, min_size, norm_groups)
        self.project_in = conv(num_frames * hidden_channels, translator_channels, kernel_size=1)
        if translator == "inception":
            blocks = [
                InceptionBlock(spatial_dims, translator_channels, translator_channels // 2, kernel_sizes, groups)
                for _ in range(num_blocks)
            ]
        else:
            k = max(kernel_sizes)
            blocks = [
                GatedConvBlock(spatial_dims, translator_channels, translator_channels, k, norm_groups)
                for _ in range(num_blocks)
            ]
        self.translator = nn.Sequential(*blocks)
        self.project_out = conv(translator_channels, hidden_channels, kernel_size=1)
        self.decoder = ConvDecoder(
            spatial_dims, hidden_channels, hidden_channels, in_channels, num_down, hidden_channels, norm_groups
        )

    def predict(
        self, context: torch.Tensor, times: torch.Tensor, mask: torch.Tensor, target_time: torch.Tensor
    ) -> torch.Tensor:
        """Forecast from checked inputs (see :meth:`DirectForecaster.predict`)."""
        if times is None:
            times = torch.zeros(mask.shape, dtype=context.dtype, device=context.device)
        context, times, mask = right_align(context, times, mask, self.num_frames)
        b, t = context.shape[:2]
        spatial = context.shape[3:]
        ones = (b * t, 1, *([1] * len(spatial)))
        extra = [mask.to(context.dtype).reshape(ones)]
        if self.use_time:
            extra.append(time_to_target(times, target_time, mask).reshape(ones))
        x = torch.cat([context.flatten(0, 1)] + [e.expand(b * t, 1, *spatial) for e in extra], dim=1)
        z, sizes, skip = self.encoder(x)
        z = z.reshape(b, t * z.shape[1], *z.shape[2:])
        z = self.project_out(self.translator(self.project_in(z)))
        latest_skip = skip.reshape(b, t, *skip.shape[1:])[:, -1]
        return self.decoder(z, sizes, skip=latest_skip)
