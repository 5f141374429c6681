# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""ISLES 2024 perfusion CT preparation (docs/method.md section 6): official download -> per-frame NIfTI files +
``datalist.json``.

The ISLES 2024 training archive is BIDS-like; per patient, the admission session holds a 4D CT perfusion series
``(x, y, z, time)``::

    raw_data/sub-stroke0001/ses-01/sub-stroke0001_ses-01_ctp.nii.gz                      (default: these files)
    derivatives/sub-stroke0001/ses-01/sub-stroke0001_ses-01_space-ncct_ctp.nii.gz        (registered to the NCCT)

The files are found with a glob ``pattern`` relative to the download folder (default
:data:`ISLES_DEFAULT_PATTERN`: the raw series, in ``ses-01`` or any folder below it); pass e.g.
``"derivatives/sub-stroke*/ses-01/*_space-ncct_ctp.nii.gz"`` for the registered ones. The subject id is the
``sub-...`` folder of each file.

Per patient, :func:`prepare_isles`

1. keeps every ``frame_step``-th frame (default 2: every other frame, frames ``0, 2, 4, ...``);
2. crops to the brain bounding box, found on the temporal mean of the kept frames (see
   :func:`brain_bounding_box`: voxels whose mean lies in the soft-tissue window ``brain_window``, default 0 to 100 HU,
   opened in-plane to cut thin bridges through the skull base, largest connected component, plus ``crop_margin``
   voxels; the same box for all frames);
3. resamples each kept frame trilinearly from the box to ``spatial_size`` (default 128 x 128 x 16) over the box's
   field of view (the affine is updated: crop offset, spacing ``* n_in / n_out``, source orientation);
4. clips the whole prepared series to its 2 / 98 percentiles (one pair of values for all frames of the patient,
   never per frame, docs/method.md section 9.7) and scales it to [0, 1]. The box holds skull and air around the brain,
   so the clip spans about air to bone; ``clip_region="brain"`` takes the percentiles over the brain mask only
   (same clip for all frames), which spreads the brain's contrast bolus over [0, 1] and saturates bone and air.

Frame ``k`` of the prepared series (source frame ``k * frame_step``) gets the time ``k`` (unit: prepared perfusion
frame, so the frame spacing is 1). Patients with fewer than ``min_frames`` prepared frames are skipped with a logged
note (the bundle's protocol needs 7 context frames, 2 hidden frames and the target: 10 frames).

Output (``dst``)::

    dst/sub-strokeXXXX/frame_KK.nii.gz      K = 0 .. kept frames - 1
    dst/datalist.json                       written last: "training" (each item with "fold") and "test"

``test_fraction`` (20 %) of the patients, drawn with ``seed``, form the test section; the rest are dealt onto
``num_folds`` cross-validation folds (:func:`monai_tfm.data.preparation.assign_folds`). Use
:func:`monai_tfm.data.fold_split` to get the train/validation lists of one fold. The source folder is only read.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from monai.config import PathLike
from scipy import ndimage

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
    "ISLESPatient",
    "ISLES_DEFAULT_PATTERN",
    "ISLES_DEFAULT_SPATIAL_SIZE",
    "ISLES_PERCENTILES",
    "ISLES_PREPARE_VERSION",
    "brain_bounding_box",
    "brain_mask",
    "ensure_isles_prepared",
    "find_isles_patients",
    "prepare_isles",
]

logger = logging.getLogger(__name__)


#: bump when the prepared data change, so that stored datasets can be told apart
ISLES_PREPARE_VERSION = "1"
#: glob (relative to the download folder) of the raw admission CT perfusion series
ISLES_DEFAULT_PATTERN = "**/sub-*/ses-01/**/sub-*_ses-01_ctp.nii.gz"
#: paper grid
ISLES_DEFAULT_SPATIAL_SIZE = (128, 128, 16)
#: intensity percentiles of the shared (per-series) clip
ISLES_PERCENTILES = (2.0, 98.0)
#: soft-tissue window (HU) of the temporal mean that marks the brain
ISLES_BRAIN_WINDOW = (0.0, 100.0)

_SUBJECT_RE = re.compile(r"^sub-[A-Za-z0-9]+$")


@dataclass
class ISLESPatient:
    """One patient of an ISLES download.

    Attributes:
        subject: subject id (``sub-strokeXXXX``).
        image: the 4D perfusion series.
        source_root: the download folder (``source`` paths in the datalist are relative to it).
    """

    subject: str
    image: Path
    source_root: Path


# ---------------------------------------------------------------------------------------------------------------------
# discovery


def _subject_of(rel: Path) -> str | None:
    for part in rel.parts[:-1]:
        if _SUBJECT_RE.match(part):
            return part
    return None


def find_isles_patients(src: PathLike, pattern: str = ISLES_DEFAULT_PATTERN) -> list[ISLESPatient]:
    """List the perfusion series of an ISLES download, one per subject, sorted by subject id.

    Args:
        src: the download folder.
        pattern: glob of the series relative to ``src`` (``**`` matches any number of folders); each match must lie
            in a ``sub-...`` folder, which names the subject.

    Returns:
        the patients (subject id, series file).

    Raises:
        FileNotFoundError: if ``src`` does not exist or no file matches ``pattern``.
        ValueError: if a matching file is not inside a ``sub-...`` folder, or a subject has several matching files.
    """
    root = Path(src).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"ISLES source folder '{root}' does not exist or is not a folder.")
    if not pattern or Path(pattern).is_absolute():
        raise MonaiTFMError(f"pattern must be a glob relative to the source folder, got {pattern!r}.")
    files = sorted(p for p in root.glob(pattern) if p.is_file())
    if not files:
        raise FileNotFoundError(
            f"no ISLES perfusion series under '{root}' match the pattern {pattern!r} (expected files like "
            "'raw_data/sub-stroke0001/ses-01/sub-stroke0001_ses-01_ctp.nii.gz'; set 'pattern' for another layout)."
        )
    by_subject: dict[str, list[Path]] = {}
    for f in files:
        subject = _subject_of(f.relative_to(root))
        if subject is None:
            raise MonaiTFMError(f"'{f}' matches {pattern!r} but lies in no 'sub-...' folder naming its subject.")
        by_subject.setdefault(subject, []).append(f)
    for subject, paths in by_subject.items():
        if len(paths) > 1:
            names = ", ".join(f"'{p}'" for p in paths)
            raise MonaiTFMError(
                f"subject '{subject}' has {len(paths)} files matching {pattern!r}: {names}; "
                "give a pattern that matches one series per subject."
            )
    return [ISLESPatient(s, by_subject[s][0], root) for s in sorted(by_subject)]


# ---------------------------------------------------------------------------------------------------------------------
# brain bounding box


def _otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold (maximal between-class variance) of a histogram of ``values``."""
    hist, edges = np.histogram(values, bins=bins)
    hist = hist.astype(np.float64)
    centres = 0.5 * (edges[:-1] + edges[1:])
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    s0 = np.cumsum(hist * centres)
    mean0 = s0 / np.maximum(w0, 1.0)
    mean1 = (s0[-1] - s0) / np.maximum(w1, 1.0)
    between = w0 * w1 * (mean0 - mean1) ** 2
    return float(edges[int(np.argmax(between[:-1])) + 1])


def brain_mask(
    mean_volume: np.ndarray, window: Sequence[float] | None = ISLES_BRAIN_WINDOW, opening: int = 2
) -> np.ndarray:
    """The brain on the temporal mean of a perfusion series: the largest connected soft-tissue component.

    Foreground = voxels of ``mean_volume`` inside ``window`` (CT in HU: 0 to 100 keeps brain tissue, CSF and
    enhanced blood and drops air, padding and bone), or above Otsu's threshold when ``window`` is None (data not in
    HU). The foreground is opened in-plane (``opening`` iterations of a 3 x 3 cross in each slice: it cuts the thin
    soft-tissue bridges between scalp and brain through the skull; skipped where it would remove everything) and its
    largest 3D connected component is kept.

    Args:
        mean_volume: ``(x, y, z)`` temporal mean.
        window: ``(low, high)`` intensity range of brain voxels, or None for Otsu's threshold.
        opening: in-plane opening iterations (0: none).

    Returns:
        boolean ``(x, y, z)`` mask (all False if no voxel is foreground).

    Raises:
        ValueError: for a non-3D volume or a window with ``low > high``.
    """
    vol = np.asarray(mean_volume)
    if vol.ndim != 3:
        raise MonaiTFMError(f"expected a 3D temporal mean, got shape {vol.shape}.")
    if window is None:
        mask = vol > _otsu_threshold(vol[np.isfinite(vol)])
    else:
        lo, hi = (float(v) for v in window)
        if lo > hi:
            raise MonaiTFMError(f"brain window must be (low, high) with low <= high, got {tuple(window)}.")
        mask = (vol >= lo) & (vol <= hi)
    if opening > 0 and mask.any():
        cross = ndimage.generate_binary_structure(2, 1)[:, :, None]  # in-plane only: slices may be thick
        opened = ndimage.binary_opening(mask, structure=cross, iterations=int(opening))
        mask = opened if opened.any() else mask
    labels, n = ndimage.label(mask)
    if n == 0:
        return np.zeros(vol.shape, dtype=bool)
    sizes = np.bincount(labels.ravel())[1:]
    return labels == int(np.argmax(sizes)) + 1


def brain_bounding_box(
    mean_volume: np.ndarray,
    window: Sequence[float] | None = ISLES_BRAIN_WINDOW,
    margin: int = 2,
    opening: int = 2,
) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]] | None:
    """The bounding box of :func:`brain_mask`, grown by ``margin`` voxels along each axis (clipped to the volume).

    Args:
        mean_volume: ``(x, y, z)`` temporal mean.
        window: ``(low, high)`` intensity range of brain voxels, or None for Otsu's threshold.
        margin: voxels added on each side.
        opening: in-plane opening iterations (0: none).

    Returns:
        ``((x0, x1), (y0, y1), (z0, z1))`` half-open voxel ranges, or None if no voxel is foreground.

    Raises:
        ValueError: for a non-3D volume or a window with ``low > high``.
    """
    return _mask_box(brain_mask(mean_volume, window, opening), margin)


def _mask_box(mask: np.ndarray, margin: int) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]] | None:
    """Half-open bounding box of a 3D mask grown by ``margin`` voxels (clipped to the volume), None if empty."""
    if not mask.any():
        return None
    margin = max(int(margin), 0)
    coords = np.nonzero(mask)
    return tuple(
        (max(int(c.min()) - margin, 0), min(int(c.max()) + 1 + margin, n_ax)) for c, n_ax in zip(coords, mask.shape)
    )  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------------------------------
# preparation


def _read_header(patient: ISLESPatient) -> tuple[Any, tuple[int, ...]]:
    """The (lazy) image and its shape; checks that the file is a readable 4D NIfTI series."""
    path = patient.image
    img, shape = read_nifti_header(
        path, 4, "a 4D perfusion series (x, y, z, time)", who=patient.subject, keep_file_open=True
    )
    if shape[3] < 2:
        raise MonaiTFMError(
            f"{patient.subject}: '{path}' has {shape[3]} frame(s); a perfusion series needs at least 2."
        )
    return img, shape


def _read_frame(img: Any, t: int, path: Path) -> np.ndarray:
    try:
        frame = np.asarray(img.dataobj[..., t], dtype=np.float32)
    except Exception as e:  # truncated or corrupt data
        raise MonaiTFMError(f"cannot read frame {t} of '{path}': {e}") from e
    if not np.all(np.isfinite(frame)):
        raise MonaiTFMError(f"frame {t} of '{path}' holds non-finite voxels.")
    return frame


def _frame_interval(img: Any) -> float | None:
    """Seconds between source frames from the NIfTI header (``pixdim[4]`` with a time unit), or None."""
    try:
        _, t_unit = img.header.get_xyzt_units()
        dt = float(img.header["pixdim"][4])
    except Exception:
        return None
    scale = {"sec": 1.0, "msec": 1e-3, "usec": 1e-6}.get(t_unit)
    return None if scale is None or not np.isfinite(dt) or dt <= 0 else dt * scale


def _prepare_patient(
    patient: ISLESPatient,
    img: Any,
    shape: tuple[int, ...],
    dst: Path,
    spatial_size: tuple[int, int, int],
    frame_step: int,
    percentiles: Sequence[float],
    brain_window: Sequence[float] | None,
    crop_margin: int,
    clip_region: str,
) -> dict[str, Any]:
    """Crop, resample, normalise and write one patient; return its datalist entry (without ``fold``)."""
    kept = list(range(0, shape[3], frame_step))
    # pass 1: the temporal mean of the kept frames gives the brain box
    mean = np.zeros(shape[:3], dtype=np.float64)
    for t in kept:
        mean += _read_frame(img, t, patient.image)
    mean /= len(kept)
    brain = brain_mask(mean, brain_window)
    box = _mask_box(brain, crop_margin)
    if box is None:
        logger.warning("%s: no brain voxels found in '%s'; the whole volume is used.", patient.subject, patient.image)
        box = tuple((0, n) for n in shape[:3])
    crop = tuple(slice(a, b) for a, b in box)
    crop_shape = tuple(b - a for a, b in box)
    # pass 2: crop and resample every kept frame (one frame in memory at full size)
    series = np.stack([resample_spatial(_read_frame(img, t, patient.image)[crop], spatial_size) for t in kept], axis=-1)
    clip_mask = None
    if clip_region == "brain":
        # output voxels interpolated from brain voxels only (no partial volume with skull or air)
        clip_mask = resample_spatial(brain[crop].astype(np.float32), spatial_size) > 1.0 - 1e-4
        if not clip_mask.any():
            logger.warning("%s: no brain voxel on the output grid; percentiles over the whole box.", patient.subject)
            clip_mask = None
    normalised, lo, hi = normalise_shared(series, percentiles, patient.subject, mask=clip_mask)

    affine = np.asarray(img.affine, dtype=np.float64)
    crop_affine = affine.copy()
    crop_affine[:3, 3] = affine[:3, :3] @ np.array([a for a, _ in box], dtype=np.float64) + affine[:3, 3]
    out_affine = resampled_affine(crop_affine, crop_shape, spatial_size)

    folder = dst / patient.subject
    clear_frame_files(folder)
    frames = []
    for k, t in enumerate(kept):
        rel = f"{patient.subject}/frame_{k:02d}.nii.gz"
        atomic_save_nifti(np.ascontiguousarray(normalised[..., k]), out_affine, dst / rel)
        frames.append({"image": rel, "time": float(k), "source_frame": t})

    spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    interval = _frame_interval(img)
    metadata = {
        "source": patient.image.relative_to(patient.source_root).as_posix(),
        "source_shape": list(shape),
        "source_spacing": [round(float(s), 6) for s in spacing],
        "num_source_frames": shape[3],
        "source_frame_interval_s": None if interval is None else round(interval, 6),
        "crop_box": [[a, b] for a, b in box],
        "spacing": [round(float(s) * n / m, 6) for s, n, m in zip(spacing, crop_shape, spatial_size)],
        "intensity_clip": [lo, hi],
    }
    return {"subject": patient.subject, "frames": frames, "metadata": metadata}


def prepare_isles(
    src: PathLike,
    dst: PathLike,
    pattern: str = ISLES_DEFAULT_PATTERN,
    spatial_size: Sequence[int] = ISLES_DEFAULT_SPATIAL_SIZE,
    frame_step: int = 2,
    percentiles: Sequence[float] = ISLES_PERCENTILES,
    brain_window: Sequence[float] | None = ISLES_BRAIN_WINDOW,
    crop_margin: int = 2,
    clip_region: str = "box",
    min_frames: int = 10,
    test_fraction: float = 0.2,
    num_folds: int = 5,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Convert an ISLES 2024 download into per-frame NIfTI files and a series datalist (docs/method.md section 6).

    Per patient (see the module notes): every ``frame_step``-th frame, cropped to the brain bounding box of their
    temporal mean, resampled trilinearly to ``spatial_size``, clipped to the ``percentiles`` of the whole prepared
    series and scaled to [0, 1]; frame ``k`` is written as ``dst/<subject>/frame_KK.nii.gz`` with time ``k``.

    The datalist (written last) has a ``training`` section (every item with ``"fold"`` in ``0 .. num_folds - 1``)
    and a ``test`` section (``test_fraction`` of the patients); every item carries ``"metadata"`` (``source``,
    ``crop_box``, ``intensity_clip``, ...) and every frame its ``source_frame``. The source folder is only read.

    Args:
        src: the ISLES download (e.g. the extracted ``train`` folder with ``raw_data/`` and ``derivatives/``).
        dst: output folder (created); must not be inside ``src``.
        pattern: glob of the perfusion series relative to ``src`` (one per ``sub-...`` folder).
        spatial_size: output grid ``(x, y, z)``.
        frame_step: keep every ``frame_step``-th frame (2: every other frame; 1: all).
        percentiles: ``(lower, upper)`` percentiles of the shared intensity clip.
        brain_window: intensity range (HU) of brain voxels on the temporal mean; None: Otsu's threshold.
        crop_margin: voxels added around the brain box.
        clip_region: voxels whose intensities give the percentiles (of all kept frames): ``"box"`` (default, the
            whole prepared series: with skull and air in the box, the clip spans air to bone) or ``"brain"`` (only
            the brain mask, so that the [0, 1] range resolves the contrast bolus; bone and air saturate).
        min_frames: patients with fewer prepared frames are skipped (logged, listed in the datalist metadata).
        test_fraction: share of patients in the test section (``[0, 1)``).
        num_folds: number of cross-validation folds of the training section (>= 2).
        seed: seed of the test selection and of the fold assignment.
        overwrite: replace a dataset already prepared in ``dst``.
        progress: show a tqdm progress bar over patients.

    Returns:
        the path of ``dst/datalist.json``.

    Raises:
        FileNotFoundError: if ``src`` does not exist or no file matches ``pattern``.
        FileExistsError: if ``dst`` already holds a ``datalist.json`` and ``overwrite`` is False.
        ValueError: for an unreadable file or a 3D file where a 4D series is expected (the message names the file),
            a subject with several matching files, no patient with ``min_frames`` frames, bad options, or ``dst``
            inside ``src``.
    """
    start = time.perf_counter()
    size = check_spatial_size(spatial_size)
    frame_step, num_folds, min_frames = int(frame_step), int(num_folds), int(min_frames)
    if frame_step < 1:
        raise MonaiTFMError(f"frame_step must be >= 1, got {frame_step}.")
    if num_folds < 2:
        raise MonaiTFMError(f"num_folds must be >= 2, got {num_folds}.")
    if min_frames < 2:
        raise MonaiTFMError(f"min_frames must be >= 2, got {min_frames}.")
    if len(percentiles) != 2 or not 0 <= float(percentiles[0]) < float(percentiles[1]) <= 100:
        raise MonaiTFMError(f"percentiles must be (lower, upper) with 0 <= lower < upper <= 100, got {percentiles!r}.")
    if clip_region not in ("box", "brain"):
        raise MonaiTFMError(f"clip_region must be 'box' or 'brain', got {clip_region!r}.")
    if brain_window is not None and len(brain_window) != 2:
        raise MonaiTFMError(f"brain_window must be (low, high) or None, got {brain_window!r}.")
    src_dir = Path(src).expanduser()
    dst_dir = Path(dst).expanduser().absolute()
    datalist = check_output_folder(src_dir, dst_dir, overwrite, "ISLES")

    # read every header before writing anything (a broken file fails fast, not after an hour)
    patients = find_isles_patients(src_dir, pattern)
    headers = [_read_header(p) for p in patients]
    usable, skipped = [], []
    for patient, (img, shape) in zip(patients, headers):
        n_kept = len(range(0, shape[3], frame_step))
        if n_kept < min_frames:
            logger.warning(
                "ISLES: skipping %s: '%s' has %d frames, %d with frame step %d; at least %d are needed.",
                patient.subject,
                patient.image,
                shape[3],
                n_kept,
                frame_step,
                min_frames,
            )
            skipped.append(patient.subject)
        else:
            usable.append((patient, img, shape))
    if not usable:
        raise MonaiTFMError(
            f"no ISLES patient under '{src_dir}' has {min_frames} frames after keeping every {frame_step}-th "
            f"(skipped: {skipped})."
        )
    test_subjects = hold_out_subjects([p.subject for p, _, _ in usable], test_fraction, seed)
    logger.info(
        "ISLES: preparing %d patients (%d test) from %s into %s (grid %s, frame step %d).",
        len(usable),
        len(test_subjects),
        src_dir,
        dst_dir,
        size,
        frame_step,
    )

    metadata = {
        "dataset": "ISLES 2024",
        "preparer": "monai_tfm.data.isles",
        "preparer_version": ISLES_PREPARE_VERSION,
        "source": str(src_dir.absolute()),
        "pattern": pattern,
        "spatial_size": list(size),
        "frame_step": frame_step,
        "percentiles": [float(p) for p in percentiles],
        "brain_window": None if brain_window is None else [float(v) for v in brain_window],
        "crop_margin": int(crop_margin),
        "clip_region": clip_region,
        "min_frames": min_frames,
        "test_fraction": float(test_fraction),
        "num_folds": num_folds,
        "seed": int(seed),
        "skipped": skipped,
        "frames": f"every {frame_step}-th source frame; time = index of the prepared frame (spacing 1)",
        "crop": "brain bounding box of the temporal mean (soft-tissue window or Otsu, in-plane opening, largest "
        "component, margin), resampled trilinearly",
        "intensity": f"per patient: clip to percentiles {list(percentiles)} of the prepared series ({clip_region}), "
        "scale to [0, 1]",
    }
    return write_prepared_dataset(
        PreparedDataset(
            "ISLES", "ISLES 2024 CT perfusion", "perfusion frame", num_folds, int(seed), metadata, len(skipped)
        ),
        datalist,
        usable,
        lambda item: _prepare_patient(
            *item, dst_dir, size, frame_step, percentiles, brain_window, crop_margin, clip_region
        ),
        test_subjects=test_subjects,
        overwrite=overwrite,
        progress=progress,
        start=start,
    )


def ensure_isles_prepared(dataset_dir: PathLike, prepared_dir: PathLike, **kwargs: Any) -> str:
    """The datalist of an ISLES dataset, preparing it first when ``dataset_dir`` holds the official download.

    * ``dataset_dir/datalist.json`` exists: ``dataset_dir`` is already prepared; its datalist is used.
    * else ``prepared_dir/datalist.json`` exists: a previous run prepared it from ``dataset_dir`` with the same options
      (:func:`~monai_tfm.data.preparation.ensure_prepared`); it is used.
    * else ``dataset_dir`` is read as an ISLES download and prepared into ``prepared_dir``.

    Args:
        dataset_dir: a prepared folder or an ISLES download (never written to).
        prepared_dir: where to prepare a download.
        kwargs: options of :func:`prepare_isles` (``spatial_size``, ``frame_step``, ``pattern``, ...).

    Returns:
        path of the datalist.

    Raises:
        ValueError: ``prepared_dir`` holds data prepared from another source folder or with other options.
    """
    return ensure_prepared(dataset_dir, prepared_dir, prepare_isles, "ISLES", **kwargs)
