# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""TorchScript module interfaces: they let the UNets index a ``ModuleList`` with a loop variable.

TorchScript indexes a ``ModuleList`` only with integer literals, unless the element is annotated with an interface
type (``block: CondModule = self.blocks[i]``); the UNet decoders walk their scales from the deepest one, so they use
these interfaces. In eager mode the annotations are plain comments for the reader.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["CondModule", "StridedModule", "TensorModule"]


@torch.jit.interface
class TensorModule(nn.Module):
    """A module mapping one tensor to one tensor (convolutions, ``nn.Identity``)."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # noqa: A002 (the name used by torch.nn modules)
        """Apply the module."""
        pass


@torch.jit.interface
class CondModule(nn.Module):
    """A block taking a feature map and a conditioning vector (``FiLMResBlock``)."""

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Apply the block."""
        pass


@torch.jit.interface
class StridedModule(nn.Module):
    """A downsampling module whose per-axis stride is given at call time (``StridedConvDownsample``)."""

    def forward(self, x: torch.Tensor, stride: list[int]) -> torch.Tensor:
        """Apply the module."""
        pass
