# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""Evaluation of generated images with judges trained on the real data (nothing is downloaded).

Published FIDs use an ImageNet Inception network; nothing may be downloaded here and an ImageNet network says
little about cardiac MRI anyway, so the judges are our own, trained on the real *training* images of the bundle:

* a small classifier (MONAI ``ResNet`` trunk + linear head) that predicts the class; its penultimate layer (the
  pooled trunk features) is the feature space of MONAI's ``FIDMetric`` and ``MMDMetric``, and its prediction gives the
  class accuracy of class-conditional samples;
* a segmenter (MONAI ``UNet``) trained on the real images with masks; the Dice (MONAI ``DiceMetric``) between its
  segmentation of a mask-conditional sample and the conditioning mask measures how well the sample follows the mask.

Diversity is the mean MS-SSIM (MONAI ``MultiScaleSSIMMetric``) between pairs of samples of the same class: lower is
more diverse; the same number for pairs of real images is the reference. The numbers depend on these judges, so they
compare samplers and models within one evaluation, not with published values.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import DataLoader, Dataset
from monai.engines import SupervisedTrainer
from monai.losses import DiceCELoss
from monai.metrics import DiceMetric, FIDMetric, MMDMetric, MultiScaleSSIMMetric
from monai.networks.nets import ResNet, UNet
from monai.networks.utils import one_hot
from torch import nn

from monai_tfm.generation.data import subsample
from monai_tfm.generation.samplers import generate_images, make_sampler
from monai_tfm.handlers.checkpoint import load_weights
from monai_tfm.utils.display import middle_slice
from monai_tfm.utils.errors import MonaiTFMError
from monai_tfm.utils.io import atomic_path, atomic_save_torch, atomic_write_text

__all__ = [
    "FeatureClassifier",
    "GenerationEvaluator",
    "RealDataJudges",
    "class_accuracy",
    "feature_distances",
    "mask_dice",
    "ms_ssim_diversity",
    "save_sample_grid",
    "summary_table",
]

logger = logging.getLogger(__name__)


class FeatureClassifier(nn.Module):
    """Class predictor whose penultimate layer serves as the feature extractor of FID and MMD.

    A MONAI ``ResNet`` trunk (basic blocks, one per stage, no max-pool, ``feed_forward=False`` so that it returns the
    globally pooled features) and a linear head.

    Args:
        spatial_dims: 2 or 3.
        num_classes: number of classes.
        in_channels: image channels.
        channels: channels of the four ResNet stages (the feature size is the last one).
    """

    def __init__(
        self, spatial_dims: int, num_classes: int, in_channels: int = 1, channels: Sequence[int] = (16, 32, 32, 32)
    ) -> None:
        super().__init__()
        self.trunk = ResNet(
            block="basic",
            layers=[1, 1, 1, 1],
            block_inplanes=list(channels),
            spatial_dims=spatial_dims,
            n_input_channels=in_channels,
            conv1_t_size=3,
            conv1_t_stride=1,
            no_max_pool=True,
            feed_forward=False,
        )
        self.head = nn.Linear(int(channels[-1]), int(num_classes))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate-layer features ``(B, channels[-1])``.

        Args:
            x: images ``(B, C, *spatial)`` on the [0, 1] scale.

        Returns:
            the features.
        """
        return self.trunk(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits.

        Args:
            x: images ``(B, C, *spatial)`` on the [0, 1] scale.

        Returns:
            ``(B, num_classes)``.
        """
        return self.head(self.features(x))


def _fit(
    network: nn.Module,
    data: list[dict[str, Any]],
    loss: nn.Module,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    device: torch.device,
    seed: int,
) -> float:
    """Train ``network`` on ``{"image", "label"}`` dicts with MONAI's ``SupervisedTrainer``; returns the last loss."""
    loader = DataLoader(
        Dataset(data),
        batch_size=batch_size,
        shuffle=True,
        num_workers=0,
        generator=torch.Generator().manual_seed(seed),
    )
    trainer = SupervisedTrainer(
        device=device,
        max_epochs=int(epochs),
        train_data_loader=loader,
        network=network,
        optimizer=torch.optim.Adam(network.parameters(), lr=learning_rate),
        loss_function=loss,
        decollate=False,
    )
    trainer.run()
    network.eval()
    output = trainer.state.output[0] if isinstance(trainer.state.output, list) else trainer.state.output
    return float(torch.as_tensor(output["loss"]).detach())


class RealDataJudges:
    """The classifier (features, class accuracy) and segmenter (Dice) trained on the real training images.

    They are trained once per ``folder`` and reloaded afterwards (``classifier.pt``, ``segmenter.pt`` and a
    ``judges.json`` with the settings; different settings retrain them), so several evaluations, e.g. of a flow
    matching and a DDPM model, share the same judges.

    Args:
        train_items: real training items (``image`` on [0, 1], ``class``, ``mask``, ``has_mask``).
        folder: where the judges are kept.
        spatial_dims: 2 or 3.
        num_classes: classes (>= 2: the features come from a classifier).
        num_labels: mask labels (0: no segmenter).
        classifier_epochs: classifier training epochs.
        segmenter_epochs: segmenter training epochs.
        batch_size: training batch size.
        learning_rate: Adam learning rate.
        seed: seed of initialisation and shuffling.
        device: torch device.

    Raises:
        ValueError: fewer than two classes.
    """

    def __init__(
        self,
        train_items: Sequence[Mapping[str, Any]],
        folder: str | os.PathLike,
        spatial_dims: int = 2,
        num_classes: int = 2,
        num_labels: int = 0,
        classifier_epochs: int = 10,
        segmenter_epochs: int = 30,
        batch_size: int = 32,
        learning_rate: float = 1e-3,
        seed: int = 0,
        device: str | torch.device = "cpu",
    ) -> None:
        if int(num_classes) < 2:
            raise MonaiTFMError(
                f"the feature extractor is a classifier of the real classes and needs >= 2 classes, got {num_classes}."
            )
        self.items = subsample(train_items, None)
        self.folder = Path(folder)
        self.spatial_dims = int(spatial_dims)
        self.num_classes = int(num_classes)
        self.num_labels = int(num_labels)
        self.classifier_epochs = int(classifier_epochs)
        self.segmenter_epochs = int(segmenter_epochs)
        self.batch_size = int(batch_size)
        self.learning_rate = float(learning_rate)
        self.seed = int(seed)
        self.device = torch.device(device)
        self.with_segmenter = bool(self.num_labels and any(it["has_mask"] for it in self.items))
        self.classifier, self.segmenter = self._build()
        self._ready = False

    def _build(self) -> tuple[FeatureClassifier, nn.Module | None]:
        segmenter = None
        if self.with_segmenter:
            segmenter = UNet(
                spatial_dims=self.spatial_dims,
                in_channels=1,
                out_channels=self.num_labels + 1,
                channels=(16, 32, 64),
                strides=(2, 2),
                num_res_units=1,
            )
        return FeatureClassifier(self.spatial_dims, self.num_classes), segmenter

    def _signature(self) -> dict[str, Any]:
        shape = list(np.shape(self.items[0]["image"])) if self.items else []
        return {
            "spatial_dims": self.spatial_dims,
            "num_classes": self.num_classes,
            "num_labels": self.num_labels,
            "image_shape": shape,
            "num_train": len(self.items),
            "num_train_masks": sum(bool(it["has_mask"]) for it in self.items),
            "classifier_epochs": self.classifier_epochs,
            "segmenter_epochs": self.segmenter_epochs if self.segmenter is not None else 0,
            "batch_size": self.batch_size,
            "learning_rate": self.learning_rate,
            "seed": self.seed,
        }

    def prepare(self) -> RealDataJudges:
        """Load the judges from ``folder`` or train them there.

        Returns:
            self.
        """
        if self._ready:
            return self
        meta = self.folder / "judges.json"
        files = [self.folder / "classifier.pt"] + ([self.folder / "segmenter.pt"] if self.segmenter else [])
        signature = self._signature()
        if meta.is_file() and all(f.is_file() for f in files):
            if json.loads(meta.read_text()).get("signature") == signature:
                load_weights(self.classifier, files[0])
                if self.segmenter is not None:
                    load_weights(self.segmenter, files[1])
                logger.info("judges loaded from %s", self.folder)
                self._finish()
                return self
            logger.warning("judges in %s were trained with other settings: training them again", self.folder)
        torch.manual_seed(self.seed)
        self.classifier, self.segmenter = self._build()
        data = [{"image": it["image"], "label": int(it["class"])} for it in self.items]
        loss_c = _fit(
            self.classifier.to(self.device),
            data,
            nn.CrossEntropyLoss(),
            self.classifier_epochs,
            self.batch_size,
            self.learning_rate,
            self.device,
            self.seed,
        )
        report: dict[str, Any] = {"signature": signature, "classifier_final_loss": loss_c}
        if self.segmenter is not None:
            masked = [
                {"image": it["image"], "label": it["mask"].astype(np.int64)} for it in self.items if it["has_mask"]
            ]
            loss_s = _fit(
                self.segmenter.to(self.device),
                masked,
                DiceCELoss(to_onehot_y=True, softmax=True),
                self.segmenter_epochs,
                min(self.batch_size, 16),
                self.learning_rate,
                self.device,
                self.seed,
            )
            report["segmenter_final_loss"] = loss_s
            atomic_save_torch(self.segmenter.state_dict(), files[1])
        atomic_save_torch(self.classifier.state_dict(), files[0])
        atomic_write_text(meta, json.dumps(report, indent=2) + "\n", overwrite=True)
        logger.info("judges trained on %d real images and saved to %s: %s", len(self.items), self.folder, report)
        self._finish()
        return self

    def _finish(self) -> None:
        self.classifier.to(self.device).eval()
        if self.segmenter is not None:
            self.segmenter.to(self.device).eval()
        self._ready = True

    @torch.no_grad()
    def _batched(self, fn: Any, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        outs = [fn(images[i : i + batch_size].to(self.device)).float().cpu() for i in range(0, len(images), batch_size)]
        return torch.cat(outs)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Penultimate classifier features of images on the [0, 1] scale.

        Args:
            images: ``(N, 1, *spatial)``.

        Returns:
            ``(N, F)``.
        """
        return self._batched(self.prepare().classifier.features, images)

    def predict_class(self, images: torch.Tensor) -> torch.Tensor:
        """Predicted class of images on the [0, 1] scale.

        Args:
            images: ``(N, 1, *spatial)``.

        Returns:
            ``(N,)`` long.
        """
        return self._batched(self.prepare().classifier, images).argmax(dim=1)

    def segment(self, images: torch.Tensor) -> torch.Tensor:
        """Label map predicted by the segmenter.

        Args:
            images: ``(N, 1, *spatial)`` on the [0, 1] scale.

        Returns:
            ``(N, 1, *spatial)`` long.

        Raises:
            RuntimeError: no segmenter (no mask labels or no real masks).
        """
        if self.prepare().segmenter is None:
            raise RuntimeError("no segmenter: the judges were built without mask labels or masked training images.")
        return self._batched(self.segmenter, images).argmax(dim=1, keepdim=True)


def feature_distances(features: torch.Tensor, reference: torch.Tensor) -> dict[str, float]:
    """FID and MMD (MONAI ``FIDMetric``, ``MMDMetric``) between two feature sets of the same size.

    Args:
        features: ``(N, F)`` of generated images.
        reference: ``(N, F)`` of real images.

    Returns:
        ``{"fid": ..., "mmd": ...}`` (NaN where the metric fails, e.g. degenerate covariances).
    """
    out = {}
    try:
        out["fid"] = float(FIDMetric()(features.double(), reference.double()))
    except (ValueError, RuntimeError) as e:
        logger.warning("FID failed (%s): reported as NaN", e)
        out["fid"] = math.nan
    out["mmd"] = float(MMDMetric()(reference.double(), features.double()))
    return out


def _ms_ssim_metric(spatial_shape: Sequence[int]) -> MultiScaleSSIMMetric:
    """MS-SSIM with as many scales (at most 3) as the image size allows: kernel 7 (3 along axes shorter than 16)."""
    kernel = [7 if s >= 16 else 3 for s in spatial_shape]
    for scales in (3, 2, 1):
        div = max(1, scales - 1) ** 2
        if all(s // div > k - 1 and s / 2 ** (scales - 1) >= k for s, k in zip(spatial_shape, kernel)):
            break
    weights = np.asarray((0.0448, 0.2856, 0.3001)[:scales], dtype=np.float64)
    weights = tuple(float(w) for w in weights / weights.sum()) if scales > 1 else (1.0,)
    return MultiScaleSSIMMetric(
        spatial_dims=len(spatial_shape), data_range=1.0, kernel_size=kernel, weights=weights, reduction="none"
    )


def ms_ssim_diversity(
    images: torch.Tensor, classes: Sequence[int] | torch.Tensor | None = None, max_pairs: int = 256, seed: int = 0
) -> float:
    """Mean MS-SSIM between random pairs of distinct images of the same class (lower: more diverse).

    Args:
        images: ``(N, 1, *spatial)`` on the [0, 1] scale.
        classes: class per image (``None``: all one class).
        max_pairs: number of pairs drawn (without repeating a pair where possible).
        seed: seed of the pair choice.

    Returns:
        the mean MS-SSIM (NaN when no class has two images).
    """
    n = len(images)
    labels = np.zeros(n, dtype=np.int64) if classes is None else np.asarray(torch.as_tensor(classes).cpu())
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n) if labels[i] == labels[j]]
    if not pairs:
        return math.nan
    rng = np.random.default_rng(seed)
    if len(pairs) > max_pairs:
        pairs = [pairs[k] for k in rng.choice(len(pairs), max_pairs, replace=False)]
    a = images[[p[0] for p in pairs]].float().clamp(0, 1)
    b = images[[p[1] for p in pairs]].float().clamp(0, 1)
    values = _ms_ssim_metric(tuple(images.shape[2:]))(a, b)
    return float(torch.as_tensor(values).float().mean())


def class_accuracy(predicted: torch.Tensor, classes: Sequence[int] | torch.Tensor) -> float:
    """Fraction of images whose predicted class is the requested one.

    Args:
        predicted: ``(N,)`` predicted classes.
        classes: ``(N,)`` requested classes.

    Returns:
        the accuracy in [0, 1].
    """
    return float((predicted.cpu() == torch.as_tensor(classes).reshape(-1).cpu()).float().mean())


def mask_dice(segmentation: torch.Tensor, masks: torch.Tensor, num_labels: int) -> dict[str, float]:
    """Dice (MONAI ``DiceMetric``, background excluded) between segmentations and conditioning masks.

    Args:
        segmentation: ``(N, 1, *spatial)`` predicted labels.
        masks: ``(N, 1, *spatial)`` conditioning labels.
        num_labels: foreground labels.

    Returns:
        ``{"dice": mean over images and labels present, "dice_<k>": per label k}``.
    """
    metric = DiceMetric(include_background=False, reduction="mean_batch", ignore_empty=True)
    per_label = metric(
        one_hot(segmentation.long(), num_labels + 1, dim=1),
        one_hot(torch.as_tensor(masks).long(), num_labels + 1, dim=1),
    )
    per_label = torch.nanmean(per_label.float(), dim=0) if per_label.ndim > 1 else per_label.float()
    out = {f"dice_{k + 1}": float(v) for k, v in enumerate(per_label)}
    out["dice"] = float(torch.nanmean(per_label))
    return out


def save_sample_grid(
    path: str | os.PathLike,
    images: torch.Tensor,
    titles: Sequence[str] | None = None,
    masks: torch.Tensor | None = None,
    columns: int = 8,
    title: str = "",
    overwrite: bool = True,
) -> Path:
    """PNG grid of images on the [0, 1] scale (middle slice of volumes), with mask outlines if given.

    Args:
        path: PNG file.
        images: ``(N, 1, *spatial)``.
        titles: one title per image.
        masks: optional label maps ``(N, 1, *spatial)`` drawn as contours.
        columns: images per row.
        title: figure title.
        overwrite: replace an existing file.

    Returns:
        the path.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = len(images)
    cols = max(1, min(columns, n))
    rows = int(math.ceil(n / cols))
    fig = Figure(figsize=(1.6 * cols, 1.75 * rows + (0.3 if title else 0)), dpi=100)
    FigureCanvasAgg(fig)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False).ravel())
    for k, ax in enumerate(axes):
        ax.set_axis_off()
        if k >= n:
            continue
        ax.imshow(middle_slice(images[k]), cmap="gray", vmin=0, vmax=1, origin="lower", interpolation="nearest")
        if masks is not None and masks[k].any():
            ax.contour(
                middle_slice(masks[k].float()),
                levels=[0.5, 1.5, 2.5],
                colors=["r", "y", "c"],
                linewidths=0.6,
                origin="lower",
            )
        if titles is not None:
            ax.set_title(str(titles[k]), fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(path, overwrite=overwrite) as tmp:
        fig.savefig(tmp, format="png")
    return Path(path)


def _stack(items: Sequence[Mapping[str, Any]], key: str) -> torch.Tensor:
    return torch.as_tensor(np.stack([np.asarray(it[key]) for it in items]))


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


class GenerationEvaluator:
    """Sample a trained generator with several samplers and score the samples against held-out real images.

    Per sampler two sets are generated from the same seeded noise:

    * the class set: one sample per reference image with its class (and no mask when the model allows it):
      FID and MMD of the judge features against the reference images, MS-SSIM diversity, class accuracy;
    * the mask set (mask-conditional models): one sample per masked reference image with its class and mask:
      Dice of the judge segmenter against the conditioning mask.

    The first rows score real images in the same way: ``real_train``, training images (as many as the reference; the
    judge classifier was trained on them, so its features and accuracy favour them), and ``real_heldout``, other
    held-out images (disjoint from the reference): the floor of FID and MMD at this sample size, the real diversity,
    the judges' accuracy on unseen real images and the segmenter's Dice on the masked reference images.

    Args:
        network: the generator network.
        weights: its weights file (``None``: as constructed).
        samplers: sampler specs (see :func:`monai_tfm.generation.make_sampler`), each with a ``name``.
        judges: the :class:`RealDataJudges`.
        reference: held-out real items.
        train_items: real training items (for the ``real`` row).
        output_dir: where ``summary.json``, ``summary.md`` and sample grids go.
        class_names: names of the classes (empty: unconditional).
        num_labels: mask labels of the network (0: none).
        mask_optional: the model was trained to sample without a mask.
        time_scale: flow matching time scale.
        schedule_args: DDPM training schedule.
        guidance_scale: classifier-free guidance weight.
        num_eval: size of the class set (a seeded subset of the reference; ``None``: all).
        num_mask_eval: size of the mask set.
        num_small: also report FID and MMD on the first ``num_small`` images of every row (``fid_small``,
            ``mmd_small``; comparable with samplers run on only that many, see :meth:`run`; ``None``: no).
        batch_size: generation batch size.
        seed: noise and subset seed.
        device: torch device.
        title: title of the summary.
        overwrite: replace existing summary files.
    """

    def __init__(
        self,
        network: nn.Module,
        weights: str | os.PathLike | None,
        samplers: Sequence[Mapping[str, Any]],
        judges: RealDataJudges,
        reference: Sequence[Mapping[str, Any]],
        train_items: Sequence[Mapping[str, Any]],
        output_dir: str | os.PathLike,
        class_names: Sequence[str] = (),
        num_labels: int = 0,
        mask_optional: bool = True,
        time_scale: float = 1000.0,
        schedule_args: Mapping[str, Any] | None = None,
        guidance_scale: float = 1.0,
        num_eval: int | None = 128,
        num_mask_eval: int | None = 64,
        num_small: int | None = 16,
        batch_size: int = 32,
        seed: int = 0,
        device: str | torch.device = "cpu",
        title: str = "generation",
        overwrite: bool = False,
    ) -> None:
        self.network = network
        self.weights = weights
        self.samplers = [dict(s) for s in samplers]
        self.judges = judges
        self.class_names = [str(c) for c in class_names]
        self.num_labels = int(num_labels)
        self.mask_optional = bool(mask_optional)
        self.time_scale = float(time_scale)
        self.schedule_args = dict(schedule_args or {})
        self.guidance_scale = float(guidance_scale)
        self.num_small = None if num_small is None else int(num_small)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.device = torch.device(device)
        self.output_dir = Path(output_dir)
        self.title = title
        self.overwrite = bool(overwrite)
        # random order, so that the first k images of every set (the small-size metrics) are random subsets too
        self.reference = subsample(reference, num_eval, seed, shuffle=True)
        self.real = subsample(train_items, len(self.reference), seed + 1, shuffle=True)
        chosen = {id(it) for it in self.reference}
        rest = [it for it in subsample(reference, None) if id(it) not in chosen]
        enough = len(rest) >= len(self.reference)
        self.heldout = subsample(rest, len(self.reference), seed + 2, shuffle=True) if enough else []
        self.mask_reference = (
            subsample(reference, num_mask_eval, seed, masked_only=True, shuffle=True) if self.num_labels else []
        )
        for spec in self.samplers:
            if "name" not in spec:
                raise MonaiTFMError(f"every sampler spec needs a 'name', got {spec}.")

    def _class_set(self) -> tuple[list[int] | None, torch.Tensor | None, list[Mapping[str, Any]]]:
        """Conditions of the class set: classes, masks (zeros or the references') and the reference items."""
        refs: list[Mapping[str, Any]] = list(self.reference)
        if self.num_labels and not self.mask_optional:
            refs = list(self.mask_reference)
        classes = [int(it["class"]) for it in refs] if self.class_names else None
        masks = None
        if self.num_labels:
            masks = _stack(refs, "mask") if not self.mask_optional else torch.zeros_like(_stack(refs, "mask"))
        return classes, masks, refs

    def _score(
        self, images: torch.Tensor, ref_features: torch.Tensor, classes: list[int] | None
    ) -> dict[str, float | None]:
        """Distribution metrics against the first ``len(images)`` references (full-size FID/MMD only when all of them
        are used; ``fid_small``/``mmd_small`` on the first ``num_small``), diversity and class accuracy."""
        n = len(images)
        features = self.judges.features(images)
        row: dict[str, float | None] = {"fid": None, "mmd": None}
        if n == len(ref_features):
            row.update(feature_distances(features, ref_features))
        k = self.num_small
        if k and n >= k:
            small = feature_distances(features[:k], ref_features[:k])
            row["fid_small"], row["mmd_small"] = small["fid"], small["mmd"]
        row["ms_ssim"] = ms_ssim_diversity(images, None if classes is None else classes[:n], seed=self.seed)
        if classes is not None:
            row["class_acc"] = class_accuracy(self.judges.predict_class(images), classes[:n])
        return row

    def _real_rows(self, ref_features: torch.Tensor) -> list[dict[str, Any]]:
        """Real images scored like samples: training images (``real_train``) and, when the held-out set is large
        enough, other held-out images (``real_heldout``, the floor of FID/MMD at this sample size; its Dice is the judge
        segmenter's on the masked reference images)."""
        classes, _, refs = self._class_set()
        rows = []
        for name, kind, items in (
            ("real_train", "real training images", self.real),
            ("real_heldout", "other real held-out images", self.heldout),
        ):
            if len(items) < len(refs):
                continue
            items = items[: len(refs)]
            item_classes = [int(it["class"]) for it in items] if classes is not None else None
            row: dict[str, Any] = {"name": name, "kind": kind, "steps": None, "nfe": None}
            row.update(self._score(_stack(items, "image").float(), ref_features, item_classes))
            row["num_samples"] = len(items)
            rows.append(row)
        if rows and self.mask_reference and self.judges.segmenter is not None:
            masked = _stack(self.mask_reference, "image").float()
            rows[-1].update(
                mask_dice(self.judges.segment(masked), _stack(self.mask_reference, "mask"), self.num_labels)
            )
        return rows

    def run(self) -> dict[str, Any]:
        """Evaluate every sampler; write ``summary.json``, ``summary.md`` and ``samples_<name>.png``.

        A sampler spec may carry ``num_eval`` (generate only the first so many of the class set: FID/MMD then only
        at the small size) and ``masks: false`` (skip the mask set), for expensive samplers such as 1000-step DDPM.

        Returns:
            the summary dict.

        Raises:
            FileExistsError: a summary exists and ``overwrite`` is False.
        """
        summary_json, summary_md = self.output_dir / "summary.json", self.output_dir / "summary.md"
        if not self.overwrite and (summary_json.exists() or summary_md.exists()):
            raise FileExistsError(
                f"{self.output_dir} already holds an evaluation (summary.json); pass --overwrite true or choose "
                "another output folder."
            )
        self.judges.prepare()
        if self.weights is not None:
            load_weights(self.network, self.weights)
        else:
            logger.warning("no weights given: evaluating the generator as constructed")
        self.network.to(self.device).eval()
        shape = tuple(np.shape(self.reference[0]["image"]))
        classes, masks, refs = self._class_set()
        ref_features = self.judges.features(_stack(refs, "image").float())
        rows = self._real_rows(ref_features)
        for row in rows:
            logger.info("%s: %s", row["name"], {k: v for k, v in row.items() if k != "name"})
        num_classes = len(self.class_names)
        for spec in self.samplers:
            sampler = make_sampler(spec, self.time_scale, self.schedule_args, self.guidance_scale)
            n = min(int(spec.get("num_eval", len(refs))), len(refs))
            images, nfe, seconds = generate_images(
                self.network,
                sampler,
                shape,
                classes=None if classes is None else classes[:n],
                masks=None if masks is None else masks[:n],
                num_classes=num_classes,
                num_labels=self.num_labels,
                num=n,
                seed=self.seed,
                batch_size=self.batch_size,
                device=self.device,
            )
            images = (images + 1.0) / 2.0  # model scale [-1, 1] -> image scale [0, 1]
            row: dict[str, Any] = {
                "name": spec["name"],
                "kind": spec.get("kind", "flow"),
                "solver": getattr(sampler, "solver", getattr(sampler, "kind", None)),
                "steps": int(spec["steps"]),
                "nfe": nfe,
            }
            row.update(self._score(images, ref_features, classes))
            row["sec_per_sample"] = seconds / len(images)
            row["num_samples"] = len(images)
            grid_masks = None
            if self.mask_reference and self.judges.segmenter is not None and spec.get("masks", True):
                m_classes = [int(it["class"]) for it in self.mask_reference] if self.class_names else None
                m_masks = _stack(self.mask_reference, "mask")
                m_images, _, _ = generate_images(
                    self.network,
                    sampler,
                    shape,
                    classes=m_classes,
                    masks=m_masks,
                    num_classes=num_classes,
                    num_labels=self.num_labels,
                    num=len(m_masks),
                    seed=self.seed + 1,
                    batch_size=self.batch_size,
                    device=self.device,
                )
                m_images = (m_images + 1.0) / 2.0
                row.update(mask_dice(self.judges.segment(m_images), m_masks, self.num_labels))
                row["num_mask_samples"] = len(m_images)
                grid_masks = (m_images[:8], m_masks[:8], m_classes[:8] if m_classes else None)
            rows.append(row)
            logger.info("%s: %s", spec["name"], {k: v for k, v in row.items() if k != "name"})
            self._grid(spec["name"], images[:16], classes[:16] if classes else None, grid_masks)
        summary = {
            "title": self.title,
            "rows": rows,
            "class_names": self.class_names,
            "num_reference": len(refs),
            "num_small": self.num_small,
            "num_mask_reference": len(self.mask_reference),
            "guidance_scale": self.guidance_scale,
            "judges": self.judges._signature(),
            "feature_extractor": (
                f"penultimate layer ({self.judges.classifier.head.in_features} features) of a ResNet classifier "
                "trained on the real training images (no ImageNet/Inception network)"
            ),
        }
        atomic_write_text(summary_json, json.dumps(summary, indent=2) + "\n", overwrite=True)
        atomic_write_text(summary_md, summary_table(summary) + "\n", overwrite=True)
        logger.info("evaluation written to %s", summary_md)
        return summary

    def _grid(
        self,
        name: str,
        images: torch.Tensor,
        classes: list[int] | None,
        masked: tuple[torch.Tensor, torch.Tensor, list[int] | None] | None,
    ) -> None:
        titles = [self.class_names[c] for c in classes] if classes else None
        all_images, all_titles, all_masks = images, titles, None
        if masked is not None:
            m_images, m_masks, m_classes = masked
            all_images = torch.cat([images, m_images])
            m_titles = [
                f"{self.class_names[c]}+mask" if m_classes else "mask" for c in (m_classes or [0] * len(m_images))
            ]
            all_titles = (titles or [""] * len(images)) + m_titles
            all_masks = torch.cat([torch.zeros_like(m_masks[:1]).expand(len(images), *m_masks.shape[1:]), m_masks])
        save_sample_grid(
            self.output_dir / f"samples_{name}.png", all_images, all_titles, all_masks, title=f"{self.title}: {name}"
        )


def summary_table(summary: Mapping[str, Any]) -> str:
    """Markdown table of an evaluation summary.

    Args:
        summary: from :meth:`GenerationEvaluator.run`.

    Returns:
        markdown text.
    """
    n, k = summary["num_reference"], summary.get("num_small")
    small = bool(k) and k < n
    sizes = f"FID/MMD at N = {n}" + (
        f"; the `@{k}` columns use the first {k} images of every row and of the reference" if small else ""
    )
    lines = [
        f"# {summary['title']}",
        "",
        f"FID / MMD features: {summary['feature_extractor']}. {n} held-out real images as the reference ({sizes}); "
        f"Dice on {summary['num_mask_reference']} masked held-out images (judge segmenter trained on the real "
        "training masks). MS-SSIM: mean over pairs of samples of the same class (lower = more diverse). `real_train` "
        "scores real training images (the judges were trained on them), `real_heldout` other held-out images: the "
        "floor of FID/MMD at this sample size, the judges' accuracy and Dice on unseen real images.",
        "",
    ]
    header = ["sampler", "steps", "NFE", "N", "FID", "MMD"] + ([f"FID@{k}", f"MMD@{k}"] if small else [])
    header += ["MS-SSIM", "class acc", "Dice", "s / sample"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in summary["rows"]:
        cells = [r["name"], _fmt(r.get("steps")), _fmt(r.get("nfe")), _fmt(r.get("num_samples"))]
        cells += [_fmt(r.get("fid"), 3), _fmt(r.get("mmd"), 3)]
        if small:
            cells += [_fmt(r.get("fid_small"), 3), _fmt(r.get("mmd_small"), 3)]
        cells += [_fmt(r.get("ms_ssim"), 3), _fmt(r.get("class_acc"), 3), _fmt(r.get("dice"), 3)]
        cells.append(_fmt(r.get("sec_per_sample"), 3))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
