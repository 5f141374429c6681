# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""Direct-prediction baselines (docs/method.md section 8): one call maps the context to the target.

``forward(context (B, T, C, *S), frame_times (B, T), frame_mask (B, T), target_time (B,)) -> (B, C, *S)``;
trained with an MSE loss through :class:`monai_tfm.engines.DirectPrepareBatch` and evaluated with
:class:`monai_tfm.inferers.DirectInferer`.
"""

from __future__ import annotations

from .base import DirectForecaster, right_align
from .convlstm import ConvLSTM3D, ConvLSTMCell
from .lci import LastContextImage
from .linear import LinearExtrapolation
from .odelstm import ODELSTM3D
from .simvp import SimVP3D
from .vivit import ViViT3D

__all__ = [
    "ConvLSTM3D",
    "ConvLSTMCell",
    "DirectForecaster",
    "LastContextImage",
    "LinearExtrapolation",
    "ODELSTM3D",
    "SimVP3D",
    "ViViT3D",
    "right_align",
]
