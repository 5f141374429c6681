# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""What the PNG previews show of an image (forecast panels, generated-sample grids)."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["middle_slice"]


def middle_slice(image: torch.Tensor) -> np.ndarray:
    """A 2D view of ``(C, *spatial)`` (first channel): a 2D image as is, a volume's middle slice across its last axis;
    transposed so that the first spatial axis runs up in ``imshow(..., origin="lower")``.

    Args:
        image: ``(C, H, W)`` or ``(C, H, W, D)`` on the CPU.

    Returns:
        the 2D array.
    """
    arr = image[0].numpy()
    if arr.ndim == 3:
        arr = arr[..., arr.shape[-1] // 2]
    return arr.T
