# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""Inferers: the forecasting ODE/SDE sampler and the one-call inferer of the direct baselines."""

from __future__ import annotations

from .direct import DirectInferer
from .forecast import ForecastInferer

__all__ = [
    "ForecastInferer",
    "DirectInferer",
]
