# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""LUMIERE glioblastoma follow-up MRI preparation (docs/method.md section 6): download -> per-visit NIfTI files +
datalist.

The LUMIERE dataset (Suter et al., Scientific Data 9:768, 2022) holds, per patient, one folder per imaging visit,
named by the week after the first scan, with a suffix ``-k`` when a week has several scans::

    Imaging/Patient-001/week-000-1/CT1.nii.gz, T1.nii.gz, T2.nii.gz, FLAIR.nii.gz     (native space)
    Imaging/Patient-001/week-000-1/DeepBraTumIA-segmentation/atlas/skull_strip/ct1_skull_strip.nii.gz, ...
    Imaging/Patient-001/week-000-2/...
    Imaging/Patient-001/week-044/...

``src`` may be the ``Imaging`` folder or the folder that contains it. One image per visit is read; its path inside
the visit folder is ``pattern`` formatted with ``{modality}`` (as in the raw file names: ``CT1``, ``T1``, ``T2``,
``FLAIR``) and ``{modality_lower}`` (``ct1``, ...). The default pattern,
``DeepBraTumIA-segmentation/atlas/skull_strip/{modality_lower}_skull_strip.nii.gz``, takes the skull-stripped images
that the dataset provides registered to the atlas, so every visit of a patient is on one voxel grid and voxels
correspond across visits; ``pattern="{modality}.nii.gz"`` takes the raw native-space images instead (accepted only
where all visits of a patient share one grid: the preparer does not register images).

Times are in weeks: ``week-044`` and ``week-044-1`` are week 44. Several scans in one week keep their order (the
suffix ``k``, no suffix first): the ``r``-th of them (``r = 0, 1, ...``) gets the time ``week + r *
same_week_offset`` (default one day, ``1 / 7`` week), so times stay distinct and ordered and stay inside their week.

Per patient, :func:`prepare_lumiere` resamples every visit trilinearly onto ``spatial_size`` voxels (default
96 x 96 x 64) over the source field of view (output spacing ``spacing * n_in / n_out``, source orientation kept),
clips the whole series to its 0.5 / 99.5 percentiles and scales it to [0, 1] with one clip/scale for all visits
(per-visit normalisation would erase the change to forecast, docs/method.md section 9.7). Patients with a single
usable visit cannot give a (context, target) pair and are skipped with a logged note (listed in the datalist
metadata).

Output (``dst``)::

    dst/Patient-XXX/frame_KK.nii.gz         one file per usable visit, K = 0, 1, ... in time order
    dst/datalist.json                       written last; sections "training" (each item with "fold") and "test"

Frames carry ``time`` (weeks, see above), ``week`` (the integer week) and ``visit`` (the source folder name). The
test section holds ``floor(test_fraction * n + 0.5)`` patients drawn with ``seed`` (at least one patient stays out of
it); the others are dealt onto ``num_folds`` cross-validation folds (:func:`monai_tfm.data.preparation.assign_folds`,
:func:`monai_tfm.data.fold_split`). The bundle ``lumiere_glioma_forecasting`` forecasts the last visit from all
earlier ones. The source folder is only read.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from monai.config import PathLike

from monai_tfm.data.preparation import (
    PreparedDataset,
    check_output_folder,
    check_spatial_size,
    clear_frame_files,
    ensure_prepared,
    hold_out_subjects,
    normalise_shared,
    read_nifti_header,
    resample_spatial,
    resampled_affine,
    write_prepared_dataset,
)
from monai_tfm.utils.errors import MonaiTFMError
from monai_tfm.utils.io import atomic_save_nifti

__all__ = [
    "LUMIERE_DEFAULT_PATTERN",
    "LUMIERE_DEFAULT_SPATIAL_SIZE",
    "LUMIERE_MODALITIES",
    "LUMIERE_PREPARE_VERSION",
    "LUMIERE_RAW_PATTERN",
    "LumierePatient",
    "LumiereVisit",
    "ensure_lumiere_prepared",
    "find_lumiere_patients",
    "lumiere_image_path",
    "parse_week_folder",
    "prepare_lumiere",
    "visit_times",
]

logger = logging.getLogger(__name__)


#: bump when the prepared data change, so that stored datasets can be told apart
LUMIERE_PREPARE_VERSION = "1"
#: the grid of the papers (CRONOS section 5: 96 x 96 x 64)
LUMIERE_DEFAULT_SPATIAL_SIZE = (96, 96, 64)
#: the MRI sequences of every visit, as the raw files name them (CT1: T1-weighted after contrast)
LUMIERE_MODALITIES = ("CT1", "T1", "T2", "FLAIR")
#: skull-stripped images registered to the atlas (DeepBraTumIA output shipped with the dataset)
LUMIERE_DEFAULT_PATTERN = "DeepBraTumIA-segmentation/atlas/skull_strip/{modality_lower}_skull_strip.nii.gz"
#: the raw native-space images
LUMIERE_RAW_PATTERN = "{modality}.nii.gz"
#: intensity percentiles of the shared (per-patient) clip
LUMIERE_PERCENTILES = (0.5, 99.5)
#: time between successive scans of one week (one day), see :func:`visit_times`
SAME_WEEK_OFFSET = 1.0 / 7.0

_PATIENT_RE = re.compile(r"^Patient-(\d+)$")
_WEEK_RE = re.compile(r"^week-(\d+)(?:-(\d+))?$")


# ---------------------------------------------------------------------------------------------------------------------
# discovery


def parse_week_folder(name: str) -> tuple[int, int]:
    """Week and within-week order of a visit folder name: ``week-044`` -> (44, 0), ``week-044-2`` -> (44, 2).

    Args:
        name: the folder name, ``week-NNN`` or ``week-NNN-k`` (digits only).

    Returns:
        ``(week, k)`` with ``k = 0`` when there is no suffix.

    Raises:
        ValueError: the name is not ``week-NNN[-k]``.
    """
    m = _WEEK_RE.match(name)
    if m is None:
        raise MonaiTFMError(f"bad LUMIERE visit folder name {name!r}: expected 'week-NNN' or 'week-NNN-k' (digits).")
    return int(m.group(1)), int(m.group(2) or 0)


@dataclass
class LumiereVisit:
    """One imaging visit (study date) of a patient.

    Attributes:
        name: the folder name (``week-044-1``).
        week: the week (44).
        order: the suffix (1; 0 without suffix).
        folder: the visit folder.
        time: the time in weeks (:func:`visit_times`).
    """

    name: str
    week: int
    order: int
    folder: Path
    time: float = 0.0


@dataclass
class LumierePatient:
    """One patient of a LUMIERE download.

    Attributes:
        subject: patient id (``Patient-001``).
        number: the numeric id.
        folder: the patient folder.
        visits: the visits in time order.
        source_root: the folder holding the patient folders (``source`` paths in the datalist are relative to it).
    """

    subject: str
    number: int
    folder: Path
    visits: list[LumiereVisit] = field(default_factory=list)
    source_root: Path = Path(".")


def visit_times(visits: Sequence[LumiereVisit], same_week_offset: float = SAME_WEEK_OFFSET) -> list[float]:
    """Times in weeks of sorted visits: ``week + r * same_week_offset`` for the r-th scan (0-based) of a week.

    Args:
        visits: the visits of one patient, sorted by ``(week, order)``.
        same_week_offset: time between successive scans of one week, in weeks (> 0).

    Returns:
        one time per visit, strictly increasing.

    Raises:
        ValueError: a non-positive offset, visits not sorted, two folders with the same week and order
            (``week-012`` and ``week-012-0``), or more scans in a week than the offset fits into it.
    """
    if not same_week_offset > 0:
        raise MonaiTFMError(f"same_week_offset must be > 0 (weeks), got {same_week_offset!r}.")
    keys = [(v.week, v.order) for v in visits]
    for a, b, va, vb in zip(keys, keys[1:], visits, visits[1:]):
        if b == a:
            raise MonaiTFMError(f"visit folders '{va.folder}' and '{vb.folder}' have the same week and order {a}.")
        if b < a:
            raise MonaiTFMError(f"visits must be sorted by (week, order); '{vb.folder}' comes after '{va.folder}'.")
    times, rank = [], 0
    for i, v in enumerate(visits):
        rank = rank + 1 if i > 0 and visits[i - 1].week == v.week else 0
        if rank * same_week_offset >= 1.0:
            raise MonaiTFMError(
                f"'{v.folder}': {rank + 1} scans in week {v.week} do not fit into one week with "
                f"same_week_offset={same_week_offset}; pass a smaller offset."
            )
        times.append(v.week + rank * float(same_week_offset))
    return times


def _patients_root(root: Path) -> Path:
    if any(_PATIENT_RE.match(p.name) and p.is_dir() for p in root.iterdir()):
        return root
    imaging = root / "Imaging"
    if imaging.is_dir():
        return imaging
    raise FileNotFoundError(
        f"no LUMIERE patients found under '{root}': expected 'Patient-XXX/week-NNN[-k]/' folders there or in "
        f"'{imaging}'."
    )


def find_lumiere_patients(src: PathLike, same_week_offset: float = SAME_WEEK_OFFSET) -> list[LumierePatient]:
    """List the patients of a LUMIERE download with their visits in time order.

    Folders named ``week...`` must parse as ``week-NNN[-k]``; other entries of a patient folder are ignored.

    Args:
        src: the ``Imaging`` folder or its parent.
        same_week_offset: see :func:`visit_times`.

    Returns:
        the patients sorted by id, each with its visits (possibly none) sorted by ``(week, order)``, times set.

    Raises:
        FileNotFoundError: ``src`` does not exist or holds no ``Patient-XXX`` folder.
        ValueError: a bad visit folder name, or two visits with the same week and order (see :func:`visit_times`).
    """
    root = Path(src).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"LUMIERE source folder '{root}' does not exist or is not a folder.")
    base = _patients_root(root)
    patients = []
    for p in sorted(base.iterdir()):
        m = _PATIENT_RE.match(p.name)
        if m is None or not p.is_dir():
            continue
        visits = []
        for v in sorted(p.iterdir()):
            if not v.is_dir() or not v.name.lower().startswith("week"):
                continue
            try:
                week, order = parse_week_folder(v.name)
            except ValueError as e:
                raise MonaiTFMError(f"'{v}': {e}") from None
            visits.append(LumiereVisit(v.name, week, order, v))
        visits.sort(key=lambda x: (x.week, x.order))
        for visit, t in zip(visits, visit_times(visits, same_week_offset)):
            visit.time = t
        patients.append(LumierePatient(p.name, int(m.group(1)), p, visits, base))
    patients.sort(key=lambda x: (x.number, x.subject))
    return patients


def _modality(modality: str) -> str:
    canonical = {m.lower(): m for m in LUMIERE_MODALITIES}
    if not isinstance(modality, str) or modality.lower() not in canonical:
        raise MonaiTFMError(f"unknown LUMIERE modality {modality!r}; expected one of {list(LUMIERE_MODALITIES)}.")
    return canonical[modality.lower()]


def lumiere_image_path(visit_folder: PathLike, modality: str = "CT1", pattern: str = LUMIERE_DEFAULT_PATTERN) -> Path:
    """The image file of one visit for a modality and a file pattern.

    Args:
        visit_folder: the ``week-NNN[-k]`` folder.
        modality: ``CT1`` (default), ``T1``, ``T2`` or ``FLAIR`` (case-insensitive).
        pattern: path inside the visit folder with the placeholders ``{modality}`` (``CT1``) and
            ``{modality_lower}`` (``ct1``).

    Returns:
        the path (not checked for existence).

    Raises:
        ValueError: an unknown modality, or a pattern with another placeholder or an absolute path.
    """
    mod = _modality(modality)
    try:
        rel = pattern.format(modality=mod, modality_lower=mod.lower())
    except (KeyError, IndexError, ValueError) as e:
        raise MonaiTFMError(
            f"bad LUMIERE file pattern {pattern!r} ({e!r}); allowed placeholders: {{modality}}, {{modality_lower}}."
        ) from None
    if not rel or Path(rel).is_absolute():
        raise MonaiTFMError(f"LUMIERE file pattern {pattern!r} must be a path relative to the visit folder.")
    return Path(visit_folder) / rel


# ---------------------------------------------------------------------------------------------------------------------
# preparation


def _header(path: Path) -> tuple[Any, tuple[int, int, int]]:
    """Open a NIfTI lazily and check that it is one 3D volume (a trailing axis of length one is accepted)."""
    return read_nifti_header(path, 3, "a 3D volume (x, y, z)")  # type: ignore[return-value]


def _read_volume(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The voxels (float32, 3D) and the affine of a volume."""
    img, shape = _header(path)
    try:
        data = np.asarray(img.dataobj, dtype=np.float32).reshape(shape)
    except Exception as e:
        raise MonaiTFMError(f"cannot read the voxels of '{path}': {e}") from e
    if not np.all(np.isfinite(data)):
        raise MonaiTFMError(f"'{path}' holds non-finite voxels.")
    return data, np.asarray(img.affine, dtype=np.float64)


def _usable_visits(
    patient: LumierePatient, modality: str, pattern: str, missing_visits: str
) -> tuple[list[tuple[LumiereVisit, Path]], list[str]]:
    """The visits that have the image, and the names of those left out (``missing_visits="skip"``)."""
    usable, skipped = [], []
    for visit in patient.visits:
        path = lumiere_image_path(visit.folder, modality, pattern)
        if path.is_file():
            usable.append((visit, path))
        elif missing_visits == "skip":
            logger.warning("LUMIERE: %s/%s has no '%s'; visit left out.", patient.subject, visit.name, path.name)
            skipped.append(visit.name)
        else:
            raise FileNotFoundError(
                f"LUMIERE visit '{visit.folder}' has no {modality} image '{path}' (pattern {pattern!r}); pass "
                "missing_visits='skip' to leave such visits out, or another modality/pattern."
            )
    return usable, skipped


def _check_headers(subject: str, usable: list[tuple[LumiereVisit, Path]]) -> tuple[int, ...]:
    """Check that every image is a readable 3D volume and that all visits share one grid; return the shape."""
    ref_path, ref_shape, ref_affine = None, None, None
    for _, path in usable:
        img, shape = _header(path)
        affine = np.asarray(img.affine, dtype=np.float64)
        if ref_shape is None:
            ref_path, ref_shape, ref_affine = path, shape, affine
        elif shape != ref_shape or not np.allclose(affine, ref_affine, atol=1e-3):
            raise MonaiTFMError(
                f"{subject}: visits are on different voxel grids: '{path}' has shape {shape}, '{ref_path}' has "
                f"{ref_shape} (or their affines differ). Use the registered images the dataset provides (default "
                f"pattern {LUMIERE_DEFAULT_PATTERN!r}); the preparer does not register images."
            )
    return ref_shape


def _prepare_patient(
    patient: LumierePatient,
    usable: list[tuple[LumiereVisit, Path]],
    shape: tuple[int, ...],
    dst: Path,
    size: tuple[int, int, int],
) -> dict[str, Any]:
    """Resample, normalise and write the usable visits of one patient; return its datalist entry (no ``fold``)."""
    volumes, affine = [], None
    for _, path in usable:
        data, affine = _read_volume(path)
        volumes.append(resample_spatial(data, size))
    normalised, lo, hi = normalise_shared(np.stack(volumes, axis=-1), LUMIERE_PERCENTILES, patient.subject)
    out_affine = resampled_affine(affine, shape, size)
    folder = dst / patient.subject
    clear_frame_files(folder)
    frames = []
    for k, (visit, _) in enumerate(usable):
        rel = f"{patient.subject}/frame_{k:02d}.nii.gz"
        atomic_save_nifti(np.ascontiguousarray(normalised[..., k]), out_affine, dst / rel)
        frames.append({"image": rel, "time": visit.time, "week": visit.week, "visit": visit.name})
    spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    metadata = {
        "source": [path.relative_to(patient.source_root).as_posix() for _, path in usable],
        "source_shape": list(shape),
        "source_spacing": [round(float(s), 6) for s in spacing],
        "spacing": [round(float(s) * n / m, 6) for s, n, m in zip(spacing, shape, size)],
        "intensity_clip": [lo, hi],
        "num_visits": len(usable),
        "first_week": usable[0][0].week,
        "last_week": usable[-1][0].week,
    }
    return {"subject": patient.subject, "frames": frames, "metadata": metadata}


def prepare_lumiere(
    src: PathLike,
    dst: PathLike,
    modality: str = "CT1",
    pattern: str = LUMIERE_DEFAULT_PATTERN,
    spatial_size: Sequence[int] | int = LUMIERE_DEFAULT_SPATIAL_SIZE,
    test_fraction: float = 0.2,
    num_folds: int = 5,
    seed: int = 0,
    same_week_offset: float = SAME_WEEK_OFFSET,
    missing_visits: str = "error",
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Convert a LUMIERE download into per-visit NIfTI files and a series datalist (docs/method.md section 6).

    Per patient: the visits' ``modality`` images (file ``pattern`` inside each visit folder, see the module notes)
    resampled trilinearly to ``spatial_size`` over the source field of view, clipped to the 0.5 / 99.5 percentiles
    of all visits together and scaled to [0, 1] (one clip/scale per patient), written as
    ``dst/Patient-XXX/frame_KK.nii.gz`` (K-th visit in time order) with an affine of spacing
    ``spacing * n_in / n_out`` and the source orientation; times in weeks (``week-044-1`` is week 44; the r-th scan
    of a week gets ``+ r * same_week_offset``). Patients with fewer than two usable visits are skipped with a logged
    note.

    The datalist (written last) has a ``training`` section (every item with ``"fold"`` in ``0 .. num_folds - 1``) and
    a ``test`` section (``floor(test_fraction * n + 0.5)`` patients, drawn with ``seed``); items carry ``"metadata"``
    (source files, grids, intensity clip, weeks), the top level records the options and the skipped patients. The
    source folder is only read; everything is checked before anything is written.

    Args:
        src: the LUMIERE ``Imaging`` folder (``Patient-XXX/week-NNN[-k]/``) or its parent.
        dst: output folder (created); must not be inside ``src``.
        modality: ``CT1`` (T1-weighted with contrast, default), ``T1``, ``T2`` or ``FLAIR``.
        pattern: path of the image inside a visit folder, with ``{modality}`` / ``{modality_lower}`` placeholders;
            default: the atlas-registered skull-stripped images (:data:`LUMIERE_DEFAULT_PATTERN`); the raw images are
            :data:`LUMIERE_RAW_PATTERN`.
        spatial_size: output grid ``(x, y, z)``, default (96, 96, 64).
        test_fraction: share of the (usable) patients in the test section, in ``[0, 1)``.
        num_folds: cross-validation folds of the training section (>= 2).
        seed: seed of the test draw and the fold assignment.
        same_week_offset: time in weeks between successive scans of one week (> 0, default one day).
        missing_visits: ``"error"`` (default) when a visit folder lacks the image, or ``"skip"`` to leave such visits
            out (logged, listed in the item metadata).
        overwrite: replace a dataset already prepared in ``dst`` (from this or another source).
        progress: show a tqdm progress bar over patients.

    Returns:
        the path of ``dst/datalist.json``.

    Raises:
        FileNotFoundError: ``src`` holds no patients, or (``missing_visits="error"``) a visit lacks its image.
        FileExistsError: ``dst`` already holds a ``datalist.json`` and ``overwrite`` is False.
        ValueError: a bad visit folder name, an unreadable image, a 4D image where a 3D volume is expected, visits of
            a patient on different grids, no patient with two usable visits, bad options, or ``dst`` inside ``src``.
    """
    start = time.perf_counter()
    size = check_spatial_size(spatial_size)
    modality = _modality(modality)
    lumiere_image_path(".", modality, pattern)  # validates the pattern
    if missing_visits not in ("error", "skip"):
        raise MonaiTFMError(f"missing_visits must be 'error' or 'skip', got {missing_visits!r}.")
    num_folds = int(num_folds)
    if num_folds < 2:
        raise MonaiTFMError(f"num_folds must be >= 2, got {num_folds}.")
    if not 0.0 <= float(test_fraction) < 1.0:
        raise MonaiTFMError(f"test_fraction must be in [0, 1), got {test_fraction!r}.")
    src_dir = Path(src).expanduser()
    if not src_dir.is_dir():
        raise FileNotFoundError(f"LUMIERE source folder '{src_dir}' does not exist or is not a folder.")
    datalist = check_output_folder(src_dir, dst, overwrite, "LUMIERE")
    dst_dir = datalist.parent

    # check every patient before writing anything (a bad file fails fast, not after an hour)
    patients = find_lumiere_patients(src_dir, same_week_offset)
    if not patients:
        raise FileNotFoundError(f"no 'Patient-XXX' folders found under '{src_dir}'.")
    todo, skipped_subjects, skipped_visits = [], {}, {}
    for patient in patients:
        usable, missing = _usable_visits(patient, modality, pattern, missing_visits)
        if missing:
            skipped_visits[patient.subject] = missing
        if len(usable) < 2:
            what = "no visit" if not patient.visits else ", ".join(v.name for v, _ in usable) or "no usable visit"
            reason = f"{len(usable)} usable visit(s) ({what}); a forecast needs at least two"
            logger.info("LUMIERE: skipping %s: %s.", patient.subject, reason)
            skipped_subjects[patient.subject] = reason
            continue
        todo.append((patient, usable, _check_headers(patient.subject, usable)))
    if not todo:
        raise MonaiTFMError(f"no LUMIERE patient under '{src_dir}' has two usable {modality} visits ({pattern!r}).")
    logger.info(
        "LUMIERE: preparing %d patients (%d skipped) from %s into %s (%s, grid %s).",
        len(todo),
        len(skipped_subjects),
        src_dir,
        dst_dir,
        modality,
        size,
    )

    def prepare_one(item: tuple[LumierePatient, list, tuple[int, ...]]) -> dict:
        entry = _prepare_patient(*item, dst_dir, size)
        if item[0].subject in skipped_visits:
            entry["metadata"]["skipped_visits"] = skipped_visits[item[0].subject]
        return entry

    metadata = {
        "dataset": "LUMIERE",
        "preparer": "monai_tfm.data.lumiere",
        "preparer_version": LUMIERE_PREPARE_VERSION,
        "source": str(src_dir.absolute()),
        "modality": modality,
        "pattern": pattern,
        "spatial_size": list(size),
        "test_fraction": float(test_fraction),
        "num_folds": num_folds,
        "seed": int(seed),
        "same_week_offset": float(same_week_offset),
        "missing_visits": missing_visits,
        "max_week": max(usable[-1][0].time for _, usable, _ in todo),
        "skipped_subjects": skipped_subjects,
        "frames": "one per usable visit; time = week of the visit folder (+ r * same_week_offset for its r-th scan)",
        "intensity": f"per patient: clip to percentiles {list(LUMIERE_PERCENTILES)} of all visits, scale to [0, 1]",
    }

    return write_prepared_dataset(
        PreparedDataset(
            "LUMIERE",
            "LUMIERE glioblastoma follow-up MRI",
            "weeks",
            num_folds,
            int(seed),
            metadata,
            len(skipped_subjects),
        ),
        datalist,
        todo,
        prepare_one,
        test_subjects=hold_out_subjects([patient.subject for patient, _, _ in todo], test_fraction, seed),
        overwrite=overwrite,
        progress=progress,
        start=start,
    )


def ensure_lumiere_prepared(dataset_dir: PathLike, prepared_dir: PathLike, **kwargs: Any) -> str:
    """The datalist of a LUMIERE dataset, preparing it first when ``dataset_dir`` holds the download.

    * ``dataset_dir/datalist.json`` exists: ``dataset_dir`` is already prepared; its datalist is used.
    * else ``prepared_dir/datalist.json`` exists: a previous run prepared it (from ``dataset_dir``, with the same
      ``modality``, ``pattern`` and ``spatial_size`` where given); it is used.
    * else ``dataset_dir`` is read as a LUMIERE download and prepared into ``prepared_dir``.

    Args:
        dataset_dir: a prepared folder or a LUMIERE download (never written to).
        prepared_dir: where to prepare a download.
        kwargs: options of :func:`prepare_lumiere` (``modality``, ``pattern``, ``spatial_size``, ...).

    Returns:
        path of the datalist.

    Raises:
        ValueError: ``prepared_dir`` holds data prepared from another source or with another modality, pattern or
            grid than requested.
    """
    return ensure_prepared(
        dataset_dir, prepared_dir, prepare_lumiere, "LUMIERE", canonical={"modality": _modality}, **kwargs
    )
