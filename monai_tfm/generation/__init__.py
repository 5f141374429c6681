# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""Noise-to-image generation (MOTFM): flow matching from Gaussian noise with the package's one flow
(:mod:`monai_tfm.flows`), on MONAI's ``DiffusionModelUNet`` with class (cross-attention) and mask (``ControlNet``)
conditioning, the DDPM/DDIM baseline on the same network, judges for FID/MMD/Dice, and the generate command."""

from __future__ import annotations

from .app import BundleGenerator, GenerationError, read_mask, write_class_samples, write_samples
from .data import (
    ACDC_GROUPS,
    ACDC_LABELS,
    SHAPE_CLASSES,
    SHAPE_LABELS,
    acdc_generation_items,
    class_counts,
    make_shape_items,
    subsample,
)
from .evaluation import (
    FeatureClassifier,
    GenerationEvaluator,
    RealDataJudges,
    class_accuracy,
    feature_distances,
    mask_dice,
    ms_ssim_diversity,
    save_sample_grid,
    summary_table,
)
from .networks import ConditionalDiffusionUNet, class_context, encode_mask
from .prepare_batch import OBJECTIVES, GenerationPrepareBatch
from .samplers import (
    DIFFUSION_SCHEDULERS,
    DiffusionSampler,
    FlowSampler,
    default_eval_samplers,
    generate_images,
    make_sampler,
    make_scheduler,
)

__all__ = [
    "ACDC_GROUPS",
    "ACDC_LABELS",
    "BundleGenerator",
    "GenerationError",
    "read_mask",
    "write_class_samples",
    "write_samples",
    "DIFFUSION_SCHEDULERS",
    "OBJECTIVES",
    "SHAPE_CLASSES",
    "SHAPE_LABELS",
    "ConditionalDiffusionUNet",
    "DiffusionSampler",
    "FeatureClassifier",
    "FlowSampler",
    "GenerationEvaluator",
    "GenerationPrepareBatch",
    "RealDataJudges",
    "acdc_generation_items",
    "class_accuracy",
    "class_context",
    "class_counts",
    "default_eval_samplers",
    "encode_mask",
    "feature_distances",
    "generate_images",
    "make_sampler",
    "make_scheduler",
    "make_shape_items",
    "mask_dice",
    "ms_ssim_diversity",
    "save_sample_grid",
    "subsample",
    "summary_table",
]
