# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""Sequence transforms: series loading, context sampling, grid embedding, LOCF (docs/method.md sections 3 and 4;
module map in docs/DESIGN.md)."""

from __future__ import annotations

from .context import (
    ContextDraw,
    ContextProtocol,
    InferenceContextd,
    RandContextd,
    SelectContextd,
    TimeRange,
    draw_context,
    make_fixed_draws,
    select_context,
    subject_rng,
)
from .grid import FillLOCF, FillLOCFd, GridEmbed, GridEmbedd, grid_slots
from .intensity import IntensityScaling, ScaleSeriesIntensityd
from .output import AsForecastImaged
from .series import (
    GRID_ATOL,
    LoadedSeries,
    LoadSeries,
    LoadSeriesD,
    LoadSeriesd,
    LoadSeriesDict,
    SeriesReadError,
    dicom_series_count,
    grid_mismatch,
    read_volume,
    resample_to_grid,
)
from .temporal import RandHoldStilld

__all__ = [
    "ContextDraw",
    "ContextProtocol",
    "InferenceContextd",
    "AsForecastImaged",
    "RandHoldStilld",
    "IntensityScaling",
    "ScaleSeriesIntensityd",
    "RandContextd",
    "SelectContextd",
    "TimeRange",
    "draw_context",
    "make_fixed_draws",
    "select_context",
    "subject_rng",
    "FillLOCF",
    "FillLOCFd",
    "GridEmbed",
    "GridEmbedd",
    "grid_slots",
    "LoadedSeries",
    "LoadSeries",
    "LoadSeriesd",
    "LoadSeriesD",
    "LoadSeriesDict",
    "SeriesReadError",
    "GRID_ATOL",
    "dicom_series_count",
    "grid_mismatch",
    "read_volume",
    "resample_to_grid",
]
