# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""Generate images with a trained generation bundle: the ``monai-tfm generate`` command and the bundles' inference.

::

    from monai_tfm.generation.app import generate
    generate("bundles/acdc_cine_generation", n=8, class_name="DCM", mask="m.nii.gz", steps=5, output="out/")

The network (``network_def``), the sampler (``sampler``), the classes (``class_names``), the mask labels
(``num_labels``) and the image size come from the bundle's ``configs/train.yaml`` + ``configs/inference.yaml`` (an
overlay; plus an optional method overlay, e.g. ``methods/ddpm.yaml``), parsed with MONAI's ``ConfigParser``. Outputs
are NIfTI files on the [0, 1] intensity scale of the training images (``<class>_000.nii.gz``, ...) with PNG
previews, written atomically and never over existing files unless ``overwrite``. With ``--mask`` the mask (NIfTI,
label values ``0 .. num_labels``) is resized to the model grid if needed (nearest neighbour, MONAI ``Resize``) and
the samples get its (resized) affine; without a mask they get the bundle's ``output_spacing``.

Expected input problems raise :class:`GenerationError` (a ``ValueError``) with a one-line message that names the
file, option or value.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.transforms import LoadImage, Resize

from monai_tfm.apps.bundle_loading import (
    apply_overrides,
    bundle_config_files,
    config_getter,
    load_bundle_weights,
    one_line,
    read_bundle_config,
    resolve_device,
)
from monai_tfm.flows.solvers import check_solver
from monai_tfm.generation.evaluation import save_sample_grid
from monai_tfm.generation.samplers import DIFFUSION_SCHEDULERS, generate_images
from monai_tfm.handlers.checkpoint import load_weights
from monai_tfm.utils.display import require_matplotlib
from monai_tfm.utils.errors import MonaiTFMError
from monai_tfm.utils.io import atomic_save_nifti, check_files_free
from monai_tfm.utils.options import as_bool, positive_int

__all__ = ["BundleGenerator", "GenerationError", "generate", "read_mask", "write_class_samples", "write_samples"]

logger = logging.getLogger(__name__)


class GenerationError(MonaiTFMError):
    """An expected problem with the inputs of a generation; the message is one line naming the file or value."""


def _root_cause(error: BaseException) -> BaseException:
    """The innermost cause of an error (MONAI's config parser wraps a component's own error)."""
    while error.__cause__ is not None:
        error = error.__cause__
    return error


def _affine(spacing: Sequence[float]) -> np.ndarray:
    affine = np.eye(4)
    for i, s in enumerate(list(spacing)[:3]):
        affine[i, i] = float(s)
    return affine


def read_mask(path: str | os.PathLike, spatial_size: Sequence[int], num_labels: int) -> tuple[torch.Tensor, np.ndarray]:
    """Read a conditioning mask (NIfTI) and put it on the model grid.

    Args:
        path: the mask file (2D models: a 2D image or a 3D image with one slice).
        spatial_size: the model's image size (2 or 3 sizes).
        num_labels: the model's foreground labels (values must lie in ``0 .. num_labels``).

    Returns:
        the label map ``(1, *spatial_size)`` (long) and its 4x4 affine on the model grid.

    Raises:
        GenerationError: missing or unreadable file, wrong dimensions, non-integer or out-of-range labels, or no
            foreground.
    """
    name = os.fspath(path)
    if not Path(name).is_file():
        raise GenerationError(f"mask '{name}' does not exist.")
    try:
        img = LoadImage(image_only=True, ensure_channel_first=True)(name)
    except Exception as e:  # any reader failure
        raise GenerationError(f"cannot read mask '{name}': {type(e).__name__}: {one_line(e)}") from e
    dims = len(spatial_size)
    if img.shape[0] != 1:
        raise GenerationError(f"mask '{name}' has {img.shape[0]} channels/volumes; expected one label map.")
    if dims == 2 and img.ndim == 4 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim - 1 != dims:
        raise GenerationError(
            f"mask '{name}' has shape {tuple(img.shape[1:])}; this model generates {dims}D images of size "
            f"{list(spatial_size)}."
        )
    values = torch.unique(img.as_tensor())
    bad = [float(v) for v in values if float(v) != round(float(v)) or v < 0 or v > num_labels]
    if bad:
        raise GenerationError(
            f"mask '{name}' holds values {bad[:5]} outside the model's labels 0 .. {num_labels} (integers)."
        )
    if not bool((values > 0).any()):
        raise GenerationError(f"mask '{name}' has no foreground label (all zeros).")
    if tuple(img.shape[1:]) != tuple(int(s) for s in spatial_size):
        logger.info(
            "mask '%s' (size %s) resized to the model grid %s (nearest neighbour)",
            name,
            tuple(img.shape[1:]),
            list(spatial_size),
        )
        img = Resize(tuple(int(s) for s in spatial_size), mode="nearest")(img)
    affine = np.asarray(img.affine, dtype=np.float64)
    return torch.as_tensor(img.as_tensor()).round().long(), affine


class BundleGenerator:
    """A generation bundle's network and sampler, parsed once from its inference configs (:func:`bundle_config_files`).

    Args:
        bundle: bundle folder.
        method: method overlay ``configs/methods/<method>.yaml`` (None: the bundle default).
        weights: weights file (default ``<bundle>/models/model.pt``).
        device: torch device.
        solver: flow: ``euler``, ``midpoint``, ``rk4`` (or adaptive); DDPM models: ``ddpm`` or ``ddim``.
        steps: sampling steps.
        guidance: classifier-free guidance weight (default: the bundle's ``guidance_scale``).
        overrides: further config ids.

    Raises:
        GenerationError: not a bundle, unknown method, option or solver, bad steps, missing or mismatched weights, or an
            unusable device.
    """

    def __init__(
        self,
        bundle: str | os.PathLike,
        method: str | None = None,
        weights: str | os.PathLike | None = None,
        device: str | torch.device = "cpu",
        solver: str | None = None,
        steps: int | None = None,
        guidance: float | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> None:
        self.root = Path(bundle)
        files = bundle_config_files(self.root, method, GenerationError)
        self.device = resolve_device(device, GenerationError)
        parser = read_bundle_config(self.root, files)
        if "network_def" not in parser or "sampler" not in parser:
            raise GenerationError(f"'{self.root}' is not a generation bundle: its inference config has no sampler.")
        apply_overrides(parser, overrides, files, GenerationError, "generate")
        self.objective = str(parser.get_parsed_content("objective")) if "objective" in parser else "flow"
        if solver is not None:
            if self.objective == "flow":
                check_solver(solver, GenerationError, what=" for a flow model")
            elif solver not in DIFFUSION_SCHEDULERS:
                raise GenerationError(
                    f"unknown solver {solver!r} for a {self.objective} model; expected one of "
                    f"{list(DIFFUSION_SCHEDULERS)}."
                )
            parser["solver"] = solver
        if steps is not None:
            parser["solver_steps"] = positive_int(steps, "steps", GenerationError)
        if guidance is not None:
            try:
                parser["guidance_scale"] = float(guidance)
            except (TypeError, ValueError):
                raise GenerationError(f"--guidance must be a number, got {guidance!r}.") from None

        parsed = config_getter(parser, files, GenerationError)
        self.class_names = [str(c) for c in (parsed("class_names", []) if parsed("use_class", True) else [])]
        self.num_labels = int(parsed("num_labels", 0)) if parsed("use_mask", False) else 0
        self.mask_optional = bool(parsed("mask_optional", True))
        self.spatial_dims = int(parsed("spatial_dims", 2))
        self.image_size = [int(s) for s in parsed("image_size")]
        self.output_spacing = [float(s) for s in parsed("output_spacing", [1.0] * self.spatial_dims)]
        try:
            self.sampler = parsed("sampler")
        except Exception as e:  # the sampler's own checks (steps beyond the diffusion schedule, ...)
            raise GenerationError(f"bad sampler settings: {one_line(_root_cause(e))}") from e
        self.network = parsed("network_def")
        self.weights = Path(weights) if weights is not None else self.root / "models" / "model.pt"
        load_bundle_weights(self.network, self.weights, files, GenerationError)
        self.network.to(self.device).eval()
        logger.info(
            "bundle %s (%s, %dD %s, classes %s, mask labels %d), weights %s, sampler %s, device %s",
            self.root,
            self.objective,
            self.spatial_dims,
            self.image_size,
            self.class_names,
            self.num_labels,
            self.weights,
            type(self.sampler).__name__,
            self.device,
        )

    def class_index(self, name: Any) -> int | None:
        """The class index of a class name (case-insensitive) or number; checks it against the model.

        Args:
            name: class name, index, or ``None``.

        Returns:
            the index (``None`` for a model without classes and no name).

        Raises:
            GenerationError: a class for an unconditional model, none for a class-conditional one, or an unknown one.
        """
        if not self.class_names:
            if name is not None:
                raise GenerationError(f"this bundle's model is not class-conditional; drop --class {name}.")
            return None
        if name is None:
            raise GenerationError(f"this bundle's model is class-conditional: pass --class, one of {self.class_names}.")
        text = str(name)
        lowered = [c.lower() for c in self.class_names]
        if text.lower() in lowered:
            return lowered.index(text.lower())
        if text.lstrip("-").isdigit() and 0 <= int(text) < len(self.class_names):
            return int(text)
        raise GenerationError(f"unknown class {text!r}; this bundle's classes are {self.class_names}.")

    def generate(
        self,
        n: int,
        class_index: int | None = None,
        mask: torch.Tensor | None = None,
        seed: int = 0,
        batch_size: int = 8,
    ) -> tuple[torch.Tensor, int]:
        """Generate ``n`` images on the [0, 1] scale.

        Args:
            n: number of images.
            class_index: class (``None``: no class; the model must be unconditional in class).
            mask: label map ``(1, *spatial)`` on the model grid (``None``: no mask).
            seed: noise seed.
            batch_size: images per network batch.

        Returns:
            ``(images (n, 1, *spatial), network evaluations per batch)``.

        Raises:
            GenerationError: a mask for a model without mask conditioning, or no mask for a model that needs one.
        """
        if mask is not None and not self.num_labels:
            raise GenerationError("this bundle's model has no mask conditioning; drop --mask.")
        if mask is None and self.num_labels and not self.mask_optional:
            raise GenerationError("this bundle's model is mask-conditional and needs --mask FILE.")
        classes = None if class_index is None else [int(class_index)] * int(n)
        masks = None
        if self.num_labels:
            masks = (mask if mask is not None else torch.zeros(1, *self.image_size, dtype=torch.long))[None]
            masks = masks.expand(int(n), *masks.shape[1:])
        images, nfe, seconds = generate_images(
            self.network,
            self.sampler,
            (1, *self.image_size),
            classes=classes,
            masks=masks,
            num_classes=len(self.class_names),
            num_labels=self.num_labels,
            num=int(n),
            seed=int(seed),
            batch_size=int(batch_size),
            device=self.device,
        )
        logger.info("%d image(s) in %.2f s (%d network evaluations per batch)", int(n), seconds, nfe)
        return (images + 1.0) / 2.0, nfe


def _targets(folder: Path, prefix: str, n: int, preview: bool) -> list[tuple[Path, Path | None]]:
    return [
        (folder / f"{prefix}_{i:03d}.nii.gz", folder / f"{prefix}_{i:03d}.png" if preview else None) for i in range(n)
    ]


def _check_free(targets: Sequence[tuple[Path, Path | None]], overwrite: bool) -> None:
    check_files_free((p for pair in targets for p in pair), overwrite, GenerationError, " or choose another --output")


def write_samples(
    images: torch.Tensor,
    folder: str | os.PathLike,
    affine: np.ndarray,
    prefix: str = "sample",
    preview: bool = True,
    mask: torch.Tensor | None = None,
    overwrite: bool = False,
    title: str = "",
) -> list[Path]:
    """Write images ``(N, 1, *spatial)`` as ``<prefix>_KKK.nii.gz`` (+ ``.png`` previews), atomically.

    Args:
        images: on the [0, 1] scale.
        folder: output folder (created).
        affine: 4x4 voxel-to-world matrix of the samples.
        prefix: file name prefix.
        preview: also write a PNG per sample.
        mask: conditioning label map ``(1, *spatial)`` outlined in the previews.
        overwrite: replace existing files (default: refuse).
        title: preview title.

    Returns:
        the NIfTI paths.

    Raises:
        GenerationError: an output exists and ``overwrite`` is False.
    """
    out = Path(folder)
    if out.exists() and not out.is_dir():
        raise GenerationError(f"output '{out}' must be a folder, but it is a file.")
    targets = _targets(out, prefix, len(images), preview)
    _check_free(targets, overwrite)
    written = []
    for image, (nifti, png) in zip(images, targets):
        try:
            atomic_save_nifti(image[0].numpy().astype(np.float32), affine, nifti, overwrite=overwrite)
            if png is not None:
                save_sample_grid(
                    png, image[None], masks=None if mask is None else mask[None], title=title, overwrite=overwrite
                )
        except FileExistsError as e:  # another writer created it meanwhile
            raise GenerationError(one_line(e)) from e
        written.append(nifti)
    return written


def generate(
    bundle: str | os.PathLike,
    n: Any = 1,
    class_name: Any = None,
    mask: str | os.PathLike | None = None,
    steps: Any = None,
    solver: str | None = None,
    output: str | os.PathLike | None = None,
    method: str | None = None,
    weights: str | os.PathLike | None = None,
    device: str = "cpu",
    seed: Any = 0,
    guidance: float | None = None,
    preview: bool = True,
    overwrite: bool = False,
    batch_size: Any = 8,
    **overrides: Any,
) -> list[Path]:
    """Generate ``n`` images of a class (and a mask) with a generation bundle and write them to ``output``.

    Args:
        bundle: bundle folder.
        n: number of images.
        class_name: class name or index (class-conditional models).
        mask: conditioning mask NIfTI (mask-conditional models).
        steps: sampling steps (default: the bundle's ``solver_steps``).
        solver: flow models: ``euler``, ``midpoint``, ``rk4``; DDPM models: ``ddpm`` or ``ddim``.
        output: output folder (created; existing files are never replaced unless ``overwrite``).
        method: method overlay (``ddpm`` for the bundle's DDPM model).
        weights: weights file (default ``<bundle>/models/model.pt``).
        device: torch device.
        seed: noise seed.
        guidance: classifier-free guidance weight.
        preview: write a PNG preview per image.
        overwrite: replace existing outputs.
        batch_size: images per network batch.
        overrides: bundle config ids.

    Returns:
        the written NIfTI files.

    Raises:
        GenerationError: for any problem with the inputs, in a one-line message.
    """
    if output is None:
        raise GenerationError("--output is required (a folder for the generated images).")
    preview, overwrite = as_bool(preview, "preview", GenerationError), as_bool(overwrite, "overwrite", GenerationError)
    if preview:  # checked before anything is computed or written
        require_matplotlib("--preview (PNG previews)", GenerationError, hint="pass --preview false")
    out = Path(output)
    if out.exists() and not out.is_dir():
        raise GenerationError(f"output '{out}' must be a folder, but it is a file.")
    count = positive_int(n, "n", GenerationError)
    batch = positive_int(batch_size, "batch-size", GenerationError)
    if steps is not None:
        positive_int(steps, "steps", GenerationError)
    try:
        seed = int(seed)
    except (TypeError, ValueError):
        raise GenerationError(f"--seed must be an integer, got {seed!r}.") from None
    if mask is not None and not Path(mask).is_file():
        raise GenerationError(f"mask '{os.fspath(mask)}' does not exist.")
    prefix = "sample" if class_name is None else str(class_name)
    if not prefix.replace("_", "").replace("-", "").isalnum():
        raise GenerationError(f"class {class_name!r} cannot be part of a file name.")
    _check_free(_targets(out, prefix, count, preview), overwrite)

    model = BundleGenerator(bundle, method, weights, device, solver, steps, guidance, overrides)
    index = model.class_index(class_name)
    if index is not None:
        prefix = model.class_names[index]
        _check_free(_targets(out, prefix, count, preview), overwrite)
    labels, affine = None, _affine(model.output_spacing)
    if mask is not None:
        if not model.num_labels:
            raise GenerationError("this bundle's model has no mask conditioning; drop --mask.")
        labels, affine = read_mask(mask, model.image_size, model.num_labels)
    images, nfe = model.generate(count, index, labels, seed, batch)
    title = f"{model.root.name}: {prefix}" + (" + mask" if labels is not None else "") + f" ({nfe} NFE)"
    written = write_samples(images, out, affine, prefix, preview, labels, overwrite, title)
    logger.info("%d image(s) written to %s", len(written), out)
    return written


def write_class_samples(
    network: torch.nn.Module,
    sampler: Any,
    weights: str | os.PathLike | None,
    output_dir: str | os.PathLike,
    image_size: Sequence[int],
    class_names: Sequence[str] = (),
    num_labels: int = 0,
    samples_per_class: int = 4,
    output_spacing: Sequence[float] | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    overwrite: bool = False,
) -> list[Path]:
    """The bundles' inference: ``samples_per_class`` images per class (no mask), written to ``output_dir``.

    Args:
        network: the generator network.
        sampler: its sampler.
        weights: weights file (``None``: as constructed).
        output_dir: output folder.
        image_size: spatial size of the images.
        class_names: classes (empty: unconditional, ``samples_per_class`` images in total).
        num_labels: mask labels of the network (sampled with "no mask").
        samples_per_class: images per class.
        output_spacing: voxel spacing of the written files.
        seed: noise seed.
        device: torch device.
        overwrite: replace existing files.

    Returns:
        the written NIfTI files.
    """
    if weights is not None:
        load_weights(network, weights)
    network.to(device).eval()
    affine = _affine(output_spacing or [1.0] * len(image_size))
    written: list[Path] = []
    for index, name in enumerate(list(class_names) or [None]):
        n = int(samples_per_class)
        masks = torch.zeros(n, 1, *image_size, dtype=torch.long) if num_labels else None
        images, nfe, _ = generate_images(
            network,
            sampler,
            (1, *image_size),
            classes=None if name is None else [index] * n,
            masks=masks,
            num_classes=len(class_names),
            num_labels=num_labels,
            num=n,
            seed=int(seed) + index,
            device=device,
        )
        prefix = "sample" if name is None else str(name)
        written += write_samples((images + 1.0) / 2.0, output_dir, affine, prefix, True, None, overwrite, prefix)
    logger.info("%d generated image(s) in %s", len(written), output_dir)
    return written
