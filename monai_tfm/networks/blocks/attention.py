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
"""Residual (windowed) self-attention over the voxels of a feature map."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.blocks import SABlock
from torch import nn

__all__ = ["WindowAttention"]


class WindowAttention(nn.Module):
    """`x + Attn(GroupNorm(x))`, with multi-head self-attention inside non-overlapping windows.

    The multi-head attention itself is MONAI's `SABlock` (run through `F.scaled_dot_product_attention`); this
    module adds what it lacks for feature maps: the window partition, and volumes whose size is not a multiple of
    the window. A window larger than an axis shrinks to that axis; otherwise the map is zero-padded to a multiple
    of the window and the padded voxels are masked out as keys (and cropped away afterwards), so the result does
    not depend on the padding.

    Args:
        spatial_dims: number of spatial dimensions (2 or 3).
        channels: feature channels.
        num_heads: attention heads.
        window_size: window edge (int or one per axis); None for global attention over all voxels.
        head_dim: size of one head (default `channels // num_heads`).
        norm_groups: groups of the pre-attention GroupNorm.

    Raises:
        ValueError: when `channels` is not divisible by `num_heads` and no `head_dim` is given.
    """

    def __init__(
        self,
        spatial_dims: int,
        channels: int,
        num_heads: int = 4,
        window_size: int | Sequence[int] | None = 8,
        head_dim: int | None = None,
        norm_groups: int = 8,
    ) -> None:
        super().__init__()
        if head_dim is None and channels % num_heads != 0:
            raise ValueError(f"channels={channels} must be divisible by num_heads={num_heads} (or give head_dim).")
        self.spatial_dims = spatial_dims
        if window_size is None:
            self.window_size = None
        elif isinstance(window_size, int):
            self.window_size = (window_size,) * spatial_dims
        else:
            self.window_size = tuple(int(w) for w in window_size)
            if len(self.window_size) != spatial_dims:
                raise ValueError(f"window_size needs {spatial_dims} entries, got {window_size}.")
        self.norm = nn.GroupNorm(norm_groups, channels)
        self.attn = SABlock(
            hidden_size=channels, num_heads=num_heads, dim_head=head_dim, qkv_bias=True, use_flash_attention=True
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply residual windowed attention.

        Args:
            x: `(B, C, *S)`.

        Returns:
            a tensor of the same shape.
        """
        b, _, *spatial = x.shape
        win = spatial if self.window_size is None else [min(w, s) for w, s in zip(self.window_size, spatial)]
        pads = [(-s) % w for s, w in zip(spatial, win)]
        h = self.norm(x)
        mask = None
        if any(pads):
            # F.pad takes (last axis first) pairs (before, after)
            h = F.pad(h, [p for pad in reversed(pads) for p in (0, pad)])
            valid = torch.ones((1, 1, *spatial), dtype=h.dtype, device=h.device)
            valid = F.pad(valid, [p for pad in reversed(pads) for p in (0, pad)])
            mask = self._partition(valid, win)[..., 0] > 0  # (nW, N)
            mask = mask.repeat(b, 1)[:, None, None, :]  # (B * nW, 1, 1, N): keys only
        padded = list(h.shape[2:])
        tokens = self._partition(h, win)  # (B * nW, N, C)
        out = self.attn(tokens, attn_mask=mask)
        out = self._merge(out, b, padded, win)
        if any(pads):
            out = out[(slice(None), slice(None), *[slice(0, s) for s in spatial])]
        return x + out

    @staticmethod
    def _partition(h: torch.Tensor, win: Sequence[int]) -> torch.Tensor:
        """`(B, C, *S)` with `S` a multiple of `win` -> `(B * nW, prod(win), C)`."""
        b, c, *spatial = h.shape
        nd = len(spatial)
        shape = [b, c]
        for s, w in zip(spatial, win):
            shape += [s // w, w]
        h = h.reshape(shape)
        # (B, C, n1, w1, n2, w2, ...) -> (B, n1, n2, ..., w1, w2, ..., C)
        perm = [0] + [2 + 2 * i for i in range(nd)] + [3 + 2 * i for i in range(nd)] + [1]
        h = h.permute(perm)
        n_win = 1
        for s, w in zip(spatial, win):
            n_win *= s // w
        n_tok = 1
        for w in win:
            n_tok *= w
        return h.reshape(b * n_win, n_tok, c)

    @staticmethod
    def _merge(tokens: torch.Tensor, b: int, spatial: Sequence[int], win: Sequence[int]) -> torch.Tensor:
        """Inverse of `_partition`: `(B * nW, prod(win), C)` -> `(B, C, *S)`."""
        nd = len(spatial)
        c = tokens.shape[-1]
        counts = [s // w for s, w in zip(spatial, win)]
        h = tokens.reshape([b, *counts, *win, c])
        # (B, n1, ..., nd, w1, ..., wd, C) -> (B, C, n1, w1, n2, w2, ...)
        perm = [0, 1 + 2 * nd]
        for i in range(nd):
            perm += [1 + i, 1 + nd + i]
        return h.permute(perm).reshape(b, c, *spatial)
