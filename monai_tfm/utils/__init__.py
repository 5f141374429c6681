# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""Small utilities shared by the package."""

from __future__ import annotations

from . import distributed
from .bundle import find_bundle_root, log_forecasts, log_run_summary, setup_logging
from .display import middle_slice
from .errors import one_line, user_error_in_chain
from .io import (
    atomic_path,
    atomic_save_nifti,
    atomic_save_torch,
    atomic_write,
    atomic_write_text,
    check_files_free,
    check_outputs_free,
)
from .options import as_bool, as_float, positive_int

__all__ = [
    "distributed",
    "as_bool",
    "as_float",
    "positive_int",
    "atomic_path",
    "atomic_save_nifti",
    "atomic_save_torch",
    "atomic_write",
    "atomic_write_text",
    "check_files_free",
    "check_outputs_free",
    "find_bundle_root",
    "log_forecasts",
    "log_run_summary",
    "middle_slice",
    "one_line",
    "user_error_in_chain",
    "setup_logging",
]
