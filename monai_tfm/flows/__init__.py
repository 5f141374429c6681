# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""The flow: interpolation path, target velocity, flowed times, solvers with NFE counting."""

from __future__ import annotations

from .path import (
    PREDICTIONS,
    broadcast_target,
    check_prediction,
    distance_weights,
    endpoint_loss_weight,
    flowed_times,
    interpolate,
    last_context_image,
    last_real_index,
    noise_source,
    predicts_endpoint,
    reduce_frames,
    sample_tau,
    sigma_at,
    target_velocity,
    tie_padding,
    velocity_from_endpoint,
)
from .solvers import (
    ADAPTIVE_SOLVERS,
    FIXED_STEP_SOLVERS,
    CountingField,
    SolverResult,
    check_solver,
    euler_maruyama,
    integrate,
    is_adaptive,
)

__all__ = [
    "PREDICTIONS",
    "broadcast_target",
    "check_prediction",
    "distance_weights",
    "endpoint_loss_weight",
    "flowed_times",
    "interpolate",
    "last_context_image",
    "last_real_index",
    "noise_source",
    "predicts_endpoint",
    "reduce_frames",
    "sample_tau",
    "sigma_at",
    "target_velocity",
    "tie_padding",
    "velocity_from_endpoint",
    "ADAPTIVE_SOLVERS",
    "FIXED_STEP_SOLVERS",
    "check_solver",
    "is_adaptive",
    "CountingField",
    "SolverResult",
    "euler_maruyama",
    "integrate",
]
