# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""Turning a forecast into an image that MONAI's writers save on the series' grid."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import torch
from monai.data import MetaTensor
from monai.transforms import MapTransform

from monai_tfm.transforms.intensity import IntensityScaling

__all__ = ["AsForecastImaged"]


class AsForecastImaged(MapTransform):
    """Wrap a forecast ``(C, D, H, W)`` into a ``MetaTensor`` with the series' affine and a file name stem.

    The batch carries the affine as a plain tensor (key ``affine``) because the context is cut out of the series
    and loses its metadata; ``SaveImaged`` then writes the forecast on the grid of the input scans.

    Args:
        keys: forecast keys (default ``pred``).
        affine_key: key of the 4x4 affine.
        name_key: key whose value names the output file (e.g. the subject id).
        suffix_key: optional key appended to the name (e.g. the draw index).
        scaling_key: key of a recorded intensity scaling (:class:`~monai_tfm.transforms.ScaleSeriesIntensityd`); when
            given, the forecast is mapped back to the original intensity scale (the sample must hold the key).
    """

    def __init__(
        self,
        keys: str | list[str] = "pred",
        affine_key: str = "affine",
        name_key: str = "subject",
        suffix_key: str | None = None,
        scaling_key: str | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.affine_key = affine_key
        self.name_key = name_key
        self.suffix_key = suffix_key
        self.scaling_key = scaling_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        """Attach the metadata.

        Args:
            data: decollated sample with the forecast, the affine and the name.

        Returns:
            the sample with ``MetaTensor`` forecasts.

        Raises:
            KeyError: the affine, or the recorded scaling (``scaling_key``), is missing.
        """
        d = dict(data)
        if self.affine_key not in d:
            raise KeyError(f"no {self.affine_key!r} in the sample: load the series with monai_tfm.transforms.")
        if self.scaling_key is not None and self.scaling_key not in d:
            raise KeyError(
                f"no {self.scaling_key!r} in the sample: normalise the series with "
                "monai_tfm.transforms.ScaleSeriesIntensityd to write forecasts in the original intensity scale."
            )
        name = str(d.get(self.name_key, "forecast"))
        if self.suffix_key is not None and self.suffix_key in d:
            suffix = d[self.suffix_key]
            name = f"{name}_{int(suffix) if torch.is_tensor(suffix) or isinstance(suffix, int) else suffix}"
        affine = torch.as_tensor(d[self.affine_key], dtype=torch.float64)
        for key in self.key_iterator(d):
            value = torch.as_tensor(d[key]).detach().as_subclass(torch.Tensor)
            if self.scaling_key is not None:
                value = IntensityScaling.invert_recorded(value, d[self.scaling_key])
            d[key] = MetaTensor(value, affine=affine, meta={"filename_or_obj": f"{name}.nii.gz"})
        return d
