# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""A shareable bundle zip with its weights: ``monai-tfm pack``.

The zip holds ``<bundle name>/configs/...``, ``docs/``, ``LICENSE`` and the weights as ``models/model.pt``, like a
MONAI model-zoo bundle, and nothing of a local run: the ``runs/`` and ``data/`` folders, caches and temporary files
are left out. It is reproducible: entries in sorted order, a fixed timestamp (1980-01-01), fixed permissions and
compression, so packing the same files twice gives the same bytes (and the same checksum). Unzipped anywhere, the
folder works offline with ``monai-tfm forecast --bundle <folder>/<bundle name>``.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import zipfile
from pathlib import Path

import torch

from monai_tfm.handlers.checkpoint import read_network_state
from monai_tfm.utils.errors import MonaiTFMError
from monai_tfm.utils.io import atomic_path

__all__ = ["PackError", "pack_bundle", "bundle_files"]

logger = logging.getLogger(__name__)

EXCLUDED_TOP_LEVEL = frozenset({"runs", "data"})
EXCLUDED_ANYWHERE = frozenset({"__pycache__", ".git", ".ipynb_checkpoints", ".pytest_cache"})
ZIP_DATE = (1980, 1, 1, 0, 0, 0)
WEIGHTS_ENTRY = "models/model.pt"


class PackError(MonaiTFMError):
    """An expected problem with a bundle or its weights; the message is one line naming the file."""


def bundle_files(root: str | os.PathLike, skip: set[Path] | None = None) -> list[Path]:
    """The files of a bundle that belong in its zip, as paths relative to ``root``, in sorted order.

    Left out: the top-level ``runs/`` and ``data/`` folders, caches (``__pycache__``, ``.git``, ...), hidden and
    temporary files (names starting with ``.``), compiled Python files, the bundle's own ``models/model.pt`` (the
    packed weights replace it) and the paths in ``skip``.

    Args:
        root: bundle folder.
        skip: absolute paths to leave out as well (e.g. the zip being written).

    Returns:
        relative paths.
    """
    root = Path(root).resolve()
    skip = {Path(p).resolve() for p in (skip or set())}
    out = []
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        parts = rel.parts
        if parts[0] in EXCLUDED_TOP_LEVEL or any(p in EXCLUDED_ANYWHERE or p.startswith(".") for p in parts):
            continue
        if not path.is_file() or path.suffix in (".pyc", ".pyo") or rel.as_posix() == WEIGHTS_ENTRY:
            continue
        if path.resolve() in skip:
            continue
        out.append(rel)
    return sorted(out, key=lambda r: r.as_posix())


def _weights_bytes(weights: Path) -> bytes:
    """The weights file as a flat state dict (a resume checkpoint's ``network`` entry is extracted)."""
    if not weights.is_file():
        raise PackError(f"no weights at '{weights}': train the bundle or pass --weights FILE.")
    try:
        state, from_checkpoint = read_network_state(weights)
    except MonaiTFMError as e:
        raise PackError(str(e)) from e
    if from_checkpoint:
        logger.info("'%s' is a resume checkpoint: packing its 'network' weights", weights)
        buffer = io.BytesIO()
        torch.save(state, buffer)
        return buffer.getvalue()
    return weights.read_bytes()


def _entry(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    info.create_system = 3  # unix, whatever the packing machine
    return info


def pack_bundle(
    bundle: str | os.PathLike,
    output: str | os.PathLike,
    weights: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a reproducible zip of a bundle with its weights as ``models/model.pt``.

    Args:
        bundle: bundle folder (with ``configs/metadata.json``).
        output: the zip file to write (atomically).
        weights: weights file (default ``<bundle>/models/model.pt``); a resume checkpoint's ``network`` entry is
            packed as a flat state dict.
        overwrite: replace an existing zip.

    Returns:
        the zip path.

    Raises:
        PackError: not a bundle, or missing or unusable weights.
        FileExistsError: the zip exists and ``overwrite`` is False.
    """
    root = Path(bundle).resolve()
    for required in ("configs/metadata.json", "configs/inference.yaml"):
        if not (root / required).is_file():
            raise PackError(f"'{bundle}' is not a monai_tfm bundle: '{root / required}' does not exist.")
    out = Path(output)
    if out.exists() and not overwrite:
        raise FileExistsError(f"refusing to overwrite existing file '{out}' (pass --overwrite).")
    blob = _weights_bytes(Path(weights) if weights is not None else root / WEIGHTS_ENTRY)
    files = bundle_files(root, skip={out.resolve()})
    entries = sorted([(rel.as_posix(), root / rel) for rel in files] + [(WEIGHTS_ENTRY, None)])
    with atomic_path(out, overwrite=overwrite) as tmp:
        with zipfile.ZipFile(tmp, "w") as zf:
            for rel, src in entries:
                data = blob if src is None else src.read_bytes()
                zf.writestr(_entry(f"{root.name}/{rel}"), data, compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    logger.info("packed %d files of %s into %s (sha256 %s)", len(entries), root.name, out, digest)
    return out
