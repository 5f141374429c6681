# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""Transforms of longitudinal self-supervision: timepoint pairs with shared geometry, labelled-frame selection.

:class:`LongitudinalPaird` turns a loaded series (``LoadSeriesd``: ``series`` of ``(N, C, *S)``) into one training
pair of two timepoints ``j`` and ``j + g`` of the subject (``g`` in ``1 .. max_gap``; the paper uses adjacent
timepoints). The two frames are stacked along the channel axis and the *geometric* transforms (flip, affine, crop)
are applied once to that stack, so both timepoints get the same flip, warp and crop coordinates by construction;
the stack is then split again. The *intensity* transforms are applied to each timepoint separately, i.e. with
independent random draws. The clean (geometry-only) frames are kept as the targets of the denoising reconstruction
(paper eq. 5: ``|| G(A_i(A_g(x))) - A_g(x) ||``).

:class:`SelectLabelledFramed` picks one labelled frame of a series (ED or ES in ACDC) as ``image``/``label`` for
the supervised part of finetuning; the geometric and intensity augmentation of that pair are ordinary MONAI
dictionary transforms in the bundle config.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import (
    Compose,
    MapTransform,
    RandAdjustContrast,
    RandAffine,
    RandBiasField,
    RandFlip,
    RandGaussianNoise,
    RandGaussianSmooth,
    Randomizable,
    RandSpatialCrop,
    SpatialPad,
)
from monai.utils import MAX_SEED

from monai_tfm.utils.errors import MonaiTFMError

__all__ = [
    "LongitudinalPaird",
    "SelectLabelledFramed",
    "default_geometric_augmentation",
    "default_intensity_augmentation",
]


def default_geometric_augmentation(
    roi_size: Sequence[int],
    flip_prob: float = 0.5,
    flip_axis: int | None = 0,
    affine_prob: float = 0.5,
    rotate_range: Sequence[float] | float = (0.0, 0.0, 0.26),
    scale_range: Sequence[float] | float = (0.1, 0.1, 0.0),
) -> Compose:
    """Paper's geometric augmentation (left-right flip, random affine warp) followed by a random crop.

    Array transforms, for the channel stack of a pair (so the draws are shared by construction). Defaults suit
    short-axis cardiac volumes ``(x, y, slice)``: in-plane flip, rotation about the slice axis (up to 15 degrees),
    in-plane scaling; the slice axis (10 mm apart) is not warped.

    Args:
        roi_size: crop size; the image is padded first where it is smaller.
        flip_prob: probability of the flip.
        flip_axis: spatial axis of the flip (None: no flip).
        affine_prob: probability of the affine warp.
        rotate_range: MONAI ``RandAffine`` rotation range (radians).
        scale_range: MONAI ``RandAffine`` scale range.

    Returns:
        a ``Compose`` of MONAI array transforms.
    """
    transforms: list = []
    if flip_axis is not None and flip_prob > 0:
        transforms.append(RandFlip(prob=flip_prob, spatial_axis=flip_axis))
    if affine_prob > 0:
        transforms.append(
            RandAffine(
                prob=affine_prob,
                rotate_range=rotate_range,
                scale_range=scale_range,
                mode="bilinear",
                padding_mode="border",
            )
        )
    transforms += [SpatialPad(spatial_size=roi_size), RandSpatialCrop(roi_size=roi_size, random_size=False)]
    return Compose(transforms)


def default_intensity_augmentation(
    blur_prob: float = 0.2,
    noise_prob: float = 0.3,
    noise_std: float = 0.05,
    gamma_prob: float = 0.3,
    gamma: Sequence[float] = (0.7, 1.5),
    bias_prob: float = 0.3,
) -> Compose:
    """Paper's intensity augmentation: random blur, noise, gamma contrast and MRI bias field.

    (The paper also simulates motion artefacts; MONAI's ``RandKSpaceSpikeNoise`` is not equivalent and is left out.)

    Args:
        blur_prob: probability of a Gaussian blur.
        noise_prob: probability of additive Gaussian noise.
        noise_std: noise standard deviation (images are on [0, 1]).
        gamma_prob: probability of a gamma contrast change.
        gamma: gamma range.
        bias_prob: probability of a bias field.

    Returns:
        a ``Compose`` of MONAI array transforms.
    """
    return Compose(
        [
            RandGaussianSmooth(sigma_x=(0.25, 1.0), sigma_y=(0.25, 1.0), sigma_z=(0.0, 0.25), prob=blur_prob),
            RandGaussianNoise(prob=noise_prob, std=noise_std),
            RandAdjustContrast(prob=gamma_prob, gamma=gamma),
            RandBiasField(prob=bias_prob, coeff_range=(0.0, 0.2)),
        ]
    )


def _plain(x: Any) -> torch.Tensor:
    return torch.as_tensor(x)


class LongitudinalPaird(Randomizable, MapTransform):
    """Draw a pair of timepoints of one series; shared geometric, independent intensity augmentation.

    Adds ``image_keys`` (augmented inputs ``(C, *roi)``), ``target_keys`` (the same after the geometric transforms
    only) and ``index_key`` (the two frame indices). The series key is removed unless ``keep_series``.

    Args:
        keys: key of the series ``(N, C, *S)`` (one key).
        image_keys: output keys of the two augmented timepoints.
        target_keys: output keys of the two clean (geometry-only) timepoints; None to skip them.
        index_key: output key of the frame indices ``(j, j + g)``; None to skip.
        max_gap: the second frame is ``g`` frames later, ``g`` uniform in ``1 .. max_gap`` (paper: 1).
        geometric: array transform(s) applied once to the channel stack of both frames (None: none).
        intensity: array transform(s) applied to each frame separately (None: none).
        keep_series: keep the series in the output.
        allow_missing_keys: don't raise for a missing series key.

    Raises:
        ValueError: for ``max_gap < 1`` or not exactly two image/target keys.
    """

    def __init__(
        self,
        keys: KeysCollection = "series",
        image_keys: Sequence[str] = ("image_a", "image_b"),
        target_keys: Sequence[str] | None = ("target_a", "target_b"),
        index_key: str | None = "pair_index",
        max_gap: int = 1,
        geometric: Any = None,
        intensity: Any = None,
        keep_series: bool = False,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        if len(image_keys) != 2 or (target_keys is not None and len(target_keys) != 2):
            raise MonaiTFMError(f"need two image keys and two target keys, got {image_keys} and {target_keys}.")
        if int(max_gap) < 1:
            raise MonaiTFMError(f"max_gap must be >= 1, got {max_gap}.")
        self.image_keys = tuple(image_keys)
        self.target_keys = None if target_keys is None else tuple(target_keys)
        self.index_key = index_key
        self.max_gap = int(max_gap)
        self.geometric = Compose(geometric) if isinstance(geometric, (list, tuple)) else geometric
        self.intensity = Compose(intensity) if isinstance(intensity, (list, tuple)) else intensity
        self.keep_series = keep_series
        self._pair = (0, 1)

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> Any:
        """Seed this transform and, from it, the geometric and intensity transforms.

        Args:
            seed: integer seed.
            state: a ``RandomState``.

        Returns:
            self.
        """
        super().set_random_state(seed, state)
        for t in (self.geometric, self.intensity):
            if isinstance(t, Randomizable):
                t.set_random_state(seed=int(self.R.randint(MAX_SEED, dtype="uint32")))
        return self

    def randomize(self, num_frames: int) -> None:
        """Draw the frame pair.

        Args:
            num_frames: frames in the series.

        Raises:
            ValueError: for a series of fewer than two frames.
        """
        if num_frames < 2:
            raise MonaiTFMError(f"a timepoint pair needs a series of at least 2 frames, got {num_frames}.")
        gap = int(self.R.randint(1, min(self.max_gap, num_frames - 1) + 1))
        j = int(self.R.randint(0, num_frames - gap))
        self._pair = (j, j + gap)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Draw and augment a pair.

        Args:
            data: dict holding the series ``(N, C, *S)``.

        Returns:
            a copy of ``data`` with the pair keys added.

        Raises:
            ValueError: for a series that is not ``(N, C, *S)``.
        """
        d = dict(data)
        for key in self.key_iterator(d):
            series = d[key]
            if series.ndim < 4:
                raise MonaiTFMError(f"'{key}' must be a series (N, C, *spatial), got shape {tuple(series.shape)}.")
            self.randomize(int(series.shape[0]))
            j, k = self._pair
            c = int(series.shape[1])
            stack = torch.cat([series[j], series[k]], dim=0)  # (2C, *S): one geometry for both timepoints
            if isinstance(series, MetaTensor) and not isinstance(stack, MetaTensor):
                stack = MetaTensor(stack, meta=series.meta)
            if self.geometric is not None:
                stack = self.geometric(stack)
            clean = (stack[:c], stack[c:])
            for out_key, frame in zip(self.image_keys, clean):
                d[out_key] = self.intensity(frame.clone()) if self.intensity is not None else frame.clone()
            if self.target_keys is not None:
                for out_key, frame in zip(self.target_keys, clean):
                    d[out_key] = frame
            if self.index_key is not None:
                d[self.index_key] = torch.tensor([j, k])
            if not self.keep_series:
                d.pop(key)
        return d


class SelectLabelledFramed(Randomizable, MapTransform):
    """Pick one labelled frame of a series (random among the labelled ones, or a fixed position).

    Args:
        keys: key of the series ``(N, C, *S)``.
        label_key: key of the label maps ``(N, 1, *S)``.
        mask_key: key of the label availability ``(N,)``.
        image_key: output key of the image ``(C, *S)``.
        out_label_key: output key of the label ``(1, *S)``.
        index: a fixed labelled-frame position (e.g. 0 = the first labelled frame); None: random.
        drop_series: remove the series keys from the output.
        allow_missing_keys: don't raise for a missing series key.

    Raises:
        ValueError: in ``__call__``, for a series without a labelled frame (the message names the subject).
    """

    def __init__(
        self,
        keys: KeysCollection = "series",
        label_key: str = "series_label",
        mask_key: str = "series_label_mask",
        image_key: str = "image",
        out_label_key: str = "label",
        index: int | None = None,
        drop_series: bool = True,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.label_key = label_key
        self.mask_key = mask_key
        self.image_key = image_key
        self.out_label_key = out_label_key
        self.index = index
        self.drop_series = drop_series
        self._choice = 0

    def randomize(self, num: int) -> None:
        """Draw a labelled frame.

        Args:
            num: number of labelled frames.
        """
        self._choice = int(self.R.randint(num)) if self.index is None else int(self.index)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Select the frame.

        Args:
            data: dict with the series, label maps and label mask.

        Returns:
            a copy with ``image`` and ``label`` added.
        """
        d = dict(data)
        for key in self.key_iterator(d):
            who = d.get("subject", "<unknown subject>")
            if self.label_key not in d or self.mask_key not in d:
                raise MonaiTFMError(f"{who}: the series has no labelled frame ('{self.label_key}' missing).")
            labelled = torch.nonzero(_plain(d[self.mask_key]).bool(), as_tuple=False).flatten().tolist()
            if not labelled:
                raise MonaiTFMError(f"{who}: the series has no labelled frame.")
            self.randomize(len(labelled))
            if not -len(labelled) <= self._choice < len(labelled):
                raise MonaiTFMError(f"{who}: index {self._choice} outside the {len(labelled)} labelled frames.")
            frame = labelled[self._choice]
            d[self.image_key] = d[key][frame]
            d[self.out_label_key] = d[self.label_key][frame]
            if self.drop_series:
                for k in (key, self.label_key, self.mask_key):
                    d.pop(k, None)
        return d
