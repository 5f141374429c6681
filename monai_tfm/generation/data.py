# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""Data of the generation bundles: built-in shape phantoms with classes and masks, and ACDC images by group.

Every item is a dict of in-memory arrays (the datasets are small)::

    {"image": float32 (1, *spatial) in [0, 1], "mask": uint8 (1, *spatial) labels 0..L (all 0: no mask),
     "class": int, "has_mask": bool, "subject": str}

* :func:`make_shape_items`: 2D or 3D phantoms: an outer ellipse (label 1, the "wall") around an inner one (label 2,
  the "core") at a random place and size; the class sets the appearance (bright core, dark core, striped wall), the
  mask the geometry, so the two conditions are independent.
* :func:`acdc_generation_items`: 2D short-axis slices or 3D volumes of an ACDC dataset prepared by
  :func:`monai_tfm.data.ensure_acdc_prepared` (frames ED..ES, one intensity scale per patient); the class is the
  patient's group from ``Info.cfg``, the mask the expert ED/ES segmentation where the download has one.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from monai_tfm.utils.errors import MonaiTFMError

__all__ = [
    "ACDC_GROUPS",
    "ACDC_LABELS",
    "SHAPE_CLASSES",
    "SHAPE_LABELS",
    "acdc_generation_items",
    "class_counts",
    "make_shape_items",
    "subsample",
]

logger = logging.getLogger(__name__)

#: ACDC diagnostic groups (``Group`` of ``Info.cfg``), the class order of the ACDC bundle
ACDC_GROUPS = ("DCM", "HCM", "MINF", "NOR", "RV")
#: ACDC mask labels 1..3
ACDC_LABELS = ("RV", "myocardium", "LV")
#: classes of the shape phantoms
SHAPE_CLASSES = ("bright_core", "dark_core", "striped_wall")
#: mask labels 1..2 of the shape phantoms
SHAPE_LABELS = ("wall", "core")

# intensities (background, wall, core) per class
_SHAPE_LOOK = {0: (0.1, 0.5, 0.95), 1: (0.1, 0.85, 0.25), 2: (0.1, 0.5, 0.55)}


def _ellipsoid_rho(grid: list[np.ndarray], centre: np.ndarray, radii: np.ndarray, angle: float) -> np.ndarray:
    """Normalised radius of an ellipse/ellipsoid (rotated by ``angle`` in the first two axes); 1 on its surface."""
    d = [g - c for g, c in zip(grid, centre)]
    ca, sa = np.cos(angle), np.sin(angle)
    d[0], d[1] = ca * d[0] + sa * d[1], -sa * d[0] + ca * d[1]
    return np.sqrt(sum((di / r) ** 2 for di, r in zip(d, radii)))


def make_shape_items(
    num: int,
    spatial_size: Sequence[int] = (32, 32),
    seed: int = 0,
    num_classes: int = 3,
    noise: float = 0.03,
    prefix: str = "shape",
) -> list[dict[str, Any]]:
    """Deterministic shape phantoms with a class and a two-label mask.

    Args:
        num: number of items (classes cycle, so they are balanced).
        spatial_size: 2 or 3 sizes (each >= 8).
        seed: seed of the geometry and the noise.
        num_classes: 1 to 3 classes of :data:`SHAPE_CLASSES`.
        noise: standard deviation of the additive Gaussian noise.
        prefix: subject name prefix.

    Returns:
        the items (see the module notes).

    Raises:
        ValueError: bad sizes, count or class number.
    """
    size = tuple(int(s) for s in spatial_size)
    if len(size) not in (2, 3) or min(size) < 8:
        raise MonaiTFMError(f"spatial_size must be 2 or 3 sizes of at least 8, got {list(spatial_size)}.")
    if int(num) < 1:
        raise MonaiTFMError(f"num must be >= 1, got {num}.")
    if not 1 <= int(num_classes) <= len(SHAPE_CLASSES):
        raise MonaiTFMError(f"num_classes must lie in 1 .. {len(SHAPE_CLASSES)}, got {num_classes}.")
    rng = np.random.default_rng(seed)
    grid = np.meshgrid(*[np.arange(s, dtype=np.float64) + 0.5 for s in size], indexing="ij")
    sz = np.asarray(size, dtype=np.float64)
    items = []
    for i in range(int(num)):
        cls = i % int(num_classes)
        centre = sz * rng.uniform(0.38, 0.62, len(size))
        outer = sz * rng.uniform(0.18, 0.3, len(size))
        inner = outer * rng.uniform(0.45, 0.65)
        angle = float(rng.uniform(0, np.pi))
        rho_out = _ellipsoid_rho(grid, centre, outer, angle)
        rho_in = _ellipsoid_rho(grid, centre, inner, angle)
        mask = np.where(rho_in <= 1.0, 2, np.where(rho_out <= 1.0, 1, 0)).astype(np.uint8)
        # soft edges (about one voxel wide) so that images are smooth functions of the geometry
        soft_out = 1.0 / (1.0 + np.exp(-(1.0 - rho_out) * outer.mean() * 2.5))
        soft_in = 1.0 / (1.0 + np.exp(-(1.0 - rho_in) * inner.mean() * 2.5))
        bg, wall, core = _SHAPE_LOOK[cls]
        wall_map = np.full(size, wall)
        if cls == 2:  # striped wall: period of 4 voxels along the first axis
            wall_map = wall + 0.35 * np.sin(2 * np.pi * grid[0] / 4.0)
        image = bg + (wall_map - bg) * soft_out + (core - wall_map) * soft_in
        image = image + noise * rng.standard_normal(size)
        items.append(
            {
                "image": np.clip(image, 0.0, 1.0).astype(np.float32)[None],
                "mask": mask[None],
                "class": cls,
                "has_mask": True,
                "subject": f"{prefix}_{i:04d}",
            }
        )
    return items


def acdc_generation_items(
    datalist: str | os.PathLike,
    spatial_dims: int = 2,
    folds: Sequence[int] | None = None,
    exclude_folds: Sequence[int] | None = None,
    class_names: Sequence[str] = ACDC_GROUPS,
    section: str = "training",
    masked_only: bool = False,
    mask_repeat: int = 1,
) -> list[dict[str, Any]]:
    """Images of a prepared ACDC dataset with the patient's group as class and the ED/ES masks where present.

    Args:
        datalist: ``datalist.json`` written by :func:`monai_tfm.data.prepare_acdc` (``include_labels=True`` for masks).
        spatial_dims: 2 (every short-axis slice of every frame) or 3 (every frame volume).
        folds: keep only patients of these folds (``None``: all).
        exclude_folds: drop patients of these folds.
        class_names: the groups in class order.
        section: datalist section.
        masked_only: keep only images with a mask (2D: slices whose mask has a foreground voxel).
        mask_repeat: list every masked image this many times (oversampling for mask-conditional training).

    Returns:
        the items (see the module notes); 2D items have ``subject`` ``patientXXX/fKK/zSS``.

    Raises:
        ValueError: bad ``spatial_dims`` or ``mask_repeat``, or a patient whose group is not in ``class_names``.
        FileNotFoundError: the datalist or a frame file does not exist.
    """
    from monai_tfm.data.datalist import load_series_datalist
    from monai_tfm.transforms.series import read_volume

    if spatial_dims not in (2, 3):
        raise MonaiTFMError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
    if int(mask_repeat) < 1:
        raise MonaiTFMError(f"mask_repeat must be >= 1, got {mask_repeat}.")
    names = [str(c) for c in class_names]
    items: list[dict[str, Any]] = []
    for series in load_series_datalist(datalist, section):
        fold = series.get("fold")
        if folds is not None and fold not in folds:
            continue
        if exclude_folds is not None and fold in exclude_folds:
            continue
        group = (series.get("metadata") or {}).get("group")
        if group not in names:
            raise MonaiTFMError(
                f"datalist '{datalist}', subject {series['subject']!r}: group {group!r} is not one of the classes "
                f"{names}."
            )
        cls = names.index(group)
        for k, frame in enumerate(series["frames"]):
            who = series["subject"]
            image = read_volume(frame["image"], who=who)[0].numpy()
            label = None
            if frame.get("label"):
                label = np.rint(read_volume(frame["label"], what="label", who=who)[0].numpy()).astype(np.uint8)
            if spatial_dims == 3:
                parts = [(f"{series['subject']}/f{k:02d}", image, label)]
            else:
                parts = [
                    (f"{series['subject']}/f{k:02d}/z{z:02d}", image[..., z], None if label is None else label[..., z])
                    for z in range(image.shape[-1])
                ]
            for subject, img, lab in parts:
                has_mask = lab is not None and bool(lab.any())
                if masked_only and not has_mask:
                    continue
                item = {
                    "image": np.ascontiguousarray(img[None], dtype=np.float32),
                    "mask": (lab if has_mask else np.zeros(img.shape, np.uint8))[None].astype(np.uint8),
                    "class": cls,
                    "has_mask": has_mask,
                    "subject": subject,
                }
                items.extend([item] * (int(mask_repeat) if has_mask else 1))
    if not items:
        raise MonaiTFMError(
            f"no images selected from '{datalist}' (section {section!r}, folds {folds}, excluded "
            f"{exclude_folds}, masked_only={masked_only})."
        )
    logger.info(
        "ACDC generation data: %d %dD images (%d with a mask) from %s, classes %s",
        len(items),
        spatial_dims,
        sum(it["has_mask"] for it in items),
        datalist,
        class_counts(items, names),
    )
    return items


def class_counts(items: Sequence[dict[str, Any]], class_names: Sequence[str]) -> dict[str, int]:
    """Number of items per class name.

    Args:
        items: generation items.
        class_names: names in class order.

    Returns:
        name -> count.
    """
    counts = {str(n): 0 for n in class_names}
    for it in items:
        counts[str(class_names[int(it["class"])])] += 1
    return counts


def subsample(
    items: Sequence[dict[str, Any]],
    num: int | None,
    seed: int = 0,
    masked_only: bool = False,
    shuffle: bool = False,
) -> list[dict[str, Any]]:
    """A seeded random subset of at most ``num`` distinct items (duplicates from ``mask_repeat`` dropped first).

    Args:
        items: generation items.
        num: subset size (``None``: all).
        seed: seed of the choice.
        masked_only: keep only items with a mask.
        shuffle: return the subset in random order (so that its first ``k`` items are a random subset too);
            otherwise in the original order.

    Returns:
        the subset.
    """
    seen: set[int] = set()
    unique = []
    for it in items:
        if id(it) in seen or (masked_only and not it["has_mask"]):
            continue
        seen.add(id(it))
        unique.append(it)
    rng = np.random.default_rng(seed)
    size = len(unique) if num is None else min(int(num), len(unique))
    if shuffle:
        return [unique[i] for i in rng.permutation(len(unique))[:size]]
    if size == len(unique):
        return unique
    return [unique[i] for i in np.sort(rng.choice(len(unique), size, replace=False))]
