# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""What every velocity network shares: the frame-stack contract of docs/DESIGN.md and the time conditioning call."""

from __future__ import annotations

import typing
from collections.abc import Sequence

import torch
from monai.networks.blocks import Warp
from torch import nn

from monai_tfm.flows.path import velocity_from_endpoint
from monai_tfm.networks.blocks.time_embedding import broadcast_tau
from monai_tfm.utils.errors import MonaiTFMError

__all__ = ["check_frames_input", "FrameVelocityNet"]


def check_frames_input(x: torch.Tensor, spatial_dims: int, num_frames: int, in_channels: int) -> None:
    """Check that `x` is `(B, K, C, *spatial)` with the network's `K` and `C`.

    Args:
        x: the network input.
        spatial_dims: number of spatial dimensions.
        num_frames: expected `K`.
        in_channels: expected `C`.

    Raises:
        ValueError: on a mismatch.
    """
    if x.dim() != 3 + spatial_dims or x.shape[1] != num_frames or x.shape[2] != in_channels:
        raise MonaiTFMError(
            f"expected x of shape (B, K={num_frames}, C={in_channels}, {spatial_dims} spatial dims), "
            f"got {list(x.shape)}."
        )


class FrameVelocityNet(nn.Module):
    """Base of the velocity networks: ``(x (B, K, C, *S), tau, times) -> v (B, K, C, *S)``.

    Subclasses set ``spatial_dims``, ``num_frames``, ``in_channels`` (ints), ``endpoint_prediction`` (bool: the
    backbone predicts the remaining way ``X1 - X_tau`` and ``forward`` turns it into the velocity,
    :func:`monai_tfm.flows.velocity_from_endpoint`), ``warp_prediction`` (bool: the backbone's ``(B, K*C, *S)``
    output is followed by ``K * spatial_dims`` displacement channels, and the way left is the frame warped by its
    displacement plus the first ``K*C`` channels, minus the frame) and ``time_cond`` (a
    :class:`~monai_tfm.networks.blocks.TimeConditioning`), and implement :meth:`down_strides` (tuples, for callers),
    :meth:`stride_lists` (the same as lists, used by ``forward``) and :meth:`backbone`, which maps the frames stacked
    along channels ``(B, K*C, *S)`` and the conditioning vector to ``(B, K*C, *S)``.

    The forward pass is TorchScript-compatible: ``torch.jit.script(net)`` (and so MONAI's ``ckpt_export``) gives a
    module with the same arguments, including the flow step and the times (no class-level attribute annotations
    here: TorchScript cannot read them under postponed evaluation of annotations).
    """

    def down_strides(self, spatial_size: Sequence[int]) -> list[tuple[int, ...]]:
        """Stride of each downsampling step for an input of ``spatial_size``.

        Args:
            spatial_size: spatial size of the input.

        Returns:
            one stride tuple per downsampling step.
        """
        raise NotImplementedError

    def stride_lists(self, spatial_size: list[int]) -> list[list[int]]:
        """:meth:`down_strides` as lists (TorchScript has no variable-length tuples).

        Args:
            spatial_size: spatial size of the input.

        Returns:
            one stride list per downsampling step.
        """
        raise NotImplementedError

    def backbone(self, h: torch.Tensor, cond: torch.Tensor, strides: list[list[int]]) -> torch.Tensor:
        """The UNet on channel-stacked frames.

        Args:
            h: ``(B, K*C, *S)``.
            cond: ``(B, cond_dim)`` conditioning vector.
            strides: from :meth:`stride_lists`.

        Returns:
            ``(B, K*C, *S)`` velocities.
        """
        raise NotImplementedError

    def forward(
        self,
        x: torch.Tensor,
        tau: float | torch.Tensor,
        frame_times: torch.Tensor | None = None,
        frame_mask: torch.Tensor | None = None,
        target_time: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predict the velocity of every frame.

        Args:
            x: `(B, K, C, *S)` the current state of the K frames.
            tau: flow step `(B,)` (or a number / 0-d tensor, broadcast to the batch).
            frame_times: `(B, K)` flowed, scaled frame times (continuous mode; ignored in discrete mode).
            frame_mask: `(B, K)` bool, real frames (continuous mode time code).
            target_time: `(B,)` scaled target time (continuous mode, or a network with ``use_target_time``).

        Returns:
            the velocity, `(B, K, C, *S)`.

        Raises:
            ValueError: for a mis-shaped `x`, or missing time inputs in continuous mode.
        """
        check_frames_input(x, self.spatial_dims, self.num_frames, self.in_channels)
        b = x.shape[0]
        spatial = [int(s) for s in x.shape[3:]]
        cond = self.time_cond(tau, frame_times, frame_mask, target_time, batch_size=b).to(x.dtype)
        v = self.backbone(x.reshape([b, -1] + spatial), cond, self.stride_lists(spatial))
        if self.warp_prediction:
            v = self._warped_remaining(x, v)
        if self.endpoint_prediction:  # the last layer predicts X1 - X_tau (see monai_tfm.flows.PREDICTIONS)
            v = velocity_from_endpoint(v, broadcast_tau(tau, b, device=x.device, dtype=x.dtype))
        return v.reshape(x.shape)

    @torch.jit.unused
    def _warped_remaining(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """The way left of a ``"warp"`` network: ``warp(X_tau, ddf) + residual - X_tau`` per frame.

        The displacement (in voxels) moves the frame's intensities as the heart moves, the residual adds what no
        displacement explains (compare the learned registration of Balakrishnan et al., *VoxelMorph*, IEEE TMI 2019).
        MONAI's :class:`~monai.networks.blocks.Warp` resamples (linear, border padding).

        Args:
            x: ``(B, K, C, *S)`` the frames.
            out: ``(B, K*C + K*spatial_dims, *S)`` the backbone's output: residuals, then displacements.

        Returns:
            ``(B, K*C, *S)`` the way left to the end point.
        """
        b, k, c = x.shape[0], x.shape[1], x.shape[2]
        spatial = list(x.shape[3:])
        residual = out[:, : k * c].reshape(x.shape)
        ddf = out[:, k * c :].reshape([b * k, len(spatial)] + spatial)
        warped = Warp(mode="bilinear", padding_mode="border")(x.reshape([b * k, c] + spatial), ddf).reshape(x.shape)
        return (warped + residual - x).reshape([b, k * c] + spatial)


# TorchScript types the stub of an unused method from its runtime annotations (strings here): evaluate them, as for
# CronosUNet._checkpointed
FrameVelocityNet._warped_remaining.__annotations__ = typing.get_type_hints(FrameVelocityNet._warped_remaining)
