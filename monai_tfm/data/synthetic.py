# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""Deterministic synthetic phantoms (docs/method.md section 6): a beating two-chamber heart and a growing tumour.

Both generators draw everything from NumPy ``Generator`` objects seeded by the caller, so the same seed gives the
same series. Voxel values are computed with additions, multiplications, divisions, square roots and clipping only
(IEEE correctly rounded operations; transcendental functions are used only on per-frame scalars), which keeps the
output bit-identical across machines for a given NumPy version.

Geometry is defined in normalised coordinates: each array axis spans ``[-1, 1]`` whatever its number of voxels,
so shapes scale with ``spatial_size``; with the default dataset spacing ``(1.5, 1.5, 3.0)`` and size
``(32, 32, 16)`` the field of view is 48 mm in every direction and the ellipsoids look round.

:func:`generate_synthetic_dataset` writes a dataset (one NIfTI per frame and a ``datalist.json``, see
``docs/DESIGN.md``); :func:`ensure_synthetic_dataset` does so only where no datalist exists yet (used by the
bundles: "if dataset_dir holds no data, the bundle generates the phantoms there").
"""

from __future__ import annotations

import csv as csv_module
import io
import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from monai_tfm.data.datalist import DATALIST_NAME, write_series_datalist
from monai_tfm.utils.errors import MonaiTFMError
from monai_tfm.utils.io import atomic_save_nifti, atomic_write_text

__all__ = [
    "DATALIST_NAME",
    "GENERATOR_VERSION",
    "cardiac_curve",
    "ensure_synthetic_dataset",
    "generate_synthetic_dataset",
    "make_heart_series",
    "make_tumour_series",
    "write_scan_table",
]

logger = logging.getLogger(__name__)

#: bump when the generated data change, so that stored datasets can be told apart
GENERATOR_VERSION = "1"
#: file name of the datalist written by :func:`generate_synthetic_dataset`

#: file name of the scan table written with ``csv=True``
SCAN_TABLE_NAME = "scans.csv"

SeedLike = int | Sequence[int] | np.random.SeedSequence

_KIND_IDS = {"heart": 0, "tumour": 1}
_TIME_UNITS = {"heart": "cardiac phase", "tumour": "weeks"}


# ---------------------------------------------------------------------------------------------------------------------
# building blocks (arithmetic only on voxel arrays)


def _rngs(seed: SeedLike, n: int) -> list[np.random.Generator]:
    """Independent generators derived from ``seed`` (anatomy, dynamics, noise, ... never share a stream)."""
    ss = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    return [np.random.default_rng(s) for s in ss.spawn(n)]


def _grid(spatial_size: Sequence[int]) -> list[np.ndarray]:
    """Normalised voxel-centre coordinates in ``[-1, 1]`` per axis, broadcastable to ``spatial_size``."""
    if len(spatial_size) != 3 or any(int(s) < 2 for s in spatial_size):
        raise MonaiTFMError(f"spatial_size must be three sizes >= 2, got {tuple(spatial_size)}.")
    axes = []
    for i, n in enumerate(spatial_size):
        u = (2.0 * np.arange(int(n), dtype=np.float64) + 1.0) / float(n) - 1.0
        shape = [1, 1, 1]
        shape[i] = int(n)
        axes.append(u.reshape(shape))
    return axes


def _rho(grid: list[np.ndarray], center: Sequence[float], radii: Sequence[float]) -> np.ndarray:
    """Normalised ellipsoid radius: < 1 inside, 1 on the surface."""
    q = 0.0
    for g, c, r in zip(grid, center, radii):
        q = q + ((g - c) / r) ** 2
    return np.sqrt(q)


def _soft(rho: np.ndarray, radius: float, width: float) -> np.ndarray:
    """Smooth (C1) indicator of ``rho < 1`` with an edge ~``width`` wide (normalised units) around the surface."""
    s = np.clip(0.5 - (rho - 1.0) * (radius / width), 0.0, 1.0)
    return s * s * (3.0 - 2.0 * s)


def _bump(rho: np.ndarray) -> np.ndarray:
    """Compactly supported smooth bump ``(1 - rho^2)^2`` for ``rho < 1``."""
    q = np.clip(1.0 - rho * rho, 0.0, None)
    return q * q


def _texture(
    rng: np.random.Generator, grid: list[np.ndarray], num_blobs: int, radius: tuple[float, float], amp: float
) -> np.ndarray:
    """Static smooth texture: a sum of random bumps."""
    out = np.zeros(np.broadcast_shapes(*(g.shape for g in grid)), dtype=np.float64)
    for _ in range(num_blobs):
        c = rng.uniform(-1.0, 1.0, size=3)
        r = rng.uniform(radius[0], radius[1], size=3)
        a = rng.uniform(-amp, amp)
        out += a * _bump(_rho(grid, c, r))
    return out


def _edge_width(spatial_size: Sequence[int]) -> float:
    """About 1.5 in-plane voxels in normalised units."""
    return 3.0 / float(min(spatial_size[0], spatial_size[1]))


def cardiac_curve(phase: float | np.ndarray, es_phase: float) -> float | np.ndarray:
    """Contraction ``s(phase)`` in ``[0, 1]``: 0 at end-diastole (phase 0 and 1), 1 at end-systole (``es_phase``).

    A raised cosine up to ``es_phase`` (ejection) and back down to 1 (filling); smooth at ``es_phase``.

    Args:
        phase: cardiac phase(s) in ``[0, 1]``.
        es_phase: phase of end-systole, in ``(0, 1)``.

    Returns:
        the contraction at ``phase``.
    """
    if not 0.0 < es_phase < 1.0:
        raise MonaiTFMError(f"es_phase must be in (0, 1), got {es_phase}.")
    p = np.clip(np.asarray(phase, dtype=np.float64), 0.0, 1.0)
    up = 0.5 * (1.0 - np.cos(np.pi * p / es_phase))
    down = 0.5 * (1.0 + np.cos(np.pi * (p - es_phase) / (1.0 - es_phase)))
    s = np.where(p <= es_phase, up, down)
    return float(s) if s.ndim == 0 else s


# ---------------------------------------------------------------------------------------------------------------------
# heart


def _heart(
    seed: SeedLike,
    spatial_size: Sequence[int],
    num_frames: int,
    noise_std: float,
    amplitude_range: tuple[float, float],
    es_phase_range: tuple[float, float],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    if num_frames < 2:
        raise MonaiTFMError(f"num_frames must be >= 2, got {num_frames}.")
    if noise_std < 0:
        raise MonaiTFMError(f"noise_std must be >= 0, got {noise_std}.")
    anat_rng, bg_rng, noise_rng = _rngs(seed, 3)
    grid = _grid(spatial_size)
    width = _edge_width(spatial_size)

    # per-subject anatomy and dynamics (scalars)
    center = np.array([anat_rng.uniform(-0.12, 0.12), anat_rng.uniform(-0.12, 0.12), anat_rng.uniform(-0.08, 0.08)])
    r0 = anat_rng.uniform(0.3, 0.38)  # LV blood pool radius at end-diastole (in-plane)
    elong = anat_rng.uniform(2.0, 2.5)  # long axis / short axis
    wall = anat_rng.uniform(0.08, 0.11)  # myocardium thickness at end-diastole
    amplitude = anat_rng.uniform(*amplitude_range)  # radial shortening at end-systole
    es_phase = anat_rng.uniform(*es_phase_range)
    angle = anat_rng.uniform(-0.35, 0.35)  # direction of the RV from the LV, around +x
    rv_scale = anat_rng.uniform(0.9, 1.1)
    rv_amp = amplitude * anat_rng.uniform(0.8, 1.0)
    i_lv = anat_rng.uniform(0.85, 0.95)
    i_rv = anat_rng.uniform(0.72, 0.82)
    i_myo = anat_rng.uniform(0.22, 0.32)
    epi0 = r0 + wall
    rv_dist = epi0 + 0.45 * r0 * rv_scale
    rv_center = center + rv_dist * np.array([math.cos(angle), math.sin(angle), 0.0])

    # static background: body ellipsoid with smooth texture, air outside
    body_r = (0.92, anat_rng.uniform(0.75, 0.9), 4.0)
    body = _soft(_rho(grid, (0.0, 0.0, 0.0), body_r), min(body_r[:2]), width)
    tissue = np.clip(0.35 + _texture(bg_rng, grid, 10, (0.25, 0.6), 0.2), 0.05, 0.7)
    background = 0.02 + body * (tissue - 0.02)

    times = np.arange(num_frames, dtype=np.float64) / float(num_frames - 1)
    shape = tuple(int(s) for s in spatial_size)
    frames = np.empty((num_frames, *shape), dtype=np.float32)
    labels = np.empty((num_frames, *shape), dtype=np.uint8)
    for k, t in enumerate(times):
        s = cardiac_curve(float(t), es_phase)
        r_lv = r0 * (1.0 - amplitude * s)
        r_lv_z = r0 * elong * (1.0 - amplitude * s / 3.0)
        r_epi = math.sqrt(r_lv * r_lv + wall * (2.0 * r0 + wall))  # ~constant myocardial area: the wall thickens
        r_epi_z = r_lv_z + (r_epi - r_lv)
        r_rv = r0 * rv_scale * (1.0 - rv_amp * s)
        m_lv = _soft(_rho(grid, center, (r_lv, r_lv, r_lv_z)), r_lv, width)
        m_epi = _soft(_rho(grid, center, (r_epi, r_epi, r_epi_z)), r_epi, width)
        m_rv = _soft(_rho(grid, rv_center, (0.7 * r_rv, 1.25 * r_rv, r_lv_z)), 0.7 * r_rv, width)
        img = background
        img = img + m_rv * (i_rv - img)
        img = img + m_epi * (i_myo - img)
        img = img + m_lv * (i_lv - img)
        if noise_std > 0:
            img = img + noise_std * noise_rng.standard_normal(shape)
        frames[k] = np.clip(img, 0.0, 1.0)
        lab = np.zeros(shape, dtype=np.uint8)  # ACDC convention: 1 RV, 2 myocardium, 3 LV
        lab[m_rv > 0.5] = 1
        lab[m_epi > 0.5] = 2
        lab[m_lv > 0.5] = 3
        labels[k] = lab
    params = {
        "center": [round(float(v), 6) for v in center],
        "lv_radius_ed": round(float(r0), 6),
        "amplitude": round(float(amplitude), 6),
        "es_phase": round(float(es_phase), 6),
        "wall": round(float(wall), 6),
    }
    return frames, times, labels, params


def make_heart_series(
    seed: SeedLike,
    spatial_size: Sequence[int] = (32, 32, 16),
    num_frames: int = 12,
    noise_std: float = 0.02,
    amplitude_range: tuple[float, float] = (0.22, 0.32),
    es_phase_range: tuple[float, float] = (0.3, 0.45),
    return_labels: bool = False,
) -> tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A beating two-chamber heart over one cardiac cycle.

    Two blood pools (left ventricle brighter, right ventricle beside it) and a dark myocardial ring around the LV,
    inside a static textured body. The radii follow ``r(t) = r0 (1 - a s(t))`` with the cardiac curve
    :func:`cardiac_curve` (end-diastole at t = 0 and 1, end-systole at a random phase); the LV long axis shortens
    by a third of that, the wall thickens (constant myocardial area). Per subject: ``r0``, amplitude ``a``,
    phase of end-systole, heart position, RV size and direction, intensities and the background texture.

    Args:
        seed: seed of the NumPy generators (int, list of ints or ``SeedSequence``).
        spatial_size: array shape of a frame.
        num_frames: number of frames, at times ``k / (num_frames - 1)``.
        noise_std: standard deviation of the additive Gaussian noise (values are clipped to [0, 1] afterwards).
        amplitude_range: range of the radial shortening ``a`` at end-systole.
        es_phase_range: range of the end-systole phase.
        return_labels: also return label maps (ACDC convention: 1 RV, 2 myocardium, 3 LV).

    Returns:
        ``frames`` ``(N, *spatial_size)`` float32 in [0, 1], ``times`` ``(N,)`` float64 in [0, 1]
        (and ``labels`` ``(N, *spatial_size)`` uint8 if ``return_labels``).

    Raises:
        ValueError: for ``num_frames < 2``, a negative ``noise_std`` or a bad ``spatial_size``.
    """
    frames, times, labels, _ = _heart(seed, spatial_size, num_frames, noise_std, amplitude_range, es_phase_range)
    return (frames, times, labels) if return_labels else (frames, times)


# ---------------------------------------------------------------------------------------------------------------------
# tumour


def _tumour(
    seed: SeedLike,
    spatial_size: Sequence[int],
    num_visits: int | None,
    max_weeks: int,
    noise_std: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    if noise_std < 0:
        raise MonaiTFMError(f"noise_std must be >= 0, got {noise_std}.")
    anat_rng, bg_rng, time_rng, noise_rng = _rngs(seed, 4)
    grid = _grid(spatial_size)
    width = _edge_width(spatial_size)

    if num_visits is None:
        num_visits = int(time_rng.integers(3, 7))
    if num_visits < 2:
        raise MonaiTFMError(f"num_visits must be >= 2, got {num_visits}.")
    if int(max_weeks) < num_visits - 1:
        raise MonaiTFMError(f"max_weeks={max_weeks} cannot hold {num_visits} visits on distinct weeks.")
    # baseline at week 0, follow-ups on distinct whole weeks in [1, max_weeks]
    follow = np.sort(time_rng.choice(np.arange(1, int(max_weeks) + 1), size=num_visits - 1, replace=False))
    times = np.concatenate([[0.0], follow.astype(np.float64)])

    # brain: ellipsoid with texture and two dark ventricles
    brain_r = (0.85, anat_rng.uniform(0.7, 0.82), anat_rng.uniform(0.8, 0.95))
    brain = _soft(_rho(grid, (0.0, 0.0, 0.0), brain_r), min(brain_r), width)
    tissue = np.clip(0.45 + _texture(bg_rng, grid, 12, (0.2, 0.5), 0.12), 0.1, 0.7)
    vent_r = (anat_rng.uniform(0.08, 0.12), anat_rng.uniform(0.25, 0.32), anat_rng.uniform(0.3, 0.45))
    vent = np.maximum(
        _soft(_rho(grid, (-0.15, 0.0, 0.0), vent_r), vent_r[0], width),
        _soft(_rho(grid, (0.15, 0.0, 0.0), vent_r), vent_r[0], width),
    )
    tissue = tissue + vent * (0.12 - tissue)
    background = 0.02 + brain * (tissue - 0.02)

    # tumour: Gompertz growth of the radius, r(t) = r_max (r0 / r_max) ** exp(-b t)
    side = anat_rng.choice([-1.0, 1.0])
    center = np.array([side * anat_rng.uniform(0.3, 0.45), anat_rng.uniform(-0.3, 0.3), anat_rng.uniform(-0.3, 0.3)])
    axes = anat_rng.uniform(0.85, 1.15, size=3)
    r0 = anat_rng.uniform(0.06, 0.1)
    r_max = anat_rng.uniform(0.26, 0.34)
    rate = anat_rng.uniform(0.02, 0.06)
    i_rim = anat_rng.uniform(0.85, 0.95)
    i_core = anat_rng.uniform(0.45, 0.55)
    i_edema = anat_rng.uniform(0.1, 0.16)
    radii = [r_max * (r0 / r_max) ** math.exp(-rate * float(t)) for t in times]

    shape = tuple(int(s) for s in spatial_size)
    frames = np.empty((num_visits, *shape), dtype=np.float32)
    labels = np.empty((num_visits, *shape), dtype=np.uint8)
    for k, r in enumerate(radii):
        rho = _rho(grid, center, r * axes)
        m_tumour = _soft(rho, r * float(axes.min()), width)
        m_edema = _soft(rho / 1.5, 1.5 * r * float(axes.min()), width) * brain
        core_frac = max(0.0, 1.0 - 0.07 / r)  # necrotic core once the tumour is large
        m_core = _soft(rho / core_frac, core_frac * r, width) if core_frac > 0.05 else 0.0
        img = background + i_edema * m_edema
        img = img + m_tumour * (i_rim - img)
        img = img + m_core * (i_core - img)
        if noise_std > 0:
            img = img + noise_std * noise_rng.standard_normal(shape)
        frames[k] = np.clip(img, 0.0, 1.0)
        lab = np.zeros(shape, dtype=np.uint8)  # 1 edema, 2 tumour
        lab[m_edema > 0.5] = 1
        lab[m_tumour > 0.5] = 2
        labels[k] = lab
    params = {
        "center": [round(float(v), 6) for v in center],
        "radius_0": round(float(r0), 6),
        "radius_max": round(float(r_max), 6),
        "growth_rate_per_week": round(float(rate), 6),
        "radii": [round(float(r), 6) for r in radii],
    }
    return frames, times, labels, params


def make_tumour_series(
    seed: SeedLike,
    spatial_size: Sequence[int] = (32, 32, 16),
    num_visits: int | None = None,
    max_weeks: int = 60,
    noise_std: float = 0.02,
    return_labels: bool = False,
) -> tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A growing tumour in a static "brain", seen at irregular follow-up visits.

    The tumour is an ellipsoid whose radius follows a Gompertz curve ``r(t) = r_max (r0 / r_max)^exp(-b t)``
    (strictly increasing), with a bright rim, a darker necrotic core once it is large and a faint oedema halo.
    Visits: baseline at week 0, then distinct whole weeks drawn uniformly in ``[1, max_weeks]`` (sorted).

    Args:
        seed: seed of the NumPy generators (int, list of ints or ``SeedSequence``).
        spatial_size: array shape of a frame.
        num_visits: number of visits; None draws it uniformly in 3..6.
        max_weeks: last possible visit week.
        noise_std: standard deviation of the additive Gaussian noise (values are clipped to [0, 1] afterwards).
        return_labels: also return label maps (1 oedema, 2 tumour).

    Returns:
        ``frames`` ``(N, *spatial_size)`` float32 in [0, 1], ``times`` ``(N,)`` float64 strictly increasing weeks
        (and ``labels`` ``(N, *spatial_size)`` uint8 if ``return_labels``).

    Raises:
        ValueError: for fewer than 2 visits, too few weeks for the visits, a negative ``noise_std`` or a bad
            ``spatial_size``.
    """
    frames, times, labels, _ = _tumour(seed, spatial_size, num_visits, max_weeks, noise_std)
    return (frames, times, labels) if return_labels else (frames, times)


# ---------------------------------------------------------------------------------------------------------------------
# datasets on disk


def _affine(spatial_size: Sequence[int], spacing: Sequence[float]) -> np.ndarray:
    """Diagonal affine with the given spacing, centred on the origin."""
    aff = np.eye(4)
    for i, (n, s) in enumerate(zip(spatial_size, spacing)):
        aff[i, i] = float(s)
        aff[i, 3] = -0.5 * (int(n) - 1) * float(s)
    return aff


def _write_subjects(
    root: Path,
    kind: str,
    splits: dict[str, int],
    seed: int,
    spatial_size: tuple[int, ...],
    num_frames: int | None,
    spacing: tuple[float, ...],
    with_labels: bool,
    generator_kwargs: dict[str, Any],
) -> dict[str, list[dict]]:
    """Write the frame files of every subject under ``root``; return the datalist sections (paths relative)."""
    affine = _affine(spatial_size, spacing)
    sections: dict[str, list[dict]] = {}
    index = 0
    for section, count in splits.items():
        entries = []
        for _ in range(count):
            subject = f"{kind}_{index:03d}"
            subject_seed = [int(seed), _KIND_IDS[kind], index]
            if kind == "heart":
                frames, times, labels, params = _heart(
                    subject_seed,
                    spatial_size,
                    12 if num_frames is None else num_frames,
                    generator_kwargs.get("noise_std", 0.02),
                    generator_kwargs.get("amplitude_range", (0.22, 0.32)),
                    generator_kwargs.get("es_phase_range", (0.3, 0.45)),
                )
            else:
                frames, times, labels, params = _tumour(
                    subject_seed,
                    spatial_size,
                    num_frames,
                    generator_kwargs.get("max_weeks", 60),
                    generator_kwargs.get("noise_std", 0.02),
                )
            folder = root / subject
            shutil.rmtree(folder, ignore_errors=True)  # only our own subject folders (regeneration)
            folder.mkdir(parents=True)
            frame_entries = []
            for k, t in enumerate(times):
                rel = f"{subject}/frame_{k:02d}.nii.gz"
                atomic_save_nifti(frames[k], affine, root / rel)
                entry: dict[str, Any] = {"image": rel, "time": round(float(t), 6)}
                if with_labels:
                    rel_lab = f"{subject}/label_{k:02d}.nii.gz"
                    atomic_save_nifti(labels[k], affine, root / rel_lab)
                    entry["label"] = rel_lab
                frame_entries.append(entry)
            entries.append({"subject": subject, "frames": frame_entries, "metadata": {"seed": subject_seed, **params}})
            index += 1
        sections[section] = entries
    return sections


def _is_empty_dir(path: Path) -> bool:
    return path.is_dir() and not any(path.iterdir())


def generate_synthetic_dataset(
    out_dir: str | os.PathLike,
    kind: str = "heart",
    num_train: int = 8,
    num_val: int = 2,
    num_test: int = 2,
    seed: int = 0,
    spatial_size: Sequence[int] = (32, 32, 16),
    num_frames: int | None = None,
    spacing: Sequence[float] = (1.5, 1.5, 3.0),
    with_labels: bool = False,
    overwrite: bool = False,
    csv: bool = False,
    **generator_kwargs: Any,
) -> Path:
    """Write a synthetic phantom dataset: one NIfTI per frame and ``datalist.json`` (training/validation/test).

    Subject ``i`` (numbered across the splits, ``heart_000``, ...) is generated from the seed ``[seed, kind, i]``,
    so a dataset is reproducible from its arguments. Files go to ``<out_dir>/<subject>/frame_KK.nii.gz`` (and
    ``label_KK.nii.gz`` with ``with_labels``); the NIfTI affine has the given spacing and is centred on the
    origin. The datalist records the generator (kind, seed, version, sizes) under ``"metadata"``.

    If ``out_dir`` already holds a ``datalist.json`` it is reused and nothing is written, unless ``overwrite``.
    No partial dataset is ever visible as complete: if ``out_dir`` is missing or empty, the dataset is built in a
    temporary sibling folder and renamed into place; otherwise the frame files are written first and the datalist
    last (it is the marker of a complete dataset).

    Args:
        out_dir: the dataset folder.
        kind: ``"heart"`` (:func:`make_heart_series`) or ``"tumour"`` (:func:`make_tumour_series`).
        num_train: number of training subjects.
        num_val: number of validation subjects.
        num_test: number of test subjects.
        seed: dataset seed.
        spatial_size: array shape of a frame.
        num_frames: frames per series (heart: default 12; tumour: None draws 3..6 visits per subject).
        spacing: voxel spacing (mm) written in the NIfTI affine.
        with_labels: also write label maps and reference them as ``"label"`` in the datalist.
        overwrite: regenerate even if a datalist exists (replaces the datalist and this generator's subject
            folders; other files in ``out_dir`` are left alone).
        csv: also write ``scans.csv`` (``subject,path,time,split[,label]``, paths relative to it): the table of
            scans that ``monai-tfm prepare series`` reads, to try the own-data path on phantoms.
        generator_kwargs: extra arguments of the generator (``noise_std``, ``amplitude_range``,
            ``es_phase_range`` for the heart; ``noise_std``, ``max_weeks`` for the tumour).

    Returns:
        the path of ``datalist.json``.

    Raises:
        ValueError: for an unknown ``kind``, negative split sizes, bad sizes or unknown generator arguments.
    """
    datalist = _generate(
        out_dir,
        kind,
        num_train,
        num_val,
        num_test,
        seed,
        spatial_size,
        num_frames,
        spacing,
        with_labels,
        overwrite,
        generator_kwargs,
    )
    if csv:
        write_scan_table(datalist)
    return datalist


def write_scan_table(datalist: str | os.PathLike, name: str = SCAN_TABLE_NAME) -> Path:
    """Write the frames of a series datalist as a scan table (``subject,path,time,split[,label]``) beside it.

    Args:
        datalist: a series datalist (e.g. of the phantoms).
        name: file name of the table.

    Returns:
        the table path (written atomically; an existing table is replaced, it is derived from the datalist).
    """
    datalist = Path(datalist)
    data = json.loads(datalist.read_text(encoding="utf-8"))
    sections = [s for s in ("training", "validation", "test") if isinstance(data.get(s), list)]
    labels = any("label" in f for s in sections for e in data[s] for f in e["frames"])
    buffer = io.StringIO()
    writer = csv_module.writer(buffer, lineterminator="\n")
    writer.writerow(["subject", "path", "time", "split"] + (["label"] if labels else []))
    for section in sections:
        for entry in data[section]:
            for frame in entry["frames"]:
                row = [entry["subject"], frame["image"], repr(float(frame["time"])), section]
                writer.writerow(row + ([frame.get("label", "")] if labels else []))
    return atomic_write_text(datalist.parent / name, buffer.getvalue(), overwrite=True)


def _generate(
    out_dir: str | os.PathLike,
    kind: str,
    num_train: int,
    num_val: int,
    num_test: int,
    seed: int,
    spatial_size: Sequence[int],
    num_frames: int | None,
    spacing: Sequence[float],
    with_labels: bool,
    overwrite: bool,
    generator_kwargs: dict[str, Any],
) -> Path:
    """The body of :func:`generate_synthetic_dataset` (without the scan table)."""
    if kind not in _KIND_IDS:
        raise MonaiTFMError(f"unknown phantom kind {kind!r}; expected one of {sorted(_KIND_IDS)}.")
    allowed = {"heart": {"noise_std", "amplitude_range", "es_phase_range"}, "tumour": {"noise_std", "max_weeks"}}
    unknown = set(generator_kwargs) - allowed[kind]
    if unknown:
        raise MonaiTFMError(f"unknown arguments for the {kind} generator: {sorted(unknown)}.")
    splits = {"training": int(num_train), "validation": int(num_val), "test": int(num_test)}
    if any(v < 0 for v in splits.values()):
        raise MonaiTFMError(f"split sizes must be >= 0, got {splits}.")
    spatial_size = tuple(int(s) for s in spatial_size)
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != 3 or any(s <= 0 for s in spacing):
        raise MonaiTFMError(f"spacing must be three positive numbers, got {spacing}.")
    _grid(spatial_size)  # validates spatial_size

    out_dir = Path(out_dir).expanduser().absolute()
    datalist = out_dir / DATALIST_NAME
    metadata = {
        "generator": "monai_tfm.data.synthetic",
        "generator_version": GENERATOR_VERSION,
        "kind": kind,
        "seed": int(seed),
        "spatial_size": list(spatial_size),
        "spacing": list(spacing),
        "num_frames": num_frames,
        "with_labels": bool(with_labels),
        "splits": splits,
        "generator_kwargs": {k: (list(v) if isinstance(v, tuple) else v) for k, v in sorted(generator_kwargs.items())},
    }
    if datalist.is_file() and not overwrite:
        _warn_if_different(datalist, metadata)
        logger.info("synthetic dataset already present, reusing %s", datalist)
        return datalist

    name = f"synthetic {kind}"
    args = (kind, splits, seed, spatial_size, num_frames, spacing, with_labels, generator_kwargs)
    if not out_dir.exists() or _is_empty_dir(out_dir):
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
        try:
            sections = _write_subjects(staging, *args)
            write_series_datalist(
                staging / DATALIST_NAME, sections, name=name, time_unit=_TIME_UNITS[kind], metadata=metadata
            )
            try:
                os.replace(staging, out_dir)  # atomic; replaces an empty folder on POSIX
            except OSError:
                if (out_dir / DATALIST_NAME).is_file():  # a concurrent writer finished first
                    logger.info("synthetic dataset was created concurrently, reusing %s", datalist)
                    return datalist
                if not _is_empty_dir(out_dir):
                    raise
                os.rmdir(out_dir)
                os.replace(staging, out_dir)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    else:
        if datalist.exists():  # overwrite: invalidate the old dataset first
            datalist.unlink()
        sections = _write_subjects(out_dir, *args)
        write_series_datalist(datalist, sections, name=name, time_unit=_TIME_UNITS[kind], metadata=metadata)
    logger.info("generated synthetic %s dataset in %s (%s)", kind, out_dir, splits)
    return datalist


def _warn_if_different(datalist: Path, metadata: dict[str, Any]) -> None:
    try:
        with open(datalist, encoding="utf-8") as f:
            stored = json.load(f).get("metadata", {})
    except (OSError, ValueError, AttributeError):
        return
    if not isinstance(stored, dict) or stored.get("generator") != metadata["generator"]:
        return
    diff = sorted(k for k, v in metadata.items() if stored.get(k) != v)
    if diff:
        logger.warning(
            "reusing the synthetic dataset in %s although it was generated with different %s; "
            "pass overwrite=True to regenerate it.",
            datalist.parent,
            diff,
        )


def ensure_synthetic_dataset(dataset_dir: str | os.PathLike, **kwargs: Any) -> str:
    """Return the datalist of ``dataset_dir``, generating synthetic phantoms there first if it has none.

    Meant for bundle configs (``"$monai_tfm.data.ensure_synthetic_dataset(@dataset_dir)"``): if ``dataset_dir``
    holds no ``datalist.json``, the phantoms are generated there; otherwise the existing datalist is used as is.

    Args:
        dataset_dir: the dataset folder.
        kwargs: arguments of :func:`generate_synthetic_dataset` (``overwrite`` is not accepted).

    Returns:
        the datalist path, as a string.

    Raises:
        ValueError: if ``overwrite`` is passed, or for invalid generator arguments.
    """
    if "overwrite" in kwargs:
        raise MonaiTFMError("ensure_synthetic_dataset never overwrites; call generate_synthetic_dataset instead.")
    datalist = Path(dataset_dir).expanduser() / DATALIST_NAME
    if datalist.is_file():
        return str(datalist.absolute())
    return str(generate_synthetic_dataset(dataset_dir, **kwargs))
