# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""Forecast a patient's own scans with a trained bundle: the ``monai-tfm forecast`` command.

A few scans with their acquisition times in, one forecast volume out::

    from monai_tfm.apps.forecast import forecast
    forecast("bundles/synthetic_forecasting", scans=["s1.nii.gz", "s2.nii.gz"], times=[0, 0.3], target_time=0.8,
             output="pred.nii.gz")

The model (:class:`BundleForecaster`, :class:`ForecastOptions`) is :mod:`monai_tfm.apps.forecaster`: everything of
it comes from the bundle's configs. Reading a user's scans onto one grid and intensity scale (the reference grid: the
latest scan's, or ``reference``) is :mod:`monai_tfm.apps.scans`. What the command adds:

* scans given as files with their times, or as a ``subject,path,time`` table (every subject checked before the first
  forecast is written);
* the forecast in the original intensity scale, on the reference grid with its affine;
* atomic outputs that never replace an existing file unless ``overwrite``; optional stochastic samples (mean and
  standard deviation maps), metrics against a real scan at the target time and a PNG preview panel.

Expected input problems raise :class:`ForecastError` (a ``ValueError``) with a one-line message that names the file
or value; the command line prints it and exits with code 2.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from monai_tfm.apps.forecaster import BundleForecaster, ForecastError, ForecastOptions
from monai_tfm.apps.scans import on_reference_grid, read_context, read_scan
from monai_tfm.data.scan_table import parse_series, parse_time, read_scan_table
from monai_tfm.utils.display import require_matplotlib, write_forecast_preview
from monai_tfm.utils.io import atomic_save_nifti, check_files_free
from monai_tfm.utils.options import as_bool, positive_int

__all__ = [
    "BundleForecaster",
    "ForecastError",
    "ForecastOptions",
    "ForecastResult",
    "forecast",
    "forecast_series",
    "read_scan",
]

logger = logging.getLogger(__name__)

_NIFTI_SUFFIXES = (".nii", ".nii.gz")


# ------------------------------------------------------------------------------------------------------ arguments


def _as_list(value: Any, what: str) -> list[Any]:
    """Accept one value, a list/tuple, or (from the command line) a string holding one path."""
    if value is None:
        return []
    if isinstance(value, (str, os.PathLike, int, float)):
        return [value]
    if isinstance(value, Sequence):
        return list(value)
    raise ForecastError(f"--{what} must be a list, got {value!r}.")


def _nifti_stem(path: Path) -> str:
    name = path.name
    for suffix in sorted(_NIFTI_SUFFIXES, key=len, reverse=True):  # .nii.gz before .nii
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _std_path(output: Path) -> Path:
    """``pred.nii.gz`` -> ``pred_std.nii.gz``."""
    return output.with_name(f"{_nifti_stem(output)}_std.nii.gz")


# ------------------------------------------------------------------------------------------------------ the command


@dataclass
class ForecastResult:
    """What one forecast wrote.

    Attributes:
        subject: subject id (for a forecast from ``scans``: the output file name without ``.nii.gz``).
        output: the forecast NIfTI file.
        std_output: the standard deviation map of stochastic samples, or None.
        preview: the PNG panel, or None.
        target_time: the target time.
        context_times: the times of the scans used as context.
        nfe: network evaluations of the forecast (all samples).
        metrics: forecast metrics against ``truth`` (``model_*`` and ``lci_*``), empty without a truth scan.
    """

    subject: str
    output: Path
    std_output: Path | None
    preview: Path | None
    target_time: float
    context_times: list[float]
    nfe: int
    metrics: dict[str, float]


@dataclass
class _Job:
    subject: str
    scans: list[tuple[str, float]]
    output: Path
    std_output: Path | None
    preview: Path | None


def _forecast_one(
    model: BundleForecaster,
    job: _Job,
    target_time: float,
    reference: str | None,
    truth: str | None,
    overwrite: bool,
) -> ForecastResult:
    ref, ref_name, scaling, normalised, ctx_times = read_context(model, job.scans, target_time, reference)
    logger.info(
        "%s: forecasting t=%g from %d scan(s) at t=%s (intensity %.4g..%.4g -> %g..%g)",
        job.subject,
        target_time,
        len(ctx_times),
        [round(t, 6) for t in ctx_times],
        scaling.a_min,
        scaling.a_max,
        scaling.b_min,
        scaling.b_max,
    )
    pred, std, nfe = model.predict(normalised, ctx_times, target_time)

    affine = np.asarray(ref.affine, dtype=np.float64)
    if job.std_output is not None and std is not None:
        atomic_save_nifti(scaling.inverse_spread(std)[0].numpy().astype(np.float32), affine, job.std_output, overwrite)
    atomic_save_nifti(scaling.inverse(pred)[0].numpy().astype(np.float32), affine, job.output, overwrite)
    logger.info("%s: forecast written to %s (%d network evaluations)", job.subject, job.output, nfe)

    metrics: dict[str, float] = {}
    truth_norm = None
    if truth is not None:
        from monai_tfm.metrics import compute_forecast_metrics

        truth_norm = scaling.forward(on_reference_grid(read_scan(truth, "truth scan"), ref, truth, ref_name)).float()
        model_m = compute_forecast_metrics(pred, truth_norm, normalised[-1])
        lci_m = compute_forecast_metrics(normalised[-1], truth_norm, normalised[-1])
        metrics = {f"model_{k}": v for k, v in model_m.items()} | {f"lci_{k}": v for k, v in lci_m.items()}
        logger.info(
            "%s: against the real scan: NRMSE %.4f (LCI %.4f), PSNR %.2f (LCI %.2f), SSIM %.1f (LCI %.1f)",
            job.subject,
            model_m["nrmse"],
            lci_m["nrmse"],
            model_m["psnr"],
            lci_m["psnr"],
            model_m["ssim"],
            lci_m["ssim"],
        )
    if job.preview is not None:
        title = f"{job.subject}: {model.root.name} ({model.variant}), forecast at t={target_time:.3g}"
        if metrics:
            title += f"; NRMSE {metrics['model_nrmse']:.3f} (LCI {metrics['lci_nrmse']:.3f})"
        write_forecast_preview(job.preview, normalised, ctx_times, pred, target_time, truth_norm, std, title, overwrite)
        logger.info("%s: preview written to %s", job.subject, job.preview)
    return ForecastResult(
        job.subject,
        job.output,
        job.std_output if std is not None else None,
        job.preview,
        target_time,
        ctx_times,
        nfe,
        metrics,
    )


def forecast(
    bundle: str | os.PathLike,
    scans: Sequence[str | os.PathLike] | str | None = None,
    times: Sequence[float | str] | float | None = None,
    target_time: float | str | None = None,
    output: str | os.PathLike | None = None,
    csv: str | os.PathLike | None = None,
    reference: str | os.PathLike | None = None,
    preview: str | os.PathLike | None = None,
    truth: str | os.PathLike | None = None,
    overwrite: bool = False,
    options: ForecastOptions | None = None,
    **kwargs: Any,
) -> list[ForecastResult]:
    """Forecast the scan at ``target_time`` from a patient's scans (``scans`` + ``times``) or from a CSV table.

    Scans on other grids are resampled onto the reference grid (the latest scan's, or ``reference``); the forecast is
    written there, with the reference affine, in the original intensity scale. A target time equal to a scan's time
    is allowed (interpolation: the scan stays context).

    Args:
        bundle: bundle folder.
        scans: NIfTI files or DICOM series folders of one patient.
        times: one acquisition time per scan (the bundle's time unit; they need not be sorted).
        target_time: the time to forecast.
        output: the forecast file (``.nii.gz``) for ``scans``; the output folder for ``csv``.
        csv: a table with ``subject,path,time`` rows (instead of ``scans``/``times``); writes
            ``<output>/<subject>_forecast.nii.gz`` per subject.
        reference: a scan whose grid the forecast is written on (default: the latest scan).
        preview: a PNG panel (``scans``) or a folder for ``<subject>_preview.png`` panels (``csv``).
        truth: the real scan at the target time, shown in the preview with the residual (``scans`` only).
        overwrite: replace existing outputs (default: refuse).
        options: the model options (:class:`ForecastOptions`).
        kwargs: instead of ``options``: its fields (``method``, ``solver``, ``samples``, ...) and bundle config ids
            to set, e.g. ``aggregation="last"`` (:meth:`ForecastOptions.from_kwargs`).

    Returns:
        one :class:`ForecastResult` per subject.

    Raises:
        ForecastError: for any problem with the inputs, named in a one-line message.
    """
    if options is not None and kwargs:
        raise ForecastError(f"give the forecast options or {sorted(kwargs)}, not both.")
    options = options or ForecastOptions.from_kwargs(kwargs)
    samples = positive_int(options.samples, "samples", ForecastError)
    overwrite = as_bool(overwrite, "overwrite", ForecastError)  # the command line hands over 'false' as a string
    if target_time is None:
        raise ForecastError("--target-time is required.")
    t_target = parse_time(target_time, "--target-time", ForecastError)
    if output is None:
        raise ForecastError("--output is required (a file for --scans, a folder for --csv).")
    out = Path(output)
    jobs: list[_Job] = []
    if csv is not None:
        if scans is not None or times is not None:
            raise ForecastError("give either --csv or --scans/--times, not both.")
        if truth is not None:
            raise ForecastError("--truth works with --scans only.")
        if out.exists() and not out.is_dir():
            raise ForecastError(f"output '{out}' must be a folder with --csv, but it is a file.")
        preview_dir = None if preview is None else Path(preview)
        for subject, rows in read_scan_table(csv, error=ForecastError).items():
            series = parse_series(
                [r.path for r in rows], [r.time for r in rows], f"subject {subject!r} of '{csv}'", ForecastError
            )
            target = out / f"{subject}_forecast.nii.gz"
            panel = None if preview_dir is None else preview_dir / f"{subject}_preview.png"
            jobs.append(_Job(subject, series, target, _std_path(target) if samples > 1 else None, panel))
    else:
        paths = _as_list(scans, "scans")
        if not paths:
            raise ForecastError("give the scans (--scans FILE ...) with their --times, or a --csv table.")
        series = parse_series(paths, _as_list(times, "times"), "--scans", ForecastError)
        if not out.name.lower().endswith(_NIFTI_SUFFIXES):
            raise ForecastError(f"output '{out}' must be a NIfTI file name ending in .nii.gz or .nii.")
        std_out = _std_path(out) if samples > 1 else None
        jobs.append(_Job(_nifti_stem(out), series, out, std_out, None if preview is None else Path(preview)))
    check_files_free([p for j in jobs for p in (j.output, j.std_output, j.preview)], overwrite, ForecastError)
    for job in jobs:  # cheap existence checks before the model is built
        for path, _ in job.scans:
            if not Path(path).exists():
                raise ForecastError(f"scan '{path}' does not exist.")
    for extra, what in ((reference, "reference scan"), (truth, "truth scan")):
        if extra is not None and not Path(extra).exists():
            raise ForecastError(f"{what} '{os.fspath(extra)}' does not exist.")

    if preview is not None:
        require_matplotlib("--preview", ForecastError)  # before any output is written

    model = BundleForecaster(bundle, options)
    ref = None if reference is None else os.fspath(reference)
    tru = None if truth is None else os.fspath(truth)
    if len(jobs) == 1:
        return [_forecast_one(model, jobs[0], t_target, ref, tru, overwrite)]
    # a table: every subject's scans are read and checked before the first forecast is written (and read again for
    # its forecast, so that a long table does not hold all its scans in memory)
    for job in tqdm(jobs, desc="checking subjects", unit="subject", leave=False):
        try:
            read_context(model, job.scans, t_target, ref)
        except ForecastError as e:
            raise ForecastError(f"subject {job.subject!r} of '{csv}': {e}") from e
    results = []
    for job in tqdm(jobs, desc="forecasting", unit="subject"):
        results.append(_forecast_one(model, job, t_target, ref, tru, overwrite))
    return results


def forecast_series(
    model: BundleForecaster,
    scans: Sequence[str | os.PathLike],
    times: Sequence[float | str],
    target_time: float | str,
    output: str | os.PathLike,
    reference: str | os.PathLike | None = None,
    std_output: str | os.PathLike | None = None,
    overwrite: bool = False,
    who: str = "--scans",
    subject: str | None = None,
) -> ForecastResult:
    """Forecast one patient's series with a model that is already built: the path of :func:`forecast` for callers
    that keep one :class:`BundleForecaster` for many requests (the MONAI Label infer task).

    Args:
        model: the bundle's network, inferer and transforms.
        scans: NIfTI files or DICOM series folders of one patient.
        times: one acquisition time per scan (need not be sorted).
        target_time: the time to forecast.
        output: the forecast file (``.nii.gz``), on the reference grid in the original intensity scale.
        reference: a scan whose grid the forecast is written on (default: the latest context scan).
        std_output: where a per-voxel standard deviation map goes when ``model`` draws several samples.
        overwrite: replace existing outputs (default: refuse).
        who: how the series is called in error messages.
        subject: the subject id in log messages and the result (default: ``output`` without ``.nii.gz``).

    Returns:
        what was written.

    Raises:
        ForecastError: for any problem with the inputs, named in a one-line message.
    """
    overwrite = as_bool(overwrite, "overwrite", ForecastError)
    series = parse_series(_as_list(scans, "scans"), _as_list(times, "times"), who, ForecastError)
    t_target = parse_time(target_time, "target time", ForecastError)
    out = Path(output)
    std = Path(std_output) if std_output is not None and model.samples > 1 else None
    check_files_free([out, std], overwrite, ForecastError)
    job = _Job(subject or _nifti_stem(out), series, out, std, None)
    return _forecast_one(model, job, t_target, None if reference is None else os.fspath(reference), None, overwrite)
