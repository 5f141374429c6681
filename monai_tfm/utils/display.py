# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""What the PNG previews show of an image (forecast panels, generated-sample grids), and the forecast panel itself."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from monai_tfm.utils.errors import MonaiTFMError
from monai_tfm.utils.io import atomic_path

__all__ = ["middle_slice", "require_matplotlib", "write_forecast_preview"]


def require_matplotlib(what: str, error: type[Exception] = MonaiTFMError, hint: str = "") -> None:
    """Check that matplotlib (the ``plot`` extra) is installed, before any output is written.

    Args:
        what: the option or output that needs it, for the message (``--preview``).
        error: the exception class raised (the caller's user error).
        hint: another way out, appended to the message (e.g. ``pass --preview false``).

    Raises:
        MonaiTFMError: (``error``) one line saying how to install it.
    """
    # find_spec, not an import: nothing is loaded for the check, and a module masked as None counts as missing
    if importlib.util.find_spec("matplotlib") is None:
        raise error(f"{what} needs matplotlib: pip install 'monai_tfm[plot]'" + (f", or {hint}." if hint else "."))


def middle_slice(image: torch.Tensor) -> np.ndarray:
    """A 2D view of ``(C, *spatial)`` (first channel): a 2D image as is, a volume's middle slice across its last axis;
    transposed so that the first spatial axis runs up in ``imshow(..., origin="lower")``.

    Args:
        image: ``(C, H, W)`` or ``(C, H, W, D)`` on the CPU.

    Returns:
        the 2D array.
    """
    arr = image[0].numpy()
    if arr.ndim == 3:
        arr = arr[..., arr.shape[-1] // 2]
    return arr.T


def write_forecast_preview(
    path: str | os.PathLike,
    frames: torch.Tensor,
    times: Sequence[float],
    pred: torch.Tensor,
    target_time: float,
    truth: torch.Tensor | None,
    std: torch.Tensor | None,
    title: str,
    overwrite: bool,
) -> Path:
    """PNG panel: middle slices of the latest context scans (up to 6), the forecast, the sample spread, and the real
    scan and the residual when known; all on the [0, 1] scale.

    Args:
        path: the PNG file (written atomically).
        frames: context scans ``(T, C, *spatial)``.
        times: their times.
        pred: the forecast ``(C, *spatial)``.
        target_time: its time.
        truth: the real scan at ``target_time`` (or None).
        std: the per-voxel spread of stochastic samples (or None).
        title: figure title.
        overwrite: replace an existing file.

    Returns:
        the path.
    """
    require_matplotlib("--preview")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    shown = list(range(len(times)))[-6:]
    panels: list[tuple[str, np.ndarray, dict]] = [
        (f"scan t={times[i]:.3g}", middle_slice(frames[i]), {"cmap": "gray", "vmin": 0, "vmax": 1}) for i in shown
    ]
    panels.append((f"forecast t={target_time:.3g}", middle_slice(pred), {"cmap": "gray", "vmin": 0, "vmax": 1}))
    if std is not None:
        panels.append(("sample std", middle_slice(std), {"cmap": "magma", "vmin": 0}))
    if truth is not None:
        residual = middle_slice(pred - truth)
        lim = float(max(np.abs(residual).max(), 1e-6))
        panels.append((f"real scan t={target_time:.3g}", middle_slice(truth), {"cmap": "gray", "vmin": 0, "vmax": 1}))
        panels.append(("forecast - real", residual, {"cmap": "RdBu_r", "vmin": -lim, "vmax": lim}))
    fig = Figure(figsize=(2.2 * len(panels), 2.6), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (name, image, style) in zip(axes, panels):
        im = ax.imshow(image, origin="lower", interpolation="nearest", **style)
        ax.set_title(name, fontsize=9)
        ax.set_axis_off()
        if style["cmap"] != "gray":
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(path, overwrite=overwrite) as tmp:
        fig.savefig(tmp, format="png")
    return Path(path)
