# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""Loading a series (the frames of one subject, with their times) into one ``(N, C, D, H, W)`` tensor.

Each frame is read with MONAI's :class:`~monai.transforms.LoadImage` (``ensure_channel_first=True``,
``image_only=True``; the reader is chosen by MONAI from the file type, e.g. nibabel or ITK for NIfTI) and checked:
the file exists and is readable, it is a single 3D volume, its voxels are finite, and all frames of the series
share one voxel grid (same shape, affines equal within ``atol``). Times must be finite and distinct; frames are
put in increasing time order. Input files are only read, never written.

Intensity normalisation is not done here: use MONAI's
``ScaleIntensityRangePercentilesd(keys="series", lower=0.5, upper=99.5, b_min=0, b_max=1, clip=True)`` on the
stacked series, which computes one pair of percentiles over all frames (shared statistics, docs/method.md section 6).
Do not pass ``channel_wise=True`` there: it would iterate over the first axis, i.e. normalise each frame alone.
"""

from __future__ import annotations

import functools
import logging
import math
import os
from collections.abc import Hashable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from monai.config import DtypeLike, KeysCollection
from monai.data import MetaTensor
from monai.data.image_reader import ImageReader
from monai.transforms import LoadImage, MapTransform, ResampleToMatch, Transform
from monai.utils import ensure_tuple_rep

from monai_tfm.utils.errors import MonaiTFMError

__all__ = [
    "GRID_ATOL",
    "LoadSeries",
    "LoadSeriesD",
    "LoadSeriesDict",
    "LoadSeriesd",
    "LoadedSeries",
    "SeriesReadError",
    "dicom_series_count",
    "grid_mismatch",
    "resample_to_grid",
    "read_volume",
]

logger = logging.getLogger(__name__)

GRID_ATOL = 1e-4  # affines closer than this (mm, element-wise) describe the same voxel grid
_NIFTI_SUFFIXES = (".nii", ".nii.gz")


class SeriesReadError(MonaiTFMError, RuntimeError):
    """A frame file of a series could not be read; the message names the subject and the file."""


def dicom_series_count(folder: str | os.PathLike) -> int:
    """Number of DICOM series in ``folder``, counted as MONAI's ``ITKReader`` does when it reads a folder.

    Args:
        folder: a folder of DICOM files.

    Returns:
        the number of series (0 when the folder holds no DICOM files).
    """
    import itk

    names = itk.GDCMSeriesFileNames.New()
    names.SetUseSeriesDetails(True)
    names.AddSeriesRestriction("0008|0021")  # series date, as in monai.data.ITKReader
    names.SetDirectory(os.fspath(folder))
    return len(names.GetSeriesUIDs())


def _check_nifti_complete(name: str, what: str, pre: str) -> None:
    """Raise when a NIfTI file holds fewer bytes than its header describes.

    A truncated ``.nii.gz`` can decompress without an error into a partial stream that the reader fills up, so a
    forecast would be made from a volume that is not in the file. The size of the data (the file's size, or that of
    the decompressed stream) is compared with ``vox_offset + voxels x itemsize`` of the header.
    """
    import gzip

    import nibabel as nib

    try:
        header = nib.load(name).header
        expected = (
            int(header.get_data_offset()) + int(np.prod(header.get_data_shape())) * header.get_data_dtype().itemsize
        )
        if name.lower().endswith(".gz"):
            # fast path: a complete single-member gzip file ends with the size of its data mod 2**32 (RFC 1952,
            # ISIZE); the last 4 bytes of a truncated file are compressed data, which match the expected size by
            # chance about once in 4e9. Any other case is decided by decompressing the whole stream.
            with open(name, "rb") as f:
                f.seek(0, os.SEEK_END)
                if f.tell() >= 18:  # gzip header (10) + trailer (8)
                    f.seek(-4, os.SEEK_END)
                    if int.from_bytes(f.read(4), "little") == expected % (1 << 32):
                        return
            size = 0
            with gzip.open(name, "rb") as f:
                while chunk := f.read(1 << 20):
                    size += len(chunk)
        else:
            size = os.path.getsize(name)
    except Exception as e:  # a header nibabel cannot parse, a gzip stream that ends early
        raise SeriesReadError(f"{pre}cannot read {what} '{name}': {type(e).__name__}: {e}") from e
    if size < expected:
        raise SeriesReadError(
            f"{pre}{what} '{name}' is truncated: {size} bytes where its header describes {expected} (header + voxels)."
        )


@functools.cache
def _default_loader(reader: str | None) -> LoadImage:
    """One float32 ``LoadImage`` per reader for the process.

    A new ``LoadImage`` instantiates every MONAI image reader (some log a notice when their optional backend is
    missing, e.g. the nvImageCodec DICOM plug-in), once per scan read if it were built per call. The loader keeps
    no per-file state, so one instance serves every read.
    """
    return LoadImage(reader=reader, image_only=True, ensure_channel_first=True, dtype=np.float32)


def read_volume(
    path: str | os.PathLike,
    loader: LoadImage | None = None,
    what: str = "frame",
    who: str | None = None,
    allow_multichannel: bool = False,
    check_finite: bool = True,
) -> MetaTensor:
    """Read one 3D volume with MONAI's ``LoadImage`` and check it: the one home of these checks.

    ``path`` is a file (any format MONAI reads; NIfTI with nibabel when no ``loader`` is given) or a folder holding
    exactly one DICOM series (read with ITK).

    Args:
        path: file or DICOM folder.
        loader: the ``LoadImage`` to use for files (``image_only=True, ensure_channel_first=True``); default: one
            with float32 output and the nibabel reader for NIfTI names.
        what: how the volume is called in messages (``frame``, ``label``, ``scan``, ``reference scan``).
        who: the subject, put in front of messages when given.
        allow_multichannel: accept more than one channel (a 4D file whose 4th axis holds channels).
        check_finite: raise for NaN or infinite voxels.

    Returns:
        ``(C, D, H, W)`` ``MetaTensor`` with its affine.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        SeriesReadError: the reader failed (corrupt, truncated or unsupported file; ITK failing on a folder).
        ValueError: a folder without exactly one DICOM series, an image that is not one 3D volume, non-finite voxels.
    """
    name = os.fspath(path)
    pre = f"{who}: " if who else ""
    if os.path.isdir(name):
        try:
            count = dicom_series_count(name)
        except Exception as e:  # ITK missing or failing on the folder
            raise SeriesReadError(f"{pre}cannot scan {what} folder '{name}' for DICOM series: {e}") from e
        if count != 1:
            raise MonaiTFMError(
                f"{pre}{what} folder '{name}' holds no DICOM series."
                if count == 0
                else f"{pre}{what} folder '{name}' holds {count} DICOM series; put each series in its own folder."
            )
        loader = _default_loader("ITKReader")
    elif not os.path.isfile(name):
        raise FileNotFoundError(f"{pre}{what} file '{name}' does not exist.")
    elif loader is None:
        loader = _default_loader("NibabelReader" if name.lower().endswith(_NIFTI_SUFFIXES) else None)
    if os.path.isfile(name) and name.lower().endswith(_NIFTI_SUFFIXES):
        _check_nifti_complete(name, what, pre)
    try:
        img = loader(name)
    except Exception as e:  # any reader failure: corrupt, truncated, unsupported format
        raise SeriesReadError(f"{pre}cannot read {what} '{name}': {type(e).__name__}: {e}") from e
    if not isinstance(img, MetaTensor):
        img = MetaTensor(img)
    spatial = tuple(int(s) for s in img.shape[1:])
    if len(spatial) != 3:
        raise MonaiTFMError(
            f"{pre}{what} '{name}' has {len(spatial)} spatial dimensions (shape {tuple(img.shape)} after adding the "
            "channel axis); expected a 3D volume."
        )
    if img.shape[0] != 1 and not allow_multichannel:
        raise MonaiTFMError(
            f"{pre}{what} '{name}' holds a 4D image ({img.shape[0]} volumes of shape {spatial}) but must be a single "
            "3D volume; split a 4D series into one file per time point."
        )
    if check_finite:
        bad = int((~torch.isfinite(img.as_tensor())).sum())
        if bad:
            raise MonaiTFMError(f"{pre}{what} '{name}' has {bad} non-finite (NaN/inf) voxels.")
    return img


def grid_mismatch(img: MetaTensor, ref: MetaTensor, atol: float = GRID_ATOL) -> str | None:
    """Why ``img`` is not on the voxel grid of ``ref`` (spatial shape and affine within ``atol``), or None.

    Args:
        img: ``(C, D, H, W)`` volume.
        ref: ``(C, D, H, W)`` reference volume.
        atol: absolute tolerance on the affine entries.

    Returns:
        None on the same grid, else a short reason (``spatial shape ... vs ...`` or ``affines differ by up to ...``).
    """
    if tuple(img.shape[1:]) != tuple(ref.shape[1:]):
        return f"spatial shape {tuple(img.shape[1:])} vs {tuple(ref.shape[1:])}"
    a, b = np.asarray(img.affine, dtype=np.float64), np.asarray(ref.affine, dtype=np.float64)
    if a.shape != b.shape or not np.allclose(a, b, rtol=0.0, atol=atol):
        diff = float(np.abs(a - b).max()) if a.shape == b.shape else float("inf")
        return f"affines differ by up to {diff:.3g} (tolerance {atol:g})"
    return None


def resample_to_grid(img: MetaTensor, ref: MetaTensor, label: bool = False) -> torch.Tensor:
    """``img`` on the voxel grid of ``ref``: unchanged when :func:`grid_mismatch` finds none, else resampled in world
    coordinates with MONAI's ``ResampleToMatch`` (trilinear with border padding; labels nearest with zeros).

    Args:
        img: ``(C, D, H, W)`` volume with its affine.
        ref: ``(C, D, H, W)`` volume (or an empty one) with the target shape and affine.
        label: a label map (nearest-neighbour).

    Returns:
        a plain float32 ``(C, *ref spatial shape)`` tensor.
    """
    if grid_mismatch(img, ref) is not None:
        mode, padding = ("nearest", "zeros") if label else ("bilinear", "border")
        img = ResampleToMatch(mode=mode, padding_mode=padding, dtype=np.float32)(img, img_dst=ref)
    return torch.as_tensor(img).as_subclass(torch.Tensor).float()


class LoadedSeries(NamedTuple):
    """Output of :class:`LoadSeries`.

    Attributes:
        series: ``(N, C, D, H, W)`` frames in increasing time order; a ``MetaTensor`` with the first frame's affine
            and metadata.
        time: ``(N,)`` frame times.
        label: ``(N, 1, D, H, W)`` label maps (zeros where a frame has none), or None if no frame has a label.
        label_mask: ``(N,)`` bool, True where the frame has a label map; None if no frame has a label.
    """

    series: MetaTensor
    time: torch.Tensor
    label: MetaTensor | None
    label_mask: torch.Tensor | None


def _frame_entries(frames: Any, times: Sequence[float] | None, who: str) -> list[tuple[str, Any, str | None]]:
    """Normalise the frames input to ``(image path, raw time, label path or None)`` triples."""
    if isinstance(frames, (str, bytes, os.PathLike)) or not isinstance(frames, Sequence):
        raise TypeError(f"{who}: 'frames' must be a list of frames, got {type(frames).__name__}.")
    if times is not None and len(times) != len(frames):
        raise MonaiTFMError(f"{who}: {len(frames)} frames but {len(times)} times.")
    entries = []
    for k, frame in enumerate(frames):
        if isinstance(frame, Mapping):
            if "image" not in frame:
                raise MonaiTFMError(f"{who}: frame #{k} has no 'image' key.")
            if times is not None:
                t = times[k]
            elif "time" in frame:
                t = frame["time"]
            else:
                raise MonaiTFMError(f"{who}: frame #{k} ('{frame['image']}') has no 'time' key.")
            label = frame.get("label")
            entries.append((os.fspath(frame["image"]), t, None if label is None else os.fspath(label)))
        elif isinstance(frame, (str, os.PathLike)):
            if times is None:
                raise MonaiTFMError(f"{who}: frames given as paths need the 'times' argument.")
            entries.append((os.fspath(frame), times[k], None))
        else:
            raise TypeError(f"{who}: frame #{k} must be a dict or a path, got {type(frame).__name__}.")
    return entries


def _copy_meta(img: MetaTensor) -> dict:
    """Metadata of a loaded frame for the stacked series (its own copy of the affine)."""
    meta = dict(img.meta)
    meta["affine"] = img.affine.clone()
    return meta


def _check_times(entries: list[tuple[str, Any, str | None]], who: str) -> list[float]:
    times = []
    for path, t, _ in entries:
        if isinstance(t, bool):
            raise TypeError(f"{who}: time of frame '{path}' must be a number, got {t!r}.")
        try:
            tf = float(t.item() if isinstance(t, (torch.Tensor, np.ndarray)) else t)
        except (TypeError, ValueError):
            raise MonaiTFMError(f"{who}: time of frame '{path}' must be a number, got {t!r}.") from None
        if not math.isfinite(tf):
            raise MonaiTFMError(f"{who}: time of frame '{path}' is not finite ({t!r}).")
        times.append(tf)
    first_at: dict[float, str] = {}
    for (path, _, _), tf in zip(entries, times):
        if tf in first_at:
            raise MonaiTFMError(
                f"{who}: frames '{first_at[tf]}' and '{path}' have the same time {tf}; times must be distinct."
            )
        first_at[tf] = path
    return times


class LoadSeries(Transform):
    """Load the frames of one series into a ``(N, C, D, H, W)`` tensor and their times into ``(N,)``.

    Args:
        reader: reader passed to :class:`~monai.transforms.LoadImage` (None: MONAI picks one by file type).
        dtype: data type of the loaded images.
        label_dtype: data type of the loaded label maps.
        time_dtype: data type of the times tensor.
        atol: absolute tolerance when comparing the affines of the frames.
        min_frames: minimum number of frames of a series.
        allow_multichannel: accept frames with more than one channel (e.g. a 4D NIfTI whose 4th axis holds
            modalities). By default a frame must be a single 3D volume, so that a whole 4D time series given as
            one frame is caught.
        check_finite: raise if a frame holds NaN or infinite voxels.
        reader_kwargs: extra arguments for the reader (passed through ``LoadImage``).
    """

    def __init__(
        self,
        reader: type[ImageReader] | ImageReader | str | None = None,
        dtype: DtypeLike = np.float32,
        label_dtype: DtypeLike = np.float32,
        time_dtype: torch.dtype = torch.float32,
        atol: float = GRID_ATOL,
        min_frames: int = 2,
        allow_multichannel: bool = False,
        check_finite: bool = True,
        **reader_kwargs: Any,
    ) -> None:
        self.image_loader = LoadImage(
            reader=reader, image_only=True, ensure_channel_first=True, dtype=dtype, **reader_kwargs
        )
        self.label_loader = LoadImage(
            reader=reader, image_only=True, ensure_channel_first=True, dtype=label_dtype, **reader_kwargs
        )
        self.time_dtype = time_dtype
        self.atol = float(atol)
        self.min_frames = int(min_frames)
        self.allow_multichannel = allow_multichannel
        self.check_finite = check_finite

    def _check_grid(self, img: MetaTensor, ref: MetaTensor, path: str, ref_path: str, who: str) -> None:
        reason = grid_mismatch(img, ref, self.atol)
        if reason is not None:
            raise MonaiTFMError(
                f"{who}: frames are on different grids: '{path}' and '{ref_path}' ({reason}); resample the series to "
                "one grid first."
            )

    def __call__(
        self, frames: Sequence[Mapping | str | os.PathLike], times: Sequence[float] | None = None, subject: Any = None
    ) -> LoadedSeries:
        """Load a series.

        Args:
            frames: the frames, each a dict with ``image``, ``time`` and optionally ``label`` (as in a datalist), or
                a path (then ``times`` is required).
            times: frame times overriding/providing the ``time`` of each frame.
            subject: subject id, used in error messages.

        Returns:
            a :class:`LoadedSeries` with frames in increasing time order.

        Raises:
            FileNotFoundError: a frame file does not exist.
            SeriesReadError: a frame file cannot be read.
            ValueError: fewer than ``min_frames`` frames, non-finite or duplicate times, a frame that is not a
                single 3D volume, non-finite voxels, or frames (or label maps) on different grids.
        """
        who = f"subject {subject!r}" if subject is not None else "series"
        entries = _frame_entries(frames, times, who)
        if len(entries) < self.min_frames:
            raise MonaiTFMError(f"{who}: a series needs at least {self.min_frames} frames, got {len(entries)}.")
        tvals = _check_times(entries, who)
        order = sorted(range(len(entries)), key=lambda i: tvals[i])
        if order != list(range(len(entries))):
            logger.debug("%s: frames sorted by time", who)
        entries = [entries[i] for i in order]
        tvals = [tvals[i] for i in order]

        images: list[MetaTensor] = []
        for path, _, _ in entries:
            img = read_volume(path, self.image_loader, "frame", who, self.allow_multichannel, self.check_finite)
            if images:
                self._check_grid(img, images[0], path, entries[0][0], who)
            images.append(img)
        ref = images[0]
        series = MetaTensor(torch.stack([im.as_tensor() for im in images]), meta=_copy_meta(ref))
        time = torch.tensor(tvals, dtype=self.time_dtype)

        label = mask = None
        if any(lab is not None for _, _, lab in entries):
            maps = []
            for path, _, lab in entries:
                if lab is None:
                    maps.append(None)
                    continue
                lm = read_volume(lab, self.label_loader, "label", who, self.allow_multichannel, self.check_finite)
                if lm.shape[0] != 1:
                    raise MonaiTFMError(f"{who}: label file '{lab}' has {lm.shape[0]} channels; expected 1.")
                self._check_grid(lm, ref, lab, path, who)
                maps.append(lm)
            first = next(m for m in maps if m is not None)
            zeros = torch.zeros_like(first.as_tensor())
            label = MetaTensor(
                torch.stack([zeros if m is None else m.as_tensor() for m in maps]), meta=_copy_meta(first)
            )
            mask = torch.tensor([m is not None for m in maps], dtype=torch.bool)
        return LoadedSeries(series, time, label, mask)


class LoadSeriesd(MapTransform):
    """Dictionary version of :class:`LoadSeries`: datalist item in, stacked series and times out.

    For an item ``{"subject": "heart_000", "frames": [{"image": ..., "time": ...}, ...]}`` (as returned by
    :func:`monai_tfm.data.load_series_datalist`) it adds ``series`` ``(N, C, D, H, W)`` float32 (a ``MetaTensor``
    with the first frame's affine and metadata) and ``series_time`` ``(N,)``, frames in increasing time order.
    If any frame has a ``label``, it also adds ``series_label`` ``(N, 1, D, H, W)`` (zeros for frames without a
    label map) and ``series_label_mask`` ``(N,)`` bool. The input ``frames`` list is kept unchanged.

    Args:
        keys: key(s) of the frame lists.
        series_keys: output key(s) of the stacked series, one per key.
        time_keys: output key(s) of the times.
        label_keys: output key(s) of the stacked label maps.
        label_mask_keys: output key(s) of the label availability masks.
        subject_key: key of the subject id, used in error messages.
        reader: reader passed to :class:`~monai.transforms.LoadImage` (None: MONAI picks one by file type).
        dtype: data type of the loaded images.
        label_dtype: data type of the loaded label maps.
        time_dtype: data type of the times.
        atol: absolute tolerance when comparing the affines of the frames.
        min_frames: minimum number of frames of a series.
        allow_multichannel: accept frames with more than one channel (see :class:`LoadSeries`).
        check_finite: raise if a frame holds NaN or infinite voxels.
        allow_missing_keys: don't raise if a key is missing.
        reader_kwargs: extra arguments for the reader.
    """

    def __init__(
        self,
        keys: KeysCollection = "frames",
        series_keys: KeysCollection = "series",
        time_keys: KeysCollection = "series_time",
        label_keys: KeysCollection = "series_label",
        label_mask_keys: KeysCollection = "series_label_mask",
        subject_key: str = "subject",
        reader: type[ImageReader] | ImageReader | str | None = None,
        dtype: DtypeLike = np.float32,
        label_dtype: DtypeLike = np.float32,
        time_dtype: torch.dtype = torch.float32,
        atol: float = GRID_ATOL,
        min_frames: int = 2,
        allow_multichannel: bool = False,
        check_finite: bool = True,
        allow_missing_keys: bool = False,
        **reader_kwargs: Any,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        n = len(self.keys)
        self.series_keys = ensure_tuple_rep(series_keys, n)
        self.time_keys = ensure_tuple_rep(time_keys, n)
        self.label_keys = ensure_tuple_rep(label_keys, n)
        self.label_mask_keys = ensure_tuple_rep(label_mask_keys, n)
        self.subject_key = subject_key
        self.loader = LoadSeries(
            reader=reader,
            dtype=dtype,
            label_dtype=label_dtype,
            time_dtype=time_dtype,
            atol=atol,
            min_frames=min_frames,
            allow_multichannel=allow_multichannel,
            check_finite=check_finite,
            **reader_kwargs,
        )

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Load the series of ``data``.

        Args:
            data: a datalist item.

        Returns:
            a shallow copy of ``data`` with the series, times (and label maps) added.

        Raises:
            FileNotFoundError, SeriesReadError, ValueError: see :meth:`LoadSeries.__call__`.
        """
        d = dict(data)
        subject = d.get(self.subject_key)
        for key, skey, tkey, lkey, mkey in self.key_iterator(
            d, self.series_keys, self.time_keys, self.label_keys, self.label_mask_keys
        ):
            out = self.loader(d[key], subject=subject)
            d[skey] = out.series
            d[tkey] = out.time
            if out.label is not None:
                d[lkey] = out.label
                d[mkey] = out.label_mask
        return d


LoadSeriesD = LoadSeriesDict = LoadSeriesd
