# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""ACDC cine MRI preparation (docs/method.md section 6): official download -> per-frame NIfTI files + ``datalist.json``.

The ACDC challenge ships, per patient, a 4D short-axis cine series ``patientXXX_4d.nii.gz`` ``(x, y, slice, time)``
and an ``Info.cfg`` (``ED``, ``ES``, ``Group``, ``NbFrame``, ... as ``Key: value`` lines; frame numbers are 1-based),
plus expert masks of the ED and ES frames (``patientXXX_frameNN_gt.nii.gz``). Two folder layouts are read:

* official: ``src/{training,testing}/patientXXX/...`` (or ``src/database/{training,testing}/...``);
* flat: ``src/patientXXX/...`` (e.g. the cropped development copy, with ``..._gt_crop.nii.gz`` masks).

Per patient, :func:`prepare_acdc` keeps the frames ED..ES and resamples them *jointly* in space and time
(separable linear interpolation: trilinear in space, linear in time) onto ``num_frames`` equally spaced phases of a
``spatial_size`` grid; phase ``k`` gets the time ``k / (num_frames - 1)`` in ``[0, 1]`` (ED = 0, ES = 1). Spatial
resampling keeps the field of view (voxel centres at ``(i + 0.5) * n_in / n_out - 0.5``), so the output spacing is
``spacing * n_in / n_out`` along each axis and the orientation of the source affine is kept. Intensities are then
clipped to the 0.5 / 99.5 percentiles of the whole resampled series and scaled to ``[0, 1]`` with one clip/scale
for all frames of a patient (per-frame normalisation would erase the motion to forecast, docs/method.md section 9.7).
The ED/ES masks are resampled with nearest neighbour in space only (docs/method.md section 9.7: never splines on
label maps) and attached to the first/last frame.

Output (``dst``)::

    dst/patientXXX/frame_KK.nii.gz      K = 0 .. num_frames - 1
    dst/patientXXX/label_ed.nii.gz      when the ED mask exists (and include_labels)
    dst/patientXXX/label_es.nii.gz      when the ES mask exists (and include_labels)
    dst/datalist.json                   written last: sections "training" (each item with "fold") and "test"

The source folder is only read. Use :func:`fold_split` (or :func:`split_folds`) to get the train/validation lists
of one cross-validation fold.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from monai.config import PathLike

from monai_tfm.data.datalist import DATALIST_NAME
from monai_tfm.data.preparation import (
    PreparedDataset,
    check_output_folder,
    check_spatial_size,
    clear_frame_files,
    ensure_prepared,
    normalise_shared,
    read_nifti_header,
    resample_labels,
    resample_series,
    resampled_affine,
    write_prepared_dataset,
)
from monai_tfm.utils.errors import MonaiTFMError
from monai_tfm.utils.io import atomic_save_nifti

__all__ = [
    "ACDCPatient",
    "ACDC_DEFAULT_SPATIAL_SIZE",
    "ACDC_DEV_SPATIAL_SIZE",
    "ACDC_PHASES",
    "ACDC_PREPARE_VERSION",
    "cycle_frames",
    "default_acdc_spatial_size",
    "ensure_acdc_extra_phases",
    "ensure_acdc_prepared",
    "find_acdc_patients",
    "prepare_acdc",
    "read_info_cfg",
]

logger = logging.getLogger(__name__)


#: bump when the prepared data change, so that stored datasets can be told apart
ACDC_PREPARE_VERSION = "1"
#: the parts of the cardiac cycle a prepared folder can hold (``phases`` of :func:`prepare_acdc`)
# part -> its frames, as the datalist metadata states them
_PHASE_FRAMES = {"systole": "ED..ES", "diastole": "ES..end of cycle, ED", "diastole_reversed": "ED, end of cycle..ES"}
ACDC_PHASES = tuple(_PHASE_FRAMES)
#: file name of the datalist written by :func:`prepare_acdc`
#: paper grid (full-size ACDC)
ACDC_DEFAULT_SPATIAL_SIZE = (128, 128, 32)
#: grid of the cropped development copy (in-plane 100 x 95 voxels, 5 to 7 slices)
ACDC_DEV_SPATIAL_SIZE = (96, 96, 8)
#: intensity percentiles of the shared (per-series) clip
ACDC_PERCENTILES = (0.5, 99.5)
#: first patient id of the official test set (patients 101 - 150)
ACDC_FIRST_TEST_ID = 101

_PATIENT_RE = re.compile(r"^patient(\d+)$")
_TOKEN_RE = re.compile(r"^[+-]?\d+$")


# ---------------------------------------------------------------------------------------------------------------------
# Info.cfg


def _parse_value(text: str) -> int | float | str:
    if _TOKEN_RE.match(text):
        return int(text)
    try:
        return float(text)
    except ValueError:
        return text


def read_info_cfg(path: PathLike) -> dict[str, Any]:
    """Read an ACDC ``Info.cfg`` (``Key: value`` lines) into a dict.

    Integer-looking values become ``int``, other numbers ``float``, the rest stays ``str`` (e.g. ``Group: DCM``).
    Blank lines are ignored.

    Args:
        path: the ``Info.cfg`` file.

    Returns:
        key -> value, keys as written in the file (``ED``, ``ES``, ``Group``, ``Height``, ``NbFrame``, ``Weight``).

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: if a non-blank line has no ``:`` or an empty key, or a key occurs twice.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ACDC info file '{path}' does not exist.")
    out: dict[str, Any] = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, raw in enumerate(f, start=1):
            line = raw.strip()
            if not line:
                continue
            key, sep, value = line.partition(":")
            key = key.strip()
            if not sep or not key:
                raise MonaiTFMError(f"'{path}', line {n}: expected 'Key: value', got {line!r}.")
            if key in out:
                raise MonaiTFMError(f"'{path}', line {n}: key {key!r} occurs twice.")
            out[key] = _parse_value(value.strip())
    return out


def _frame_number(info: Mapping[str, Any], key: str, cfg: Path) -> int:
    if key not in info:
        raise MonaiTFMError(f"'{cfg}' has no '{key}' entry (the {key} frame number, 1-based); keys: {sorted(info)}.")
    value = info[key]
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise MonaiTFMError(f"'{cfg}': '{key}' must be a frame number >= 1, got {value!r}.")
    return value


# ---------------------------------------------------------------------------------------------------------------------
# discovery


@dataclass
class ACDCPatient:
    """One patient of an ACDC download (paths only; ``info``, ``ed`` and ``es`` are filled when it is checked).

    Attributes:
        subject: patient id (``patientXXX``).
        number: the numeric id.
        folder: the patient folder.
        split: ``"training"`` or ``"test"``.
        source_root: the download folder (``source`` paths in the datalist are relative to it).
        info: the parsed ``Info.cfg``.
        ed: ED frame number (1-based).
        es: ES frame number (1-based).
    """

    subject: str
    number: int
    folder: Path
    split: str  # "training" or "test"
    source_root: Path
    info: dict[str, Any] = field(default_factory=dict)
    ed: int = 0
    es: int = 0

    @property
    def image(self) -> Path:
        return self.folder / f"{self.subject}_4d.nii.gz"


def _patient_dirs(folder: Path) -> list[tuple[str, int, Path]]:
    out = []
    for p in sorted(folder.iterdir()):
        m = _PATIENT_RE.match(p.name)
        if m and p.is_dir():
            out.append((p.name, int(m.group(1)), p))
    return out


def find_acdc_patients(src: PathLike) -> list[ACDCPatient]:
    """List the patients of an ACDC download (official or flat layout), sorted by id.

    Patients of the official ``testing`` folder, and in any layout patients with id >= 101, go to the test split.

    Args:
        src: the download folder (holding ``training``/``testing``, ``database/{training,testing}`` or
            ``patientXXX`` folders).

    Returns:
        the patients (subject id, number, folder, split), sorted by id.

    Raises:
        FileNotFoundError: if ``src`` does not exist or holds no patient folder.
        ValueError: if a patient id occurs twice.
    """
    root = Path(src).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"ACDC source folder '{root}' does not exist or is not a folder.")
    base = root
    if not any((root / s).is_dir() for s in ("training", "testing")) and (root / "database").is_dir():
        base = root / "database"
    found: list[tuple[str, int, Path, str]] = []
    official = [s for s in ("training", "testing") if (base / s).is_dir()]
    for sub in official:
        for name, number, folder in _patient_dirs(base / sub):
            split = "test" if sub == "testing" or number >= ACDC_FIRST_TEST_ID else "training"
            found.append((name, number, folder, split))
    for name, number, folder in _patient_dirs(base):  # flat layout (also tolerated next to the official one)
        found.append((name, number, folder, "test" if number >= ACDC_FIRST_TEST_ID else "training"))
    if not found:
        raise FileNotFoundError(
            f"no ACDC patients found under '{root}': expected 'training/patientXXX', 'testing/patientXXX' "
            "or 'patientXXX' folders, each with 'patientXXX_4d.nii.gz' and 'Info.cfg'."
        )
    seen: dict[str, Path] = {}
    for name, _, folder, _ in found:
        if name in seen:
            raise MonaiTFMError(f"ACDC patient '{name}' occurs twice under '{root}': '{seen[name]}' and '{folder}'.")
        seen[name] = folder
    found.sort(key=lambda x: (x[1], x[0]))
    return [ACDCPatient(name, number, folder, split, root) for name, number, folder, split in found]


# ---------------------------------------------------------------------------------------------------------------------
# preparation


def _normalise(series: np.ndarray, subject: str) -> tuple[np.ndarray, float, float]:
    """Clip to the shared 0.5 / 99.5 percentiles of the whole series and scale to [0, 1]."""
    return normalise_shared(series, ACDC_PERCENTILES, subject)


def _image_header(path: Path) -> tuple[Any, tuple[int, ...]]:
    return read_nifti_header(path, 4, "a 4D cine series (x, y, slice, time)", name="ACDC cine series")


def default_acdc_spatial_size(shapes: Sequence[Sequence[int]]) -> tuple[int, int, int]:
    """The default grid for the given source shapes: the development grid if any image is cropped.

    Full-size ACDC has in-plane sizes of 154 voxels and more, so an in-plane size below 128 marks the cropped
    development copy (100 x 95). The slice count is not used: full-size ACDC has as few as 6 slices (10 mm apart).

    Args:
        shapes: source shapes ``(x, y, z[, t])``.

    Returns:
        :data:`ACDC_DEV_SPATIAL_SIZE` or :data:`ACDC_DEFAULT_SPATIAL_SIZE`.
    """
    if any(min(int(s[0]), int(s[1])) < ACDC_DEFAULT_SPATIAL_SIZE[0] for s in shapes):
        return ACDC_DEV_SPATIAL_SIZE
    return ACDC_DEFAULT_SPATIAL_SIZE


def _find_label(patient: ACDCPatient, frame: int, shape: tuple[int, ...]) -> Path | None:
    """The expert mask of 1-based ``frame`` on the series grid (``_gt`` or ``_gt_crop``), or None."""
    candidates = [patient.folder / f"{patient.subject}_frame{frame:02d}_gt{s}.nii.gz" for s in ("", "_crop")]
    present = [p for p in candidates if p.is_file()]
    for p in present:
        if tuple(nib.load(str(p)).shape) == shape:
            return p
    if present:
        got = {str(p): tuple(nib.load(str(p)).shape) for p in present}
        raise MonaiTFMError(f"{patient.subject}: mask(s) {got} are not on the grid of '{patient.image}' ({shape}).")
    return None


def _check_patient(patient: ACDCPatient) -> tuple[Any, tuple[int, ...]]:
    """Read ``Info.cfg`` and the 4D header of a patient, check ED/ES; return the (lazy) image and its shape."""
    cfg = patient.folder / "Info.cfg"
    if not cfg.is_file():
        raise FileNotFoundError(f"{patient.subject}: '{cfg}' does not exist (ACDC needs it for ED/ES).")
    info = read_info_cfg(cfg)
    ed, es = _frame_number(info, "ED", cfg), _frame_number(info, "ES", cfg)
    img, shape = _image_header(patient.image)
    n_t = shape[3]
    if es < ed:
        raise MonaiTFMError(f"'{cfg}': ES ({es}) comes before ED ({ed}); expected ED <= ES (1-based frame numbers).")
    if es == ed:
        raise MonaiTFMError(f"'{cfg}': ED and ES are the same frame ({ed}); ED..ES needs at least 2 frames.")
    if es > n_t:
        raise MonaiTFMError(
            f"'{cfg}': ED={ed}, ES={es} outside the series '{patient.image}', which has {n_t} frames (1-based)."
        )
    if "NbFrame" in info and info["NbFrame"] != n_t:
        logger.warning(
            "%s: Info.cfg says NbFrame=%s but the series has %d frames.", patient.subject, info["NbFrame"], n_t
        )
    patient.info, patient.ed, patient.es = info, ed, es
    return img, shape


def _check_phases(phases: str) -> None:
    if phases not in ACDC_PHASES:
        raise MonaiTFMError(f"phases must be one of {list(ACDC_PHASES)}, got {phases!r}.")


def cycle_frames(ed: int, es: int, n_t: int, phases: str = "systole") -> list[int]:
    """The 0-based frame indices of one part of a cine cycle, in the order they become the prepared phases.

    * ``"systole"``: ED .. ES (the papers' protocol and the evaluation series);
    * ``"diastole"``: ES .. the end of the recorded cycle, then ED again (the cycle is periodic: the frame after the
      last one is the next cycle's ED);
    * ``"diastole_reversed"``: the same frames from ED back to ES, so that the heart contracts from phase 0 to the
      last phase as in systole (a training-only series of the same patient: its relaxation played backwards).

    Args:
        ed: ED frame number (1-based).
        es: ES frame number (1-based, ``ed < es <= n_t``).
        n_t: number of frames of the recorded cycle.
        phases: one of ``ACDC_PHASES``.

    Returns:
        the frame indices (at least 2).

    Raises:
        ValueError: an unknown ``phases``.
    """
    _check_phases(phases)
    if phases == "systole":
        return list(range(ed - 1, es))
    diastole = [*range(es - 1, n_t), *range(0, ed)]
    return diastole[::-1] if phases == "diastole_reversed" else diastole


def _prepare_patient(
    patient: ACDCPatient,
    img: Any,
    shape: tuple[int, ...],
    dst: Path,
    spatial_size: tuple[int, int, int],
    num_frames: int,
    include_labels: bool,
    phases: str = "systole",
) -> dict[str, Any]:
    """Resample, normalise and write one patient; return its datalist entry (without ``fold``)."""
    info = patient.info
    ed, es = patient.ed, patient.es
    n_t = shape[3]
    order = cycle_frames(ed, es, n_t, phases)
    first, last = min(order), max(order)  # read only the frames' span (systole: ED..ES) from the compressed file
    series = np.asarray(img.dataobj[..., first : last + 1], dtype=np.float32)[..., [k - first for k in order]]
    resampled = resample_series(series, spatial_size, num_frames)
    normalised, lo, hi = _normalise(resampled, patient.subject)
    affine = resampled_affine(img.affine, shape[:3], spatial_size)

    folder = dst / patient.subject
    clear_frame_files(folder, ("label_ed.nii.gz", "label_es.nii.gz"))
    frames = []
    for k in range(num_frames):
        rel = f"{patient.subject}/frame_{k:02d}.nii.gz"
        atomic_save_nifti(np.ascontiguousarray(normalised[..., k]), affine, dst / rel)
        frames.append({"image": rel, "time": k / (num_frames - 1)})

    labels = {}
    if include_labels and phases == "systole":  # the ED/ES masks belong to the first/last systolic frame
        for name, frame, index in (("ed", ed, 0), ("es", es, num_frames - 1)):
            path = _find_label(patient, frame, shape[:3])
            if path is None:
                continue
            lab = np.asanyarray(nib.load(str(path)).dataobj)
            if not np.all(np.isfinite(lab)) or not np.array_equal(lab, np.round(lab)):
                raise MonaiTFMError(f"'{path}' is not a label map (non-integer values).")
            lab = np.round(lab).astype(np.int64)
            dtype = np.uint8 if lab.min() >= 0 and lab.max() < 256 else np.int16
            rel = f"{patient.subject}/label_{name}.nii.gz"
            atomic_save_nifti(resample_labels(lab.astype(dtype), spatial_size), affine, dst / rel)
            frames[index]["label"] = rel
            labels[name] = path.name

    spacing = np.sqrt((np.asarray(img.affine)[:3, :3] ** 2).sum(axis=0))
    metadata = {
        "group": info.get("Group"),
        "ed": ed,
        "es": es,
        "nb_frames": n_t,
        "phases": phases,
        "source": patient.image.relative_to(patient.source_root).as_posix(),
        "source_shape": list(shape),
        "source_spacing": [round(float(s), 6) for s in spacing],
        "spacing": [round(float(s) * n / m, 6) for s, n, m in zip(spacing, shape[:3], spatial_size)],
        "intensity_clip": [lo, hi],
        "labels": labels,
    }
    for key in ("Height", "Weight"):
        if key in info:
            metadata[key.lower()] = info[key]
    return {"subject": patient.subject, "frames": frames, "metadata": metadata}


def prepare_acdc(
    src: PathLike,
    dst: PathLike,
    spatial_size: Sequence[int] | None = None,
    num_frames: int = 12,
    num_folds: int = 5,
    seed: int = 0,
    overwrite: bool = False,
    include_labels: bool = True,
    progress: bool = True,
    phases: str = "systole",
) -> Path:
    """Convert an ACDC download into per-frame NIfTI files and a series datalist (docs/method.md section 6).

    Per patient: frames ED..ES resampled jointly in space and time to ``num_frames`` phases (times
    ``k / (num_frames - 1)``) of ``spatial_size`` voxels (trilinear + linear in time), clipped to the 0.5 / 99.5
    percentiles of the whole resampled series and scaled to [0, 1] (one clip/scale per patient), written as
    ``dst/patientXXX/frame_KK.nii.gz`` with an affine of spacing ``spacing * n_in / n_out`` and the source
    orientation. ED/ES masks (``..._gt.nii.gz`` or ``..._gt_crop.nii.gz``) are resampled with nearest neighbour to
    ``label_ed.nii.gz`` / ``label_es.nii.gz`` and referenced by the first / last frame.

    The datalist (written last) has a ``training`` section (every item with ``"fold"`` in ``0 .. num_folds - 1``,
    stratified by group, see :func:`assign_folds`) and a ``test`` section (the official ``testing`` folder and
    patients 101-150); every item carries ``"metadata"`` (``group``, ``ed``, ``es``, ``nb_frames``, ``source``,
    ...). The source folder is only read.

    Args:
        src: the ACDC download (``training``/``testing`` folders, ``database/``, or flat ``patientXXX`` folders).
        dst: output folder (created); must not be inside ``src``.
        spatial_size: output grid ``(x, y, z)``; default (128, 128, 32), or (96, 96, 8) when the source is the
            cropped development copy (in-plane size below 128, see :func:`default_acdc_spatial_size`).
        num_frames: number of output phases ED..ES (>= 2).
        num_folds: number of cross-validation folds of the training section (>= 2).
        seed: seed of the fold assignment.
        overwrite: replace a dataset already prepared in ``dst``.
        include_labels: also write the ED/ES masks where the download has them.
        progress: show a tqdm progress bar over patients.
        phases: the part of each cycle to prepare (:func:`cycle_frames`): ``"systole"`` (ED..ES, the papers'
            series), or a diastolic series of the same patients (``"diastole"``, ``"diastole_reversed"``) as extra
            training data (:func:`monai_tfm.data.fold_split` ``extra=``; the folds are the systolic folder's, since
            they are assigned from the same patients, groups and seed). Masks are written for systole only.

    Returns:
        the path of ``dst/datalist.json``.

    Raises:
        FileNotFoundError: if ``src`` holds no patients, or a patient has no ``Info.cfg`` or no 4D series.
        FileExistsError: if ``dst`` already holds a ``datalist.json`` and ``overwrite`` is False.
        ValueError: for ``Info.cfg`` without ED/ES, ES before ED, ED/ES outside the series, a 3D image where a 4D
            series is expected, masks on another grid, bad sizes, or ``dst`` inside ``src``.
    """
    start = time.perf_counter()
    num_frames, num_folds = int(num_frames), int(num_folds)
    if num_frames < 2:
        raise MonaiTFMError(f"num_frames must be >= 2 (ED and ES), got {num_frames}.")
    if num_folds < 2:
        raise MonaiTFMError(f"num_folds must be >= 2, got {num_folds}.")
    _check_phases(phases)
    size = None if spatial_size is None else check_spatial_size(spatial_size)
    src_dir = Path(src).expanduser()
    datalist = check_output_folder(src_dir, dst, overwrite, "ACDC")
    dst_dir = datalist.parent

    # check every patient before writing anything (a bad Info.cfg fails fast, not after an hour)
    patients = find_acdc_patients(src_dir)
    headers = [_check_patient(patient) for patient in patients]
    if size is None:
        size = default_acdc_spatial_size([shape for _, shape in headers])
        kind = "cropped development copy" if size == ACDC_DEV_SPATIAL_SIZE else "full-size ACDC"
        logger.info("ACDC: default grid %s chosen (%s).", size, kind)
    logger.info(
        "ACDC: preparing %d patients from %s into %s (grid %s, %d frames).",
        len(patients),
        src_dir,
        dst_dir,
        size,
        num_frames,
    )

    metadata = {
        "dataset": "ACDC",
        "preparer": "monai_tfm.data.acdc",
        "preparer_version": ACDC_PREPARE_VERSION,
        "source": str(src_dir.absolute()),
        "spatial_size": list(size),
        "num_frames": num_frames,
        "num_folds": num_folds,
        "seed": int(seed),
        "include_labels": bool(include_labels),
        "phases": phases,
        "frames": f"{_PHASE_FRAMES[phases]}, resampled jointly in space (trilinear) and time (linear); time = phase in "
        "[0, 1]",
        "intensity": f"per patient: clip to percentiles {list(ACDC_PERCENTILES)} of the series, scale to [0, 1]",
    }
    headers_of = {patient.subject: header for patient, header in zip(patients, headers)}
    return write_prepared_dataset(
        PreparedDataset("ACDC", "ACDC cine MRI", "cardiac phase", num_folds, int(seed), metadata),
        datalist,
        patients,
        lambda patient: _prepare_patient(
            patient, *headers_of[patient.subject], dst_dir, size, num_frames, include_labels, phases
        ),
        test_subjects={patient.subject for patient in patients if patient.split == "test"},
        group_of=lambda entry: entry["metadata"]["group"],
        overwrite=overwrite,
        progress=progress,
        start=start,
    )


def ensure_acdc_prepared(dataset_dir: PathLike, prepared_dir: PathLike, **kwargs: Any) -> str:
    """The datalist of an ACDC dataset, preparing it first when ``dataset_dir`` holds the official download.

    * ``dataset_dir/datalist.json`` exists: ``dataset_dir`` is already prepared; its datalist is used.
    * else ``prepared_dir/datalist.json`` exists: a previous run prepared it; that datalist is used.
    * else ``dataset_dir`` is read as an official ACDC download and prepared into ``prepared_dir``.

    Args:
        dataset_dir: a prepared folder or an official ACDC download (never written to).
        prepared_dir: where to prepare a download.
        kwargs: options of :func:`prepare_acdc` (``spatial_size``, ``num_frames``, ...).

    Returns:
        path of the datalist.

    Raises:
        ValueError: ``prepared_dir`` holds data prepared from another source or with other options.
    """
    return ensure_prepared(dataset_dir, prepared_dir, prepare_acdc, "ACDC", **kwargs)


def ensure_acdc_extra_phases(
    dataset_dir: PathLike, prepared_dir: PathLike, phases: str | Sequence[str], **kwargs: Any
) -> list[str]:
    """The datalists of further parts of the cycle (:func:`cycle_frames`), as extra training series of the patients.

    Each part is prepared into its own folder ``<prepared_dir>_<phase>`` from the official download, with the options
    of the systolic folder (``kwargs``), so that its folds are the systolic folds (same patients, groups and seed);
    :func:`monai_tfm.data.fold_split` (``extra=``) adds their training items and checks the folds.

    Args:
        dataset_dir: the ACDC download (a prepared folder holds one part only and is refused).
        prepared_dir: the systolic folder; each part goes next to it.
        phases: parts other than ``"systole"`` (``"diastole"``, ``"diastole_reversed"``), or one such name; empty:
            none.
        kwargs: options of :func:`prepare_acdc` (``spatial_size``, ``num_frames``, ...).

    Returns:
        one datalist path per part.

    Raises:
        ValueError: an unknown or systolic part, or ``dataset_dir`` that is a prepared folder.
    """
    phases = [phases] if isinstance(phases, str) else list(phases or [])  # one name (`--extra_train_phases diastole`)
    if not phases:
        return []
    for phase in phases:
        if phase not in ACDC_PHASES or phase == "systole":
            raise MonaiTFMError(
                f"extra training phases must be among {[p for p in ACDC_PHASES if p != 'systole']}, got {phase!r}."
            )
    if (Path(dataset_dir) / DATALIST_NAME).is_file():
        raise MonaiTFMError(
            f"extra training phases {phases} need the ACDC download, but dataset_dir '{dataset_dir}' is a prepared "
            "folder (it holds one part of the cycle only)."
        )
    base = Path(prepared_dir)
    return [
        ensure_acdc_prepared(dataset_dir, base.with_name(f"{base.name}_{phase}"), phases=phase, **kwargs)
        for phase in phases
    ]
