# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""Reuse of pretrained longitudinal-SSL weights: segmentation finetuning and forecasting-encoder initialisation.

Pretraining exports the weights of :class:`monai_tfm.ssl.LongitudinalUNet` (a flat ``models/model.pt``; the
projector/predictor heads stay in the resume checkpoint).

**Segmentation** (:func:`load_pretrained_unet`): every tensor is copied except the output layer (``out_conv``: the
reconstruction head has ``in_channels`` outputs, the segmentation head one per class), which keeps its fresh
initialisation.

**Forecasting** (:func:`init_forecaster_from_pretrained`): the CRONOS velocity UNet
(:class:`monai_tfm.networks.CronosUNet`) has the same layout with FiLM time conditioning inside every residual
block, so the mapping is by parameter name:

=====================================  =====================================================================
pretrained ``LongitudinalUNet``        ``CronosUNet`` (``K`` context slots of ``C`` channels)
=====================================  =====================================================================
``stem`` (1x1, ``C -> w``)             ``stem`` (1x1, ``K*C -> w``): weight ``/ K`` copied to every slot, bias
                                       copied, so a stack of ``K`` identical frames gives the pretrained response
``down_blocks.i.{conv1,norm1,conv2,    ``down_blocks.i.{...}`` (same names and shapes); ``down_blocks.i.film``
norm2,skip}``                          (the time conditioning) has no counterpart and keeps its initialisation
``downsamples.i.conv``                 ``downsamples.i.conv``
``mid_block{1,2}.*`` (part             ``mid_block{1,2}.*`` (except ``film``); ``mid_attn`` is not mapped
``"bottleneck"``)
``up_convs.i``, ``up_blocks.i.*``,     the same names (part ``"decoder"``); ``out_conv`` (zero-initialised
``head.0`` (part ``"decoder"``)        velocity output) is never mapped
=====================================  =====================================================================

The default is the encoder only (``parts=("encoder",)``). With ``film_mode="scale_shift"`` and ``zero_film=True``
the mapped encoder computes exactly the pretrained features at initialisation (tested); with the default
``film_mode="paper"`` (``alpha * GN(h) + beta + h``) the block adds its un-normalised convolution output, so the
mapped weights are a starting point, not an exact copy. TFM's UNet (:class:`monai_tfm.networks.TFMUNet`) has
pre-activation blocks (``GN - SiLU - Conv``), a kernel-3 input convolution and in-plane-only strides: a different
family, refused with a ``TypeError`` rather than mapped loosely.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from monai_tfm.handlers.checkpoint import read_network_state
from monai_tfm.utils.errors import MonaiTFMError

__all__ = ["FORECAST_PARTS", "init_forecaster_from_pretrained", "load_pretrained_unet", "read_unet_state"]

logger = logging.getLogger(__name__)

#: parts of a CRONOS UNet that can be initialised from a pretrained LongitudinalUNet, as name patterns
FORECAST_PARTS = {
    "encoder": (r"^stem\.", r"^down_blocks\.\d+\.(conv1|norm1|conv2|norm2|skip)\.", r"^downsamples\.\d+\.conv\."),
    "bottleneck": (r"^mid_block[12]\.(conv1|norm1|conv2|norm2|skip)\.",),
    "decoder": (r"^up_convs\.\d+\.", r"^up_blocks\.\d+\.(conv1|norm1|conv2|norm2|skip)\.", r"^head\."),
}


def read_unet_state(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read pretrained UNet weights: a flat ``model.pt`` or a resume checkpoint (``network`` entry, ``unet.`` keys).

    Args:
        path: the weights file.

    Returns:
        the UNet state dict (keys without the ``unet.`` prefix; projector/predictor heads dropped).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file holds no UNet weights.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no pretrained weights at '{path}': run the pretraining (configs/pretrain.yaml) first."
        )
    state, _ = read_network_state(path)
    if any(k.startswith("unet.") for k in state):
        state = {k[len("unet.") :]: v for k, v in state.items() if k.startswith("unet.")}
    if "stem.weight" not in state or not any(k.startswith("down_blocks.") for k in state):
        raise MonaiTFMError(
            f"'{path}' does not hold LongitudinalUNet weights (no 'stem.weight' / 'down_blocks.*' keys); "
            f"first keys: {list(state)[:5]}."
        )
    return dict(state)


def load_pretrained_unet(
    network: nn.Module, path: str | os.PathLike | None, skip: Sequence[str] = ("out_conv.",)
) -> nn.Module:
    """Initialise a segmentation UNet from pretrained weights (all but the output layer).

    Args:
        network: a :class:`monai_tfm.ssl.LongitudinalUNet` (e.g. with one output per class).
        path: pretrained weights (None: the network is returned unchanged, i.e. random initialisation).
        skip: key prefixes that keep their initialisation.

    Returns:
        the network.

    Raises:
        FileNotFoundError, ValueError: see :func:`read_unet_state`; also for a missing key or a shape mismatch
            (different widths or number of scales), naming the key and both shapes.
    """
    if path is None or str(path) in ("", "None", "null"):
        logger.info("no pretrained weights given: %s keeps its random initialisation", type(network).__name__)
        return network
    state = read_unet_state(path)
    own = network.state_dict()
    mapped = {}
    for key, value in own.items():
        if any(key.startswith(s) for s in skip):
            continue
        if key not in state:
            raise MonaiTFMError(f"pretrained weights '{path}' lack {key!r}: the architectures differ (scales, blocks).")
        if state[key].shape != value.shape:
            raise MonaiTFMError(
                f"pretrained weights '{path}': {key!r} has shape {tuple(state[key].shape)}, the network expects "
                f"{tuple(value.shape)} (check channels / channel_mult / in_channels of both configs)."
            )
        mapped[key] = state[key]
    network.load_state_dict(mapped, strict=False)
    logger.info("initialised %d of %d tensors of %s from %s", len(mapped), len(own), type(network).__name__, path)
    return network


def init_forecaster_from_pretrained(
    network: nn.Module,
    path: str | os.PathLike | None,
    parts: Sequence[str] = ("encoder",),
    zero_film: bool = False,
) -> nn.Module:
    """Initialise (part of) a CRONOS velocity UNet from a pretrained ``LongitudinalUNet`` (mapping: module notes).

    Args:
        network: a :class:`monai_tfm.networks.CronosUNet`.
        path: pretrained UNet weights (None: unchanged, i.e. random initialisation).
        parts: any of ``"encoder"``, ``"bottleneck"``, ``"decoder"``.
        zero_film: also zero the FiLM layers of the mapped blocks (with ``film_mode="scale_shift"`` the mapped part
            then reproduces the pretrained features exactly at the start).

    Returns:
        the network.

    Raises:
        TypeError: the network is not a CronosUNet (e.g. TFMUNet: a different block family).
        ValueError: unknown part; different spatial dimensions, number of scales, widths or input channels (the
            message names the tensor and both shapes).
        FileNotFoundError: no weights file.
    """
    if path is None or str(path) in ("", "None", "null"):
        logger.info("no pretrained weights given: %s keeps its random initialisation", type(network).__name__)
        return network
    from monai_tfm.networks import CronosUNet, TFMUNet

    if not isinstance(network, CronosUNet):
        hint = (
            " TFMUNet uses pre-activation blocks (GN - SiLU - Conv), a kernel-3 input conv and in-plane-only strides,"
            " a different family from the pretrained UNet; use the CRONOS UNet (methods cronos_discrete /"
            " cronos_continuous)."
            if isinstance(network, TFMUNet)
            else ""
        )
        raise TypeError(
            f"encoder initialisation from a pretrained LongitudinalUNet supports CronosUNet only, got "
            f"{type(network).__name__}.{hint}"
        )
    unknown = [p for p in parts if p not in FORECAST_PARTS]
    if unknown or not parts:
        raise MonaiTFMError(f"parts must be a non-empty subset of {sorted(FORECAST_PARTS)}, got {list(parts)}.")
    state = read_unet_state(path)
    stem = state["stem.weight"]
    if stem.dim() != network.spatial_dims + 2:
        raise MonaiTFMError(
            f"'{path}' holds a {stem.dim() - 2}D UNet, the forecaster is {network.spatial_dims}D ('stem.weight' "
            f"{tuple(stem.shape)})."
        )
    levels = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("down_blocks."))
    if levels != network.num_levels:
        raise MonaiTFMError(
            f"'{path}' holds a UNet with {levels} scales, the forecaster has {network.num_levels} (channel_mult)."
        )
    if stem.shape[1] != network.in_channels:
        raise MonaiTFMError(
            f"'{path}' was pretrained on {stem.shape[1]} channel(s) per frame, the forecaster has "
            f"in_channels={network.in_channels}."
        )
    patterns = [re.compile(p) for part in parts for p in FORECAST_PARTS[part]]
    own = network.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    for key, value in own.items():
        if not any(p.match(key) for p in patterns):
            continue
        if key not in state:
            raise MonaiTFMError(f"pretrained weights '{path}' lack {key!r}, which the forecaster has (blocks differ).")
        src = state[key]
        if key == "stem.weight":  # (w, C) -> (w, K*C): the mean over the K slots reproduces one frame's response
            k = network.num_frames
            if src.shape[0] != value.shape[0] or src.shape[1] * k != value.shape[1]:
                raise MonaiTFMError(
                    f"'stem.weight': pretrained {tuple(src.shape)} cannot map to {tuple(value.shape)} "
                    f"({k} slots x {network.in_channels} channels; check 'channels')."
                )
            src = src.repeat(1, k, *([1] * (src.dim() - 2))) / k
        if src.shape != value.shape:
            raise MonaiTFMError(
                f"pretrained weights '{path}': {key!r} has shape {tuple(src.shape)}, the forecaster expects "
                f"{tuple(value.shape)} (check channels / channel_mult of both configs)."
            )
        mapped[key] = src.to(value.dtype)
    network.load_state_dict(mapped, strict=False)
    if zero_film:
        prefixes = {k.rsplit(".", 2)[0] for k in mapped if re.search(r"\.(conv1|norm1|conv2|norm2|skip)\.", k)}
        for name, module in network.named_modules():
            if name.endswith(".film") and name[: -len(".film")] in prefixes:
                for param in module.parameters():
                    nn.init.zeros_(param)
    n_params = sum(v.numel() for v in mapped.values())
    logger.info(
        "initialised %d tensors (%d values; parts %s) of %s from %s",
        len(mapped),
        n_params,
        list(parts),
        type(network).__name__,
        path,
    )
    return network
