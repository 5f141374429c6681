# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""Helpers shared by the dataset preparers (ACDC, ISLES, ...): resampling, normalisation, folds, output checks.

Every preparer converts an official download into per-frame NIfTI files plus a ``datalist.json`` (docs/method.md
section 6).
What is common to all of them lives here, once:

* resampling on the same field of view (separable linear interpolation written as small matrices; nearest neighbour
  for label maps) and the affine of the resampled grid;
* one clip/scale per series from shared percentiles (never per frame, docs/method.md section 9.7);
* deterministic cross-validation folds and the fold split of a prepared datalist;
* the checks before writing (the output is not inside the read-only source, an existing prepared dataset is not
  replaced without ``overwrite``) and :func:`ensure_prepared`, which bundle configs call to prepare on first use.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import nibabel as nib
import numpy as np
from monai.config import PathLike
from tqdm.auto import tqdm

from monai_tfm.data.datalist import DATALIST_NAME, load_series_datalist, write_series_datalist
from monai_tfm.utils.errors import MonaiTFMError

__all__ = [
    "read_nifti_header",
    "DATALIST_NAME",
    "PreparedDataset",
    "write_prepared_dataset",
    "assign_folds",
    "check_output_folder",
    "check_spatial_size",
    "clear_frame_files",
    "ensure_prepared",
    "fold_split",
    "hold_out_subjects",
    "is_within",
    "normalise_shared",
    "resample_labels",
    "resample_series",
    "resample_spatial",
    "resampled_affine",
    "split_folds",
]

logger = logging.getLogger(__name__)


#: file name of the datalist written by every preparer

_FRAME_FILE_RE = re.compile(r"^frame_\d+\.nii\.gz$")


# ---------------------------------------------------------------------------------------------------------------------
# resampling (separable linear interpolation, written out as small matrices)


def check_spatial_size(spatial_size: Sequence[int] | int) -> tuple[int, int, int]:
    """Validate an output grid: three positive integers (an int means the same size along every axis).

    Args:
        spatial_size: ``(x, y, z)`` or one int.

    Returns:
        the three sizes as ints.

    Raises:
        ValueError: if it is not three positive integers.
    """
    values = [spatial_size] * 3 if isinstance(spatial_size, (int, np.integer)) else spatial_size
    msg = f"spatial_size must be three positive integers, got {spatial_size!r}."
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or len(values) != 3:
        raise MonaiTFMError(msg)
    if any(isinstance(v, bool) or not isinstance(v, (int, np.integer, float)) or v != int(v) or v < 1 for v in values):
        raise MonaiTFMError(msg)
    return int(values[0]), int(values[1]), int(values[2])


def _centre_coords(n_in: int, n_out: int) -> np.ndarray:
    """Input index coordinates of the output voxel centres when a grid of ``n_in`` is resampled to ``n_out``.

    The field of view is kept: output voxel ``i`` covers ``[i, i + 1) * n_in / n_out`` in input voxel units.
    """
    return (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5


def _linear_matrix(coords: np.ndarray, n_in: int) -> np.ndarray:
    """``(len(coords), n_in)`` matrix of 1D linear interpolation at ``coords`` (edge values beyond the ends)."""
    coords = np.clip(coords, 0.0, n_in - 1.0)
    lo = np.floor(coords).astype(np.int64)
    hi = np.minimum(lo + 1, n_in - 1)
    w = coords - lo
    mat = np.zeros((len(coords), n_in), dtype=np.float64)
    rows = np.arange(len(coords))
    np.add.at(mat, (rows, lo), 1.0 - w)
    np.add.at(mat, (rows, hi), w)
    return mat


def _apply_along(array: np.ndarray, mat: np.ndarray, axis: int) -> np.ndarray:
    if mat.shape[0] == mat.shape[1] and np.array_equal(mat, np.eye(mat.shape[0])):
        return array
    moved = np.moveaxis(array, axis, -1)
    out = moved @ mat.T.astype(array.dtype)
    return np.moveaxis(out, -1, axis)


def resample_spatial(array: np.ndarray, spatial_size: Sequence[int]) -> np.ndarray:
    """Trilinear resampling of the first three axes of an array on the same field of view (voxel centres, see
    :func:`resampled_affine`); further axes (time, channels) are carried along unchanged.

    Args:
        array: ``(x, y, z, ...)``.
        spatial_size: output ``(x, y, z)``.

    Returns:
        float32 array ``(*spatial_size, ...)``.

    Raises:
        ValueError: for an array with fewer than three axes or a bad ``spatial_size``.
    """
    size = check_spatial_size(spatial_size)
    if array.ndim < 3:
        raise MonaiTFMError(f"expected an array with at least 3 (spatial) axes, got shape {array.shape}.")
    out = np.asarray(array, dtype=np.float32)
    for axis, n_out in enumerate(size):
        n_in = out.shape[axis]
        out = _apply_along(out, _linear_matrix(_centre_coords(n_in, n_out), n_in), axis)
    return np.ascontiguousarray(out, dtype=np.float32)


def resample_series(series: np.ndarray, spatial_size: Sequence[int], num_frames: int) -> np.ndarray:
    """Resample a 4D series ``(x, y, z, t)`` jointly in space and time (linear interpolation along every axis).

    Space keeps the field of view (voxel centres, see :func:`resampled_affine`); time maps the first and last input
    frames onto the first and last output frames, with ``num_frames`` equally spaced phases in between.
    Separable linear interpolation along four axes is exactly 4-linear (trilinear in space, linear in time).

    Args:
        series: the array ``(x, y, z, t)`` with ``t >= 2``.
        spatial_size: output ``(x, y, z)``.
        num_frames: output number of frames (>= 2).

    Returns:
        float32 array ``(*spatial_size, num_frames)``.

    Raises:
        ValueError: for a non-4D array, fewer than 2 input or output frames, or a bad ``spatial_size``.
    """
    check_spatial_size(spatial_size)
    if series.ndim != 4:
        raise MonaiTFMError(f"expected a 4D series (x, y, z, t), got shape {series.shape}.")
    n_t = series.shape[3]
    if n_t < 2 or int(num_frames) < 2:
        raise MonaiTFMError(f"need at least 2 input and 2 output frames, got {n_t} and {num_frames}.")
    out = resample_spatial(series, spatial_size)
    t_coords = np.linspace(0.0, n_t - 1.0, int(num_frames))
    out = _apply_along(out, _linear_matrix(t_coords, n_t), 3)
    return np.ascontiguousarray(out, dtype=np.float32)


def resample_labels(labels: np.ndarray, spatial_size: Sequence[int]) -> np.ndarray:
    """Nearest-neighbour resampling of a 3D label map on the same field of view (no new label values).

    Args:
        labels: integer-valued array ``(x, y, z)``.
        spatial_size: output ``(x, y, z)``.

    Returns:
        array of ``spatial_size`` with the dtype of ``labels``.

    Raises:
        ValueError: for a non-3D array or a bad ``spatial_size``.
    """
    size = check_spatial_size(spatial_size)
    if labels.ndim != 3:
        raise MonaiTFMError(f"expected a 3D label map, got shape {labels.shape}.")
    idx = [
        np.clip(np.floor(_centre_coords(n_in, n_out) + 0.5).astype(np.int64), 0, n_in - 1)
        for n_in, n_out in zip(labels.shape, size)
    ]
    return np.ascontiguousarray(labels[np.ix_(*idx)])


def resampled_affine(affine: np.ndarray, in_size: Sequence[int], out_size: Sequence[int]) -> np.ndarray:
    """Affine of a grid resampled from ``in_size`` to ``out_size`` voxels over the same field of view.

    Each voxel axis is scaled by ``in / out`` (spacing ``* in / out``; directions unchanged) and the origin moves to
    the centre of the first new voxel.

    Args:
        affine: the source 4x4 voxel-to-world affine.
        in_size: source ``(x, y, z)``.
        out_size: output ``(x, y, z)``.

    Returns:
        the 4x4 affine of the output grid.
    """
    affine = np.asarray(affine, dtype=np.float64)
    ratio = np.asarray(in_size, dtype=np.float64) / np.asarray(out_size, dtype=np.float64)
    out = affine.copy()
    out[:3, :3] = affine[:3, :3] * ratio[None, :]
    first = 0.5 * ratio - 0.5  # input index coordinate of the first output voxel centre
    out[:3, 3] = affine[:3, :3] @ first + affine[:3, 3]
    return out


# ---------------------------------------------------------------------------------------------------------------------
# intensities


def normalise_shared(
    series: np.ndarray, percentiles: Sequence[float], name: str, mask: np.ndarray | None = None
) -> tuple[np.ndarray, float, float]:
    """Clip a whole series to two shared percentiles and scale it to [0, 1] (one clip/scale for all frames).

    Args:
        series: the array (any shape; all frames of one subject).
        percentiles: ``(lower, upper)`` in [0, 100].
        name: subject id, for messages.
        mask: optional boolean array over the leading axes of ``series`` (e.g. ``(x, y, z)`` of an ``(x, y, z, t)``
            series): the percentiles are taken over these voxels of every frame only; the clip applies to all.

    Returns:
        ``(float32 array in [0, 1], lower value, upper value)``; zeros (with a warning) for a constant series.

    Raises:
        ValueError: if the series holds non-finite voxels, or ``mask`` does not fit or selects no voxel.
    """
    if not np.all(np.isfinite(series)):
        raise MonaiTFMError(f"{name}: the series holds non-finite voxels.")
    values = series
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != series.shape[: mask.ndim]:
            raise MonaiTFMError(f"{name}: mask of shape {mask.shape} does not fit a series of shape {series.shape}.")
        if not mask.any():
            raise MonaiTFMError(f"{name}: the percentile mask selects no voxel.")
        values = series[mask]
    lo, hi = (float(v) for v in np.percentile(values, list(percentiles)))
    if hi <= lo:
        logger.warning("%s: constant intensities after clipping (%g); writing zeros.", name, lo)
        return np.zeros_like(series, dtype=np.float32), lo, hi
    out = (np.clip(series, lo, hi) - lo) / (hi - lo)
    return np.clip(out, 0.0, 1.0).astype(np.float32), lo, hi


# ---------------------------------------------------------------------------------------------------------------------
# folds


def assign_folds(subjects: Sequence[str], groups: Sequence[Any] | None, num_folds: int, seed: int = 0) -> dict:
    """Deterministic cross-validation folds, stratified by group.

    The sorted subject ids are shuffled with ``numpy.random.default_rng(seed)``, then ordered by group (stable, so
    the shuffled order is kept within a group) and dealt round-robin onto the folds: every fold gets about the
    same number of subjects of every group, and the fold sizes differ by at most one.

    Args:
        subjects: subject ids.
        groups: group of each subject (same order), or None for no stratification.
        num_folds: number of folds (>= 2).
        seed: shuffling seed.

    Returns:
        subject id -> fold in ``0 .. num_folds - 1``.

    Raises:
        ValueError: if ``num_folds < 2``, or ``groups`` has another length than ``subjects``.
    """
    if int(num_folds) < 2:
        raise MonaiTFMError(f"num_folds must be >= 2, got {num_folds}.")
    if groups is not None and len(groups) != len(subjects):
        raise MonaiTFMError(f"got {len(subjects)} subjects but {len(groups)} groups.")
    group_of = dict(zip(subjects, groups if groups is not None else [None] * len(subjects)))
    ordered = sorted(group_of)
    perm = np.random.default_rng(int(seed)).permutation(len(ordered))
    shuffled = [ordered[i] for i in perm]
    shuffled.sort(key=lambda s: "" if group_of[s] is None else str(group_of[s]))
    return {s: i % int(num_folds) for i, s in enumerate(shuffled)}


def hold_out_subjects(subjects: Sequence[str], fraction: float, seed: int = 0) -> set[str]:
    """A deterministic random test set: ``floor(fraction * n + 0.5)`` of the subjects (at least one stays out).

    The sorted subject ids are shuffled with ``numpy.random.default_rng(seed)`` and the first ones held out, so the
    result depends only on the set of ids and the seed (not on their order or on the file system).

    Args:
        subjects: subject ids (distinct).
        fraction: share of held-out subjects in ``[0, 1)``.
        seed: shuffling seed.

    Returns:
        the held-out subject ids.

    Raises:
        ValueError: if ``fraction`` is outside ``[0, 1)``.
    """
    fraction = float(fraction)
    if not 0.0 <= fraction < 1.0:
        raise MonaiTFMError(f"the held-out fraction must be in [0, 1), got {fraction}.")
    ordered = sorted(set(subjects))
    n_out = min(int(np.floor(fraction * len(ordered) + 0.5)), max(len(ordered) - 1, 0))
    perm = np.random.default_rng(int(seed)).permutation(len(ordered))
    return {ordered[i] for i in perm[:n_out]}


def split_folds(items: Sequence[Mapping], fold: int) -> tuple[list[Mapping], list[Mapping]]:
    """Split datalist items into fold ``fold``'s training and validation lists (validation: ``item["fold"] == fold``).

    Args:
        items: datalist entries, each with an integer ``"fold"`` (as written by the preparers).
        fold: the validation fold.

    Returns:
        ``(train_items, val_items)``, in the order of ``items``.

    Raises:
        ValueError: if an item has no integer ``fold``, or no item belongs to ``fold``.
    """
    folds = set()
    for i, item in enumerate(items):
        f = item.get("fold")
        if isinstance(f, bool) or not isinstance(f, int):
            raise MonaiTFMError(f"item #{i} ({item.get('subject')!r}) has no integer 'fold' key (got {f!r}).")
        folds.add(f)
    if int(fold) not in folds:
        raise MonaiTFMError(f"fold {fold} has no subjects; folds present: {sorted(folds)}.")
    train = [item for item in items if item["fold"] != int(fold)]
    val = [item for item in items if item["fold"] == int(fold)]
    return train, val


def fold_split(
    datalist: PathLike,
    fold: int,
    section: str = "training",
    extra: Sequence[PathLike] | None = None,
    **kwargs: Any,
) -> tuple[list, list]:
    """Load a prepared datalist and return fold ``fold``'s ``(train_items, val_items)``.

    ``extra`` datalists add training series only: other series of the same subjects (e.g. the diastole of an ACDC
    patient, :func:`monai_tfm.data.acdc.cycle_frames`). Each of their subjects must be in ``datalist`` with the same
    fold, so that no series of a validation subject is trained on; the items of the validation fold are left out.

    Args:
        datalist: the ``datalist.json`` written by a preparer.
        fold: the validation fold.
        section: the section holding the folds.
        extra: further datalists (same section) whose training items are appended to ``train_items``.
        kwargs: further arguments of :func:`monai_tfm.data.load_series_datalist` (``check_files``, ...).

    Returns:
        ``(train_items, val_items)`` with absolute frame paths.

    Raises:
        ValueError: see :func:`split_folds` and :func:`monai_tfm.data.load_series_datalist`; an ``extra`` subject that
            is not in ``datalist`` or has another fold there.
        FileNotFoundError: if the datalist (or a frame file) does not exist.
    """
    items = load_series_datalist(datalist, section=section, **kwargs)
    train, val = split_folds(items, fold)
    fold_of = {item["subject"]: item.get("fold") for item in items}
    for path in extra or ():
        more = load_series_datalist(path, section=section, **kwargs)
        for item in more:
            sid = item["subject"]
            if fold_of.get(sid, object()) != item.get("fold"):
                there = f"fold {fold_of[sid]!r}" if sid in fold_of else "no series"
                raise MonaiTFMError(
                    f"datalist '{path}': subject {sid!r} has fold {item.get('fold')!r} here but {there} in "
                    f"'{datalist}'; extra series must come from the same subjects and folds (prepare them from the "
                    "same source with the same num_folds and seed)."
                )
        train += split_folds(more, fold)[0]
    return train, val


# ---------------------------------------------------------------------------------------------------------------------
# output folder


def is_within(path: PathLike, parent: PathLike) -> bool:
    """Whether ``path`` is ``parent`` or lies inside it (paths compared as given; resolve them first).

    Args:
        path: a path.
        parent: a folder.

    Returns:
        True if ``path`` is inside ``parent``.
    """
    try:
        Path(path).relative_to(Path(parent))
        return True
    except ValueError:
        return False


def read_nifti_header(
    path: PathLike,
    ndim: int,
    expected: str,
    name: str = "NIfTI file",
    who: str | None = None,
    keep_file_open: bool = False,
) -> tuple[Any, tuple[int, ...]]:
    """Open a NIfTI file lazily (nibabel) and check its number of axes: the one header reader of the preparers.

    Args:
        path: the file.
        ndim: the number of axes it must have; for 3 a trailing axis of length one is accepted (and dropped).
        expected: what the file must be, for the message (e.g. ``a 4D cine series (x, y, slice, time)``).
        name: what the file is called when it is missing (e.g. ``ACDC cine series``).
        who: the subject, put in front of messages when given.
        keep_file_open: keep the file handle open (many frame reads from one file).

    Returns:
        the nibabel image (voxels not read yet) and its shape.

    Raises:
        FileNotFoundError: no such file.
        ValueError: nibabel cannot read it, or it has another number of axes.
    """
    pre = f"{who}: " if who else ""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{pre}{name} '{path}' does not exist.")
    try:
        img = nib.load(str(path), keep_file_open=keep_file_open)
        shape = tuple(int(s) for s in img.shape)
    except Exception as e:  # nibabel raises several types for broken files
        raise MonaiTFMError(f"{pre}cannot read '{path}' as NIfTI: {e}") from e
    if ndim == 3 and len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != ndim:
        raise MonaiTFMError(f"{pre}'{path}' has shape {tuple(img.shape)} ({len(img.shape)}D); expected {expected}.")
    return img, shape


def check_output_folder(src: PathLike, dst: PathLike, overwrite: bool, dataset: str) -> Path:
    """The checks every preparer makes before writing: ``dst`` is not inside the (read-only) source and does not
    already hold a prepared dataset unless ``overwrite``.

    Args:
        src: the download folder.
        dst: the output folder.
        overwrite: allow replacing a prepared dataset in ``dst``.
        dataset: dataset name, for messages.

    Returns:
        the path of ``dst/datalist.json``.

    Raises:
        ValueError: if ``dst`` is inside ``src``.
        FileExistsError: if ``dst`` holds a ``datalist.json`` and ``overwrite`` is False.
    """
    src_dir = Path(src).expanduser()
    dst_dir = Path(dst).expanduser().absolute()
    if src_dir.is_dir() and is_within(dst_dir.resolve(), src_dir.resolve()):
        raise MonaiTFMError(
            f"the output folder '{dst_dir}' is inside the source folder '{src_dir}' ({dataset}); the source is "
            "read-only."
        )
    datalist = dst_dir / DATALIST_NAME
    if datalist.exists() and not overwrite:
        raise FileExistsError(
            f"'{dst_dir}' already holds a prepared dataset ({datalist.name}); pass overwrite=True to replace it."
        )
    return datalist


_Subject = TypeVar("_Subject")


@dataclass(frozen=True)
class PreparedDataset:
    """What a preparer writes besides the subjects: the datalist's name, time unit and top-level metadata.

    Args:
        dataset: short name for messages (``ACDC``).
        name: the datalist's ``name``.
        time_unit: the datalist's ``time_unit``.
        num_folds: cross-validation folds of the training section.
        seed: seed of the fold assignment.
        metadata: the datalist's ``metadata``.
        skipped: number of source subjects left out (logged at the end; None: the preparer skips none).
    """

    dataset: str
    name: str
    time_unit: str
    num_folds: int
    seed: int
    metadata: Mapping[str, Any]
    skipped: int | None = None


def write_prepared_dataset(
    info: PreparedDataset,
    datalist: Path,
    subjects: Sequence[_Subject],
    prepare_one: Callable[[_Subject], dict],
    test_subjects: Collection[str] = (),
    group_of: Callable[[dict], Any] | None = None,
    overwrite: bool = False,
    progress: bool = True,
    start: float | None = None,
) -> Path:
    """The skeleton every preparer shares once its inputs are checked: prepare each subject, split, write the
    datalist last.

    The old datalist (``overwrite``) is removed before any subject file is touched, so an interrupted run never
    leaves a datalist that names half-written files; items go to the ``test`` section when their subject is in
    ``test_subjects``, the others get a ``fold`` (:func:`assign_folds`, stratified by ``group_of`` when given); the
    ``test`` section is written only when it has items.

    Args:
        info: names, folds and metadata of the dataset.
        datalist: ``dst/datalist.json`` (from :func:`check_output_folder`).
        subjects: the checked subjects, in datalist order.
        prepare_one: writes one subject's files and returns its datalist item (with ``subject``).
        test_subjects: subjects of the test section.
        group_of: the stratification group of an item (None: no stratification).
        overwrite: replace an existing datalist.
        progress: show a tqdm progress bar over subjects.
        start: ``time.perf_counter()`` at the start of the preparation, for the final log line.

    Returns:
        the path of the datalist.
    """
    start = time.perf_counter() if start is None else start
    datalist.parent.mkdir(parents=True, exist_ok=True)
    if datalist.exists():  # overwrite: invalidate the old dataset before touching its files
        datalist.unlink()
    entries = [
        prepare_one(s) for s in tqdm(subjects, desc=f"{info.dataset} prepare", unit="patient", disable=not progress)
    ]
    training = [e for e in entries if e["subject"] not in test_subjects]
    test = [e for e in entries if e["subject"] in test_subjects]
    if training:
        groups = None if group_of is None else [group_of(e) for e in training]
        folds = assign_folds([e["subject"] for e in training], groups, info.num_folds, info.seed)
        if len(training) < info.num_folds:
            logger.warning(
                "%s: %d training patients for %d folds; some folds are empty.",
                info.dataset,
                len(training),
                info.num_folds,
            )
        for e in training:
            e["fold"] = folds[e["subject"]]
    sections = {"training": training, **({"test": test} if test else {})}
    out = write_series_datalist(
        datalist, sections, name=info.name, time_unit=info.time_unit, metadata=dict(info.metadata), overwrite=overwrite
    )
    logger.info(
        "%s: wrote %s (%d training, %d test%s) in %.1f s.",
        info.dataset,
        out,
        len(training),
        len(test),
        "" if info.skipped is None else f", {info.skipped} skipped",
        time.perf_counter() - start,
    )
    return out


def clear_frame_files(folder: PathLike, extra_names: Iterable[str] = ()) -> None:
    """Remove only the files a preparer writes into a subject folder (``frame_NN.nii.gz`` and ``extra_names``), so
    that stale frames of an earlier run with more frames do not linger.

    Args:
        folder: the subject folder (nothing happens if it does not exist).
        extra_names: further file names written by the preparer (e.g. label maps).
    """
    folder = Path(folder)
    if not folder.is_dir():
        return
    extra = set(extra_names)
    for p in folder.iterdir():
        if p.is_file() and (_FRAME_FILE_RE.match(p.name) or p.name in extra):
            p.unlink()


def ensure_prepared(
    dataset_dir: PathLike,
    prepared_dir: PathLike,
    prepare: Callable[..., Path],
    dataset: str,
    canonical: Mapping[str, Callable[[Any], Any]] | None = None,
    **kwargs: Any,
) -> str:
    """The datalist of a dataset, preparing it first when ``dataset_dir`` holds the official download.

    * ``dataset_dir/datalist.json`` exists: ``dataset_dir`` is already prepared; its datalist is used.
    * else ``prepared_dir/datalist.json`` exists: a previous run prepared it; that datalist is used, provided it was
      prepared from ``dataset_dir`` (its ``metadata.source``) and with the options asked for now: every option in
      ``kwargs`` that the datalist's metadata records (``spatial_size``, ``num_frames``, ``modality``, ...) must
      match, else the error names each one that differs (the one staleness policy of every preparer).
    * else ``prepare(dataset_dir, prepared_dir, **kwargs)`` converts the download.

    Args:
        dataset_dir: a prepared folder or an official download (never written to).
        prepared_dir: where to prepare a download.
        prepare: the dataset's preparer, ``prepare(src, dst, **kwargs) -> datalist path``.
        dataset: dataset name, for messages.
        canonical: per option, the function that brings a value into the form the metadata records (e.g. a modality
            alias to its name); ``spatial_size`` is always checked with :func:`check_spatial_size`.
        kwargs: options of ``prepare`` (None: the preparer's default, not compared).

    Returns:
        path of the datalist.

    Raises:
        ValueError: ``prepared_dir`` holds data prepared from another source folder or with other options.
    """
    own = Path(dataset_dir) / DATALIST_NAME
    if own.is_file():
        return str(own)
    done = Path(prepared_dir) / DATALIST_NAME
    if done.is_file():
        source = json.loads(done.read_text()).get("metadata", {}).get("source")
        if source is not None and Path(source).resolve() != Path(dataset_dir).resolve():
            raise MonaiTFMError(
                f"{prepared_dir} holds {dataset} data prepared from {source}, not from {dataset_dir}; "
                "point prepared_dir to a new folder (or dataset_dir to the prepared folder)."
            )
        stored = json.loads(done.read_text(encoding="utf-8")).get("metadata", {})
        forms: dict[str, Callable[[Any], Any]] = {"spatial_size": lambda v: list(check_spatial_size(v))}
        forms.update(canonical or {})
        differ = []
        for key, value in kwargs.items():
            if value is None or key not in stored:
                continue
            wanted = json.loads(json.dumps(forms.get(key, lambda v: v)(value)))  # tuples as lists, as stored
            if stored[key] != wanted:
                differ.append(f"{key}={stored[key]!r} (asked: {wanted!r})")
        if differ:
            raise MonaiTFMError(
                f"{prepared_dir} holds {dataset} data prepared with other options: {', '.join(differ)}; point "
                "prepared_dir to a new folder (or prepare again with overwrite=True)."
            )
        logger.info("using the prepared %s data in %s", dataset, prepared_dir)
        return str(done)
    return str(prepare(dataset_dir, prepared_dir, **kwargs))
