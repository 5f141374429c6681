# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""Ignite handlers and metric wrappers (MONAI's ``handlers`` layer): forecast metrics and reports, checkpoints and
resume, the step budget, gradient clipping, progress bars."""

from __future__ import annotations

from .checkpoint import TrainingCheckpointer, WeightsLoader, check_run_folder, load_weights, read_network_state
from .forecast_metrics import ForecastMetrics
from .progress import ProgressBarHandler
from .report import REPORT_FILES, ForecastReportWriter, describe_device
from .training import GradientClipHandler, StepBudget, epochs_for_steps

__all__ = [
    "REPORT_FILES",
    "ForecastMetrics",
    "ForecastReportWriter",
    "GradientClipHandler",
    "ProgressBarHandler",
    "StepBudget",
    "TrainingCheckpointer",
    "WeightsLoader",
    "check_run_folder",
    "describe_device",
    "epochs_for_steps",
    "load_weights",
    "read_network_state",
]
