# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""The generator network of MOTFM-style noise-to-image flow matching (and of the DDPM baseline): MONAI's
``DiffusionModelUNet`` with class conditioning by cross-attention on a one-hot class and mask conditioning by MONAI's
``ControlNet`` initialised from the UNet.

Both objectives (flow matching and DDPM) train exactly this module, so the comparison is between objectives and
samplers on the same network. Conditioning conventions, shared by training, sampling and the command line:

* class: an integer label per sample; ``-1`` means "no class" and gives an all-zero one-hot context (the null
  condition of classifier-free guidance);
* mask: an integer label map ``(B, 1, *spatial)`` with values ``0 .. num_labels`` (0 = background), encoded as one
  channel per foreground label; an all-zero encoding means "no mask".
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.nets import ControlNet, DiffusionModelUNet
from monai.networks.utils import copy_model_state, one_hot
from torch import nn

from monai_tfm.utils.errors import MonaiTFMError

__all__ = ["ConditionalDiffusionUNet", "class_context", "encode_mask"]


def class_context(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """One-hot cross-attention context ``(B, 1, num_classes)`` of integer class labels (``-1``: all zeros).

    Args:
        labels: ``(B,)`` integer labels in ``-1 .. num_classes - 1``.
        num_classes: number of classes.

    Returns:
        float32 context ``(B, 1, num_classes)``.

    Raises:
        ValueError: a label outside ``-1 .. num_classes - 1``.
    """
    labels = torch.as_tensor(labels).reshape(-1).long()
    if labels.numel() and (int(labels.min()) < -1 or int(labels.max()) >= num_classes):
        raise MonaiTFMError(
            f"class labels must lie in -1 .. {num_classes - 1} (-1: no class), got {sorted(set(labels.tolist()))}."
        )
    known = labels >= 0
    out = torch.nn.functional.one_hot(labels.clamp(min=0), num_classes).float() * known[:, None].float()
    return out[:, None, :]


def encode_mask(labels: torch.Tensor, num_labels: int) -> torch.Tensor:
    """One channel per foreground label of an integer mask ``(B, 1, *spatial)`` (MONAI ``one_hot`` minus background).

    Args:
        labels: label map with values ``0 .. num_labels`` (0 = background).
        num_labels: number of foreground labels.

    Returns:
        float32 ``(B, num_labels, *spatial)``.

    Raises:
        ValueError: a map without the channel axis or a value outside ``0 .. num_labels``.
    """
    labels = torch.as_tensor(labels)
    if labels.ndim < 3 or labels.shape[1] != 1:
        raise MonaiTFMError(f"a mask must be a label map (B, 1, *spatial), got shape {tuple(labels.shape)}.")
    values = torch.unique(labels)
    bad = [v for v in values.tolist() if v != round(v) or v < 0 or v > num_labels]
    if bad:
        raise MonaiTFMError(f"mask labels must be integers in 0 .. {num_labels}, got {sorted(bad)}.")
    return one_hot(labels.long(), num_labels + 1, dtype=torch.float32, dim=1)[:, 1:]


class ConditionalDiffusionUNet(nn.Module):
    """``DiffusionModelUNet`` (2D or 3D) with optional class and mask conditioning.

    * class conditioning (``num_classes > 0``): the UNet's cross-attention (``with_conditioning``) attends to the
      one-hot class, ``cross_attention_dim = num_classes``; cross-attention exists only at ``attention_levels``, so at
      least one level must have attention;
    * mask conditioning (``mask_channels > 0``): a MONAI ``ControlNet`` with the UNet's encoder, initialised as a copy
      of it (``copy_model_state``); its output convolutions and its conditioning embedding end in zero-initialised
      layers, so at initialisation it adds exactly zero to the UNet's skips (a no-op) and training grows the mask's
      influence from there. Pixel-space generation: the mask is on the image grid, so the conditioning embedding has
      one level (``conditioning_embedding_num_channels`` of length 1, no downsampling).

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels (the output has as many).
        channels: UNet channels per level.
        attention_levels: self-/cross-attention per level.
        num_res_blocks: residual blocks per level.
        norm_num_groups: group-norm groups (divides every entry of ``channels``).
        num_head_channels: channels per attention head.
        num_classes: number of classes for cross-attention conditioning (0: none).
        mask_channels: foreground labels of the conditioning mask (0: no ControlNet).
        conditioning_embedding_num_channels: channels of the ControlNet's mask embedding (one entry).
        conditioning_scale: multiplies the ControlNet residuals.
        transformer_num_layers: transformer layers per attention block.
        resblock_updown: residual blocks for up/downsampling.
        use_flash_attention: PyTorch's fused attention.

    Raises:
        ValueError: bad dimensions, class conditioning without any attention level, or a multi-level mask embedding.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        channels: Sequence[int] = (32, 64, 64),
        attention_levels: Sequence[bool] = (False, False, True),
        num_res_blocks: Sequence[int] | int = 1,
        norm_num_groups: int = 8,
        num_head_channels: int | Sequence[int] = 16,
        num_classes: int = 0,
        mask_channels: int = 0,
        conditioning_embedding_num_channels: Sequence[int] = (16,),
        conditioning_scale: float = 1.0,
        transformer_num_layers: int = 1,
        resblock_updown: bool = False,
        use_flash_attention: bool = False,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise MonaiTFMError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
        if num_classes < 0 or mask_channels < 0:
            raise MonaiTFMError(f"num_classes and mask_channels must be >= 0, got {num_classes} and {mask_channels}.")
        if num_classes > 0 and not any(attention_levels):
            raise MonaiTFMError(
                f"class conditioning uses cross-attention, but attention_levels={list(attention_levels)} has none; "
                "enable attention on at least one level."
            )
        if mask_channels > 0 and len(conditioning_embedding_num_channels) != 1:
            raise MonaiTFMError(
                "the mask is on the image grid, so conditioning_embedding_num_channels needs exactly one entry, got "
                f"{list(conditioning_embedding_num_channels)}."
            )
        self.spatial_dims = int(spatial_dims)
        self.in_channels = int(in_channels)
        self.num_classes = int(num_classes)
        self.mask_channels = int(mask_channels)
        self.conditioning_scale = float(conditioning_scale)
        common = {
            "spatial_dims": spatial_dims,
            "in_channels": in_channels,
            "num_res_blocks": num_res_blocks,
            "channels": tuple(channels),
            "attention_levels": tuple(attention_levels),
            "norm_num_groups": norm_num_groups,
            "num_head_channels": num_head_channels,
            "with_conditioning": num_classes > 0,
            "transformer_num_layers": transformer_num_layers,
            "cross_attention_dim": num_classes if num_classes > 0 else None,
            "resblock_updown": resblock_updown,
            "use_flash_attention": use_flash_attention,
        }
        self.unet = DiffusionModelUNet(out_channels=in_channels, **common)
        self.controlnet: ControlNet | None = None
        if mask_channels > 0:
            self.controlnet = ControlNet(
                conditioning_embedding_in_channels=mask_channels,
                conditioning_embedding_num_channels=tuple(conditioning_embedding_num_channels),
                **common,
            )
            self.copy_unet_to_controlnet()

    def copy_unet_to_controlnet(self) -> None:
        """(Re)initialise the ControlNet as a copy of the UNet's encoder (time embedding, input convolution, down and
        middle blocks) and zero its output convolutions, so that it is a no-op until trained.

        Called at construction; call it again after loading pretrained UNet weights to start mask conditioning from
        them (the ControlNet recipe: a class- or unconditional model first, then the mask branch).

        Raises:
            RuntimeError: the network has no ControlNet.
        """
        if self.controlnet is None:
            raise RuntimeError("this network has no ControlNet (mask_channels=0).")
        copy_model_state(self.controlnet, self.unet)
        zero = [self.controlnet.controlnet_down_blocks, self.controlnet.controlnet_mid_block]
        zero.append(self.controlnet.controlnet_cond_embedding.conv_out)
        with torch.no_grad():
            for part in zero:
                for p in part.parameters():
                    p.zero_()

    def forward(
        self,
        x: torch.Tensor,
        timesteps: torch.Tensor | float,
        context: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predict the UNet output (velocity for flow matching, noise for DDPM).

        Args:
            x: state ``(B, C, *spatial)``.
            timesteps: ``(B,)``, ``(1,)`` or scalar time code (flow matching: ``tau * time_scale``; DDPM: the step).
            context: one-hot class context ``(B, 1, num_classes)`` or ``(B, num_classes)`` (``None``: no class).
            mask: encoded mask ``(B, mask_channels, *spatial)`` from :func:`encode_mask` (``None``: no mask).

        Returns:
            ``(B, C, *spatial)``.

        Raises:
            ValueError: a class context for a network without classes, a mask for a network without ControlNet, or
                wrong shapes.
        """
        b = x.shape[0]
        t = torch.as_tensor(timesteps, device=x.device).float().reshape(-1)
        if t.numel() == 1:
            t = t.expand(b)
        if t.numel() != b:
            raise MonaiTFMError(f"expected one time step per sample ({b}), got {t.numel()}.")
        if self.num_classes:
            if context is None:
                context = x.new_zeros(b, 1, self.num_classes)
            elif context.ndim == 2:
                context = context[:, None, :]
            if tuple(context.shape) != (b, 1, self.num_classes):
                raise MonaiTFMError(
                    f"expected a class context ({b}, 1, {self.num_classes}), got {tuple(context.shape)}."
                )
            context = context.to(x.dtype)
        elif context is not None:
            raise MonaiTFMError("this network is not class-conditional (num_classes=0) but got a class context.")
        down = mid = None
        if self.controlnet is not None:
            if mask is None:
                mask = x.new_zeros(b, self.mask_channels, *x.shape[2:])
            if tuple(mask.shape) != (b, self.mask_channels, *x.shape[2:]):
                raise MonaiTFMError(
                    f"expected an encoded mask {(b, self.mask_channels, *x.shape[2:])}, got {tuple(mask.shape)}."
                )
            down, mid = self.controlnet(
                x, t, controlnet_cond=mask.to(x.dtype), conditioning_scale=self.conditioning_scale, context=context
            )
        elif mask is not None:
            raise MonaiTFMError("this network has no mask conditioning (mask_channels=0) but got a mask.")
        return self.unet(x, t, context=context, down_block_additional_residuals=down, mid_block_additional_residual=mid)
