# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""The forecasting inferer: integrate the learned velocity field from the context and reduce the frames.

One inferer serves validation, evaluation, ``inference.yaml``, the ``monai-tfm forecast`` command and MONAI
Label (docs/DESIGN.md).
"""

from __future__ import annotations

from typing import Any

import torch
from monai.inferers import Inferer

from monai_tfm.flows.path import flowed_times, reduce_frames, tie_padding
from monai_tfm.flows.solvers import euler_maruyama, integrate
from monai_tfm.utils.errors import MonaiTFMError

__all__ = ["ForecastInferer"]


class ForecastInferer(Inferer):
    """Forecast by solving ``dX/dtau = v_theta(X, cond(tau))`` from the context stack over [0, 1].

    Args:
        method: torchdiffeq solver (``euler``, ``midpoint``, ``rk4``, ``dopri5``) or ``euler_maruyama``.
        steps: fixed steps (ignored by adaptive solvers).
        aggregation: ``"mean"`` over counted frames or ``"last"`` counted frame.
        rtol: adaptive tolerance.
        atol: adaptive tolerance.
        num_samples: stochastic sampling (``euler_maruyama`` with ``diffusion > 0``): number of samples whose
            mean is the forecast; their per-voxel standard deviation is kept in ``last_std``.
        diffusion: SDE noise scale (the training ``sigma``).
        seed: seed of the stochastic sampler (``None``: torch's global state).

    Attributes:
        last_nfe: network evaluations of the last call (summed over samples).
        last_std: per-voxel standard deviation of the last stochastic call, else ``None``.
        last_states: the K end states of the last call (before aggregation; first sample only if stochastic).
    """

    def __init__(
        self,
        method: str = "euler",
        steps: int = 10,
        aggregation: str = "mean",
        rtol: float = 1e-5,
        atol: float = 1e-5,
        num_samples: int = 1,
        diffusion: float = 0.0,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        if aggregation not in ("mean", "last"):
            raise MonaiTFMError(f"aggregation must be 'mean' or 'last', got {aggregation!r}.")
        if num_samples < 1:
            raise MonaiTFMError(f"num_samples must be >= 1, got {num_samples}.")
        self.method = method
        self.steps = int(steps)
        self.aggregation = aggregation
        self.rtol = rtol
        self.atol = atol
        self.num_samples = int(num_samples)
        self.diffusion = float(diffusion)
        self.seed = seed
        self.last_nfe = 0
        self.last_std: torch.Tensor | None = None
        self.last_states: torch.Tensor | None = None

    def __call__(
        self,
        inputs: torch.Tensor,
        network: Any,
        *args: Any,
        frame_times: torch.Tensor | None = None,
        frame_mask: torch.Tensor | None = None,
        target_time: torch.Tensor | None = None,
        count_mask: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        """Forecast a batch.

        Args:
            inputs: context stack ``X0`` ``(B, K, C, D, H, W)``.
            network: velocity network ``(x, tau, frame_times, frame_mask, target_time) -> v``.
            args: unused positional arguments (MONAI passes the prepare-batch ``args``).
            frame_times: ``(B, K)`` scaled context times (continuous variant), else ``None``.
            frame_mask: ``(B, K)`` real frames (continuous variant).
            target_time: ``(B,)`` scaled target time (continuous variant, or a discrete network that encodes it).
            count_mask: ``(B, K)`` frames that enter the aggregation (``None``: all).
            kwargs: extra keyword arguments passed to the network.

        Returns:
            the forecast ``(B, C, D, H, W)``.

        Raises:
            ValueError: continuous inputs without a target time, or an unknown solver.
        """
        if frame_times is not None and target_time is None:
            raise MonaiTFMError("continuous forecasting needs target_time together with frame_times.")
        b = inputs.shape[0]

        def velocity(tau: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
            tau_b = tau.to(x.dtype).expand(b)
            if frame_times is None:
                return network(x, tau_b, target_time=target_time, **kwargs)
            times = flowed_times(frame_times, target_time, tau_b)
            if frame_mask is not None:
                x = tie_padding(x, frame_mask)
            return network(x, tau_b, frame_times=times, frame_mask=frame_mask, target_time=target_time, **kwargs)

        if frame_mask is not None:
            inputs = tie_padding(inputs, frame_mask)
        stochastic = self.method == "euler_maruyama"
        n = self.num_samples if stochastic else 1
        generator = None
        if stochastic and self.seed is not None:
            generator = torch.Generator(device="cpu").manual_seed(int(self.seed))
        forecasts, nfe, states = [], 0, None
        for _ in range(n):
            if stochastic:
                res = euler_maruyama(velocity, inputs, self.steps, self.diffusion, generator)
            else:
                res = integrate(velocity, inputs, self.method, self.steps, self.rtol, self.atol)
            nfe += res.nfe
            end = tie_padding(res.x, frame_mask) if frame_mask is not None else res.x
            states = end if states is None else states
            forecasts.append(reduce_frames(end, count_mask, self.aggregation))
        self.last_nfe = nfe
        self.last_states = states
        if n == 1:
            self.last_std = None
            return forecasts[0]
        stack = torch.stack(forecasts)
        self.last_std = stack.std(dim=0)
        return stack.mean(dim=0)
