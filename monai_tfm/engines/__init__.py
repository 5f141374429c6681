# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""Engine pieces on MONAI + ignite: prepare-batch, loss, metrics, checkpoints, handlers."""

from __future__ import annotations

from .checkpoint import TrainingCheckpointer, WeightsLoader, check_run_folder, load_weights
from .direct import DirectPrepareBatch, require_trainable
from .distributed import (
    barrier,
    default_backend,
    destroy_distributed,
    gather_rows,
    get_rank,
    get_world_size,
    init_distributed,
    is_distributed,
    is_main_process,
    local_device,
    rank_zero_first,
    unwrap_module,
)
from .forecast_metrics import ForecastMetrics, last_context_image
from .handlers import GradientClipHandler, StepBudget, epochs_for_steps
from .loss import FlowMatchingLoss
from .prepare_batch import VARIANTS, FlowMatchingPrepareBatch, ForecastPrepareBatch, counted_frames
from .progress import ProgressBarHandler
from .report import REPORT_FILES, ForecastReportWriter
from .speed import configure_network

__all__ = [
    "REPORT_FILES",
    "check_run_folder",
    "TrainingCheckpointer",
    "load_weights",
    "WeightsLoader",
    "ForecastMetrics",
    "last_context_image",
    "GradientClipHandler",
    "StepBudget",
    "epochs_for_steps",
    "FlowMatchingLoss",
    "VARIANTS",
    "FlowMatchingPrepareBatch",
    "ForecastPrepareBatch",
    "counted_frames",
    "ProgressBarHandler",
    "ForecastReportWriter",
    "DirectPrepareBatch",
    "require_trainable",
    "barrier",
    "default_backend",
    "destroy_distributed",
    "gather_rows",
    "get_rank",
    "get_world_size",
    "init_distributed",
    "is_distributed",
    "is_main_process",
    "local_device",
    "rank_zero_first",
    "unwrap_module",
    "configure_network",
]
