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
"""Time codes of the velocity networks: Fourier features and the conditioning vector (docs/method.md section 4.3)."""

from __future__ import annotations

import math

import torch
from torch import nn

from monai_tfm.utils.errors import MonaiTFMError

__all__ = ["FourierFeatures", "TimeConditioning", "broadcast_tau"]

_MODES = ("discrete", "continuous")


def broadcast_tau(
    tau: float | torch.Tensor, batch_size: int, device: torch.device | None = None, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """Turn a flow step given as a python number, a 0-d/one-element tensor or a per-sample tensor into shape `(B,)`.

    Args:
        tau: flow step(s) in [0, 1]: a number, a tensor with one element, or a tensor with `batch_size` elements
            (e.g. `(B,)` or `(B, 1)`).
        batch_size: the batch size `B`.
        device: device of the result (default: that of `tau`, or CPU for numbers).
        dtype: floating dtype of the result (default: `torch.get_default_dtype()`).

    Returns:
        a tensor of shape `(B,)`.

    Raises:
        ValueError: when `tau` has neither one nor `batch_size` elements.
    """
    if torch.jit.is_scripting():
        tau_t = _tau_tensor(tau).to(device=device)
        if dtype is not None:
            tau_t = tau_t.to(dtype=dtype)
    else:
        tau_t = torch.as_tensor(tau, device=device).to(dtype=dtype or torch.get_default_dtype())
    if tau_t.numel() == 1:
        return tau_t.reshape(1).expand(batch_size)
    if tau_t.numel() != batch_size:
        raise MonaiTFMError(f"tau must have 1 or batch_size={batch_size} elements, got shape {list(tau_t.shape)}.")
    return tau_t.reshape(batch_size)


def _tau_tensor(tau: float | torch.Tensor) -> torch.Tensor:
    """A number or a tensor as a tensor (TorchScript: one refinement of the union, in a function of its own, because
    a refined union variable used again after the branch does not survive ``torch.jit.save``/``load``)."""
    if isinstance(tau, torch.Tensor):
        return tau
    return torch.tensor(tau)


class FourierFeatures(nn.Module):
    """Fourier features of a scalar time: `gamma(t) = [sin(2 pi f_k t), cos(2 pi f_k t)]_{k=1..K_f}`.

    The frequencies `f_k` are log-spaced from `min_freq` to `max_freq` and stored as a (non-trainable) buffer,
    so they travel with the module's device and state dict.

    Args:
        num_features: number of frequencies `K_f`; the output has `2 * K_f` values per time.
        max_freq: highest frequency (cycles per time unit).
        min_freq: lowest frequency (cycles per time unit).

    Raises:
        ValueError: when `num_features < 1` or the frequency range is not positive and increasing.
    """

    def __init__(self, num_features: int = 16, max_freq: float = 32.0, min_freq: float = 1.0) -> None:
        super().__init__()
        if num_features < 1:
            raise MonaiTFMError(f"num_features must be >= 1, got {num_features}.")
        if not 0 < min_freq <= max_freq:
            raise MonaiTFMError(f"need 0 < min_freq <= max_freq, got min_freq={min_freq}, max_freq={max_freq}.")
        freqs = torch.logspace(math.log10(min_freq), math.log10(max_freq), num_features, dtype=torch.float64)
        self.register_buffer("freqs", freqs.to(torch.get_default_dtype()))
        self.num_features = num_features

    @property
    def out_dim(self) -> int:
        """Length of the code of one time (`2 * num_features`)."""
        return 2 * self.num_features

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """Encode times.

        Args:
            t: times of any shape `(*S)`.

        Returns:
            the codes, shape `(*S, 2 * num_features)` (sines first, then cosines).
        """
        if not t.is_floating_point():
            t = t.to(self.freqs.dtype)
        angles = 2 * math.pi * t.unsqueeze(-1) * self.freqs.to(t.dtype)
        return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)


class TimeConditioning(nn.Module):
    """Conditioning vector of the velocity networks from the flow step and (optionally) acquisition times.

    The code is the concatenation of

    * `gamma(tau)`, the Fourier features of the flow step (always);
    * in `"continuous"` mode, the mean of `gamma(t_i)` over the real frames (CRONOS eq. 11; frames with
      `frame_mask` False are excluded; a row without any real frame contributes zeros);
    * with `use_target_time`, `gamma(target_time)`. In `"continuous"` mode (on by default) a one-step solver would
      not see the target time without it at `tau = 0` (all flowed frame times still equal the context times). In
      `"discrete"` mode (off by default, the papers' discrete CRONOS and TFM) it tells the network which time to
      forecast: on a fixed grid the slots carry the context times but nothing carries the target's, so a protocol
      that draws the target among several times (ACDC: any phase 4..11 after a gap of 3) leaves a time-blind
      network to forecast the average over the targets its context allows;

    followed by an MLP `Linear - SiLU - Linear` to `cond_dim`. In `"discrete"` mode the context times enter only
    through the slot position, so `frame_times` is ignored (and `target_time` unless `use_target_time`).

    Args:
        cond_dim: size of the conditioning vector.
        num_features: number of Fourier frequencies `K_f` per time.
        mode: `"discrete"` (tau only) or `"continuous"` (tau, frame times and target time).
        use_target_time: also encode `target_time` (``None``: in continuous mode only).
        max_freq: highest Fourier frequency.
        min_freq: lowest Fourier frequency.
        hidden_dim: width of the MLP's hidden layer (default `cond_dim`).

    Raises:
        ValueError: for an unknown `mode`.
    """

    def __init__(
        self,
        cond_dim: int = 128,
        num_features: int = 16,
        mode: str = "discrete",
        use_target_time: bool | None = None,
        max_freq: float = 32.0,
        min_freq: float = 1.0,
        hidden_dim: int | None = None,
    ) -> None:
        super().__init__()
        if mode not in _MODES:
            raise MonaiTFMError(f"mode must be one of {_MODES}, got {mode!r}.")
        self.mode = mode
        self.use_target_time = mode == "continuous" if use_target_time is None else bool(use_target_time)
        self.cond_dim = cond_dim
        self.fourier = FourierFeatures(num_features=num_features, max_freq=max_freq, min_freq=min_freq)
        n_codes = 1 + int(mode == "continuous") + int(self.use_target_time)
        self.in_dim = n_codes * self.fourier.out_dim
        hidden_dim = hidden_dim or cond_dim
        self.mlp = nn.Sequential(nn.Linear(self.in_dim, hidden_dim), nn.SiLU(), nn.Linear(hidden_dim, cond_dim))

    def forward(
        self,
        tau: float | torch.Tensor,
        frame_times: torch.Tensor | None = None,
        frame_mask: torch.Tensor | None = None,
        target_time: torch.Tensor | None = None,
        batch_size: int | None = None,
    ) -> torch.Tensor:
        """Build the conditioning vector.

        Args:
            tau: flow step, `(B,)`, or a number / one-element tensor broadcast to the batch.
            frame_times: `(B, K)` (flowed, scaled) frame times; required in continuous mode, ignored in discrete.
            frame_mask: `(B, K)` bool, True for real frames; default all real. Continuous mode only.
            target_time: `(B,)` (or a number) scaled target time; required when `use_target_time`.
            batch_size: `B`, needed only when it cannot be read from `tau` or `frame_times`.

        Returns:
            the conditioning vector, `(B, cond_dim)`.

        Raises:
            ValueError: for missing or mis-shaped continuous-mode inputs, or an unknown batch size.
        """
        dtype = self.fourier.freqs.dtype
        device = self.fourier.freqs.device
        if torch.jit.is_scripting():
            tau_t = _tau_tensor(tau)
        else:
            tau_t = torch.as_tensor(tau)
        if batch_size is not None:
            b = batch_size
        elif frame_times is not None and self.mode == "continuous":
            b = frame_times.shape[0]
        elif tau_t.dim() > 0:
            b = tau_t.shape[0]
        else:
            raise MonaiTFMError("batch_size is needed when tau is a scalar and there are no frame times.")
        tau_b = broadcast_tau(tau_t, b, device=device, dtype=dtype)
        codes = [self.fourier(tau_b)]
        if self.mode == "continuous":
            codes.append(self._frame_code(frame_times, frame_mask, b))
        if self.use_target_time:
            if target_time is None:
                raise MonaiTFMError(f"{self.mode} time conditioning with use_target_time=True needs target_time (B,).")
            codes.append(self.fourier(broadcast_tau(target_time, b, device=device, dtype=dtype)))
        return self.mlp(torch.cat(codes, dim=-1))

    def _frame_code(
        self, frame_times: torch.Tensor | None, frame_mask: torch.Tensor | None, batch_size: int
    ) -> torch.Tensor:
        """Masked mean of the frame-time codes (CRONOS eq. 11); zeros for rows without a real frame."""
        if frame_times is None:
            raise MonaiTFMError("continuous time conditioning needs frame_times (B, K); got None.")
        if not torch.jit.is_scripting():
            frame_times = torch.as_tensor(frame_times)
        frame_times = frame_times.to(device=self.fourier.freqs.device, dtype=self.fourier.freqs.dtype)
        if frame_times.dim() != 2 or frame_times.shape[0] != batch_size:
            raise MonaiTFMError(f"frame_times must have shape (B={batch_size}, K), got {list(frame_times.shape)}.")
        gam = self.fourier(frame_times)  # (B, K, F)
        if frame_mask is None:
            return gam.mean(dim=1)
        if not torch.jit.is_scripting():
            frame_mask = torch.as_tensor(frame_mask)
        frame_mask = frame_mask.to(device=gam.device)
        if frame_mask.shape != frame_times.shape:
            raise MonaiTFMError(
                f"frame_mask shape {list(frame_mask.shape)} must match frame_times shape {list(frame_times.shape)}."
            )
        weights = frame_mask.to(gam.dtype).unsqueeze(-1)  # (B, K, 1)
        # torch.where (not a product) so that non-finite times of padded frames cannot leak in as NaN
        total = torch.where(weights > 0, gam, torch.zeros_like(gam)).sum(dim=1)
        return total / weights.sum(dim=1).clamp_min(1.0)
