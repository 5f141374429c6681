# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""The studies layout of the MONAI Label app: a patient's scans and a JSON sidecar with their times.

MONAI Label's local datastore lists the image files at the top of the studies folder (one image id per file, the
name without ``.nii.gz``/``.nii``). Each patient's series is described by a sidecar ``<name>.series.json`` in that
folder::

    studies/
      patient001_t0.nii.gz
      patient001_t1.nii.gz
      patient001_t2.nii.gz
      patient001.series.json

    {"scans": [{"image": "patient001_t0.nii.gz", "time": 0.0},
               {"image": "patient001_t1.nii.gz", "time": 0.1},
               {"image": "patient001_t2.nii.gz", "time": 0.2}]}

``image`` is a path relative to the sidecar's folder (or absolute): a NIfTI file, or a DICOM series folder (such
scans are context but cannot be requested, as the datastore does not list them). ``time`` is the acquisition time in
the bundle's time unit. A request for any listed image forecasts from the whole series (the bundle picks the context
scans); the times are checked by the forecast itself (numbers, no duplicates).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from monai_tfm.apps.forecast import ForecastError

__all__ = ["SERIES_SUFFIX", "SeriesSidecar", "find_series", "read_series_sidecar"]

logger = logging.getLogger(__name__)

SERIES_SUFFIX = ".series.json"


@dataclass(frozen=True)
class SeriesSidecar:
    """One patient's series as a sidecar describes it.

    Attributes:
        path: the sidecar file.
        scans: absolute scan paths, in sidecar order.
        times: their raw times (checked by the forecast).
    """

    path: Path
    scans: list[str]
    times: list[Any]

    @property
    def name(self) -> str:
        """The series name: the sidecar's file name without ``.series.json``."""
        return self.path.name[: -len(SERIES_SUFFIX)]


def read_series_sidecar(path: str | os.PathLike) -> SeriesSidecar:
    """Read and check one ``<name>.series.json`` sidecar.

    Args:
        path: the sidecar file.

    Returns:
        the series, with scan paths resolved against the sidecar's folder.

    Raises:
        ForecastError: an unreadable file, invalid JSON, no ``scans`` list, or an entry without ``image``/``time``.
    """
    p = Path(path)
    try:
        content = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise ForecastError(f"cannot read series sidecar '{p}': {e}") from e
    except json.JSONDecodeError as e:
        raise ForecastError(f"series sidecar '{p}' is not valid JSON: {e}") from e
    scans = content.get("scans") if isinstance(content, dict) else None
    if not isinstance(scans, list) or not scans:
        raise ForecastError(
            f'series sidecar \'{p}\' must hold {{"scans": [{{"image": FILE, "time": T}}, ...]}} with at least one '
            "scan."
        )
    paths: list[str] = []
    times: list[Any] = []
    for k, entry in enumerate(scans):
        if not isinstance(entry, dict) or "image" not in entry or "time" not in entry:
            raise ForecastError(f"series sidecar '{p}': scans[{k}] = {entry!r} needs the keys 'image' and 'time'.")
        image = entry["image"]
        if not isinstance(image, str) or not image.strip():
            raise ForecastError(f"series sidecar '{p}': scans[{k}].image must be a file name, got {image!r}.")
        scan = Path(image)
        paths.append(os.path.realpath(scan if scan.is_absolute() else p.parent / scan))
        times.append(entry["time"])
    return SeriesSidecar(p, paths, times)


_WARNED: dict[str, tuple[int, int, str]] = {}  # sidecar -> (mtime_ns, size, message) last warned about
_WARNED_LOCK = threading.Lock()


def _warn_once(sidecar: Path, message: str) -> None:
    """Log a broken sidecar once per version of the file (a server reads every sidecar at every request)."""
    try:
        stat = sidecar.stat()
        version = (stat.st_mtime_ns, stat.st_size, message)
    except OSError:
        version = (0, 0, message)
    with _WARNED_LOCK:
        if _WARNED.get(str(sidecar)) == version:
            return
        _WARNED[str(sidecar)] = version
    logger.warning("%s", message)


def find_series(studies: str | os.PathLike, image: str | os.PathLike) -> SeriesSidecar:
    """The series whose sidecar (``<studies>/*.series.json``) lists ``image``.

    Sidecars are read at every call, so series added to a running server are found. A malformed sidecar that does not
    concern ``image`` is skipped (and logged once per change of the file).

    Args:
        studies: the studies folder.
        image: path of the requested image.

    Returns:
        the series that holds ``image``.

    Raises:
        ForecastError: ``image`` is listed in no sidecar (the message names it and any malformed sidecar) or in more
            than one.
    """
    folder = Path(studies)
    target = os.path.realpath(image)
    found: list[SeriesSidecar] = []
    broken: list[str] = []
    for sidecar in sorted(folder.glob(f"*{SERIES_SUFFIX}")):
        try:
            series = read_series_sidecar(sidecar)
        except ForecastError as e:
            _warn_once(sidecar, str(e))
            broken.append(str(e))
            continue
        if target in series.scans:
            found.append(series)
    if len(found) > 1:
        raise ForecastError(
            f"image '{image}' is listed in several series sidecars ({', '.join(str(s.path) for s in found)}); list "
            "each scan in one series only."
        )
    if not found:
        message = f"image '{image}' is listed in no series sidecar '*{SERIES_SUFFIX}' of the studies folder"
        if broken:
            message += f" (and {len(broken)} sidecar(s) could not be read; first: {broken[0]})"
        raise ForecastError(message + ".")
    return found[0]
