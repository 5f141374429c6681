# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""Inferer of the direct-prediction baselines: one network call from the context to the forecast (docs/method.md
section 8)."""

from __future__ import annotations

from typing import Any

import torch
from monai.inferers import Inferer

__all__ = ["DirectInferer"]


class DirectInferer(Inferer):
    """Forecast with one call ``network(context, frame_times=..., frame_mask=..., target_time=...)``.

    Exposes the attributes the evaluation report reads from :class:`monai_tfm.inferers.ForecastInferer`, so the same
    ``ForecastReportWriter`` describes both: ``method = "direct"``, ``steps = 1``, ``last_nfe = 1`` per call.
    Parameter-free networks (LCI, linear extrapolation) work as well.

    Attributes:
        method: ``"direct"``.
        steps: 1.
        last_nfe: network evaluations of the last call (1).
        last_std: always ``None`` (deterministic).
    """

    def __init__(self) -> None:
        super().__init__()
        self.method = "direct"
        self.steps = 1
        self.last_nfe = 0
        self.last_std: torch.Tensor | None = None

    def __call__(
        self,
        inputs: torch.Tensor,
        network: Any,
        *args: Any,
        frame_times: torch.Tensor | None = None,
        frame_mask: torch.Tensor | None = None,
        target_time: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        """Forecast a batch.

        Args:
            inputs: context ``(B, T, C, D, H, W)``.
            network: a direct forecaster (:class:`monai_tfm.networks.DirectForecaster` contract).
            args: unused positional arguments (MONAI passes the prepare-batch ``args``).
            frame_times: ``(B, T)`` scaled context times.
            frame_mask: ``(B, T)`` bool, real frames.
            target_time: ``(B,)`` scaled target time.
            kwargs: extra keyword arguments passed to the network.

        Returns:
            the forecast ``(B, C, D, H, W)``.
        """
        out = network(inputs, frame_times=frame_times, frame_mask=frame_mask, target_time=target_time, **kwargs)
        self.last_nfe = 1
        return out
