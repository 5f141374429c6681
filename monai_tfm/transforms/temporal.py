# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""Temporal augmentation of a whole series before a training sample is drawn from it.

MONAI's random transforms act on space and intensity; none changes a stack of frames along time, so this one is
written here.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

from monai.config import KeysCollection
from monai.transforms import MapTransform, RandomizableTransform

from monai_tfm.utils.errors import MonaiTFMError

__all__ = ["RandHoldStilld"]


class RandHoldStilld(RandomizableTransform, MapTransform):
    """With probability ``prob``, make a series still: every frame becomes one of its frames (chosen uniformly).

    A still series' future is its present, so a model trained with a few of them learns to forecast no motion from a
    context without motion, instead of the motion it has seen at that phase in every other series.

    Args:
        keys: the series keys (``(N, C, ...)`` frames in time order; all get the same frame).
        prob: probability to hold a series still.
        allow_missing_keys: skip absent keys.

    Raises:
        ValueError: ``prob`` outside ``[0, 1]``.
    """

    def __init__(self, keys: KeysCollection, prob: float = 0.05, allow_missing_keys: bool = False) -> None:
        if not 0.0 <= float(prob) <= 1.0:
            raise MonaiTFMError(f"RandHoldStilld prob must be in [0, 1], got {prob!r}.")
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        self._frame = 0

    def randomize(self, num_frames: int) -> None:
        """Decide whether to hold still, and which frame.

        Args:
            num_frames: frames of the series.
        """
        super().randomize(None)
        self._frame = int(self.R.randint(num_frames)) if num_frames > 0 else 0

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        """Hold the series of ``data`` still (or not).

        Args:
            data: the item.

        Returns:
            the item, its series replaced by copies of one frame with probability ``prob``.
        """
        d = dict(data)
        keys = list(self.key_iterator(d))
        self.randomize(len(d[keys[0]]) if keys else 0)
        if not self._do_transform:
            return d
        for key in keys:
            x = d[key]
            d[key] = x[self._frame : self._frame + 1].repeat(len(x), *([1] * (x.ndim - 1)))
        return d
