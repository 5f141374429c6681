# Copyright (c) monai_tfm contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""Velocity networks: `network(x, tau, frame_times=None, frame_mask=None, target_time=None) -> v`."""

from __future__ import annotations

from .baselines import (
    ODELSTM3D,
    ConvLSTM3D,
    DirectForecaster,
    LastContextImage,
    LinearExtrapolation,
    SimVP3D,
    ViViT3D,
)
from .blocks import FourierFeatures, TimeConditioning
from .cronos_unet import CronosUNet
from .tfm_unet import TFMUNet

__all__ = [
    "CronosUNet",
    "FourierFeatures",
    "TFMUNet",
    "TimeConditioning",
    "ConvLSTM3D",
    "DirectForecaster",
    "LastContextImage",
    "LinearExtrapolation",
    "ODELSTM3D",
    "SimVP3D",
    "ViViT3D",
]
