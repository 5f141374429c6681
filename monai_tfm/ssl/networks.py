# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""Networks of longitudinal self-supervision (Ren et al., NeurIPS 2022): a tapped 3D UNet and the SimSiam heads.

:class:`LongitudinalUNet` is the image-to-image network ``G`` that is pretrained and then finetuned for
segmentation. Its layout is the CRONOS velocity UNet (:class:`monai_tfm.networks.CronosUNet`) without the time
conditioning, module for module and with the same parameter names, so that a pretrained encoder can initialise a
forecasting network (:func:`monai_tfm.ssl.init_forecaster_from_pretrained`):

* ``stem``: 1x1 conv ``in_channels -> channels``;
* encoder, per scale ``i`` (width ``w_i = channels * channel_mult[i]``): ``down_blocks[i]`` (a residual block, its
  output is the skip and the tapped *encoder* feature of scale ``i``), then, except at the deepest scale,
  ``downsamples[i]`` (kernel-3 conv with a per-axis stride: an axis is halved only while it stays ``>= min_size``,
  so thin volumes such as 8 cardiac slices work);
* bottleneck: ``mid_block1``, ``mid_block2``;
* decoder, per scale (deepest first): trilinear upsampling to the skip size and ``up_convs[i]`` (k3), concatenation
  with the skip, ``up_blocks[i]`` (the tapped *decoder* feature of scale ``i``; it is the paper's
  ``v_d^ = Conv(Concat(v_e, v_d))``, the partner of the encoder feature of the same scale in the orthogonality term);
* ``head`` (k3 conv + activation) and ``out_conv`` (1x1 to ``out_channels``): the denoising reconstruction during
  pretraining (``out_channels = in_channels``), the class logits during finetuning.

:class:`LongitudinalSSLNet` wraps the UNet with one projector and one predictor MLP per tapped layer and samples
``M`` voxel locations per scale, the same for both timepoints of a pair and for the encoder and decoder features of
that scale.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.layers import Conv, get_act_layer, get_norm_layer
from torch import nn

from monai_tfm.networks.blocks.resample import StridedConvDownsample, compute_down_strides, resize_to
from monai_tfm.utils.errors import MonaiTFMError

__all__ = [
    "LongitudinalResBlock",
    "LongitudinalSSLNet",
    "LongitudinalUNet",
    "PredictorMLP",
    "ProjectorMLP",
    "sample_locations",
]


class LongitudinalResBlock(nn.Module):
    """``Conv(k3) - Norm - Act - Conv(k3) - Norm`` plus a skip (1x1 conv when the width changes).

    MONAI's ``UnetResBlock`` puts a norm on the skip path and an activation after the sum; this block keeps the
    layout and parameter names of :class:`monai_tfm.networks.blocks.FiLMResBlock` (without FiLM), which the weight
    mapping to CRONOS relies on. Norm and activation come from MONAI's layer factories.

    Args:
        spatial_dims: number of spatial dimensions.
        in_channels: input channels.
        out_channels: output channels.
        norm: MONAI norm spec (default GroupNorm with 8 groups, as CRONOS).
        act: MONAI activation spec (default SiLU, as CRONOS).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        norm: str | tuple = ("group", {"num_groups": 8}),
        act: str | tuple = "swish",
    ) -> None:
        super().__init__()
        conv = Conv[Conv.CONV, spatial_dims]
        self.conv1 = conv(in_channels, out_channels, kernel_size=3, padding=1)
        self.norm1 = get_norm_layer(norm, spatial_dims, out_channels)
        self.act = get_act_layer(act)
        self.conv2 = conv(out_channels, out_channels, kernel_size=3, padding=1)
        self.norm2 = get_norm_layer(norm, spatial_dims, out_channels)
        self.skip = conv(in_channels, out_channels, kernel_size=1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block.

        Args:
            x: ``(B, C_in, *S)``.

        Returns:
            ``(B, C_out, *S)``.
        """
        h = self.act(self.norm1(self.conv1(x)))
        return self.norm2(self.conv2(h)) + self.skip(x)


class LongitudinalUNet(nn.Module):
    """Tapped 3D UNet ``G`` of longitudinal self-supervision (see the module notes for the layout).

    Args:
        spatial_dims: number of spatial dimensions (3; 2 also works).
        in_channels: input channels (image modalities).
        out_channels: output channels (``in_channels`` for the reconstruction head, the number of classes for
            segmentation).
        channels: stem width.
        channel_mult: width multiplier per scale (``len`` = number of scales).
        norm_groups: GroupNorm groups (must divide every width).
        min_size: an axis is downsampled only while it stays at least this large.

    Raises:
        ValueError: for ``spatial_dims`` other than 2/3, an empty ``channel_mult`` or widths not divisible by
            ``norm_groups``.
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        out_channels: int = 1,
        channels: int = 32,
        channel_mult: Sequence[int] = (1, 1, 2, 4),
        norm_groups: int = 8,
        min_size: int = 4,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise MonaiTFMError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
        if len(channel_mult) < 1:
            raise MonaiTFMError("channel_mult needs at least one scale.")
        widths = [int(channels) * int(m) for m in channel_mult]
        if any(w % norm_groups for w in widths):
            raise MonaiTFMError(
                f"norm_groups={norm_groups} must divide every width {widths} (channels x channel_mult)."
            )
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.channels = int(channels)
        self.channel_mult = tuple(int(m) for m in channel_mult)
        self.norm_groups = int(norm_groups)
        self.min_size = int(min_size)
        self.num_levels = len(widths)
        self.widths = widths
        conv = Conv[Conv.CONV, spatial_dims]
        norm = ("group", {"num_groups": self.norm_groups})

        def block(cin: int, cout: int) -> LongitudinalResBlock:
            return LongitudinalResBlock(spatial_dims, cin, cout, norm=norm, act="swish")

        self.stem = conv(in_channels, channels, kernel_size=1)
        self.down_blocks = nn.ModuleList()
        self.downsamples = nn.ModuleList()
        prev = self.channels
        for i, w in enumerate(widths):
            self.down_blocks.append(block(prev, w))
            if i < self.num_levels - 1:
                self.downsamples.append(StridedConvDownsample(spatial_dims, w))
            prev = w
        self.mid_block1 = block(prev, prev)
        self.mid_block2 = block(prev, prev)
        self.up_convs = nn.ModuleList()
        self.up_blocks = nn.ModuleList()
        for i, w in enumerate(widths):
            deeper = widths[i + 1] if i < self.num_levels - 1 else None
            self.up_convs.append(conv(deeper, w, kernel_size=3, padding=1) if deeper is not None else nn.Identity())
            self.up_blocks.append(block(2 * w, w))
        self.head = nn.Sequential(conv(widths[0], channels, kernel_size=3, padding=1), nn.SiLU())
        self.out_conv = conv(channels, out_channels, kernel_size=1)

    def down_strides(self, spatial_size: Sequence[int]) -> list[tuple[int, ...]]:
        """Per-axis strides of the downsampling steps for an input of ``spatial_size`` (as CRONOS).

        Args:
            spatial_size: spatial size of the input.

        Returns:
            one stride tuple per downsampling step.
        """
        return compute_down_strides(spatial_size, self.num_levels - 1, self.min_size)

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """Run the UNet and return the output with the tapped features.

        Args:
            x: ``(B, in_channels, *S)``.

        Returns:
            ``(out, encoder, decoder)``: the output ``(B, out_channels, *S)``, the encoder features (output of
            ``down_blocks[i]``) and the decoder features (output of ``up_blocks[i]``), both indexed by scale ``i``
            (0 = full resolution).

        Raises:
            ValueError: for an input with the wrong number of dimensions or channels.
        """
        if x.dim() != 2 + self.spatial_dims or x.shape[1] != self.in_channels:
            raise MonaiTFMError(
                f"expected x of shape (B, {self.in_channels}, {self.spatial_dims} spatial dims), got {list(x.shape)}."
            )
        strides = self.down_strides(x.shape[2:])
        h = self.stem(x)
        encoder: list[torch.Tensor] = []
        for i, down_block in enumerate(self.down_blocks):
            h = down_block(h)
            encoder.append(h)
            if i < self.num_levels - 1:
                h = self.downsamples[i](h, list(strides[i]))
        h = self.mid_block2(self.mid_block1(h))
        decoder: list[torch.Tensor] = [h] * self.num_levels  # placeholders, filled deepest first
        for i in range(self.num_levels - 1, -1, -1):
            if i < self.num_levels - 1:
                h = self.up_convs[i](resize_to(h, encoder[i].shape[2:], mode="linear"))
            h = self.up_blocks[i](torch.cat([h, encoder[i]], dim=1))
            decoder[i] = h
        return self.out_conv(self.head(h)), encoder, decoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Network output (reconstruction or class logits).

        Args:
            x: ``(B, in_channels, *S)``.

        Returns:
            ``(B, out_channels, *S)``.
        """
        return self.forward_features(x)[0]


def _mlp(dims: Sequence[int], last_bn: bool) -> nn.Sequential:
    """``Linear - BN - ReLU`` between ``dims``; the last linear layer is followed by BN only if ``last_bn``."""
    layers: list[nn.Module] = []
    for k in range(len(dims) - 1):
        last = k == len(dims) - 2
        layers.append(nn.Linear(dims[k], dims[k + 1], bias=last and not last_bn))
        if not last:
            layers += [nn.BatchNorm1d(dims[k + 1]), nn.ReLU(inplace=True)]
        elif last_bn:
            layers.append(nn.BatchNorm1d(dims[k + 1]))
    return nn.Sequential(*layers)


class ProjectorMLP(nn.Module):
    """SimSiam projector ``f``: ``num_layers`` linear layers, BN after each, ReLU between them.

    The paper (section 4) uses 3 layers of 2048 units. MONAI's ``MLPBlock`` is the transformer MLP (GELU, no
    batch norm), hence this small module. The output is not l2-normalised here: the similarity and orthogonality
    terms normalise it, and the variance/covariance terms (VICReg) need the un-normalised embedding.

    Args:
        in_features: width of the tapped feature.
        hidden: width of every layer (also the output width).
        num_layers: number of linear layers (>= 1).
    """

    def __init__(self, in_features: int, hidden: int = 2048, num_layers: int = 3) -> None:
        super().__init__()
        if num_layers < 1:
            raise MonaiTFMError(f"num_layers must be >= 1, got {num_layers}.")
        self.net = _mlp([in_features] + [hidden] * num_layers, last_bn=True)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        """Project sampled features.

        Args:
            v: ``(N, in_features)``.

        Returns:
            ``(N, hidden)``.
        """
        return self.net(v)


class PredictorMLP(nn.Module):
    """SimSiam predictor ``p``: bottleneck ``dim -> bottleneck -> dim`` (2048-256-2048 in the paper).

    Args:
        dim: projector width.
        bottleneck: hidden width.
    """

    def __init__(self, dim: int = 2048, bottleneck: int = 256) -> None:
        super().__init__()
        self.net = _mlp([dim, bottleneck, dim], last_bn=False)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Predict the other timepoint's projection.

        Args:
            z: ``(N, dim)``.

        Returns:
            ``(N, dim)``.
        """
        return self.net(z)


def sample_locations(
    batch: int, spatial_shape: Sequence[int], num: int, generator: torch.Generator | None = None, device=None
) -> torch.Tensor:
    """Random flat voxel indices, ``num`` per batch item (without replacement when ``num`` <= the voxel count).

    Args:
        batch: batch size.
        spatial_shape: spatial shape of the feature map.
        num: locations per item (``M``).
        generator: random generator (None: torch's global one).
        device: device of the result.

    Returns:
        ``(batch, num)`` long tensor of flat indices into the spatial dimensions.

    Raises:
        ValueError: for ``num < 1``.
    """
    if num < 1:
        raise MonaiTFMError(f"the number of sampled locations must be >= 1, got {num}.")
    total = 1
    for s in spatial_shape:
        total *= int(s)
    if num <= total:
        keys = torch.rand(batch, total, generator=generator)
        idx = keys.argsort(dim=1)[:, :num]
    else:
        idx = torch.randint(total, (batch, num), generator=generator)
    return idx.to(device)


def _gather(feature: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``(B, C, *S)`` features at flat indices ``(B, M)`` -> ``(B * M, C)``."""
    b, c = feature.shape[:2]
    flat = feature.reshape(b, c, -1)
    picked = torch.gather(flat, 2, idx.unsqueeze(1).expand(b, c, idx.shape[1]))
    return picked.permute(0, 2, 1).reshape(-1, c)


class LongitudinalSSLNet(nn.Module):
    """UNet ``G`` with per-layer projector and predictor heads for patchwise longitudinal SimSiam.

    The input stacks the two timepoints of ``B`` pairs along the batch axis, ``x = cat([x_a, x_b])`` of
    ``(2B, C, *S)``. The output is a dict:

    * ``"pred"``: the reconstruction ``(2B, out_channels, *S)`` (denoising head);
    * ``"z"`` / ``"p"``: per tapped layer name (``"enc<i>"`` / ``"dec<i>"``), the projections and predictions of
      the ``M`` sampled locations, each a pair ``(a, b)`` of ``(B * M, hidden)`` tensors;
    * ``"encoder_layers"``, ``"decoder_layers"``, ``"orthogonal_pairs"``: the layer names, for the loss.

    Locations are drawn once per scale and batch item and used for both timepoints and for the encoder and
    decoder features of that scale (so the orthogonality term compares the same voxels). The heads see the samples
    of both timepoints in one batch (shared batch-norm statistics, one pass).

    Args:
        unet: the UNet (its ``out_conv`` is the reconstruction head).
        encoder_layers: scales whose encoder features enter the similarity loss (None: every scale).
        decoder_layers: scales whose decoder features enter the similarity, variance and covariance losses (None:
            every scale).
        orthogonal_layers: scales at which encoder and decoder projections are made orthogonal (each must be in
            both lists); default the deepest decoder scale that is also an encoder scale (the bottleneck pair).
        num_samples: ``M``, sampled locations per scale and batch item.
        hidden: projector width (paper 2048).
        bottleneck: predictor bottleneck width (paper 256).
        projector_layers: projector depth (paper 3).

    Raises:
        ValueError: for a scale outside the UNet, an empty layer selection, or an orthogonal scale missing from one
            of the lists.
    """

    def __init__(
        self,
        unet: LongitudinalUNet,
        encoder_layers: Sequence[int] | None = None,
        decoder_layers: Sequence[int] | None = None,
        orthogonal_layers: Sequence[int] | None = None,
        num_samples: int = 256,
        hidden: int = 2048,
        bottleneck: int = 256,
        projector_layers: int = 3,
    ) -> None:
        super().__init__()
        self.unet = unet
        levels = unet.num_levels
        every = range(levels)
        self.encoder_layers = sorted({int(i) for i in (every if encoder_layers is None else encoder_layers)})
        self.decoder_layers = sorted({int(i) for i in (every if decoder_layers is None else decoder_layers)})
        for name, sel in (("encoder_layers", self.encoder_layers), ("decoder_layers", self.decoder_layers)):
            if any(i < 0 or i >= levels for i in sel):
                raise MonaiTFMError(f"{name} {sel} must be scales of the UNet, 0 .. {levels - 1}.")
        if not self.encoder_layers and not self.decoder_layers:
            raise MonaiTFMError("select at least one encoder or decoder layer for the similarity loss.")
        both = sorted(set(self.encoder_layers) & set(self.decoder_layers))
        if orthogonal_layers is None:
            orthogonal_layers = both[-1:]
        self.orthogonal_layers = sorted({int(i) for i in orthogonal_layers})
        missing = [i for i in self.orthogonal_layers if i not in both]
        if missing:
            raise MonaiTFMError(
                f"orthogonal_layers {missing} must be in both encoder_layers {self.encoder_layers} and "
                f"decoder_layers {self.decoder_layers}."
            )
        self.num_samples = int(num_samples)
        if self.num_samples < 1:
            raise MonaiTFMError(f"num_samples must be >= 1, got {num_samples}.")
        self.projectors = nn.ModuleDict()
        self.predictors = nn.ModuleDict()
        for kind, sel in (("enc", self.encoder_layers), ("dec", self.decoder_layers)):
            for i in sel:
                self.projectors[f"{kind}{i}"] = ProjectorMLP(unet.widths[i], hidden, projector_layers)
                self.predictors[f"{kind}{i}"] = PredictorMLP(hidden, bottleneck)

    def forward(self, x: torch.Tensor) -> dict:
        """Reconstruction, projections and predictions of a batch of pairs.

        Args:
            x: ``(2B, C, *S)``, the first half the timepoints ``j``, the second the timepoints ``j + 1``.

        Returns:
            the dict described in the class notes.

        Raises:
            ValueError: for an odd batch.
        """
        if x.shape[0] % 2:
            raise MonaiTFMError(f"expected the two timepoints stacked along the batch (even batch), got {x.shape[0]}.")
        b = x.shape[0] // 2
        out, encoder, decoder = self.unet.forward_features(x)
        z: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        p: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        locations: dict[int, torch.Tensor] = {}
        for kind, sel, feats in (("enc", self.encoder_layers, encoder), ("dec", self.decoder_layers, decoder)):
            for i in sel:
                if i not in locations:
                    locations[i] = sample_locations(b, feats[i].shape[2:], self.num_samples, device=x.device)
                idx = torch.cat([locations[i], locations[i]])  # the same voxels in both timepoints
                name = f"{kind}{i}"
                proj = self.projectors[name](_gather(feats[i], idx))
                pred = self.predictors[name](proj)
                z[name] = (proj[: b * self.num_samples], proj[b * self.num_samples :])
                p[name] = (pred[: b * self.num_samples], pred[b * self.num_samples :])
        return {
            "pred": out,
            "z": z,
            "p": p,
            "encoder_layers": [f"enc{i}" for i in self.encoder_layers],
            "decoder_layers": [f"dec{i}" for i in self.decoder_layers],
            "orthogonal_pairs": [(f"enc{i}", f"dec{i}") for i in self.orthogonal_layers],
        }
