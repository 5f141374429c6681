# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""Engine pieces on MONAI + Ignite: the prepare-batch callables of the flow and of the direct baselines, and the
speed switches. Losses live in :mod:`monai_tfm.losses`, handlers and metric wrappers in :mod:`monai_tfm.handlers`,
process-group helpers in :mod:`monai_tfm.utils.distributed`."""

from __future__ import annotations

from .direct import DirectPrepareBatch, require_trainable
from .prepare_batch import VARIANTS, FlowMatchingPrepareBatch, ForecastPrepareBatch, counted_frames
from .speed import configure_network

__all__ = [
    "VARIANTS",
    "FlowMatchingPrepareBatch",
    "ForecastPrepareBatch",
    "counted_frames",
    "DirectPrepareBatch",
    "require_trainable",
    "configure_network",
]


_MOVED = {"FlowMatchingLoss": "monai_tfm.losses"}  # names that lived here before the package followed MONAI's layers


def __getattr__(name: str):
    """Keep ``from monai_tfm.engines import FlowMatchingLoss`` working, with a DeprecationWarning naming its home."""
    if name in _MOVED:
        import importlib
        import warnings

        warnings.warn(
            f"monai_tfm.engines.{name} moved to {_MOVED[name]}.{name}; import it from there",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
