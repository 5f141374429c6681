# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""ODE-LSTM / NODE+LSTM baseline (Lechner & Hasani 2020, as benchmarked in CRONOS; docs/method.md section 8).

A convolutional LSTM whose hidden state evolves continuously between the irregular acquisition times: the hidden
state follows a learned ODE (solved with torchdiffeq's ``odeint``) from one observation to the next, the LSTM cell
updates it at every real frame, and after the last frame it evolves to the target time and is decoded. Samples of a
batch have different time gaps, while ``odeint`` integrates one shared time grid, so every interval is
reparametrised onto ``s in [0, 1]``: ``dh/ds = (t_1 - t_0) f(h)``; a zero gap (padding) leaves ``h`` unchanged.
"""

from __future__ import annotations

import torch
from monai.networks.layers import Conv
from torch import nn
from torchdiffeq import odeint

from monai_tfm.networks.baselines.base import ConvDecoder, ConvEncoder, DirectForecaster, group_norm
from monai_tfm.networks.baselines.convlstm import ConvLSTMCell
from monai_tfm.utils.errors import MonaiTFMError

__all__ = ["ODEFunc", "ODELSTM3D"]

# torchdiffeq's fixed-grid solvers (they take options={"step_size": ...}); the flow solvers' registry is
# monai_tfm.flows.solvers, which this latent ODE does not share (it also allows the Adams methods)
_GRID_SOLVERS = ("euler", "midpoint", "rk4", "explicit_adams", "implicit_adams")


class ODEFunc(nn.Module):
    """Autonomous vector field of the hidden state: ``f(h) = tanh(Conv(SiLU(GN(Conv(h)))))`` (bounded, so that long
    gaps cannot blow the state up).

    Args:
        spatial_dims: number of spatial dimensions.
        channels: channels of the hidden state.
        hidden_channels: width of the field network.
        norm_groups: GroupNorm groups.
    """

    def __init__(self, spatial_dims: int, channels: int, hidden_channels: int = 32, norm_groups: int = 8) -> None:
        super().__init__()
        conv = Conv[Conv.CONV, spatial_dims]
        self.net = nn.Sequential(
            conv(channels, hidden_channels, kernel_size=3, padding=1),
            group_norm(hidden_channels, norm_groups),
            nn.SiLU(),
            conv(hidden_channels, channels, kernel_size=3, padding=1),
            nn.Tanh(),
        )

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """Evaluate the field.

        Args:
            h: ``(B, channels, *S)``.

        Returns:
            ``dh/dt`` of the same shape.
        """
        return self.net(h)


class ODELSTM3D(DirectForecaster):
    """ODE-LSTM on encoded frames: continuous-time hidden state between irregular observations.

    For each sample, with ``t_prev`` the time of the previous real frame: ``h <- ODESolve(f, h, t_i - t_prev)``, then
    ``(h, c) <- LSTMCell(enc(I_i), h, c)`` at every real frame ``i``; finally ``h <- ODESolve(f, h, t_target -
    t_last)`` and ``decode(h)``. Padded slots neither evolve nor update the state. The forecast therefore depends on
    the acquisition times and on the target time.

    Args:
        spatial_dims: number of spatial dimensions.
        in_channels: channels ``C`` per frame.
        hidden_channels: channels of the LSTM state.
        encoder_channels: width of the frame encoder / decoder.
        ode_channels: width of the ODE field network.
        num_down: encoder downsampling stages (per-axis strides).
        solver: torchdiffeq method (``euler``, ``midpoint``, ``rk4``, ... or adaptive ``dopri5``).
        solver_steps: fixed-step solvers: steps per interval.
        rtol: adaptive solvers' relative tolerance.
        atol: adaptive solvers' absolute tolerance.
        min_size: an axis is halved only while it stays at least this large.
        norm_groups: GroupNorm groups.

    Attributes:
        last_nfe: ODE field evaluations of the last forward call.
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        hidden_channels: int = 16,
        encoder_channels: int = 16,
        ode_channels: int = 32,
        num_down: int = 2,
        solver: str = "rk4",
        solver_steps: int = 2,
        rtol: float = 1e-4,
        atol: float = 1e-4,
        min_size: int = 4,
        norm_groups: int = 8,
    ) -> None:
        super().__init__()
        if solver_steps < 1:
            raise MonaiTFMError(f"solver_steps must be >= 1, got {solver_steps}.")
        self.spatial_dims = int(spatial_dims)
        self.in_channels = int(in_channels)
        self.solver = solver
        self.solver_steps = int(solver_steps)
        self.rtol = float(rtol)
        self.atol = float(atol)
        self.encoder = ConvEncoder(spatial_dims, in_channels, encoder_channels, num_down, min_size, norm_groups)
        self.cell = ConvLSTMCell(spatial_dims, encoder_channels, hidden_channels)
        self.field = ODEFunc(spatial_dims, hidden_channels, ode_channels, norm_groups)
        self.decoder = ConvDecoder(
            spatial_dims, hidden_channels, encoder_channels, in_channels, num_down, 0, norm_groups
        )
        self.last_nfe = 0

    def evolve(self, h: torch.Tensor, dt: torch.Tensor) -> torch.Tensor:
        """Evolve the hidden state of every sample by its own time span ``dt`` (negative: backwards).

        Args:
            h: ``(B, F, *s)``.
            dt: ``(B,)`` time spans.

        Returns:
            the evolved state.
        """
        if not bool((dt != 0).any()):
            return h
        scale = dt.reshape(-1, *([1] * (h.ndim - 1))).to(h.dtype)

        def velocity(s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            self.last_nfe += 1
            return scale * self.field(y)

        grid = torch.tensor([0.0, 1.0], dtype=h.dtype, device=h.device)
        if self.solver in _GRID_SOLVERS:
            out = odeint(velocity, h, grid, method=self.solver, options={"step_size": 1.0 / self.solver_steps})
        else:
            out = odeint(velocity, h, grid, method=self.solver, rtol=self.rtol, atol=self.atol)
        return out[-1]

    def predict(
        self, context: torch.Tensor, times: torch.Tensor, mask: torch.Tensor, target_time: torch.Tensor
    ) -> torch.Tensor:
        """Forecast from checked inputs (see :meth:`DirectForecaster.predict`)."""
        self.last_nfe = 0
        b, t = context.shape[:2]
        z, sizes, _ = self.encoder(context.flatten(0, 1))
        z = z.reshape(b, t, *z.shape[1:])
        h = z.new_zeros(b, self.cell.hidden_channels, *z.shape[3:])
        c = torch.zeros_like(h)
        rows = torch.arange(b, device=context.device)
        t_prev = times[rows, torch.argmax(mask.to(torch.uint8), dim=1)]  # first real frame: no evolution before it
        for step in range(t):
            real = mask[:, step]
            h = self.evolve(h, torch.where(real, times[:, step] - t_prev, torch.zeros_like(t_prev)))
            h_new, c_new = self.cell(z[:, step], (h, c))
            keep = real.reshape(b, *([1] * (h.ndim - 1)))
            h, c = torch.where(keep, h_new, h), torch.where(keep, c_new, c)
            t_prev = torch.where(real, times[:, step], t_prev)
        h = self.evolve(h, target_time - t_prev)
        return self.decoder(h, sizes)
