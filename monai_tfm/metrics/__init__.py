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
"""Forecast metrics and evaluation reports (docs/method.md section 7)."""

from __future__ import annotations

from monai_tfm.metrics.forecast import (
    CHANGE_THRESHOLD,
    FORECAST_METRICS,
    HIGHER_IS_BETTER,
    SSIM_K1,
    SSIM_K2,
    SSIM_SIGMA,
    SSIM_WIN_SIZE,
    compute_forecast_metrics,
    compute_forecast_metrics_batch,
    ssim_window_sizes,
)
from monai_tfm.metrics.report import (
    LCI,
    ROW_KEYS,
    aggregate_runs,
    format_runs_markdown,
    format_summary_markdown,
    make_row,
    paired_gain,
    read_per_sample_csv,
    summarise,
    write_per_sample_csv,
    write_summary,
)

__all__ = [
    "CHANGE_THRESHOLD",
    "FORECAST_METRICS",
    "HIGHER_IS_BETTER",
    "LCI",
    "ROW_KEYS",
    "SSIM_K1",
    "SSIM_K2",
    "SSIM_SIGMA",
    "SSIM_WIN_SIZE",
    "aggregate_runs",
    "compute_forecast_metrics",
    "compute_forecast_metrics_batch",
    "format_runs_markdown",
    "format_summary_markdown",
    "make_row",
    "paired_gain",
    "read_per_sample_csv",
    "ssim_window_sizes",
    "summarise",
    "write_per_sample_csv",
    "write_summary",
]
