# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""Prepare-batch pieces and a loss-term logger that plug longitudinal SSL into MONAI's ``SupervisedTrainer``.

MONAI's trainer computes ``loss_function(inferer(inputs, network), targets)``. The pieces below stack what the
paper's objectives need into ``inputs`` so that one forward pass serves all of it:

* pretraining: ``inputs = [x_a ; x_b]`` (the two augmented timepoints), ``targets = [t_a ; t_b]`` (their clean
  reconstruction targets); the network is :class:`monai_tfm.ssl.LongitudinalSSLNet`, the loss
  :class:`monai_tfm.ssl.LongitudinalSSLLoss`;
* finetuning: ``inputs = [x ; x_j ; x_j+1]`` (labelled images, then the two timepoints of unlabelled pairs),
  ``targets = y``; the loss :class:`monai_tfm.ssl.LongitudinalFinetuneLoss` splits the predictions again;
* evaluation: a batch of whole series ``(B, N, C, *S)`` becomes ``(B * N, C, *S)`` frames (labels alike).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch
from ignite.engine import Engine, Events
from monai.engines import PrepareBatch

from monai_tfm.utils.errors import MonaiTFMError

__all__ = ["FinetunePrepareBatch", "LossTermsHandler", "SSLPrepareBatch", "SeriesPrepareBatch"]

logger = logging.getLogger(__name__)


def _get(batch: Mapping, key: str, who: str, device: Any, non_blocking: bool) -> torch.Tensor:
    if key not in batch:
        raise KeyError(f"{who}: the batch has no key {key!r}; keys: {sorted(map(str, batch))}.")
    return torch.as_tensor(batch[key]).as_subclass(torch.Tensor).to(device=device, non_blocking=non_blocking)


class SSLPrepareBatch(PrepareBatch):
    """Pairs batch -> ``(cat[image_a, image_b], cat[target_a, target_b])``.

    Args:
        image_keys: keys of the two augmented timepoints.
        target_keys: keys of the two reconstruction targets.
    """

    def __init__(
        self,
        image_keys: tuple[str, str] = ("image_a", "image_b"),
        target_keys: tuple[str, str] = ("target_a", "target_b"),
    ) -> None:
        self.image_keys = tuple(image_keys)
        self.target_keys = tuple(target_keys)

    def __call__(
        self, batchdata: Mapping, device: str | torch.device | None = None, non_blocking: bool = False, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Stack the timepoints along the batch.

        Args:
            batchdata: the collated batch.
            device: target device.
            non_blocking: non-blocking copies.
            kwargs: unused.

        Returns:
            ``(inputs (2B, C, *S), targets (2B, C, *S))``.
        """
        who = type(self).__name__
        x = torch.cat([_get(batchdata, k, who, device, non_blocking).float() for k in self.image_keys])
        t = torch.cat([_get(batchdata, k, who, device, non_blocking).float() for k in self.target_keys])
        return x, t


class FinetunePrepareBatch(PrepareBatch):
    """Finetuning batch -> ``(cat[image, image_a, image_b], label)``, or ``(image, label)`` without pairs.

    Args:
        image_key: key of the labelled images.
        label_key: key of the labels.
        pair_keys: keys of the two unlabelled timepoints.
        use_pairs: stack the pairs (False: supervised only, e.g. when the consistency weight is 0).
    """

    def __init__(
        self,
        image_key: str = "image",
        label_key: str = "label",
        pair_keys: tuple[str, str] = ("image_a", "image_b"),
        use_pairs: bool = True,
    ) -> None:
        self.image_key = image_key
        self.label_key = label_key
        self.pair_keys = tuple(pair_keys)
        self.use_pairs = bool(use_pairs)

    def __call__(
        self, batchdata: Mapping, device: str | torch.device | None = None, non_blocking: bool = False, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Stack labelled images and pairs.

        Args:
            batchdata: the collated batch.
            device: target device.
            non_blocking: non-blocking copies.
            kwargs: unused.

        Returns:
            ``(inputs, label)``.
        """
        who = type(self).__name__
        x = _get(batchdata, self.image_key, who, device, non_blocking).float()
        y = _get(batchdata, self.label_key, who, device, non_blocking)
        if self.use_pairs:
            x = torch.cat([x] + [_get(batchdata, k, who, device, non_blocking).float() for k in self.pair_keys])
        return x, y


class SeriesPrepareBatch(PrepareBatch):
    """Series batch ``(B, N, C, *S)`` -> frames ``(B * N, C, *S)``; labels ``(B, N, 1, *S)`` alike (or None).

    Args:
        series_key: key of the series.
        label_key: key of the label maps (optional in the batch).
    """

    def __init__(self, series_key: str = "series", label_key: str = "series_label") -> None:
        self.series_key = series_key
        self.label_key = label_key

    def __call__(
        self, batchdata: Mapping, device: str | torch.device | None = None, non_blocking: bool = False, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Flatten the series into frames.

        Args:
            batchdata: the collated batch.
            device: target device.
            non_blocking: non-blocking copies.
            kwargs: unused.

        Returns:
            ``(frames, labels or None)``.

        Raises:
            ValueError: for a series that is not ``(B, N, C, *S)``.
        """
        who = type(self).__name__
        s = _get(batchdata, self.series_key, who, device, non_blocking).float()
        if s.dim() < 5:
            raise MonaiTFMError(f"{who}: expected a series batch (B, N, C, *spatial), got {tuple(s.shape)}.")
        y = None
        if self.label_key in batchdata:
            y = _get(batchdata, self.label_key, who, device, non_blocking)
            y = y.reshape(-1, *y.shape[2:])
        return s.reshape(-1, *s.shape[2:]), y


class LossTermsHandler:
    """Log the epoch means of a loss's ``last_terms`` (e.g. sim/rec/var/cov/orth) and keep them in the state.

    The means go to ``engine.state.metrics`` as ``<prefix>_<term>`` (so MONAI's ``StatsHandler`` and
    ``TensorBoardStatsHandler`` show them) and to the log.

    Args:
        loss: a loss with a ``last_terms`` dict of floats.
        prefix: name prefix.
    """

    def __init__(self, loss: Any, prefix: str = "train") -> None:
        self.loss = loss
        self.prefix = prefix
        self._sums: dict[str, float] = {}
        self._count = 0

    def attach(self, engine: Engine) -> None:
        """Attach to a trainer.

        Args:
            engine: the trainer.
        """
        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._accumulate)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._report)

    def _reset(self, engine: Engine) -> None:
        self._sums, self._count = {}, 0

    def _accumulate(self, engine: Engine) -> None:
        for k, v in getattr(self.loss, "last_terms", {}).items():
            self._sums[k] = self._sums.get(k, 0.0) + float(v)
        self._count += 1

    def _report(self, engine: Engine) -> None:
        if not self._count:
            return
        means = {f"{self.prefix}_{k}": v / self._count for k, v in self._sums.items()}
        engine.state.metrics.update(means)
        logger.info("epoch %d: %s", engine.state.epoch, ", ".join(f"{k}={v:.4g}" for k, v in sorted(means.items())))
