# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""Last Context Image (LCI): the latest real context frame as the forecast (no parameters; docs/method.md sections 2
and 8)."""

from __future__ import annotations

import torch

from monai_tfm.flows.path import last_context_image
from monai_tfm.networks.baselines.base import DirectForecaster

__all__ = ["LastContextImage"]


class LastContextImage(DirectForecaster):
    """Forecast = the latest real context frame, whatever the target time (the lower bound every model must beat).

    Args:
        spatial_dims: number of spatial dimensions.
    """

    needs_time = False

    def __init__(self, spatial_dims: int = 3) -> None:
        super().__init__()
        self.spatial_dims = int(spatial_dims)

    def predict(
        self, context: torch.Tensor, times: torch.Tensor, mask: torch.Tensor, target_time: torch.Tensor
    ) -> torch.Tensor:
        """Forecast from checked inputs (see :meth:`DirectForecaster.predict`)."""
        return last_context_image(context, mask)
