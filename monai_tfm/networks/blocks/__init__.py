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
"""Building blocks of the velocity networks."""

from __future__ import annotations

from .attention import WindowAttention
from .film import FiLMResBlock
from .resample import StridedConvDownsample, compute_down_strides, down_axis_mask, resize_to
from .time_embedding import FourierFeatures, TimeConditioning, broadcast_tau

__all__ = [
    "FiLMResBlock",
    "FourierFeatures",
    "StridedConvDownsample",
    "TimeConditioning",
    "WindowAttention",
    "broadcast_tau",
    "compute_down_strides",
    "down_axis_mask",
    "resize_to",
]
