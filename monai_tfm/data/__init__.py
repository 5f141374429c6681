# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""Datalists, synthetic phantoms and dataset preparation (docs/method.md section 6)."""

from __future__ import annotations

from . import acdc, isles, lumiere
from .acdc import ensure_acdc_extra_phases, ensure_acdc_prepared, prepare_acdc
from .datalist import DatalistError, load_series_datalist, validate_series_item, write_series_datalist
from .isles import ensure_isles_prepared, prepare_isles
from .lumiere import ensure_lumiere_prepared, prepare_lumiere
from .preparation import fold_split
from .scan_table import read_scan_table
from .series import prepare_series, series_datalist, series_folds, series_settings, training_time_range
from .synthetic import (
    DATALIST_NAME,
    GENERATOR_VERSION,
    cardiac_curve,
    ensure_synthetic_dataset,
    generate_synthetic_dataset,
    make_heart_series,
    make_tumour_series,
)

__all__ = [
    "DATALIST_NAME",
    "GENERATOR_VERSION",
    "DatalistError",
    "acdc",
    "ensure_acdc_extra_phases",
    "ensure_acdc_prepared",
    "ensure_isles_prepared",
    "ensure_lumiere_prepared",
    "fold_split",
    "prepare_acdc",
    "prepare_series",
    "read_scan_table",
    "series_datalist",
    "series_folds",
    "series_settings",
    "training_time_range",
    "isles",
    "prepare_isles",
    "lumiere",
    "prepare_lumiere",
    "cardiac_curve",
    "ensure_synthetic_dataset",
    "generate_synthetic_dataset",
    "load_series_datalist",
    "make_heart_series",
    "make_tumour_series",
    "validate_series_item",
    "write_series_datalist",
]
