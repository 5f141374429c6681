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
"""Per-axis down/upsampling for UNets on anisotropic, thin or odd-sized volumes.

MONAI's UNet blocks use one fixed stride per level, which breaks on thin volumes (e.g. 8 slices through four
scales) and on odd sizes unless the input is padded to a multiple of 2**levels. Here the stride of every axis is
chosen from the actual size (an axis is halved only while it stays >= `min_size` voxels), the strided convolution
takes that stride at call time, and the decoder resizes to the exact size of each skip.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.layers import Conv
from torch import nn

from monai_tfm.utils.errors import MonaiTFMError

__all__ = ["StridedConvDownsample", "compute_down_strides", "down_axis_mask", "down_stride_lists", "resize_to"]


def compute_down_strides(
    spatial_size: Sequence[int], num_down: int, min_size: int = 4, axes: Sequence[int] | None = None
) -> list[tuple[int, ...]]:
    """Strides of `num_down` successive stride-2 (kernel 3, padding 1) convolutions, per axis.

    A stride-2 step maps a size `n` to `ceil(n / 2)`; an axis is halved only while the result stays
    `>= min_size`, otherwise its stride is 1 from then on.

    Args:
        spatial_size: the input's spatial size, e.g. `(D, H, W)`.
        num_down: number of downsampling steps.
        min_size: smallest size an axis may be halved to.
        axes: the axes that may be downsampled (e.g. `(1, 2)` for in-plane only on `(D, H, W)`); default all.

    Returns:
        one stride tuple per step, e.g. `[(2, 2, 2), (2, 2, 1), (1, 2, 1)]`.

    Raises:
        ValueError: for a negative `num_down` or `min_size < 1`.
    """
    if num_down < 0 or min_size < 1:
        raise MonaiTFMError(f"need num_down >= 0 and min_size >= 1, got {num_down} and {min_size}.")
    allowed = set(range(len(spatial_size))) if axes is None else {a % len(spatial_size) for a in axes}
    mask = [a in allowed for a in range(len(spatial_size))]
    return [tuple(step) for step in down_stride_lists([int(s) for s in spatial_size], num_down, min_size, mask)]


def down_axis_mask(spatial_dims: int, slice_axis: int | None = None) -> list[bool]:
    """Which spatial axes a UNet may downsample: all but ``slice_axis`` (one rule for both UNets).

    Args:
        spatial_dims: number of spatial dimensions.
        slice_axis: the axis kept at full size (negative counts from the end); ``None``: none.

    Returns:
        one flag per axis, ``True`` where the axis may be downsampled.

    Raises:
        ValueError: ``slice_axis`` is not an axis of a ``spatial_dims``-dimensional volume.
    """
    if slice_axis is None:
        return [True] * spatial_dims
    if not -spatial_dims <= int(slice_axis) < spatial_dims:
        raise MonaiTFMError(f"slice_axis must be an axis of a {spatial_dims}D volume or None, got {slice_axis!r}.")
    fixed = int(slice_axis) % spatial_dims
    return [a != fixed for a in range(spatial_dims)]


def down_stride_lists(spatial_size: list[int], num_down: int, min_size: int, allowed: list[bool]) -> list[list[int]]:
    """TorchScript-compatible core of :func:`compute_down_strides` (lists instead of tuples, no checks).

    Args:
        spatial_size: the input's spatial size.
        num_down: number of downsampling steps.
        min_size: smallest size an axis may be halved to.
        allowed: one flag per axis, True where the axis may be downsampled.

    Returns:
        one stride list per step.
    """
    size = [int(s) for s in spatial_size]
    strides: list[list[int]] = []
    for _ in range(num_down):
        step: list[int] = []
        for a in range(len(size)):
            step.append(2 if allowed[a] and (size[a] + 1) // 2 >= min_size else 1)
        for a in range(len(size)):
            size[a] = (size[a] + step[a] - 1) // step[a]
        strides.append(step)
    return strides


class StridedConvDownsample(nn.Module):
    """Convolution (kernel 3, padding 1) whose per-axis stride is given at call time.

    Args:
        spatial_dims: number of spatial dimensions (2 or 3).
        in_channels: input channels.
        out_channels: output channels (default `in_channels`).
        kernel_size: odd kernel size.
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int | None = None, kernel_size: int = 3):
        super().__init__()
        self.spatial_dims = spatial_dims
        self.conv = Conv[Conv.CONV, spatial_dims](
            in_channels, out_channels or in_channels, kernel_size=kernel_size, padding=kernel_size // 2
        )
        self.padding = [kernel_size // 2] * spatial_dims

    def forward(self, x: torch.Tensor, stride: list[int]) -> torch.Tensor:
        """Apply the convolution.

        Args:
            x: `(B, C, *S)`.
            stride: one stride per spatial axis (1 or 2); a list or a tuple.

        Returns:
            `(B, C_out, *ceil(S / stride))`.
        """
        stride = [int(s) for s in stride]
        if self.spatial_dims == 3:
            return F.conv3d(x, self.conv.weight, self.conv.bias, stride=stride, padding=self.padding)
        if self.spatial_dims == 2:
            return F.conv2d(x, self.conv.weight, self.conv.bias, stride=stride, padding=self.padding)
        return F.conv1d(x, self.conv.weight, self.conv.bias, stride=stride, padding=self.padding)


def resize_to(x: torch.Tensor, size: list[int], mode: str = "linear") -> torch.Tensor:
    """Resize `x` to the exact spatial `size` (a no-op when the size already matches).

    Args:
        x: `(B, C, *S)`.
        size: target spatial size (a list, tuple or `torch.Size`).
        mode: `"linear"` (bi/trilinear by dimension, `align_corners=False`) or `"nearest"`.

    Returns:
        `(B, C, *size)`.
    """
    size = [int(s) for s in size]
    if list(x.shape[2:]) == size:
        return x
    if mode == "linear":
        linear = "linear" if x.dim() == 3 else "bilinear" if x.dim() == 4 else "trilinear"
        return F.interpolate(x, size=size, mode=linear, align_corners=False)
    return F.interpolate(x, size=size, mode=mode)
