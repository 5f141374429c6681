# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""3D ConvLSTM baseline (Shi et al. 2015, as benchmarked in TFM/CRONOS; docs/method.md section 8).

MONAI has no convolutional LSTM, so the cell is written here: the gates of an LSTM computed by one convolution over
the concatenated input and hidden state.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.layers import Conv
from torch import nn

from monai_tfm.networks.baselines.base import ConvDecoder, ConvEncoder, DirectForecaster, time_to_target
from monai_tfm.utils.errors import MonaiTFMError

__all__ = ["ConvLSTMCell", "ConvLSTM3D"]


class ConvLSTMCell(nn.Module):
    """One convolutional LSTM cell: ``i, f, o, g = split(Conv([x, h]))``, ``c' = f c + i g``, ``h' = o tanh(c')``.

    Args:
        spatial_dims: number of spatial dimensions.
        in_channels: channels of the input ``x``.
        hidden_channels: channels of ``h`` and ``c``.
        kernel_size: odd kernel size of the gate convolution.
    """

    def __init__(self, spatial_dims: int, in_channels: int, hidden_channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise MonaiTFMError(f"kernel_size must be odd, got {kernel_size}.")
        self.hidden_channels = int(hidden_channels)
        self.gates = Conv[Conv.CONV, spatial_dims](
            in_channels + hidden_channels, 4 * hidden_channels, kernel_size=kernel_size, padding=kernel_size // 2
        )
        with torch.no_grad():  # forget-gate bias 1: remember by default (standard LSTM initialisation)
            self.gates.bias[hidden_channels : 2 * hidden_channels].fill_(1.0)

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """One step.

        Args:
            x: ``(B, in_channels, *S)``.
            state: ``(h, c)``, each ``(B, hidden_channels, *S)``.

        Returns:
            the new ``(h, c)``.
        """
        h, c = state
        i, f, o, g = torch.chunk(self.gates(torch.cat([x, h], dim=1)), 4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c


class ConvLSTM3D(DirectForecaster):
    """Stacked ConvLSTM over the real context frames in time order, then a convolutional decoder to the target.

    Every frame (plus, with ``use_time``, a constant channel holding its time to the target ``t_target - t_i``) is
    encoded by a shared strided conv encoder; the cells run at that resolution; padded slots (mask False) leave the
    state untouched, so padding never changes the forecast. The top hidden state after the last real frame is decoded
    to the target volume (direct prediction, MSE-trained as in the papers).

    Args:
        spatial_dims: number of spatial dimensions.
        in_channels: channels ``C`` per frame.
        hidden_channels: hidden channels of each stacked cell.
        kernel_size: gate convolution kernel.
        encoder_channels: width of the frame encoder / decoder.
        num_down: encoder downsampling stages (per-axis strides: thin volumes keep their short axis).
        min_size: an axis is halved only while it stays at least this large.
        norm_groups: GroupNorm groups of encoder and decoder.
        use_time: feed ``t_target - t_i`` as an extra input channel (without it the model is time-blind).
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        hidden_channels: Sequence[int] = (16, 16),
        kernel_size: int = 3,
        encoder_channels: int = 16,
        num_down: int = 1,
        min_size: int = 4,
        norm_groups: int = 8,
        use_time: bool = True,
    ) -> None:
        super().__init__()
        hidden = [int(h) for h in hidden_channels]
        if not hidden:
            raise MonaiTFMError("hidden_channels needs at least one cell.")
        self.spatial_dims = int(spatial_dims)
        self.in_channels = int(in_channels)
        self.use_time = bool(use_time)
        self.needs_time = self.use_time
        self.encoder = ConvEncoder(
            spatial_dims, in_channels + int(self.use_time), encoder_channels, num_down, min_size, norm_groups
        )
        ins = [encoder_channels] + hidden[:-1]
        self.cells = nn.ModuleList(ConvLSTMCell(spatial_dims, i, h, kernel_size) for i, h in zip(ins, hidden))
        self.decoder = ConvDecoder(spatial_dims, hidden[-1], encoder_channels, in_channels, num_down, 0, norm_groups)

    def predict(
        self, context: torch.Tensor, times: torch.Tensor, mask: torch.Tensor, target_time: torch.Tensor
    ) -> torch.Tensor:
        """Forecast from checked inputs (see :meth:`DirectForecaster.predict`)."""
        b, t = context.shape[:2]
        spatial = context.shape[3:]
        x = context.flatten(0, 1)
        if self.use_time:
            dt = time_to_target(times, target_time, mask).reshape(b * t, 1, *([1] * len(spatial)))
            x = torch.cat([x, dt.expand(b * t, 1, *spatial)], dim=1)
        z, sizes, _ = self.encoder(x)
        z = z.reshape(b, t, *z.shape[1:])
        states = [
            (z.new_zeros(b, cell.hidden_channels, *z.shape[3:]), z.new_zeros(b, cell.hidden_channels, *z.shape[3:]))
            for cell in self.cells
        ]
        for step in range(t):
            keep = mask[:, step].reshape(b, *([1] * (z.ndim - 2)))
            inp = z[:, step]
            for layer, cell in enumerate(self.cells):
                h, c = cell(inp, states[layer])
                h_old, c_old = states[layer]
                states[layer] = (torch.where(keep, h, h_old), torch.where(keep, c, c_old))
                inp = states[layer][0]
        return self.decoder(states[-1][0], sizes)
