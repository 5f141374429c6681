# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""3D ViViT baseline (Arnab et al. 2021, as benchmarked in TFM/CRONOS; docs/method.md section 8).

Tubelet tokens, a factorised transformer (spatial attention within every frame, then temporal attention across the
frames at every token position) and a convolutional head. The transformer layers are MONAI's ``TransformerBlock`` and
the spatial position code MONAI's sin-cos embedding (built for the actual token grid, so any divisible volume works).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from monai.networks.blocks import TransformerBlock
from monai.networks.blocks.pos_embed_utils import build_sincos_position_embedding
from monai.networks.layers import Conv
from monai.utils import ensure_tuple_rep
from torch import nn

from monai_tfm.flows.path import last_real_index
from monai_tfm.networks.baselines.base import DirectForecaster, group_norm, time_to_target
from monai_tfm.networks.blocks.time_embedding import FourierFeatures
from monai_tfm.utils.errors import MonaiTFMError

__all__ = ["ViViT3D"]


class ViViT3D(DirectForecaster):
    """ViViT with factorised spatial-then-temporal attention for sequence-to-one volume forecasting.

    * Tubelet embedding: every frame is cut into non-overlapping ``patch_size`` blocks, each projected to
      ``hidden_size`` by a strided convolution (the temporal extent of a tubelet is one frame: the frames are
      irregular in time and may be padding, so tokens never mix two frames), plus a fixed sin-cos position code.
    * ``spatial_layers`` transformer blocks over the tokens of each frame.
    * A Fourier code of ``t_target - t_i`` is added to the tokens of frame ``i``; ``temporal_layers`` blocks attend
      across the frames at every token position, with padded frames masked out as keys.
    * The tokens of the latest real frame are folded back to the token grid and decoded by a transposed convolution
      (kernel = stride = patch) and a ``Conv(k3)`` head.

    Padded slots change nothing: they are independent in the spatial blocks, invisible in the temporal ones and
    never selected.

    Args:
        spatial_dims: number of spatial dimensions (the sin-cos code needs ``hidden_size`` divisible by ``2 *
            spatial_dims``).
        in_channels: channels ``C`` per frame.
        patch_size: tubelet size per axis (must divide the volume).
        hidden_size: token width.
        num_heads: attention heads.
        mlp_dim: width of the transformer MLPs.
        spatial_layers: spatial transformer blocks.
        temporal_layers: temporal transformer blocks.
        head_channels: width of the convolutional head.
        fourier_features: frequencies of the time code.
        max_freq: highest frequency of the time code (cycles per scaled time unit).
        dropout_rate: dropout of the transformer blocks.
        spatial_size: optional volume size, checked at construction (the patch grid must divide it).
        norm_groups: GroupNorm groups of the head.

    Raises:
        ValueError: inconsistent sizes (see :meth:`token_grid`), or a ``hidden_size`` the heads or the position code
            cannot split.
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        patch_size: Sequence[int] | int = 4,
        hidden_size: int = 48,
        num_heads: int = 4,
        mlp_dim: int = 96,
        spatial_layers: int = 2,
        temporal_layers: int = 2,
        head_channels: int = 16,
        fourier_features: int = 8,
        max_freq: float = 8.0,
        dropout_rate: float = 0.0,
        spatial_size: Sequence[int] | None = None,
        norm_groups: int = 8,
    ) -> None:
        super().__init__()
        if hidden_size % num_heads:
            raise MonaiTFMError(f"hidden_size {hidden_size} must be divisible by num_heads {num_heads}.")
        if hidden_size % (2 * spatial_dims):
            raise MonaiTFMError(
                f"hidden_size {hidden_size} must be divisible by {2 * spatial_dims} for the {spatial_dims}D sin-cos "
                "position code."
            )
        self.spatial_dims = int(spatial_dims)
        self.in_channels = int(in_channels)
        self.patch_size = tuple(int(p) for p in ensure_tuple_rep(patch_size, spatial_dims))
        if any(p < 1 for p in self.patch_size):
            raise MonaiTFMError(f"patch_size must be positive, got {self.patch_size}.")
        self.hidden_size = int(hidden_size)
        self._position_codes: dict[tuple[int, ...], torch.Tensor] = {}
        if spatial_size is not None:
            self.token_grid(spatial_size)
        conv = Conv[Conv.CONV, spatial_dims]
        self.embed = conv(in_channels, hidden_size, kernel_size=self.patch_size, stride=self.patch_size)
        self.time_code = FourierFeatures(fourier_features, max_freq=max_freq, min_freq=min(1.0, max_freq))
        self.time_proj = nn.Linear(self.time_code.out_dim, hidden_size)

        def block() -> TransformerBlock:
            blk = TransformerBlock(hidden_size, mlp_dim, num_heads, dropout_rate, qkv_bias=True)
            # MONAI builds this LayerNorm even without cross-attention and never uses it: drop the dead parameters
            blk.norm_cross_attn = nn.Identity()
            return blk

        self.spatial_blocks = nn.ModuleList(block() for _ in range(spatial_layers))
        self.temporal_blocks = nn.ModuleList(block() for _ in range(temporal_layers))
        self.norm = nn.LayerNorm(hidden_size)
        self.unembed = Conv[Conv.CONVTRANS, spatial_dims](
            hidden_size, head_channels, kernel_size=self.patch_size, stride=self.patch_size
        )
        self.head = nn.Sequential(
            group_norm(head_channels, norm_groups),
            nn.SiLU(),
            conv(head_channels, head_channels, kernel_size=3, padding=1),
            nn.SiLU(),
            conv(head_channels, in_channels, kernel_size=1),
        )

    def token_grid(self, spatial_size: Sequence[int]) -> tuple[int, ...]:
        """Token grid of a volume.

        Args:
            spatial_size: the volume's spatial size.

        Returns:
            tokens per axis.

        Raises:
            ValueError: the patch size does not divide the volume (names both sizes).
        """
        size = tuple(int(s) for s in spatial_size)
        if len(size) != self.spatial_dims or any(s % p for s, p in zip(size, self.patch_size)):
            raise MonaiTFMError(
                f"ViViT3D: the patch size {self.patch_size} does not divide the volume size {size} (remainders "
                f"{tuple(s % p for s, p in zip(size, self.patch_size))}); choose a patch_size that divides every "
                "axis, or resample/crop the volumes."
            )
        return tuple(s // p for s, p in zip(size, self.patch_size))

    def position_code(self, grid: Sequence[int]) -> torch.Tensor:
        """Fixed sin-cos code of a token grid (MONAI's), cached per grid.

        Args:
            grid: tokens per axis.

        Returns:
            ``(1, N, hidden_size)``.
        """
        key = tuple(int(g) for g in grid)
        if key not in self._position_codes:
            with warnings.catch_warnings():  # MONAI calls torch.meshgrid without `indexing` (a torch UserWarning)
                warnings.simplefilter("ignore", UserWarning)
                code = build_sincos_position_embedding(list(key), self.hidden_size, self.spatial_dims)
            self._position_codes[key] = code.detach()
        return self._position_codes[key]

    def predict(
        self, context: torch.Tensor, times: torch.Tensor, mask: torch.Tensor, target_time: torch.Tensor
    ) -> torch.Tensor:
        """Forecast from checked inputs (see :meth:`DirectForecaster.predict`)."""
        b, t = context.shape[:2]
        grid = self.token_grid(context.shape[3:])
        n, e = 1, self.hidden_size
        for g in grid:
            n *= g
        tokens = self.embed(context.flatten(0, 1)).flatten(2).transpose(1, 2)  # (B*T, N, E)
        tokens = tokens + self.position_code(grid).to(tokens)
        for blk in self.spatial_blocks:
            tokens = blk(tokens)
        code = self.time_proj(self.time_code(time_to_target(times, target_time, mask)))  # (B, T, E)
        tokens = tokens.reshape(b, t, n, e) + code.unsqueeze(2)
        tokens = tokens.transpose(1, 2).reshape(b * n, t, e)
        keys = mask.unsqueeze(1).expand(b, n, t).reshape(b * n, t)
        for blk in self.temporal_blocks:
            tokens = blk(tokens, attn_mask=keys)
        tokens = self.norm(tokens).reshape(b, n, t, e)
        latest = tokens[torch.arange(b, device=tokens.device), :, last_real_index(mask)]  # (B, N, E)
        volume = latest.transpose(1, 2).reshape(b, e, *grid)
        return self.head(self.unembed(volume))
