# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""Losses (MONAI's ``losses`` layer): the flow-matching velocity / end-point loss."""

from __future__ import annotations

from .flow_matching import FlowMatchingLoss

__all__ = ["FlowMatchingLoss"]
