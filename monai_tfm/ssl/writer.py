# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""Writing predicted segmentations of whole series (inference)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from ignite.engine import Engine, Events

from monai_tfm.utils.errors import MonaiTFMError
from monai_tfm.utils.io import atomic_save_nifti

__all__ = ["SeriesSegmentationWriter"]

logger = logging.getLogger(__name__)


class SeriesSegmentationWriter:
    """Write one 4D label map ``(X, Y, Z, N)`` per subject: the argmax of every frame's prediction, on its grid.

    MONAI's ``SaveImage`` writes one file per batch item; here a batch item is a whole series whose ``N`` frame
    predictions the evaluator produced as a batch of frames (``SeriesPrepareBatch``), so they are stacked back
    into one file with the series' affine. Files are written atomically.

    Args:
        output_dir: folder of the label maps (``<subject>_seg.nii.gz``).
        series_key: batch key of the series (its affine is used).
        overwrite: replace existing files.
    """

    def __init__(self, output_dir: str | Path, series_key: str = "series", overwrite: bool = False) -> None:
        self.output_dir = Path(output_dir)
        self.series_key = series_key
        self.overwrite = overwrite
        self.written: list[Path] = []

    def attach(self, engine: Engine) -> None:
        """Attach to an evaluator.

        Args:
            engine: the evaluator.
        """
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        """Write the label maps of one batch.

        Args:
            engine: the evaluator.

        Raises:
            ValueError: when the prediction count is not a multiple of the batch's series.
        """
        batch = engine.state.batch
        series = batch[self.series_key]
        b, n = int(series.shape[0]), int(series.shape[1])
        pred = torch.as_tensor(engine.state.output["pred"]).detach().cpu()
        if pred.shape[0] != b * n:
            raise MonaiTFMError(f"expected {b * n} frame predictions ({b} series of {n}), got {pred.shape[0]}.")
        labels = pred.argmax(dim=1).to(torch.uint8)  # (B * N, *S)
        subjects = batch.get("subject", [f"series_{len(self.written) + i:04d}" for i in range(b)])
        affines = getattr(series, "affine", None)
        for i in range(b):
            seg = labels[i * n : (i + 1) * n].numpy()
            seg = np.moveaxis(seg, 0, -1)  # (*S, N): time last, as a 4D NIfTI
            aff = np.eye(4) if affines is None else torch.as_tensor(affines).reshape(-1, 4, 4)[i].numpy()
            path = self.output_dir / f"{subjects[i]}_seg.nii.gz"
            atomic_save_nifti(np.ascontiguousarray(seg), aff, path, overwrite=self.overwrite)
            self.written.append(path)
        logger.info("wrote %d segmentation series to %s", b, self.output_dir)
