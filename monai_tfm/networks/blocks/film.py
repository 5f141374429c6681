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
"""Residual block with FiLM conditioning (CRONOS appendix C.3)."""

from __future__ import annotations

import torch
from monai.networks.layers import Conv
from torch import nn

from monai_tfm.utils.errors import MonaiTFMError

__all__ = ["FiLMResBlock"]


class FiLMResBlock(nn.Module):
    """`Conv(k3) - GN - FiLM - SiLU - Conv(k3) - GN` plus a skip (1x1 projection when the channels change).

    MONAI's `UnetResBlock` has the same conv/norm layout but no hook between the first norm and the activation,
    which is where CRONOS injects the conditioning, hence this block.

    FiLM follows CRONOS (appendix C.3, docs/method.md section 5): ``film_mode="paper"`` (default) is the formula as
    written, ``h' = alpha * GN(h) + beta + h`` with ``h`` the first convolution's output; ``film_mode="scale_shift"``
    is the common identity-centred reading ``h' = (1 + alpha) * GN(h) + beta``. `(alpha, beta)` come from
    `SiLU - Linear` of the conditioning vector, which together with the conditioning MLP forms the per-block MLP of
    the paper.

    Args:
        spatial_dims: number of spatial dimensions (2 or 3).
        in_channels: input channels.
        out_channels: output channels.
        cond_dim: size of the conditioning vector.
        norm_groups: GroupNorm groups (must divide `out_channels`).
        film_mode: ``"paper"`` or ``"scale_shift"`` (see above).

    Raises:
        ValueError: when `norm_groups` does not divide `out_channels`, or an unknown `film_mode`.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        cond_dim: int,
        norm_groups: int = 8,
        film_mode: str = "paper",
    ):
        super().__init__()
        if film_mode not in ("paper", "scale_shift"):
            raise MonaiTFMError(f"film_mode must be 'paper' or 'scale_shift', got {film_mode!r}.")
        self.film_mode = film_mode
        if out_channels % norm_groups != 0:
            raise MonaiTFMError(f"norm_groups={norm_groups} must divide out_channels={out_channels}.")
        conv = Conv[Conv.CONV, spatial_dims]
        self.spatial_dims = spatial_dims
        self.conv1 = conv(in_channels, out_channels, kernel_size=3, padding=1)
        self.norm1 = nn.GroupNorm(norm_groups, out_channels)
        self.film = nn.Sequential(nn.SiLU(), nn.Linear(cond_dim, 2 * out_channels))
        self.act = nn.SiLU()
        self.conv2 = conv(out_channels, out_channels, kernel_size=3, padding=1)
        self.norm2 = nn.GroupNorm(norm_groups, out_channels)
        self.skip = conv(in_channels, out_channels, kernel_size=1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Apply the block.

        Args:
            x: `(B, C_in, *S)`.
            cond: conditioning vector `(B, cond_dim)`.

        Returns:
            `(B, C_out, *S)`.
        """
        pre = self.conv1(x)
        h = self.norm1(pre)
        ab = self.film(cond).reshape([cond.shape[0], 2, -1] + [1] * self.spatial_dims)
        alpha, beta = ab[:, 0], ab[:, 1]
        residual = pre if self.film_mode == "paper" else h
        h = self.act(alpha * h + beta + residual)
        h = self.norm2(self.conv2(h))
        return h + self.skip(x)
