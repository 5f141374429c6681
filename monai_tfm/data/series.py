# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""Your own longitudinal scans: a CSV of ``subject,path,time`` rows -> per-frame NIfTI files + datalist.

:func:`prepare_series` is ``monai-tfm prepare series --csv scans.csv --dst DIR``. The table (read by
:func:`monai_tfm.data.scan_table.read_scan_table`) has a header with ``subject``, ``path`` and ``time`` and optionally
``split`` (``training``, ``validation`` or ``test``, per subject) and ``label`` (a label map of the scan, same grid);
paths are NIfTI files or folders holding one DICOM series, relative to the CSV's folder. The preparer

1. checks every row before it writes anything: each scan and label exists, is readable, is one 3D volume with finite
   voxels; times are numbers, distinct within a subject, and no file is given twice; a label lies on its scan's grid;
   every subject has at least two scans (``short_series="skip"`` leaves shorter ones out, listed in the metadata);
2. resamples each subject's scans onto one grid in world coordinates (MONAI's ``ResampleToMatch``, trilinear for
   scans, nearest neighbour for labels): the grid of its latest scan, or of ``reference`` (one file for all
   subjects); with ``spatial_size`` that grid's field of view is covered by ``spatial_size`` voxels
   (:func:`monai_tfm.data.preparation.resampled_affine`);
3. normalises each subject with one clip/scale for all its scans (0.5 / 99.5 percentiles of the whole series, the
   preparers' one rule :func:`monai_tfm.data.preparation.normalise_shared`; per-scan normalisation would erase the
   change to forecast);
4. counts times from each subject's first scan (``time_origin="first"``, follow-up studies) or keeps them as given
   (``"zero"``), records the factor that brings them to about [0, 1] for the network (``time_scale``, given or
   ``1 / max |t|``), the time range and the median time between consecutive scans (the grid of the discrete
   variant);
5. writes ``dst/<subject>/frame_KK.nii.gz`` (``label_KK.nii.gz``) with their affines and ``dst/datalist.json``
   last, all atomically. Subjects without a split: with no ``split`` column at all, ``test_fraction`` of them form
   the test section; the training subjects get ``num_folds`` cross-validation folds, stratified by their number of
   scans. The source files are only read; ``dst`` may not hold any of them.

:func:`series_settings` gives a bundle what it needs of such a dataset (time unit, scale, range, grid spacing), from
its datalist or, in a packed bundle, from ``configs/dataset_settings.json``; :func:`series_folds` gives the
training/validation split (the explicit ``validation`` section, or a fold).
"""

from __future__ import annotations

import json
import logging
import math
import statistics
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import PathLike
from monai.data import MetaTensor
from tqdm.auto import tqdm

from monai_tfm.data.datalist import DATALIST_NAME, load_series_datalist, write_series_datalist
from monai_tfm.data.preparation import (
    assign_folds,
    check_output_folder,
    check_spatial_size,
    clear_frame_files,
    hold_out_subjects,
    is_within,
    normalise_shared,
    resampled_affine,
    split_folds,
)
from monai_tfm.data.scan_table import ScanRow, parse_series, read_scan_table
from monai_tfm.transforms.series import grid_mismatch, read_volume, resample_to_grid
from monai_tfm.utils.errors import MonaiTFMError, one_line
from monai_tfm.utils.io import atomic_save_nifti

__all__ = [
    "DATASET_SETTINGS_FILE",
    "SERIES_PERCENTILES",
    "SERIES_PREPARE_VERSION",
    "SERIES_SPLITS",
    "prepare_series",
    "series_datalist",
    "series_folds",
    "series_settings",
    "training_time_range",
]

logger = logging.getLogger(__name__)

#: bump when the prepared data change, so that stored datasets can be told apart
SERIES_PREPARE_VERSION = "1"
#: intensity percentiles of the shared (per-subject) clip
SERIES_PERCENTILES = (0.5, 99.5)
#: the values of the optional ``split`` column
SERIES_SPLITS = ("training", "validation", "test")
#: a packed bundle's copy of :func:`series_settings` (its data do not travel with it)
DATASET_SETTINGS_FILE = "dataset_settings.json"
_TIME_ORIGINS = ("first", "zero")


# ---------------------------------------------------------------------------------------------------------------------
# checks (before anything is written)


def _read_checked(row: ScanRow, csv: Path, what: str) -> MetaTensor:
    """Read one scan or label with the package's checks; errors name the table line."""
    path = row.extra["label"] if what == "label" else row.path
    if what == "label" and not Path(path).is_absolute():
        path = str(csv.parent / path)
    try:
        return read_volume(path, what=what)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"scan table '{csv}' line {row.line}: {one_line(e)}") from e
    except (MonaiTFMError, RuntimeError) as e:
        raise MonaiTFMError(f"scan table '{csv}' line {row.line}: {one_line(e)}") from e


def _subject_split(rows: Sequence[ScanRow], subject: str, csv: Path) -> str:
    """The split a subject's rows give (``""`` when none), checked."""
    values = {r.extra.get("split", "").strip().lower() for r in rows}
    bad = sorted(v for v in values if v and v not in SERIES_SPLITS)
    if bad:
        line = next(r.line for r in rows if r.extra.get("split", "").strip().lower() == bad[0])
        raise MonaiTFMError(
            f"scan table '{csv}' line {line}: split {bad[0]!r} of subject {subject!r} is not one of {SERIES_SPLITS}."
        )
    values.discard("")
    if len(values) > 1:
        raise MonaiTFMError(
            f"scan table '{csv}': subject {subject!r} has rows in several splits {sorted(values)}; a subject "
            "belongs to one split."
        )
    return values.pop() if values else ""


def _target_grid(ref: MetaTensor, size: tuple[int, int, int] | None) -> tuple[tuple[int, ...], np.ndarray]:
    """Shape and affine of the output grid: ``ref``'s grid, or its field of view with ``size`` voxels."""
    shape = tuple(int(s) for s in ref.shape[1:])
    affine = np.asarray(ref.affine, dtype=np.float64)
    if size is None or tuple(size) == shape:
        return shape, affine
    return tuple(size), resampled_affine(affine, shape, size)


def _on_grid(img: MetaTensor, shape: tuple[int, ...], affine: np.ndarray, label: bool) -> np.ndarray:
    """``img`` resampled in world coordinates onto ``(shape, affine)`` (trilinear; labels nearest neighbour)."""
    dst = MetaTensor(torch.zeros((1, *shape)), affine=torch.as_tensor(affine, dtype=torch.float64))
    return resample_to_grid(img, dst, label)[0].numpy()


# ---------------------------------------------------------------------------------------------------------------------
# preparation


def prepare_series(
    csv: PathLike,
    dst: PathLike,
    spatial_size: Sequence[int] | int | None = None,
    reference: PathLike | None = None,
    time_unit: str = "",
    time_scale: float | None = None,
    time_origin: str = "first",
    num_folds: int = 5,
    test_fraction: float = 0.2,
    seed: int = 0,
    short_series: str = "error",
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Convert a table of longitudinal scans into per-frame NIfTI files and a series datalist (see the module notes).

    Args:
        csv: the scan table (``subject,path,time`` and optionally ``split``, ``label``).
        dst: output folder (created); may not contain any scan of the table.
        spatial_size: output grid ``(x, y, z)`` over the field of view of the reference grid (default: the reference
            grid itself). All subjects must end on one shape (training batches need it).
        reference: a scan whose grid every subject is resampled onto (default: each subject's latest scan).
        time_unit: the unit of the ``time`` column (``days``, ``weeks``, ``years``, ...), recorded for the reports.
        time_scale: the factor that brings the (prepared) times to about [0, 1] for the network; default
            ``1 / max |t|`` over the prepared times.
        time_origin: ``"first"`` (times counted from each subject's first scan, default) or ``"zero"`` (as given).
        num_folds: cross-validation folds of the training section (>= 2).
        test_fraction: share of the subjects in the test section, in ``[0, 1)``, when the table has no ``split``.
        seed: seed of the test draw and of the fold assignment.
        short_series: ``"error"`` (default) for a subject with fewer than two scans, or ``"skip"`` (logged, listed in
            the datalist metadata).
        overwrite: replace a dataset already prepared in ``dst``.
        progress: show tqdm progress bars.

    Returns:
        the path of ``dst/datalist.json``.

    Raises:
        FileNotFoundError: the table, a scan or a label does not exist.
        FileExistsError: ``dst`` already holds a ``datalist.json`` and ``overwrite`` is False.
        MonaiTFMError: (a ``ValueError``) a bad row (unreadable or non-3D scan, non-finite voxels, a bad, repeated
            or duplicate time, a file given twice, a label off its scan's grid, a bad split, a short series), subjects
            on different grids, bad options, or ``dst`` holding a source scan; each message names the file and line.
    """
    start = time.perf_counter()
    csv_path = Path(csv).expanduser().absolute()
    size = None if spatial_size is None else check_spatial_size(spatial_size)
    if time_origin not in _TIME_ORIGINS:
        raise MonaiTFMError(f"time_origin must be one of {_TIME_ORIGINS}, got {time_origin!r}.")
    if short_series not in ("error", "skip"):
        raise MonaiTFMError(f"short_series must be 'error' or 'skip', got {short_series!r}.")
    if time_scale is not None and not (math.isfinite(float(time_scale)) and float(time_scale) > 0):
        raise MonaiTFMError(f"time_scale must be a positive number, got {time_scale!r}.")
    num_folds = int(num_folds)
    if num_folds < 2:
        raise MonaiTFMError(f"num_folds must be >= 2, got {num_folds}.")
    if not 0.0 <= float(test_fraction) < 1.0:
        raise MonaiTFMError(f"test_fraction must be in [0, 1), got {test_fraction!r}.")
    datalist = check_output_folder(csv_path, dst, overwrite, "series")
    dst_dir = datalist.parent
    table = read_scan_table(csv_path, optional=("split", "label"))
    has_split_column = any(r.extra["split"] for rows in table.values() for r in rows)

    # 1. every row, before anything is written
    todo: list[tuple[str, list[tuple[ScanRow, float]], str]] = []
    skipped: dict[str, str] = {}
    ref_img = None if reference is None else read_volume(reference, what="reference scan")
    owner: dict[Path, tuple[str, int]] = {}  # resolved scan -> (subject, line): one scan belongs to one subject
    for subject, rows in tqdm(table.items(), desc="series check", unit="subject", disable=not progress):
        if subject == DATALIST_NAME:
            raise MonaiTFMError(f"scan table '{csv_path}': subject id {subject!r} is reserved.")
        split = _subject_split(rows, subject, csv_path)
        lines = f"lines {rows[0].line}-{rows[-1].line}" if len(rows) > 1 else f"line {rows[0].line}"
        pairs = parse_series([r.path for r in rows], [r.time for r in rows], f"scan table '{csv_path}' ({lines})")
        by_path = {r.path: r for r in rows}
        ordered = [(by_path[p], t) for p, t in pairs]
        if len(ordered) < 2:
            reason = f"{len(ordered)} scan ({lines}); a forecast needs at least two"
            if short_series == "error":
                raise MonaiTFMError(
                    f"scan table '{csv_path}': subject {subject!r} has {reason} (short_series='skip' leaves such "
                    "subjects out)."
                )
            logger.warning("series: skipping subject %s: %s.", subject, reason)
            skipped[subject] = reason
            continue
        for row, _ in ordered:
            resolved = Path(row.path).resolve()  # absolute: the table reader joins it to the table's folder
            if resolved in owner:
                other, line = owner[resolved]
                raise MonaiTFMError(
                    f"scan table '{csv_path}' line {row.line}: scan '{row.path}' is also the scan of line {line} "
                    f"(subject {other!r}); each file is one scan of one subject."
                )
            owner[resolved] = (subject, row.line)
            for p in (row.path, row.extra["label"]):
                if p and is_within(Path(csv_path.parent / p).resolve(), dst_dir.resolve()):
                    raise MonaiTFMError(
                        f"scan table '{csv_path}' line {row.line}: '{p}' lies inside the output folder '{dst_dir}'; "
                        "the source files are only read, choose another --dst."
                    )
            img = _read_checked(row, csv_path, "scan")
            if row.extra["label"]:
                why = grid_mismatch(_read_checked(row, csv_path, "label"), img)
                if why is not None:
                    raise MonaiTFMError(
                        f"scan table '{csv_path}' line {row.line}: label '{row.extra['label']}' is not on the grid of "
                        f"its scan '{row.path}' ({why})."
                    )
        todo.append((subject, ordered, split))
    if not todo:
        raise MonaiTFMError(f"no subject of scan table '{csv_path}' has two scans.")
    has_labels = [any(r.extra["label"] for r, _ in ordered) for _, ordered, _ in todo]
    if any(has_labels) and not all(has_labels):
        missing = todo[has_labels.index(False)][0]
        raise MonaiTFMError(
            f"scan table '{csv_path}': some subjects have labels, {missing!r} has none; give all or none."
        )

    # 2. grids: one shape for every subject
    grids = {}
    for subject, ordered, _ in todo:
        ref = ref_img if ref_img is not None else read_volume(ordered[-1][0].path, what="scan")
        grids[subject] = _target_grid(ref, size)
    shapes = {s: g[0] for s, g in grids.items()}
    if len(set(shapes.values())) > 1:
        (a, sa), (b, sb) = next(iter(shapes.items())), next(
            (s, v) for s, v in shapes.items() if v != shapes[todo[0][0]]
        )
        raise MonaiTFMError(
            f"scan table '{csv_path}': subjects are on different grids ({a!r} {sa}, {b!r} {sb}); pass "
            "--spatial_size X,Y,Z (or --reference FILE) so that all subjects share one shape."
        )

    # 3. write: frames first, the datalist last
    logger.info(
        "series: preparing %d subjects (%d skipped) from %s into %s.", len(todo), len(skipped), csv_path, dst_dir
    )
    dst_dir.mkdir(parents=True, exist_ok=True)
    if datalist.exists():  # overwrite: invalidate the old dataset before touching its files
        datalist.unlink()
    entries, split_of = [], {}
    for subject, ordered, split in tqdm(todo, desc="series prepare", unit="subject", disable=not progress):
        shape, affine = grids[subject]
        volumes = [_on_grid(read_volume(r.path, what="scan"), shape, affine, label=False) for r, _ in ordered]
        normalised, lo, hi = normalise_shared(np.stack(volumes, axis=0), SERIES_PERCENTILES, subject)
        folder = dst_dir / subject
        n = len(ordered)
        clear_frame_files(folder, [f"label_{k:02d}.nii.gz" for k in range(max(n, 100))])
        t0 = ordered[0][1] if time_origin == "first" else 0.0
        frames = []
        for k, (row, t) in enumerate(ordered):
            rel = f"{subject}/frame_{k:02d}.nii.gz"
            atomic_save_nifti(np.ascontiguousarray(normalised[k]), affine, dst_dir / rel)
            frame = {"image": rel, "time": round(t - t0, 9), "source": row.path, "source_time": t}
            if row.extra["label"]:
                lab = _on_grid(_read_checked(row, csv_path, "label"), shape, affine, label=True)
                rel_lab = f"{subject}/label_{k:02d}.nii.gz"
                atomic_save_nifti(np.rint(lab).astype(np.int16), affine, dst_dir / rel_lab)
                frame["label"] = rel_lab
            frames.append(frame)
        entries.append({"subject": subject, "frames": frames, "metadata": {"intensity_clip": [lo, hi], "num_scans": n}})
        split_of[subject] = split

    # 4. splits and folds
    unassigned = [e["subject"] for e in entries if not split_of[e["subject"]]]
    if not has_split_column:
        for s in hold_out_subjects(unassigned, test_fraction, seed):
            split_of[s] = "test"
    sections: dict[str, list] = {
        name: [e for e in entries if (split_of[e["subject"]] or "training") == name] for name in SERIES_SPLITS
    }
    training = sections["training"]
    if not training:
        raise MonaiTFMError(f"scan table '{csv_path}': no subject is left for training (check the split column).")
    folds = assign_folds([e["subject"] for e in training], [len(e["frames"]) for e in training], num_folds, seed)
    for e in training:
        e["fold"] = folds[e["subject"]]
    if len(training) < num_folds and not sections["validation"]:
        logger.warning("series: %d training subjects for %d folds; some folds are empty.", len(training), num_folds)
    times = [f["time"] for e in entries for f in e["frames"]]
    train_times = [f["time"] for e in training for f in e["frames"]]
    gaps = [b["time"] - a["time"] for e in training for a, b in zip(e["frames"], e["frames"][1:])]
    metadata = {
        "dataset": "series",
        "preparer": "monai_tfm.data.series",
        "preparer_version": SERIES_PREPARE_VERSION,
        "source": str(csv_path),
        "spatial_size": list(shapes[todo[0][0]]),
        "reference": None if reference is None else str(Path(reference).absolute()),
        "time_unit": time_unit,
        "time_origin": time_origin,
        "time_scale": float(time_scale) if time_scale is not None else 1.0 / max(abs(t) for t in times),
        "time_scale_derived": time_scale is None,
        "time_range": [min(train_times), max(train_times)],
        "grid_spacing": float(statistics.median(gaps)),
        "num_folds": num_folds,
        "test_fraction": float(test_fraction),
        "seed": int(seed),
        "split_column": has_split_column,
        "skipped_subjects": skipped,
        "intensity": f"per subject: clip to percentiles {list(SERIES_PERCENTILES)} of all scans, scale to [0, 1]",
    }
    out = write_series_datalist(
        datalist,
        {k: v for k, v in sections.items() if v},
        name=f"longitudinal series from {csv_path.name}",
        time_unit=time_unit or None,
        metadata=metadata,
        overwrite=overwrite,
    )
    logger.info(
        "series: wrote %s (%s, %d skipped) in %.1f s.",
        out,
        ", ".join(f"{len(v)} {k}" for k, v in sections.items() if v),
        len(skipped),
        time.perf_counter() - start,
    )
    return out


# ---------------------------------------------------------------------------------------------------------------------
# what a bundle reads of a prepared series


def series_datalist(dataset_dir: PathLike) -> str:
    """The datalist of a prepared series folder, with the way to make one when there is none.

    Args:
        dataset_dir: the folder ``monai-tfm prepare series`` wrote (or any folder with a series ``datalist.json``).

    Returns:
        the datalist path.

    Raises:
        FileNotFoundError: ``dataset_dir`` holds no ``datalist.json``.
    """
    path = Path(dataset_dir).expanduser() / DATALIST_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"'{dataset_dir}' holds no prepared series ({DATALIST_NAME}); run `monai-tfm prepare series --csv "
            "scans.csv --dst DIR` and pass --dataset_dir DIR."
        )
    return str(path)


def _settings_from_datalist(path: Path) -> dict[str, Any]:
    """Time unit, scale, range and grid spacing of a series datalist (recorded by :func:`prepare_series`, else
    computed from its training section)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    meta = data.get("metadata") if isinstance(data.get("metadata"), Mapping) else {}
    items = load_series_datalist(path, "training", check_files=False)
    times = [f["time"] for it in items for f in it["frames"]]
    gaps = [b["time"] - a["time"] for it in items for a, b in zip(it["frames"], it["frames"][1:])]
    scale = meta.get("time_scale")
    if scale is None:
        scale = 1.0 / max(max(abs(t) for t in times), 1e-12)
    return {
        "time_unit": str(meta.get("time_unit") or data.get("time_unit") or ""),
        "time_scale": float(scale),
        "time_range": [float(v) for v in meta.get("time_range", [min(times), max(times)])],
        "grid_spacing": float(meta.get("grid_spacing", statistics.median(gaps))),
        "max_scans": max(len(it["frames"]) for it in items),
    }


def series_settings(dataset_dir: PathLike | None, bundle_root: PathLike | None = None) -> dict[str, Any]:
    """What a bundle needs to know of its series dataset: ``time_unit``, ``time_scale``, ``time_range`` (of the
    training times), ``grid_spacing`` (median time between consecutive scans) and ``max_scans``.

    Read from ``dataset_dir/datalist.json`` when it exists, else from ``<bundle_root>/configs/dataset_settings.json``
    (written by ``monai-tfm pack --dataset_dir``, so that a shared bundle forecasts without its training data).

    Args:
        dataset_dir: the prepared folder (may be absent in a packed bundle).
        bundle_root: the bundle folder.

    Returns:
        the settings dict.

    Raises:
        FileNotFoundError: neither exists.
        MonaiTFMError: a malformed settings file.
    """
    if dataset_dir is not None and (Path(dataset_dir).expanduser() / DATALIST_NAME).is_file():
        return _settings_from_datalist(Path(dataset_dir).expanduser() / DATALIST_NAME)
    stored = None if bundle_root is None else Path(bundle_root) / "configs" / DATASET_SETTINGS_FILE
    if stored is not None and stored.is_file():
        try:
            settings = json.loads(stored.read_text(encoding="utf-8"))
            float(settings["time_scale"]), float(settings["grid_spacing"]), list(settings["time_range"])
        except (ValueError, KeyError, TypeError) as e:
            raise MonaiTFMError(f"'{stored}' is not a dataset settings file: {one_line(e)}") from e
        return settings
    raise FileNotFoundError(
        f"'{dataset_dir}' holds no prepared series ({DATALIST_NAME}) and the bundle has no "
        f"configs/{DATASET_SETTINGS_FILE}; run `monai-tfm prepare series --csv scans.csv --dst DIR` and pass "
        "--dataset_dir DIR."
    )


def training_time_range(
    dataset_dirs: Sequence[PathLike | None], bundle_root: PathLike | None = None
) -> list[float] | None:
    """``[first, last]`` time of the training series, for a bundle's ``time_range`` (what its continuous model has
    seen; :class:`monai_tfm.transforms.TimeRange` refuses forecasts far outside it).

    Read from the first of ``dataset_dirs`` that holds a prepared ``datalist.json`` (its training section, or the
    range :func:`prepare_series` recorded), else from ``<bundle_root>/configs/dataset_settings.json`` (a bundle packed
    with ``monai-tfm pack --dataset_dir``); with neither (weights shared without their data or settings) there is no
    range to check, which is logged.

    Args:
        dataset_dirs: candidate prepared folders, e.g. a bundle's ``dataset_dir`` and ``prepared_dir``.
        bundle_root: the bundle folder.

    Returns:
        the range, or None.
    """
    prepared = (f for f in dataset_dirs if f is not None and (Path(f).expanduser() / DATALIST_NAME).is_file())
    try:
        return [float(v) for v in series_settings(next(prepared, None), bundle_root)["time_range"]]
    except FileNotFoundError:
        pass
    logger.warning(
        "no prepared data and no configs/%s: the times the model was trained on are unknown, so forecasts are not "
        "checked against them",
        DATASET_SETTINGS_FILE,
    )
    return None


def series_folds(datalist: PathLike, fold: int) -> tuple[list, list]:
    """Training and validation items of a series datalist: its ``validation`` section when it has one (the table's
    ``split`` column; then only ``fold`` 0 exists), else fold ``fold`` of its training section.

    Args:
        datalist: the datalist.
        fold: the validation fold.

    Returns:
        ``(train_items, val_items)`` with absolute frame paths.

    Raises:
        MonaiTFMError: a fold other than 0 with an explicit validation section, or an empty fold.
    """
    data = json.loads(Path(datalist).read_text(encoding="utf-8"))
    if data.get("validation"):
        if int(fold) != 0:
            raise MonaiTFMError(
                f"datalist '{datalist}' has an explicit validation section (the split column); use fold 0, not {fold}."
            )
        return load_series_datalist(datalist, "training"), load_series_datalist(datalist, "validation")
    return split_folds(load_series_datalist(datalist, "training"), fold)
