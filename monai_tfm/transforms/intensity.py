# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""Per-series intensity normalisation that can be undone on a forecast (docs/method.md section 6: shared statistics).

:class:`IntensityScaling` is the clip/scale that MONAI's ``ScaleIntensityRangePercentiles(d)`` applies to a whole
series (one pair of percentiles over all frames of a subject) with its inverse. :class:`ScaleSeriesIntensityd` is
that MONAI transform (a subclass, so configs and checks that expect it keep working) which also records the scaling
in the sample as ``(a_min, a_max, b_min, b_max)``, so that :class:`~monai_tfm.transforms.AsForecastImaged` can write
a forecast in the original intensity scale. MONAI's transform keeps no record of its percentiles and is not
invertible, hence this small addition.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from monai.transforms import ScaleIntensityRange, ScaleIntensityRangePercentiles, ScaleIntensityRangePercentilesd
from monai.transforms.utils_pytorch_numpy_unification import percentile

from monai_tfm.utils.errors import MonaiTFMError

__all__ = ["IntensityScaling", "ScaleSeriesIntensityd", "series_percentiles"]

_QUANTILE_MAX = 1_000_000  # above this size MONAI's percentile uses NumPy (pytorch#64947), which selects in O(n)


def series_percentiles(x: torch.Tensor, lower: float, upper: float) -> tuple[float, float]:
    """Two percentiles of all voxels of ``x``, equal to MONAI's ``percentile`` (what its transforms compute).

    Below a million voxels MONAI calls ``torch.quantile``, which sorts the whole series (about 70 ms for nine
    64 x 64 x 8 ACDC scans on one CPU thread: as long as a network evaluation, twice). Linear-interpolated
    quantiles only need the two order statistics next to each rank, so here ``torch.kthvalue`` selects them and
    they are interpolated with the rank arithmetic of ``torch.quantile`` (ranks ``q (n - 1)`` in the input's dtype,
    ``lerp`` between the neighbours): the same values without the sort. Larger inputs go to MONAI's function.

    Args:
        x: the series (any shape; all elements count, none may be NaN).
        lower: lower percentile in [0, 100].
        upper: upper percentile in [0, 100].

    Returns:
        the two percentiles.
    """
    if not torch.is_tensor(x) or x.numel() > _QUANTILE_MAX or not x.is_floating_point():
        return float(percentile(x, lower)), float(percentile(x, upper))
    flat = torch.as_tensor(x).reshape(-1)
    # q / 100 in float64 and then the input's dtype, as monai.transforms.utils_pytorch_numpy_unification.percentile
    q = torch.tensor([lower / 100.0, upper / 100.0], dtype=torch.float64).to(flat.dtype)
    ranks = q * (flat.numel() - 1)
    below, above = ranks.long(), ranks.ceil().long()
    values = []
    for r, b, a in zip(ranks, below.tolist(), above.tolist()):
        v_below = torch.kthvalue(flat, b + 1).values
        v_above = v_below if a == b else torch.kthvalue(flat, a + 1).values
        values.append(float(torch.lerp(v_below, v_above, r - b)))
    return values[0], values[1]


@dataclass(frozen=True)
class IntensityScaling:
    """The per-series clip/scale ``[a_min, a_max] -> [b_min, b_max]`` and its inverse (MONAI ``ScaleIntensityRange``).

    Attributes:
        a_min: intensity of the lower percentile over all scans of the patient.
        a_max: intensity of the upper percentile.
        b_min: normalised value of ``a_min``.
        b_max: normalised value of ``a_max``.
        clip: clip the normalised values to ``[b_min, b_max]``.
    """

    a_min: float
    a_max: float
    b_min: float
    b_max: float
    clip: bool

    @classmethod
    def from_series(
        cls, series: torch.Tensor, transform: ScaleIntensityRangePercentilesd | ScaleIntensityRangePercentiles | None
    ) -> IntensityScaling:
        """The scaling that ``transform`` (the bundle's normalisation) applies to ``series``.

        Args:
            series: all scans of the patient, stacked.
            transform: the bundle's ``ScaleIntensityRangePercentiles(d)`` (None: 0.5/99.5 percentiles to [0, 1],
                clip).

        Returns:
            the scaling.

        Raises:
            ValueError: the scans have no intensity range between the two percentiles.
        """
        if transform is None:
            lower, upper, b_min, b_max, clip, relative = 0.5, 99.5, 0.0, 1.0, True, False
        else:
            s = transform.scaler if isinstance(transform, ScaleIntensityRangePercentilesd) else transform
            lower, upper, b_min, b_max, clip, relative = s.lower, s.upper, s.b_min, s.b_max, s.clip, s.relative
        if b_min is None or b_max is None:
            raise MonaiTFMError(
                "the bundle's intensity normalisation has no output range (b_min/b_max); cannot invert."
            )
        if relative:  # as in monai.transforms.ScaleIntensityRangePercentiles
            b_min, b_max = (b_max - b_min) * lower / 100.0 + b_min, (b_max - b_min) * upper / 100.0 + b_min
        a_min, a_max = series_percentiles(series, lower, upper)
        if not a_max > a_min:
            raise MonaiTFMError(
                f"the scans have no intensity range between the {lower:g} and {upper:g} percentiles (both {a_min:g}): "
                "are they constant images?"
            )
        return cls(a_min, a_max, float(b_min), float(b_max), bool(clip))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise (what the bundle's transform does).

        Args:
            x: intensities.

        Returns:
            normalised values.
        """
        return torch.as_tensor(ScaleIntensityRange(self.a_min, self.a_max, self.b_min, self.b_max, self.clip)(x))

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """Back to the original intensity scale (the same linear map the other way, without clipping).

        Args:
            y: normalised values.

        Returns:
            intensities.
        """
        return torch.as_tensor(ScaleIntensityRange(self.b_min, self.b_max, self.a_min, self.a_max, clip=False)(y))

    def inverse_spread(self, s: torch.Tensor) -> torch.Tensor:
        """A standard deviation on the normalised scale in original intensity units.

        Args:
            s: spread on the normalised scale.

        Returns:
            spread in intensity units.
        """
        return s * ((self.a_max - self.a_min) / (self.b_max - self.b_min))

    def as_tensor(self) -> torch.Tensor:
        """``(a_min, a_max, b_min, b_max)`` as a float64 tensor (what :class:`ScaleSeriesIntensityd` records).

        Returns:
            ``(4,)`` tensor.
        """
        return torch.tensor([self.a_min, self.a_max, self.b_min, self.b_max], dtype=torch.float64)

    @staticmethod
    def invert_recorded(y: torch.Tensor, record: torch.Tensor) -> torch.Tensor:
        """Undo a recorded scaling (:meth:`as_tensor`) on normalised values.

        Args:
            y: normalised values.
            record: ``(a_min, a_max, b_min, b_max)``.

        Returns:
            intensities (same dtype as ``y``).
        """
        a_min, a_max, b_min, b_max = (float(v) for v in torch.as_tensor(record).reshape(-1)[:4])
        return IntensityScaling(a_min, a_max, b_min, b_max, clip=False).inverse(y).to(y.dtype)


class ScaleSeriesIntensityd(ScaleIntensityRangePercentilesd):
    """MONAI's ``ScaleIntensityRangePercentilesd`` on a stacked series, recording the scaling under ``record_key``.

    Args:
        keys: keys of the stacked series (percentiles over all of its frames).
        lower: lower percentile.
        upper: upper percentile.
        b_min: value of the lower percentile after scaling.
        b_max: value of the upper percentile after scaling.
        clip: clip to ``[b_min, b_max]``.
        relative: as in MONAI.
        record_key: sample key of the recorded ``(a_min, a_max, b_min, b_max)`` of the first key.
        kwargs: further arguments of ``ScaleIntensityRangePercentilesd`` (not ``channel_wise``: the percentiles
            must be shared by all frames).

    Raises:
        ValueError: ``channel_wise=True``.
    """

    def __init__(
        self,
        keys: Any = "series",
        lower: float = 0.5,
        upper: float = 99.5,
        b_min: float = 0.0,
        b_max: float = 1.0,
        clip: bool = True,
        relative: bool = False,
        record_key: str = "intensity_scaling",
        **kwargs: Any,
    ) -> None:
        if kwargs.get("channel_wise"):
            raise MonaiTFMError("ScaleSeriesIntensityd: channel_wise=True would normalise each frame on its own.")
        super().__init__(keys, lower, upper, b_min, b_max, clip, relative, **kwargs)
        self.record_key = record_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Record the scaling of the first key, then scale every key.

        Args:
            data: sample holding the series.

        Returns:
            the scaled sample with ``record_key``.
        """
        d = dict(data)
        first = next(iter(self.key_iterator(d)), None)
        if first is not None:
            d[self.record_key] = IntensityScaling.from_series(torch.as_tensor(d[first]), self).as_tensor()
        return super().__call__(d)
