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

from monai_tfm.utils.errors import MonaiTFMError

__all__ = ["WindowAttention", "window_merge", "window_partition"]


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
            raise MonaiTFMError(f"channels={channels} must be divisible by num_heads={num_heads} (or give head_dim).")
        self.spatial_dims = spatial_dims
        if window_size is None:
            self.window_size = None
        elif isinstance(window_size, int):
            self.window_size = (window_size,) * spatial_dims
        else:
            self.window_size = tuple(int(w) for w in window_size)
            if len(self.window_size) != spatial_dims:
                raise MonaiTFMError(f"window_size needs {spatial_dims} entries, got {window_size}.")
        # the window as a list for TorchScript (0: the whole axis, i.e. global attention)
        self._window = [0] * spatial_dims if self.window_size is None else list(self.window_size)
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
        b = x.shape[0]
        spatial = [int(s) for s in x.shape[2:]]
        win: list[int] = []
        pads: list[int] = []
        for i in range(len(spatial)):
            w = spatial[i] if self._window[i] <= 0 else min(self._window[i], spatial[i])
            win.append(w)
            pads.append((w - spatial[i] % w) % w)
        h = self.norm(x)
        mask: torch.Tensor | None = None
        padded_any = sum(pads) > 0
        if padded_any:
            # F.pad takes (last axis first) pairs (before, after)
            pad_arg: list[int] = []
            for i in range(len(pads) - 1, -1, -1):
                pad_arg += [0, pads[i]]
            h = F.pad(h, pad_arg)
            valid = torch.ones([1, 1] + spatial, dtype=h.dtype, device=h.device)
            valid = F.pad(valid, pad_arg)
            keys = window_partition(valid, win)[..., 0] > 0  # (nW, N)
            mask = keys.repeat(b, 1)[:, None, None, :]  # (B * nW, 1, 1, N): keys only
        padded = [int(s) for s in h.shape[2:]]
        tokens = window_partition(h, win)  # (B * nW, N, C)
        out = self.attn(tokens, attn_mask=mask)
        out = window_merge(out, b, padded, win)
        if padded_any:
            for i in range(len(spatial)):
                out = out.narrow(2 + i, 0, spatial[i])
        return x + out


def window_partition(h: torch.Tensor, win: list[int]) -> torch.Tensor:
    """`(B, C, *S)` with `S` a multiple of `win` -> `(B * nW, prod(win), C)` (TorchScript-compatible).

    Args:
        h: feature map.
        win: window edge per spatial axis.

    Returns:
        the windows as token sequences.
    """
    b, c = h.shape[0], h.shape[1]
    spatial = [int(s) for s in h.shape[2:]]
    nd = len(spatial)
    shape = [b, c]
    n_win = 1
    n_tok = 1
    for i in range(nd):
        shape += [spatial[i] // win[i], win[i]]
        n_win *= spatial[i] // win[i]
        n_tok *= win[i]
    h = h.reshape(shape)
    # (B, C, n1, w1, n2, w2, ...) -> (B, n1, n2, ..., w1, w2, ..., C)
    perm = [0] + [2 + 2 * i for i in range(nd)] + [3 + 2 * i for i in range(nd)] + [1]
    return h.permute(perm).reshape(b * n_win, n_tok, c)


def window_merge(tokens: torch.Tensor, b: int, spatial: list[int], win: list[int]) -> torch.Tensor:
    """Inverse of :func:`window_partition`: `(B * nW, prod(win), C)` -> `(B, C, *S)` (TorchScript-compatible).

    Args:
        tokens: the windows as token sequences.
        b: batch size.
        spatial: spatial size of the (padded) feature map.
        win: window edge per spatial axis.

    Returns:
        the feature map.
    """
    nd = len(spatial)
    c = tokens.shape[-1]
    counts = [spatial[i] // win[i] for i in range(nd)]
    h = tokens.reshape([b] + counts + win + [c])
    # (B, n1, ..., nd, w1, ..., wd, C) -> (B, C, n1, w1, n2, w2, ...)
    perm = [0, 1 + 2 * nd]
    for i in range(nd):
        perm += [1 + i, 1 + nd + i]
    return h.permute(perm).reshape([b, c] + spatial)
