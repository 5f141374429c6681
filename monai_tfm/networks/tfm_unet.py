# Copyright (c) monai_tfm contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""TFM velocity network: a guided-diffusion style UNet with additive time embedding (docs/method.md section 5).

MONAI's `DiffusionModelUNet` has the same block structure but downsamples every spatial axis by 2 and needs sizes
divisible by 2**levels; TFM downsamples in-plane only (depth is never downsampled) and the volumes here can be odd
sized, so the UNet is assembled from the blocks below with per-axis strides and exact-size upsampling.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.layers import Conv
from torch import nn

from monai_tfm.flows.path import check_prediction, predicts_endpoint
from monai_tfm.networks.base import FrameVelocityNet
from monai_tfm.networks.blocks.attention import WindowAttention
from monai_tfm.networks.blocks.interfaces import StridedModule, TensorModule
from monai_tfm.networks.blocks.resample import (
    StridedConvDownsample,
    compute_down_strides,
    down_axis_mask,
    down_stride_lists,
    resize_to,
)
from monai_tfm.networks.blocks.time_embedding import TimeConditioning
from monai_tfm.utils.errors import MonaiTFMError

__all__ = ["TFMUNet", "TimeEmbedResBlock"]


class TimeEmbedResBlock(nn.Module):
    """Guided-diffusion residual block: `GN - SiLU - Conv`, `+ Linear(SiLU(emb))`, `GN - SiLU - Dropout - Conv`.

    The time embedding is projected to the block width and added after the first convolution. Unlike
    guided-diffusion the second convolution is not zero-initialised (the network's output layer is), so every
    parameter receives a gradient from the first step.

    Args:
        spatial_dims: number of spatial dimensions.
        in_channels: input channels.
        out_channels: output channels.
        emb_dim: size of the time embedding.
        norm_groups: GroupNorm groups (must divide both channel counts).
        dropout: dropout before the second convolution.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        emb_dim: int,
        norm_groups: int = 8,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        conv = Conv[Conv.CONV, spatial_dims]
        self.spatial_dims = spatial_dims
        self.in_layers = nn.Sequential(
            nn.GroupNorm(norm_groups, in_channels), nn.SiLU(), conv(in_channels, out_channels, 3, padding=1)
        )
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, out_channels))
        self.out_layers = nn.Sequential(
            nn.GroupNorm(norm_groups, out_channels),
            nn.SiLU(),
            nn.Dropout(dropout),
            conv(out_channels, out_channels, 3, padding=1),
        )
        self.skip = conv(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """Apply the block.

        Args:
            x: `(B, C_in, *S)`.
            emb: time embedding `(B, emb_dim)`.

        Returns:
            `(B, C_out, *S)`.
        """
        h = self.in_layers(x)
        h = h + self.emb_layers(emb).reshape([emb.shape[0], -1] + [1] * self.spatial_dims)
        return self.skip(x) + self.out_layers(h)


class _Level(nn.Module):
    """One res block, optionally followed by attention."""

    def __init__(self, block: TimeEmbedResBlock, attn: nn.Module | None) -> None:
        super().__init__()
        self.block = block
        self.attn = attn if attn is not None else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return self.attn(self.block(x, emb))


class TFMUNet(FrameVelocityNet):
    """Velocity network of TFM: guided-diffusion / TorchCFM style UNet on `K` stacked frames.

    Layout (widths `w_i = channels * channel_mult[i]`): an input conv (k3) to `channels`; per level
    `num_res_blocks` `TimeEmbedResBlock` (plus attention at the deepest level) and, except at the deepest level, a
    k3 conv with stride 2 in-plane only (the depth axis, the first spatial axis of a 3D volume, keeps its size; an
    in-plane axis is halved only while it stays `>= min_size`); a middle block `res - attention - res`; a decoder
    with `num_res_blocks + 1` res blocks per level, each consuming one encoder activation by concatenation, and
    nearest upsampling to the exact skip size followed by a k3 conv; output `GN - SiLU - Conv(k3)` with the conv
    zero-initialised. The time embedding (`TimeConditioning`) is added inside every res block.

    Args:
        spatial_dims: number of spatial dimensions (3; 2 also works, then both axes are in-plane).
        num_frames: number of frames `K` in the stack.
        in_channels: channels `C` of one frame.
        channels: base width.
        channel_mult: width multiplier per level.
        num_res_blocks: res blocks per encoder level.
        norm_groups: GroupNorm groups (guided-diffusion uses 32; 8 keeps narrow test widths valid).
        attention: attention at the deepest level and in the middle block.
        attention_heads: attention heads.
        attention_window: window edge of the attention; None (default) is global attention as in guided-diffusion.
        attention_head_dim: size of one head (default width // heads).
        dropout: dropout in the res blocks.
        time_mode: `"discrete"` or `"continuous"` (see `TimeConditioning`).
        fourier_features: Fourier frequencies per time code.
        cond_dim: size of the time embedding.
        use_target_time: also encode the target time (``None``: in continuous mode only; in discrete mode it
            tells the network the time to forecast, which the slots of a fixed grid do not).
        max_freq: highest Fourier frequency.
        min_size: an in-plane axis is downsampled only while it stays at least this large.
        slice_axis: the spatial axis that is never downsampled (TFM keeps the slice axis at full size). Volumes
            loaded from NIfTI here are ``(x, y, z)`` with the slices last, hence the default ``-1``; ``None``
            downsamples every axis. 2D inputs have no slice axis: both axes are in-plane.
        prediction: what the last layer predicts, ``"velocity"`` (the paper) or ``"endpoint"`` (the remaining way
            ``X1 - X_tau``; forward still returns the velocity: :func:`monai_tfm.flows.velocity_from_endpoint`).
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        num_frames: int = 1,
        in_channels: int = 1,
        channels: int = 32,
        channel_mult: Sequence[int] = (1, 1, 2, 4),
        num_res_blocks: int = 1,
        norm_groups: int = 8,
        attention: bool = True,
        attention_heads: int = 4,
        attention_window: int | Sequence[int] | None = None,
        attention_head_dim: int | None = None,
        dropout: float = 0.0,
        time_mode: str = "discrete",
        fourier_features: int = 16,
        cond_dim: int = 128,
        use_target_time: bool | None = None,
        max_freq: float = 32.0,
        min_size: int = 4,
        slice_axis: int | None = -1,
        prediction: str = "velocity",
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise MonaiTFMError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
        if len(channel_mult) < 1 or num_res_blocks < 1:
            raise MonaiTFMError("need at least one level and one res block per level.")
        self.spatial_dims = spatial_dims
        self.num_frames = num_frames
        self.in_channels = in_channels
        self.num_levels = len(channel_mult)
        self.num_res_blocks = num_res_blocks
        self.min_size = min_size
        if check_prediction(prediction) == "warp":
            raise MonaiTFMError("TFMUNet predicts the velocity or the end point; 'warp' is a CronosUNet option.")
        self.endpoint_prediction = predicts_endpoint(prediction)
        self.warp_prediction = False
        self.slice_axis = None if spatial_dims == 2 else slice_axis
        self._down_mask = down_axis_mask(spatial_dims, self.slice_axis)  # a list: the same for TorchScript
        self._down_axes = tuple(a for a, allowed in enumerate(self._down_mask) if allowed)
        conv = Conv[Conv.CONV, spatial_dims]
        io_channels = num_frames * in_channels

        def attn(width: int) -> nn.Module:
            return WindowAttention(
                spatial_dims, width, attention_heads, attention_window, attention_head_dim, norm_groups
            )

        def res(cin: int, cout: int) -> TimeEmbedResBlock:
            return TimeEmbedResBlock(spatial_dims, cin, cout, cond_dim, norm_groups, dropout)

        self.time_cond = TimeConditioning(
            cond_dim=cond_dim,
            num_features=fourier_features,
            mode=time_mode,
            use_target_time=use_target_time,
            max_freq=max_freq,
        )
        self.conv_in = conv(io_channels, channels, 3, padding=1)

        last = self.num_levels - 1
        skip_widths = [channels]
        self.down_levels = nn.ModuleList()
        self.downsamples = nn.ModuleList()
        width = channels
        for level, mult in enumerate(channel_mult):
            blocks = nn.ModuleList()
            for _ in range(num_res_blocks):
                blocks.append(
                    _Level(res(width, channels * mult), attn(channels * mult) if attention and level == last else None)
                )
                width = channels * mult
                skip_widths.append(width)
            self.down_levels.append(blocks)
            if level != last:
                self.downsamples.append(StridedConvDownsample(spatial_dims, width))
                skip_widths.append(width)

        self.mid_block1 = res(width, width)
        self.mid_attn = attn(width) if attention else nn.Identity()
        self.mid_block2 = res(width, width)

        # decoder, deepest level first
        self.up_levels = nn.ModuleList()
        self.upsamples = nn.ModuleList()
        for level in reversed(range(self.num_levels)):
            out_w = channels * channel_mult[level]
            blocks = nn.ModuleList()
            for _ in range(num_res_blocks + 1):
                skip_w = skip_widths.pop()
                blocks.append(_Level(res(width + skip_w, out_w), attn(out_w) if attention and level == last else None))
                width = out_w
            self.up_levels.append(blocks)
            if level != 0:
                self.upsamples.append(conv(width, width, 3, padding=1))

        self.out_norm = nn.Sequential(nn.GroupNorm(norm_groups, width), nn.SiLU())
        self.out_conv = conv(width, io_channels, 3, padding=1)
        nn.init.zeros_(self.out_conv.weight)
        nn.init.zeros_(self.out_conv.bias)

    def down_strides(self, spatial_size: Sequence[int]) -> list[tuple[int, ...]]:
        """Per-axis strides of the downsampling steps (the slice axis always 1) for an input of `spatial_size`.

        Args:
            spatial_size: spatial size of the input.

        Returns:
            one stride tuple per downsampling step.
        """
        return compute_down_strides(spatial_size, self.num_levels - 1, self.min_size, axes=self._down_axes)

    def stride_lists(self, spatial_size: list[int]) -> list[list[int]]:
        """:meth:`down_strides` as lists (TorchScript-compatible, used by ``forward``).

        Args:
            spatial_size: spatial size of the input.

        Returns:
            one stride list per downsampling step.
        """
        return down_stride_lists(spatial_size, self.num_levels - 1, self.min_size, self._down_mask)

    def backbone(self, h: torch.Tensor, cond: torch.Tensor, strides: list[list[int]]) -> torch.Tensor:
        """The UNet on channel-stacked frames (see :class:`FrameVelocityNet`).

        Args:
            h: `(B, K*C, *S)`.
            cond: conditioning vector `(B, cond_dim)`.
            strides: from :meth:`stride_lists`.

        Returns:
            `(B, K*C, *S)` velocities.
        """
        h = self.conv_in(h)
        hs = [h]
        for level, blocks in enumerate(self.down_levels):
            for block in blocks:
                h = block(h, cond)
                hs.append(h)
            if level < self.num_levels - 1:
                down: StridedModule = self.downsamples[level]
                h = down.forward(h, strides[level])
                hs.append(h)

        h = self.mid_block2(self.mid_attn(self.mid_block1(h, cond)), cond)

        for j, blocks in enumerate(self.up_levels):
            for block in blocks:
                h = block(torch.cat([h, hs.pop()], dim=1), cond)
            if j < self.num_levels - 1:
                up: TensorModule = self.upsamples[j]
                h = up.forward(resize_to(h, hs[-1].shape[2:], mode="nearest"))

        v = self.out_conv(self.out_norm(h))
        return v
