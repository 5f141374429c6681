# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""Linear extrapolation through the last two real context frames (no parameters; docs/method.md section 8)."""

from __future__ import annotations

import torch

from monai_tfm.flows.path import last_real_index, select_frames
from monai_tfm.networks.baselines.base import DirectForecaster

__all__ = ["LinearExtrapolation"]


class LinearExtrapolation(DirectForecaster):
    """``I_last + (t_target - t_last) / (t_last - t_prev) * (I_last - I_prev)`` per voxel.

    ``I_last`` and ``I_prev`` are the latest two real frames. A sample with a single real frame (or two frames at the
    same time) gets the Last Context Image. The result is not clipped (the metrics clip where the protocol says so).

    Args:
        spatial_dims: number of spatial dimensions.
    """

    def __init__(self, spatial_dims: int = 3) -> None:
        super().__init__()
        self.spatial_dims = int(spatial_dims)

    def predict(
        self, context: torch.Tensor, times: torch.Tensor, mask: torch.Tensor, target_time: torch.Tensor
    ) -> torch.Tensor:
        """Forecast from checked inputs (see :meth:`DirectForecaster.predict`)."""
        b = context.shape[0]
        rows = torch.arange(b, device=context.device)
        last = last_real_index(mask)
        earlier = mask.clone()
        earlier[rows, last] = False
        has_prev = earlier.any(dim=1)
        prev = torch.where(has_prev, last_real_index(earlier | ~has_prev.unsqueeze(1)), last)
        i_last, i_prev = select_frames(context, last), select_frames(context, prev)
        t_last, t_prev = times[rows, last], times[rows, prev]
        span = t_last - t_prev
        valid = has_prev & (span != 0)
        ratio = torch.where(valid, (target_time - t_last) / torch.where(valid, span, torch.ones_like(span)), 0.0)
        return i_last + ratio.reshape(b, *([1] * (context.ndim - 2))) * (i_last - i_prev)
