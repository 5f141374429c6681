# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""A patient's own scans as a forecast's context: read, on one grid, on the bundle's intensity scale.

What a user's files need and a prepared datalist does not: reading NIfTI files or DICOM series folders (MONAI
``LoadImage``; ITK for folders) with checks that name the file, resampling scans on other grids onto the reference
grid (the latest context scan's, or a given reference scan) with MONAI's ``ResampleToMatch``, and one
0.5/99.5-percentile clip/scale over all context scans of a patient (the bundle's own transform), recorded so that the
forecast can be written back in the original intensity scale. Which scans are context is the model's rule
(:meth:`monai_tfm.apps.forecaster.BundleForecaster.select_context`), checked before any image is read.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import NamedTuple

import torch
from monai.config import PathLike
from monai.data import MetaTensor

from monai_tfm.apps.bundle_loading import one_line
from monai_tfm.apps.forecaster import BundleForecaster, ForecastError
from monai_tfm.transforms.intensity import IntensityScaling
from monai_tfm.transforms.series import SeriesReadError, grid_mismatch, read_volume, resample_to_grid

__all__ = ["ContextScans", "on_reference_grid", "read_context", "read_scan"]

logger = logging.getLogger(__name__)


def read_scan(path: PathLike, what: str = "scan") -> MetaTensor:
    """Read one scan: a 3D NIfTI file (nibabel), another ITK format, or a folder with one DICOM series (ITK).

    The reading and its checks are :func:`monai_tfm.transforms.read_volume`'s (the same as for datalist frames): the
    file exists and is readable, it is a single 3D volume, its voxels are finite.

    Args:
        path: file or DICOM folder.
        what: how the scan is called in error messages (``scan``, ``reference scan``, ``truth scan``).

    Returns:
        ``(1, D, H, W)`` float32 ``MetaTensor`` with its affine (RAS, as MONAI's readers give it).

    Raises:
        ForecastError: a missing or unreadable file, a folder without exactly one DICOM series, an image that is not
            one 3D volume, or non-finite voxels.
    """
    try:
        return read_volume(path, what=what)
    except (FileNotFoundError, SeriesReadError, ValueError) as e:
        raise ForecastError(one_line(e)) from e


def on_reference_grid(img: MetaTensor, ref: MetaTensor, name: str, ref_name: str) -> torch.Tensor:
    """``img`` on the grid of ``ref`` (trilinear resampling, with a logged note when the grids differ).

    Args:
        img: the scan.
        ref: the reference scan.
        name: the scan's name, for the note.
        ref_name: the reference's name, for the note.

    Returns:
        ``img`` resampled onto ``ref``'s shape and affine (itself when they match).
    """
    if grid_mismatch(img, ref) is not None:
        logger.info(
            "'%s' (shape %s) is on another grid than the reference '%s' (shape %s): resampled onto the reference "
            "grid (trilinear)",
            name,
            tuple(img.shape[1:]),
            ref_name,
            tuple(ref.shape[1:]),
        )
    return resample_to_grid(img, ref)


class ContextScans(NamedTuple):
    """A forecast's context, read, on the reference grid and normalised (everything a forecast needs to start).

    Attributes:
        ref: the reference scan (its grid and affine are the forecast's).
        ref_name: its path, for messages.
        scaling: the patient's intensity scaling (:meth:`IntensityScaling.inverse` writes the forecast back).
        normalised: ``(T, C, D, H, W)`` context scans on the reference grid and the normalised scale.
        times: their ``T`` times.
    """

    ref: MetaTensor
    ref_name: str
    scaling: IntensityScaling
    normalised: torch.Tensor
    times: list[float]


def read_context(
    model: BundleForecaster, scans: Sequence[tuple[str, float]], target_time: float, reference: str | None = None
) -> ContextScans:
    """Check the times of ``scans`` against ``model``, then read its context scans onto one grid and intensity scale.

    Args:
        model: the bundle's model (its context rule and intensity normalisation).
        scans: ``(path, time)`` pairs in increasing time order.
        target_time: the time to forecast.
        reference: a scan whose grid the forecast is written on (default: the latest context scan).

    Returns:
        the context.

    Raises:
        ForecastError: a time the model cannot use, a scan that cannot be read, or a constant series.
    """
    names = [p for p, _ in scans]
    times = [t for _, t in scans]
    context = model.select_context(times, target_time, names)  # time checks before any image is read
    images = {i: read_scan(names[i]) for i in context}
    if reference is not None:
        ref, ref_name = read_scan(reference, "reference scan"), reference
    else:
        ref, ref_name = images[context[-1]], names[context[-1]]
    frames = torch.stack([on_reference_grid(images[i], ref, names[i], ref_name) for i in context])
    try:
        scaling = IntensityScaling.from_series(frames, model.normalise)
    except ValueError as e:
        raise ForecastError(one_line(e)) from e
    return ContextScans(ref, ref_name, scaling, scaling.forward(frames).float(), [times[i] for i in context])
