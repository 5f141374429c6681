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
"""CRONOS velocity network: a four-scale UNet with FiLM-conditioned residual blocks (docs/method.md section 5)."""

from __future__ import annotations

import typing
from collections.abc import Sequence

import torch
import torch.utils.checkpoint
from monai.networks.layers import Conv
from torch import nn

from monai_tfm.flows.path import check_prediction, predicts_endpoint
from monai_tfm.networks.base import FrameVelocityNet
from monai_tfm.networks.blocks.attention import WindowAttention
from monai_tfm.networks.blocks.film import FiLMResBlock
from monai_tfm.networks.blocks.interfaces import CondModule, StridedModule, TensorModule
from monai_tfm.networks.blocks.resample import (
    StridedConvDownsample,
    compute_down_strides,
    down_axis_mask,
    down_stride_lists,
    resize_to,
)
from monai_tfm.networks.blocks.time_embedding import TimeConditioning
from monai_tfm.utils.errors import MonaiTFMError

__all__ = ["CronosUNet"]


class CronosUNet(FrameVelocityNet):
    """Velocity network of CRONOS (appendix C.3): maps `K` stacked frames and the time code to `K` velocities.

    Layout (widths `w_i = channels * channel_mult[i]`, `L = len(channel_mult)` scales):

    * stem: 1x1 conv from `K * C` to `channels`;
    * encoder: per scale one `FiLMResBlock` to `w_i` (its output is the skip), then (except at the deepest scale) a
      kernel-3 stride-2 conv. The stride is per axis: an axis is halved only while it stays `>= min_size`
      voxels, so thin (e.g. 8 slices) and odd-sized volumes work;
    * bottleneck: `FiLMResBlock`, optional windowed self-attention, `FiLMResBlock`;
    * decoder: per scale (deepest first) trilinear upsampling to the exact skip size and a k3 conv (not at the
      deepest scale), concatenation of the skip, `FiLMResBlock` (its 1x1 skip projection aligns the channels);
    * head: `Conv(k3, -> channels) - SiLU - Conv(k1, -> K * C)`, the last layer zero-initialised, so an untrained
      network predicts zero velocity and the forecast starts at the context (the LCI fallback).

    Args:
        spatial_dims: number of spatial dimensions (3; 2 also works).
        num_frames: number of frames `K` in the stack.
        in_channels: channels `C` of one frame.
        channels: stem width (32 in the paper).
        channel_mult: width multiplier per scale.
        norm_groups: GroupNorm groups.
        attention: use windowed self-attention in the bottleneck.
        attention_window: window edge of the attention (None: global).
        attention_heads: attention heads.
        attention_head_dim: size of one head (default: bottleneck width // heads).
        time_mode: `"discrete"` (tau only) or `"continuous"` (tau, frame times, target time).
        fourier_features: Fourier frequencies per time code.
        cond_dim: size of the conditioning vector.
        use_target_time: also encode the target time (``None``: in continuous mode only; in discrete mode it
            tells the network the time to forecast, which the slots of a fixed grid do not).
        max_freq: highest Fourier frequency.
        min_size: an axis is downsampled only while it stays at least this large.
        slice_axis: a spatial axis that is never downsampled (e.g. ``2``, the slice axis of an ``(x, y, z)``
            volume); ``None`` (default, the CRONOS UNet) downsamples every axis while it stays ``>= min_size``.
        spatial_size: if given, the stride pattern is fixed from this size; otherwise it is computed from every
            input's size.
        film_mode: FiLM form, ``"paper"`` (``alpha * GN(h) + beta + h``, default) or ``"scale_shift"``.
        prediction: what the last layer predicts, ``"velocity"`` (the paper), ``"endpoint"`` (the remaining way
            ``X1 - X_tau``; forward still returns the velocity: :func:`monai_tfm.flows.velocity_from_endpoint`) or
            ``"warp"`` (a displacement field and an intensity residual per frame whose warped frame is the end
            point: :class:`~monai_tfm.networks.base.FrameVelocityNet`).
        activation_checkpointing: in training mode, recompute the activations of every residual block in the
            backward pass instead of storing them (``torch.utils.checkpoint``): less memory, about one more forward
            pass of compute, the same gradients. Not available in a TorchScript module in training mode.
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        num_frames: int = 1,
        in_channels: int = 1,
        channels: int = 32,
        channel_mult: Sequence[int] = (1, 1, 2, 4),
        norm_groups: int = 8,
        attention: bool = True,
        attention_window: int | Sequence[int] | None = 8,
        attention_heads: int = 4,
        attention_head_dim: int | None = None,
        time_mode: str = "discrete",
        fourier_features: int = 16,
        cond_dim: int = 128,
        use_target_time: bool | None = None,
        max_freq: float = 32.0,
        min_size: int = 4,
        spatial_size: Sequence[int] | None = None,
        slice_axis: int | None = None,
        film_mode: str = "paper",
        activation_checkpointing: bool = False,
        prediction: str = "velocity",
    ) -> None:
        super().__init__()
        self.activation_checkpointing = bool(activation_checkpointing)
        if spatial_dims not in (2, 3):
            raise MonaiTFMError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
        if len(channel_mult) < 1:
            raise MonaiTFMError("channel_mult needs at least one scale.")
        self.spatial_dims = spatial_dims
        self.endpoint_prediction = predicts_endpoint(prediction)
        self.warp_prediction = check_prediction(prediction) == "warp"
        self.num_frames = num_frames
        self.in_channels = in_channels
        self.min_size = min_size
        self.num_levels = len(channel_mult)
        self.slice_axis = slice_axis
        self._down_mask = down_axis_mask(spatial_dims, slice_axis)  # a list: the same for TorchScript
        self._down_axes = tuple(a for a, allowed in enumerate(self._down_mask) if allowed)
        self._fixed_strides = (
            None
            if spatial_size is None
            else compute_down_strides(spatial_size, self.num_levels - 1, min_size, axes=self._down_axes)
        )
        # the same for TorchScript: a non-empty int list (zeros: strides follow the input size)
        self._fixed_size = [0] * spatial_dims if spatial_size is None else [int(v) for v in spatial_size]
        conv = Conv[Conv.CONV, spatial_dims]
        widths = [channels * m for m in channel_mult]
        io_channels = num_frames * in_channels

        self.time_cond = TimeConditioning(
            cond_dim=cond_dim,
            num_features=fourier_features,
            mode=time_mode,
            use_target_time=use_target_time,
            max_freq=max_freq,
        )
        self.stem = conv(io_channels, channels, kernel_size=1)

        self.down_blocks = nn.ModuleList()
        self.downsamples = nn.ModuleList()
        prev = channels
        for i, w in enumerate(widths):
            self.down_blocks.append(FiLMResBlock(spatial_dims, prev, w, cond_dim, norm_groups, film_mode))
            if i < self.num_levels - 1:
                self.downsamples.append(StridedConvDownsample(spatial_dims, w))
            prev = w

        self.mid_block1 = FiLMResBlock(spatial_dims, prev, prev, cond_dim, norm_groups, film_mode)
        self.mid_attn = (
            WindowAttention(spatial_dims, prev, attention_heads, attention_window, attention_head_dim, norm_groups)
            if attention
            else nn.Identity()
        )
        self.mid_block2 = FiLMResBlock(spatial_dims, prev, prev, cond_dim, norm_groups, film_mode)

        # decoder modules are indexed by scale (index i works at the resolution of encoder scale i)
        self.up_convs = nn.ModuleList()
        self.up_blocks = nn.ModuleList()
        for i, w in enumerate(widths):
            deeper = widths[i + 1] if i < self.num_levels - 1 else None
            self.up_convs.append(conv(deeper, w, kernel_size=3, padding=1) if deeper is not None else nn.Identity())
            self.up_blocks.append(FiLMResBlock(spatial_dims, 2 * w, w, cond_dim, norm_groups, film_mode))

        self.head = nn.Sequential(conv(widths[0], channels, kernel_size=3, padding=1), nn.SiLU())
        # a warp network also predicts a displacement per frame (its channels follow the K*C residual channels)
        self.out_conv = conv(channels, io_channels + (num_frames * spatial_dims if self.warp_prediction else 0), 1)
        nn.init.zeros_(self.out_conv.weight)
        nn.init.zeros_(self.out_conv.bias)

    def down_strides(self, spatial_size: Sequence[int]) -> list[tuple[int, ...]]:
        """Per-axis strides of the downsampling steps for an input of `spatial_size`.

        Args:
            spatial_size: spatial size of the input.

        Returns:
            one stride tuple per downsampling step.
        """
        if self._fixed_strides is not None:
            return self._fixed_strides
        return compute_down_strides(spatial_size, self.num_levels - 1, self.min_size, axes=self._down_axes)

    def stride_lists(self, spatial_size: list[int]) -> list[list[int]]:
        """:meth:`down_strides` as lists (TorchScript-compatible, used by ``forward``).

        Args:
            spatial_size: spatial size of the input.

        Returns:
            one stride list per downsampling step.
        """
        size = spatial_size if self._fixed_size[0] <= 0 else self._fixed_size
        return down_stride_lists(size, self.num_levels - 1, self.min_size, self._down_mask)

    @torch.jit.unused
    def _checkpointed(self, name: str, index: int, h: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Run the residual block ``name`` (``[index]`` when ``index >= 0``) under activation checkpointing."""
        block = getattr(self, name)
        block = block[index] if index >= 0 else block
        return torch.utils.checkpoint.checkpoint(block, h, cond, use_reentrant=False)

    def backbone(self, h: torch.Tensor, cond: torch.Tensor, strides: list[list[int]]) -> torch.Tensor:
        """The UNet on channel-stacked frames (see :class:`FrameVelocityNet`).

        Args:
            h: `(B, K*C, *S)`.
            cond: conditioning vector `(B, cond_dim)`.
            strides: from :meth:`stride_lists`.

        Returns:
            `(B, K*C, *S)` velocities.
        """
        h = self.stem(h)
        skips: list[torch.Tensor] = []
        ckpt = self.activation_checkpointing and self.training
        for i, block in enumerate(self.down_blocks):
            h = self._checkpointed("down_blocks", i, h, cond) if ckpt else block(h, cond)
            skips.append(h)
            if i < self.num_levels - 1:
                down: StridedModule = self.downsamples[i]
                h = down.forward(h, strides[i])

        h = self._checkpointed("mid_block1", -1, h, cond) if ckpt else self.mid_block1(h, cond)
        h = self.mid_attn(h)
        h = self._checkpointed("mid_block2", -1, h, cond) if ckpt else self.mid_block2(h, cond)

        for i in range(self.num_levels - 1, -1, -1):
            if i < self.num_levels - 1:
                up_conv: TensorModule = self.up_convs[i]
                h = up_conv.forward(resize_to(h, skips[i].shape[2:], mode="linear"))
            up_block: CondModule = self.up_blocks[i]
            h = torch.cat([h, skips[i]], dim=1)
            h = self._checkpointed("up_blocks", i, h, cond) if ckpt else up_block.forward(h, cond)

        v = self.out_conv(self.head(h))
        return v


# TorchScript types the stub of an unused method from its runtime annotations, which ``from __future__ import
# annotations`` leaves as strings ("Unknown type annotation: 'str'"): evaluate them so that torch.jit.script (and
# MONAI's ckpt_export) can compile the network.
CronosUNet._checkpointed.__annotations__ = typing.get_type_hints(CronosUNet._checkpointed)
