# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""Inferers: the forecasting ODE/SDE sampler."""

from __future__ import annotations

from .forecast import ForecastInferer

__all__ = ["ForecastInferer"]
