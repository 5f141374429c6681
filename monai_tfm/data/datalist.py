# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""Series datalists: the JSON file listing, per subject, the frames of a series and their times.

Format (``docs/DESIGN.md``)::

    {"name": "synthetic heart", "time_unit": "cardiac phase",
     "training": [{"subject": "heart_000",
                   "frames": [{"image": "heart_000/frame_00.nii.gz", "time": 0.0}, ...],
                   "metadata": {"group": "NOR"}}],
     "validation": [...], "test": [...]}

Frame paths (``image`` and the optional ``label``) are relative to the datalist file's folder unless absolute.
Every top-level key whose value is a list is a *section*.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import numbers
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from monai.config import PathLike

from monai_tfm.utils.errors import MonaiTFMError
from monai_tfm.utils.io import atomic_write_text

__all__ = ["DATALIST_NAME", "DatalistError", "load_series_datalist", "validate_series_item", "write_series_datalist"]

#: the file name of a prepared dataset's datalist, in every preparer and the synthetic generator
DATALIST_NAME = "datalist.json"

logger = logging.getLogger(__name__)


#: keys of a frame that hold file paths
FRAME_PATH_KEYS = ("image", "label")


class DatalistError(MonaiTFMError):
    """A series datalist is malformed; the message names the file, section, subject and key."""


def _where(source: str, section: str | None, subject: Any = None, index: int | None = None) -> str:
    parts = [f"datalist '{source}'"]
    if section is not None:
        parts.append(f"section '{section}'")
    if subject is not None:
        parts.append(f"subject {subject!r}")
    elif index is not None:
        parts.append(f"item #{index}")
    return ", ".join(parts)


def _as_time(value: Any, where: str) -> float:
    """Convert a frame time to float, rejecting bools, strings and non-finite numbers."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise DatalistError(f"{where}: 'time' must be a number, got {value!r} ({type(value).__name__}).")
    t = float(value)
    if not math.isfinite(t):
        raise DatalistError(f"{where}: 'time' must be finite, got {value!r}.")
    return t


def validate_series_item(
    item: Any,
    source: str = "<memory>",
    section: str | None = None,
    index: int | None = None,
    min_frames: int = 2,
) -> dict:
    """Check the structure of one subject entry and return a normalised copy with frames sorted by time.

    The copy has float times and the frames in increasing time order; paths are not touched and files are not
    checked (see :func:`load_series_datalist`).

    Args:
        item: the subject entry (``{"subject": ..., "frames": [{"image": ..., "time": ...}, ...], ...}``).
        source: name of the datalist file, for error messages.
        section: name of the section, for error messages.
        index: position of the entry in its section, for error messages.
        min_frames: minimum number of frames of a series.

    Returns:
        the normalised copy of ``item``.

    Raises:
        DatalistError: if the entry is not a dict, has no valid ``subject`` id, has no ``frames`` list, has fewer
            than ``min_frames`` frames, a frame without ``image`` or ``time``, a non-numeric or non-finite time,
            or two frames with the same time.
    """
    where = _where(source, section, None, index)
    if not isinstance(item, Mapping):
        raise DatalistError(f"{where}: expected a dict with 'subject' and 'frames', got {type(item).__name__}.")
    subject = item.get("subject")
    if not isinstance(subject, str) or not subject:
        raise DatalistError(f"{where}: missing or invalid 'subject' id (a non-empty string), got {subject!r}.")
    where = _where(source, section, subject)
    item = copy.deepcopy(dict(item))
    if "frames" not in item:
        raise DatalistError(f"{where}: missing key 'frames' (a list of {{'image': path, 'time': number}}).")
    frames = item["frames"]
    if not isinstance(frames, Sequence) or isinstance(frames, (str, bytes)):
        raise DatalistError(f"{where}: 'frames' must be a list, got {type(frames).__name__}.")
    if len(frames) < min_frames:
        raise DatalistError(f"{where}: a series needs at least {min_frames} frames, got {len(frames)}.")
    out_frames = []
    for k, frame in enumerate(frames):
        fwhere = f"{where}, frame #{k}"
        if not isinstance(frame, Mapping):
            raise DatalistError(f"{fwhere}: expected a dict with 'image' and 'time', got {type(frame).__name__}.")
        if "image" not in frame:
            raise DatalistError(f"{fwhere}: missing key 'image'.")
        if "time" not in frame:
            raise DatalistError(f"{fwhere}: missing key 'time' (image {frame['image']!r}).")
        for key in FRAME_PATH_KEYS:
            if key in frame and (not isinstance(frame[key], (str, os.PathLike)) or not str(frame[key])):
                raise DatalistError(f"{fwhere}: '{key}' must be a non-empty path string, got {frame[key]!r}.")
        new = dict(frame)
        new["time"] = _as_time(frame["time"], f"{fwhere} (image {frame['image']!r})")
        out_frames.append(new)
    seen: dict[float, Any] = {}
    for frame in out_frames:
        t = frame["time"]
        if t in seen:
            raise DatalistError(
                f"{where}: duplicate frame time {t} (images {seen[t]!r} and {frame['image']!r}); "
                "times must be distinct within a series."
            )
        seen[t] = frame["image"]
    item["frames"] = sorted(out_frames, key=lambda f: f["time"])
    return item


def _sections(data: Mapping) -> dict[str, list]:
    return {k: v for k, v in data.items() if isinstance(v, list)}


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"series datalist '{path}' does not exist.")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise DatalistError(f"datalist '{path}' is not valid JSON: {e}") from e
    if not isinstance(data, dict):
        raise DatalistError(f"datalist '{path}': the top level must be a JSON object, got {type(data).__name__}.")
    return data


def load_series_datalist(
    path: PathLike,
    section: str = "training",
    base_dir: PathLike | None = None,
    check_files: bool = True,
    check_overlap: bool = True,
    min_frames: int = 2,
) -> list[dict]:
    """Read one section of a series datalist, validate it and resolve the frame paths.

    Args:
        path: the JSON datalist.
        section: the section to read (``"training"``, ``"validation"``, ``"test"``, ...).
        base_dir: folder that relative frame paths refer to; defaults to the datalist file's folder.
        check_files: raise if a frame's image or label file does not exist.
        check_overlap: raise if a subject id occurs twice in the file (within the section or across sections:
            a subject shared by training and test is a leak).
        min_frames: minimum number of frames of a series.

    Returns:
        the section's entries (deep copies), each with ``subject``, ``frames`` sorted by increasing time with
        absolute ``image`` (and ``label``) paths and float ``time``, and every other key of the entry unchanged.

    Raises:
        FileNotFoundError: if the datalist, or (with ``check_files``) a frame file, does not exist.
        DatalistError: (a ``ValueError``) if the file is not valid JSON, the section is missing or not a list, or an
            entry is malformed (see :func:`validate_series_item`); messages name the file, section, subject and key.
    """
    path = Path(path).expanduser()
    data = _read_json(path)
    source = str(path)
    sections = _sections(data)
    if section not in data:
        raise DatalistError(f"datalist '{source}' has no section '{section}' (sections: {sorted(sections)}).")
    if section not in sections:
        raise DatalistError(f"datalist '{source}': section '{section}' must be a list, got {type(data[section])}.")
    root = Path(base_dir).expanduser() if base_dir is not None else path.parent
    root = root.resolve()

    items = [
        validate_series_item(item, source, section, i, min_frames=min_frames) for i, item in enumerate(data[section])
    ]
    if check_overlap:
        owner: dict[str, str] = {}
        for name in [section] + [s for s in sections if s != section]:
            for item in sections[name]:
                sid = item.get("subject") if isinstance(item, Mapping) else None
                if not isinstance(sid, str):
                    continue
                if sid in owner:
                    where = "twice in" if owner[sid] == name else f"in both '{owner[sid]}' and"
                    raise DatalistError(f"datalist '{source}': subject id {sid!r} occurs {where} section '{name}'.")
                owner[sid] = name

    for item in items:
        for k, frame in enumerate(item["frames"]):
            for key in FRAME_PATH_KEYS:
                if key not in frame:
                    continue
                p = Path(os.fspath(frame[key])).expanduser()
                p = p if p.is_absolute() else root / p
                p = Path(os.path.normpath(p))
                if check_files and not p.is_file():
                    raise FileNotFoundError(
                        f"{_where(source, section, item['subject'])}, frame #{k} (time {frame['time']}): "
                        f"{key} file '{p}' does not exist."
                    )
                frame[key] = str(p)
    logger.debug("loaded %d series from section '%s' of %s", len(items), section, source)
    return items


def _relative(p: str, root: Path, base_dir: Path | None, relative: bool) -> str:
    q = Path(os.fspath(p)).expanduser()
    if not q.is_absolute():
        if base_dir is None:
            return q.as_posix()  # already relative to the datalist folder
        q = base_dir / q
    q = Path(os.path.abspath(q))
    if not relative:
        return str(q)
    try:
        return Path(os.path.relpath(q, root)).as_posix()
    except ValueError:  # e.g. another drive on Windows
        return str(q)


def write_series_datalist(
    path: PathLike,
    sections: Mapping[str, Sequence[Mapping]],
    name: str | None = None,
    time_unit: str | None = None,
    overwrite: bool = False,
    metadata: Mapping[str, Any] | None = None,
    base_dir: PathLike | None = None,
    relative: bool = True,
) -> Path:
    """Write a series datalist atomically, with frame paths relative to the JSON file's folder.

    Entries are validated (structure only; files are not required to exist) and frames sorted by time.

    Args:
        path: the JSON file to write.
        sections: section name -> list of subject entries (``{"subject", "frames", ...}``).
        name: optional dataset name (top-level ``"name"``).
        time_unit: optional unit of the frame times (top-level ``"time_unit"``), e.g. ``"weeks"``.
        overwrite: replace an existing file (default: raise ``FileExistsError``).
        metadata: optional top-level ``"metadata"`` dict (e.g. generator, seed); must be JSON serialisable.
        base_dir: folder that *relative* input paths refer to. If None, relative input paths are taken as
            already relative to the datalist folder and written unchanged. Absolute paths are always converted.
        relative: write paths relative to the datalist folder (default) or absolute.

    Returns:
        the path of the written datalist.

    Raises:
        DatalistError: if an entry is malformed, a section name collides with a reserved key, or a subject id
            is duplicated.
        FileExistsError: if the file exists and ``overwrite`` is False.
    """
    path = Path(path).expanduser()
    source = str(path)
    if not overwrite and path.exists():
        raise FileExistsError(f"refusing to overwrite existing datalist '{path}' (pass overwrite=True).")
    root = Path(os.path.abspath(path.parent))
    base = Path(os.path.abspath(Path(base_dir).expanduser())) if base_dir is not None else None
    out: dict[str, Any] = {}
    if name is not None:
        out["name"] = name
    if time_unit is not None:
        out["time_unit"] = time_unit
    if metadata is not None:
        out["metadata"] = dict(metadata)
    owner: dict[str, str] = {}
    for sec, entries in sections.items():
        if sec in out:
            raise DatalistError(f"datalist '{source}': section name '{sec}' collides with a reserved top-level key.")
        if isinstance(entries, (str, bytes, Mapping)) or not isinstance(entries, Sequence):
            raise DatalistError(f"datalist '{source}': section '{sec}' must be a list of subject entries.")
        written = []
        for i, entry in enumerate(entries):
            item = validate_series_item(entry, source, sec, i)
            sid = item["subject"]
            if sid in owner:
                where = "twice in" if owner[sid] == sec else f"in both '{owner[sid]}' and"
                raise DatalistError(f"datalist '{source}': subject id {sid!r} occurs {where} section '{sec}'.")
            owner[sid] = sec
            for frame in item["frames"]:
                for key in FRAME_PATH_KEYS:
                    if key in frame:
                        frame[key] = _relative(frame[key], root, base, relative)
            written.append(item)
        out[sec] = written
    try:
        text = json.dumps(out, indent=2, allow_nan=False) + "\n"
    except (TypeError, ValueError) as e:
        raise DatalistError(f"datalist '{source}': content is not JSON serialisable: {e}") from e
    atomic_write_text(path, text, overwrite=overwrite)
    logger.debug("wrote datalist %s (%s)", path, {k: len(v) for k, v in sections.items()})
    return path
