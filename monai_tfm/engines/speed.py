# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""Speed switches of the training config (``channels_last``, ``activation_checkpointing``) applied to a network.

``compile`` and ``amp`` are MONAI engine arguments (``SupervisedTrainer(compile=..., amp=..., amp_kwargs=...)``) and
need nothing here.
"""

from __future__ import annotations

import torch
from torch import nn

from monai_tfm.utils.errors import MonaiTFMError
from monai_tfm.utils.options import as_bool

__all__ = ["configure_network"]


def configure_network(
    network: nn.Module,
    device: torch.device | str | None = None,
    channels_last: bool = False,
    activation_checkpointing: bool = False,
) -> nn.Module:
    """Move a network to its device and apply the memory-layout and checkpointing switches.

    Args:
        network: the network (from ``network_def``).
        device: target device (``None``: leave it).
        channels_last: store 5D conv weights as ``torch.channels_last_3d`` (convolutions then run channels-last:
            PyTorch follows the weight's memory format when the input is contiguous).
        activation_checkpointing: recompute block activations in the backward pass (networks with an
            ``activation_checkpointing`` attribute, e.g. :class:`monai_tfm.networks.CronosUNet`).

    Returns:
        the network.

    Raises:
        ValueError: activation checkpointing requested for a network that does not support it.
    """
    channels_last = as_bool(channels_last, "channels_last")
    activation_checkpointing = as_bool(activation_checkpointing, "activation_checkpointing")
    if device is not None:
        network = network.to(device)
    if channels_last:
        for param in network.parameters():
            if param.ndim == 5:
                param.data = param.data.contiguous(memory_format=torch.channels_last_3d)
    if activation_checkpointing:
        if not hasattr(network, "activation_checkpointing"):
            raise MonaiTFMError(f"{type(network).__name__} does not support activation checkpointing.")
        network.activation_checkpointing = True
    return network
