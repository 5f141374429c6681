# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""Longitudinal self-supervised pretraining and consistency finetuning (Ren et al., NeurIPS 2022).

* :mod:`~monai_tfm.ssl.transforms`: timepoint pairs with shared geometry and independent intensity augmentation;
* :mod:`~monai_tfm.ssl.networks`: the tapped UNet and the SimSiam projector/predictor heads;
* :mod:`~monai_tfm.ssl.losses`: patchwise similarity, variance, covariance, orthogonality, reconstruction,
  consistency;
* :mod:`~monai_tfm.ssl.engines`: prepare-batch pieces for MONAI's trainer/evaluator, loss-term logging;
* :mod:`~monai_tfm.ssl.metrics` / :mod:`~monai_tfm.ssl.report`: Dice, IoU, HD95, STCS, ASPC and the report;
* :mod:`~monai_tfm.ssl.writer`: predicted label maps of whole series (inference);
* :mod:`~monai_tfm.ssl.transfer`: pretrained weights for segmentation and for the CRONOS forecaster's encoder;
* :mod:`~monai_tfm.ssl.data`: subject selection and the finetuning dataset.
"""

from __future__ import annotations

from .data import CycledZipDataset, few_subjects, has_labels, select_subjects
from .engines import FinetunePrepareBatch, LossTermsHandler, SeriesPrepareBatch, SSLPrepareBatch
from .losses import (
    ConsistencyLoss,
    LongitudinalFinetuneLoss,
    LongitudinalSSLLoss,
    covariance_loss,
    negative_cosine,
    orthogonality_loss,
    patch_similarity_loss,
    variance_loss,
)
from .metrics import (
    LongitudinalSegmentationMetrics,
    aspc,
    segmentation_scores,
    spacing_from_affine,
    stcs,
    summarise_rows,
)
from .networks import (
    LongitudinalResBlock,
    LongitudinalSSLNet,
    LongitudinalUNet,
    PredictorMLP,
    ProjectorMLP,
    sample_locations,
)
from .report import SEGMENTATION_COLUMNS, SegmentationReportWriter
from .transfer import FORECAST_PARTS, init_forecaster_from_pretrained, load_pretrained_unet, read_unet_state
from .transforms import (
    LongitudinalPaird,
    SelectLabelledFramed,
    default_geometric_augmentation,
    default_intensity_augmentation,
)
from .writer import SeriesSegmentationWriter

__all__ = [
    "ConsistencyLoss",
    "CycledZipDataset",
    "FORECAST_PARTS",
    "FinetunePrepareBatch",
    "LongitudinalFinetuneLoss",
    "LongitudinalPaird",
    "LongitudinalResBlock",
    "LongitudinalSSLLoss",
    "LongitudinalSSLNet",
    "LongitudinalSegmentationMetrics",
    "LongitudinalUNet",
    "LossTermsHandler",
    "PredictorMLP",
    "ProjectorMLP",
    "SEGMENTATION_COLUMNS",
    "SSLPrepareBatch",
    "SegmentationReportWriter",
    "SelectLabelledFramed",
    "SeriesPrepareBatch",
    "SeriesSegmentationWriter",
    "aspc",
    "covariance_loss",
    "default_geometric_augmentation",
    "default_intensity_augmentation",
    "few_subjects",
    "has_labels",
    "init_forecaster_from_pretrained",
    "load_pretrained_unet",
    "negative_cosine",
    "orthogonality_loss",
    "patch_similarity_loss",
    "read_unet_state",
    "sample_locations",
    "segmentation_scores",
    "select_subjects",
    "spacing_from_affine",
    "stcs",
    "summarise_rows",
    "variance_loss",
]
