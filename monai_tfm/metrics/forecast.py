# Copyright (c) monai_tfm contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""Per-sample forecast metrics (docs/method.md section 7).

All metrics are computed on the ``[0, 1]`` intensity scale for one sample of shape ``(C, D, H, W)`` (or a batch of
shape ``(B, C, D, H, W)``), comparing a prediction with the target frame and with the last-context-image (LCI)
baseline ``last_context``:

* ``mse``, ``rmse``: over every element (all channels and voxels), prediction **not** clipped.
* ``nrmse``: ``rmse / (max(target) - min(target))``; ``nan`` (with a logged warning) for a constant target.
* ``psnr``: ``10 log10(1 / MSE)`` with data range 1, prediction clipped to ``[0, 1]``; ``inf`` for a perfect
  prediction (no cap is applied).
* ``ssim``: 3D SSIM x100 (Gaussian window 11, sigma 1.5, K1 0.01, K2 0.03, data range 1), prediction clipped to
  ``[0, 1]``. Along an axis shorter than 11 voxels the window shrinks to the largest odd size that fits and the
  Gaussian (sigma still 1.5) is truncated to that support and renormalised. The local statistics are computed by
  MONAI's :py:func:`monai.metrics.regression.compute_ssim_and_cs`, which uses a *valid* convolution (no padding):
  the SSIM map only covers the positions where the whole window lies inside the volume, and its mean is taken over
  that map and over channels (all channels have the same map size, so this equals the mean of per-channel SSIMs).
  Local variances are the biased (window-weighted) moments ``E[x^2] - E[x]^2``. MONAI computes SSIM in float32
  (it casts its inputs), so on smooth volumes the result differs from a float64 computation by up to ~2e-3 on the
  x100 scale; it convolves with the dense 3D kernel (11^3 taps), which is slow on CPU for large volumes (about 6 s for
  one 128^3 volume on 2 cores) and fast on a GPU, where the inputs stay when ``pred`` is a GPU tensor.
* ``change_rmse``: RMSE over the change region, the elements where ``|target - last_context| > change_threshold``
  (0.05 by default); ``nan`` when the region is empty. The region is taken element-wise, so each channel has its
  own region.
* ``skill``: ``1 - MSE(pred, target) / MSE(last_context, target)`` over the volume (> 0 beats LCI, LCI itself
  scores 0); ``nan`` when ``MSE(last_context, target) == 0``.
* ``change_skill``: the same restricted to the change region; ``nan`` when the region is empty.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from monai.metrics import MSEMetric, PSNRMetric
from monai.metrics.regression import compute_ssim_and_cs

from monai_tfm.utils.errors import MonaiTFMError

__all__ = [
    "CHANGE_THRESHOLD",
    "FORECAST_METRICS",
    "HIGHER_IS_BETTER",
    "SSIM_K1",
    "SSIM_K2",
    "SSIM_SIGMA",
    "SSIM_WIN_SIZE",
    "compute_forecast_metrics",
    "compute_forecast_metrics_batch",
    "ssim_window_sizes",
]

logger = logging.getLogger(__name__)

FORECAST_METRICS: tuple[str, ...] = ("mse", "rmse", "nrmse", "psnr", "ssim", "change_rmse", "skill", "change_skill")
"""Names of the metrics returned by :py:func:`compute_forecast_metrics`, in report order."""

HIGHER_IS_BETTER: Mapping[str, bool] = {
    "mse": False,
    "rmse": False,
    "nrmse": False,
    "psnr": True,
    "ssim": True,
    "change_rmse": False,
    "skill": True,
    "change_skill": True,
}
"""For each metric of :py:data:`FORECAST_METRICS`, whether a larger value is better."""

SSIM_WIN_SIZE = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
CHANGE_THRESHOLD = 0.05


def ssim_window_sizes(spatial_shape: Sequence[int], win_size: int = SSIM_WIN_SIZE) -> tuple[int, ...]:
    """Per-axis SSIM window sizes: ``win_size`` where it fits, else the largest odd size that fits.

    Args:
        spatial_shape: the spatial shape ``(D, H, W)`` of the volume.
        win_size: the nominal (odd) window size.

    Returns:
        one odd window size per axis.

    Raises:
        ValueError: when ``win_size`` is not a positive odd integer or an axis is empty.
    """
    if win_size < 1 or win_size % 2 == 0:
        raise MonaiTFMError(f"win_size must be a positive odd integer, got {win_size}.")
    sizes = []
    for n in spatial_shape:
        if n < 1:
            raise MonaiTFMError(f"every spatial axis must be non-empty, got shape {tuple(spatial_shape)}.")
        size = min(win_size, int(n))
        sizes.append(size if size % 2 == 1 else size - 1)
    return tuple(sizes)


def _as_tensor(x: torch.Tensor | np.ndarray, name: str, device: torch.device | None) -> torch.Tensor:
    """Convert to a detached float64 tensor (on ``device`` when given)."""
    if isinstance(x, np.ndarray):
        t = torch.from_numpy(np.asarray(x, dtype=np.float64))
    elif isinstance(x, torch.Tensor):
        t = x.detach().as_subclass(torch.Tensor)  # drop MetaTensor metadata
    else:
        raise TypeError(f"{name} must be a torch.Tensor or numpy.ndarray, got {type(x).__name__}.")
    if device is not None:
        t = t.to(device)
    if t.device.type == "mps":  # no float64 on MPS
        t = t.cpu()
    return t.to(torch.float64)


def _ratio_or_nan(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """``num / den`` where ``den > 0``, else ``nan``."""
    nan = torch.full_like(num, float("nan"))
    return torch.where(den > 0, num / torch.where(den > 0, den, torch.ones_like(den)), nan)


def compute_forecast_metrics_batch(
    pred: torch.Tensor | np.ndarray,
    target: torch.Tensor | np.ndarray,
    last_context: torch.Tensor | np.ndarray,
    change_threshold: float = CHANGE_THRESHOLD,
) -> list[dict[str, float]]:
    """Compute the forecast metrics for every sample of a batch.

    See the module docstring for the definitions.

    Args:
        pred: predicted frames, shape ``(B, C, D, H, W)``, [0, 1] scale (values outside are allowed; they are clipped
            for PSNR and SSIM only).
        target: true frames, same shape.
        last_context: last real context frame (the LCI baseline), same shape.
        change_threshold: a voxel belongs to the change region when ``|target - last_context| > change_threshold``.

    Returns:
        one dict per sample, mapping each name of :py:data:`FORECAST_METRICS` to a Python float.

    Raises:
        ValueError: when the shapes differ or are not 5D.
        TypeError: when an input is neither a tensor nor an array.
    """
    device = pred.device if isinstance(pred, torch.Tensor) else None
    p = _as_tensor(pred, "pred", device)
    y = _as_tensor(target, "target", p.device)
    lci = _as_tensor(last_context, "last_context", p.device)
    if p.ndim != 5:
        raise MonaiTFMError(f"expected (B, C, D, H, W) inputs, got pred of shape {tuple(p.shape)}.")
    if y.shape != p.shape or lci.shape != p.shape:
        raise MonaiTFMError(
            f"pred, target and last_context must have the same shape, got {tuple(p.shape)}, {tuple(y.shape)} and "
            f"{tuple(lci.shape)}."
        )
    batch = p.shape[0]
    if batch == 0:
        return []

    # fresh metric objects: MONAI's cumulative metrics keep a buffer of every call
    mse_metric = MSEMetric(reduction="none")
    psnr_metric = PSNRMetric(max_val=1.0, reduction="none")

    flat_p, flat_y, flat_l = p.reshape(batch, -1), y.reshape(batch, -1), lci.reshape(batch, -1)

    # volume errors (unclipped prediction)
    mse = mse_metric(p, y).reshape(batch)
    rmse = torch.sqrt(mse)
    value_range = flat_y.amax(dim=1) - flat_y.amin(dim=1)
    nrmse = _ratio_or_nan(rmse, value_range)
    mse_lci = mse_metric(lci, y).reshape(batch)
    skill = 1.0 - _ratio_or_nan(mse, mse_lci)

    # change region (unclipped prediction)
    region = (flat_y - flat_l).abs() > change_threshold
    count = region.sum(dim=1).to(torch.float64)
    sq_err = torch.where(region, (flat_p - flat_y) ** 2, torch.zeros_like(flat_p))
    sq_lci = torch.where(region, (flat_l - flat_y) ** 2, torch.zeros_like(flat_l))
    change_mse = _ratio_or_nan(sq_err.sum(dim=1), count)
    change_mse_lci = _ratio_or_nan(sq_lci.sum(dim=1), count)
    change_rmse = torch.sqrt(change_mse)
    change_skill = 1.0 - _ratio_or_nan(change_mse, change_mse_lci)

    # image-quality metrics (clipped prediction)
    p_clip = p.clamp(0.0, 1.0)
    psnr = psnr_metric(p_clip, y).reshape(batch)
    win = ssim_window_sizes(p.shape[2:])
    ssim_map, _ = compute_ssim_and_cs(
        y_pred=p_clip,
        y=y,
        spatial_dims=3,
        kernel_size=win,
        kernel_sigma=(SSIM_SIGMA,) * 3,
        data_range=1.0,
        k1=SSIM_K1,
        k2=SSIM_K2,
    )
    ssim = 100.0 * ssim_map.reshape(batch, -1).to(torch.float64).mean(dim=1)

    for i in range(batch):
        if not value_range[i] > 0:
            logger.warning("sample %d: constant target, nrmse is undefined and set to nan.", i)

    columns = {
        "mse": mse,
        "rmse": rmse,
        "nrmse": nrmse,
        "psnr": psnr,
        "ssim": ssim,
        "change_rmse": change_rmse,
        "skill": skill,
        "change_skill": change_skill,
    }
    values = {k: v.detach().cpu().tolist() for k, v in columns.items()}
    return [{k: float(values[k][i]) for k in FORECAST_METRICS} for i in range(batch)]


def compute_forecast_metrics(
    pred: torch.Tensor | np.ndarray,
    target: torch.Tensor | np.ndarray,
    last_context: torch.Tensor | np.ndarray,
    change_threshold: float = CHANGE_THRESHOLD,
) -> dict[str, float]:
    """Compute the forecast metrics of one sample.

    See the module docstring for the definitions. ``psnr`` is ``inf`` for a perfect prediction; ``nrmse`` is ``nan``
    for a constant target; ``change_rmse`` and ``change_skill`` are ``nan`` when no voxel changes by more than
    ``change_threshold``; ``skill`` is ``nan`` when ``last_context`` equals ``target``.

    Args:
        pred: predicted frame, shape ``(C, D, H, W)``, [0, 1] scale (values outside are allowed; they are clipped for
            PSNR and SSIM only).
        target: true frame, same shape.
        last_context: last real context frame (the LCI baseline), same shape.
        change_threshold: a voxel belongs to the change region when ``|target - last_context| > change_threshold``.

    Returns:
        a dict mapping each name of :py:data:`FORECAST_METRICS` to a Python float.

    Raises:
        ValueError: when the shapes differ or are not 4D.
        TypeError: when an input is neither a tensor nor an array.
    """
    shapes = [tuple(x.shape) for x in (pred, target, last_context)]
    if any(len(s) != 4 for s in shapes):
        raise MonaiTFMError(f"expected (C, D, H, W) inputs, got shapes {shapes}.")
    return compute_forecast_metrics_batch(pred[None], target[None], last_context[None], change_threshold)[0]
