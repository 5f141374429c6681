# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""A shareable bundle zip with its weights: ``monai-tfm pack``.

The zip holds ``<bundle name>/configs/...``, ``docs/``, ``LICENSE`` and the weights as ``models/model.pt``, like a
MONAI model-zoo bundle, and nothing of a local run: the ``runs/`` and ``data/`` folders, caches and temporary files
are left out. It is reproducible: entries in sorted order, a fixed timestamp (1980-01-01), fixed permissions and
compression, so packing the same files twice gives the same bytes (and the same checksum). Unzipped anywhere, the
folder works offline with ``monai-tfm forecast --bundle <folder>/<bundle name>``.

The zip is self-contained: a bundle of this repository is its own files plus the shared ones its metadata names
(``bundles/_shared/``, :func:`monai_tfm.apps.bundle_loading.config_parts`); each config is packed with its parts
joined into one file (:func:`~monai_tfm.apps.bundle_loading.assembled_configs`), so that ``python -m monai.bundle run
training --config_file <folder>/<bundle name>/configs/train.yaml`` works from the unzipped folder alone and a shared
method overlay is ``configs/methods/<method>.yaml`` there.

A bundle that reads what it knows of its data from the prepared folder (``bundles/series_forecasting``: time
scale, range and grid through :func:`monai_tfm.data.series_settings`) is packed with ``dataset_dir``: the settings
of that folder go into the zip as ``configs/dataset_settings.json``, so the unzipped bundle forecasts without the
training data.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import zipfile
from pathlib import Path

import torch

from monai_tfm.apps.bundle_loading import assembled_configs, config_parts
from monai_tfm.data.series import DATASET_SETTINGS_FILE, series_settings
from monai_tfm.handlers.checkpoint import read_network_state
from monai_tfm.utils.errors import MonaiTFMError
from monai_tfm.utils.io import atomic_path

__all__ = ["PackError", "pack_bundle", "bundle_files"]

logger = logging.getLogger(__name__)

EXCLUDED_TOP_LEVEL = frozenset({"runs", "data"})
EXCLUDED_ANYWHERE = frozenset({"__pycache__", ".git", ".ipynb_checkpoints", ".pytest_cache"})
ZIP_DATE = (1980, 1, 1, 0, 0, 0)
WEIGHTS_ENTRY = "models/model.pt"
SETTINGS_ENTRY = f"configs/{DATASET_SETTINGS_FILE}"
# a bundle whose configs call this reads its dataset settings from the prepared folder or from SETTINGS_ENTRY
SETTINGS_READER = "series_settings("  # a bundle that cannot run without the settings
RANGE_READER = "training_time_range("  # a bundle that checks forecasts against them when it has them


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


def _dataset_settings_bytes(
    root: Path, bundle: str | os.PathLike, dataset_dir: str | os.PathLike | None, configs: dict[str, bytes]
) -> bytes | None:
    """``configs/dataset_settings.json`` of a series bundle from ``dataset_dir`` (None: nothing to add).

    A text search for the reader's call is enough here: the bundle configs are ours and either call it or not, and
    resolving the whole config would need the data that a packed bundle is meant to do without.
    """
    texts = [data.decode("utf-8") for name, data in configs.items() if name.endswith(".yaml") and name.count("/") == 1]
    reads_settings = any(SETTINGS_READER in t for t in texts)
    if dataset_dir is None:
        if reads_settings and not (root / SETTINGS_ENTRY).is_file():
            raise PackError(
                f"bundle '{bundle}' reads its time scale and grid from the prepared data: pass --dataset_dir DIR "
                "(the folder it was trained on) to pack them as " + SETTINGS_ENTRY + "."
            )
        return None
    if not reads_settings and not any(RANGE_READER in t for t in texts):
        raise PackError(
            f"bundle '{bundle}' does not read dataset settings; --dataset_dir is for bundles that read them (series, "
            "and the time range of LUMIERE and ISLES)."
        )
    try:
        settings = series_settings(dataset_dir)
    except FileNotFoundError as e:
        raise PackError(str(e)) from e
    return (json.dumps(settings, indent=1, sort_keys=True) + "\n").encode("utf-8")


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
    dataset_dir: str | os.PathLike | None = None,
) -> Path:
    """Write a reproducible zip of a bundle with its weights as ``models/model.pt``.

    Args:
        bundle: bundle folder (with ``configs/metadata.json``).
        output: the zip file to write (atomically).
        weights: weights file (default ``<bundle>/models/model.pt``); a resume checkpoint's ``network`` entry is
            packed as a flat state dict.
        overwrite: replace an existing zip.
        dataset_dir: the prepared series folder the weights were trained on; its settings are packed as
            ``configs/dataset_settings.json`` (required for a bundle that reads them and carries none).

    Returns:
        the zip path.

    Raises:
        PackError: not a bundle, missing or unusable weights, or a series bundle without its dataset settings.
        FileExistsError: the zip exists and ``overwrite`` is False.
    """
    root = Path(bundle).resolve()
    if not (root / "configs" / "metadata.json").is_file():
        raise PackError(f"'{bundle}' is not a monai_tfm bundle: '{root / 'configs' / 'metadata.json'}' does not exist.")
    if not config_parts(root, "inference.yaml"):
        raise PackError(f"'{bundle}' is not a monai_tfm bundle: it has no inference.yaml ('{root / 'configs'}').")
    out = Path(output)
    if out.exists() and not overwrite:
        raise FileExistsError(f"refusing to overwrite existing file '{out}' (pass --overwrite).")
    generated = {WEIGHTS_ENTRY: _weights_bytes(Path(weights) if weights is not None else root / WEIGHTS_ENTRY)}
    configs = assembled_configs(root)  # every config with its shared parts: the zip needs no other folder
    generated.update(configs)
    settings = _dataset_settings_bytes(root, bundle, dataset_dir, configs)
    if settings is not None:
        generated[SETTINGS_ENTRY] = settings
    files = [rel for rel in bundle_files(root, skip={out.resolve()}) if rel.as_posix() not in generated]
    entries = sorted([(rel.as_posix(), root / rel) for rel in files] + [(name, None) for name in generated])
    with atomic_path(out, overwrite=overwrite) as tmp:
        with zipfile.ZipFile(tmp, "w") as zf:
            for rel, src in entries:
                data = generated[rel] if src is None else src.read_bytes()
                zf.writestr(_entry(f"{root.name}/{rel}"), data, compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    logger.info("packed %d files of %s into %s (sha256 %s)", len(entries), root.name, out, digest)
    return out
