# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""Losses of longitudinal self-supervision and consistency finetuning (Ren et al., NeurIPS 2022).

Pretraining (paper eq. 7): ``L_PT = lambda L_sim + alpha L_rec + mu L_S + gamma L_C + beta L_O`` with

* ``L_sim`` (eq. 1): patchwise SimSiam, ``1/2 D(p_a, sg(z_b)) + 1/2 D(p_b, sg(z_a))`` with ``D`` the negative
  cosine similarity and ``sg`` the stop-gradient, averaged over the ``M`` sampled locations and the tapped layers;
* ``L_rec`` (eq. 5): denoising reconstruction, the mean squared error between the network output on the
  augmented image and the geometrically augmented but intensity-clean image;
* ``L_S`` (eq. 3): hinge on the standard deviation of every projection dimension over the sampled locations,
  ``mean(max(0, eta - sqrt(Var + eps)))``, on the decoder layers (VICReg variance);
* ``L_C`` (eq. 4): sum of the squared off-diagonal covariances divided by the dimension, on the decoder layers;
* ``L_O`` (eq. 2): orthogonality of matched encoder and decoder projections, the mean cosine of the two at the same
  locations. The paper's projector ends with a ReLU, so its cosine is never negative; ours ends with batch norm as
  in SimSiam, so the absolute cosine is used (equal to eq. 2 whenever the cosine is non-negative, and zero exactly
  for orthogonal inputs).

Defaults are the paper's: ``lambda = 1``, ``alpha = 10``, ``gamma = 1e-3``, ``beta = 100``, ``mu = 1e-2`` (OASIS3;
``1e-3`` for IBIS), ``eta = 1``, ``eps = 1e-4``.

Finetuning (eq. 8 and 6): ``L_FT = L_sup + w L_cs`` with ``L_sup = (1 - Dice) + CE`` (MONAI ``DiceCELoss``) and
``L_cs = 1 - Dice(G(x_j), G(x_j+1))`` between the softmax predictions of two timepoints of one unlabelled subject
(MONAI ``DiceLoss`` with ``squared_pred=True``: ``2 sum(ab) / (sum(a^2) + sum(b^2))``, which is exactly 1 for
identical predictions, also soft ones; the linear-denominator Dice is not).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss, DiceLoss
from torch import nn

from monai_tfm.utils.errors import MonaiTFMError

__all__ = [
    "ConsistencyLoss",
    "LongitudinalFinetuneLoss",
    "LongitudinalSSLLoss",
    "covariance_loss",
    "negative_cosine",
    "orthogonality_loss",
    "patch_similarity_loss",
    "variance_loss",
]


def negative_cosine(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """SimSiam's ``D(p, z) = -<p/|p|, z/|z|>`` with a stop-gradient on ``z``, averaged over rows.

    Args:
        p: predictions ``(N, D)``.
        z: projections ``(N, D)`` (detached here: no gradient flows into ``z``).

    Returns:
        scalar in ``[-1, 1]``.
    """
    return -(F.normalize(p, dim=1) * F.normalize(z.detach(), dim=1)).sum(dim=1).mean()


def patch_similarity_loss(p_a: torch.Tensor, p_b: torch.Tensor, z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
    """Symmetric patchwise SimSiam loss of one layer: ``1/2 D(p_a, z_b) + 1/2 D(p_b, z_a)`` (paper eq. 1).

    Row ``m`` of every input is the same voxel location in timepoint ``a`` and ``b``.

    Args:
        p_a: predictions of timepoint ``a`` ``(M, D)``.
        p_b: predictions of timepoint ``b``.
        z_a: projections of timepoint ``a`` (stop-gradient).
        z_b: projections of timepoint ``b`` (stop-gradient).

    Returns:
        scalar in ``[-1, 1]``.
    """
    return 0.5 * negative_cosine(p_a, z_b) + 0.5 * negative_cosine(p_b, z_a)


def variance_loss(z: torch.Tensor, threshold: float = 1.0, eps: float = 1e-4) -> torch.Tensor:
    """Hinge on the per-dimension standard deviation over the samples (paper eq. 3, VICReg).

    ``mean_d max(0, threshold - sqrt(Var_n(z[:, d]) + eps))`` with the unbiased variance over the ``N`` rows; zero
    when every dimension varies by more than ``threshold``.

    Args:
        z: projections ``(N, D)``, ``N >= 2``.
        threshold: ``eta``.
        eps: added to the variance for numerical stability.

    Returns:
        scalar >= 0.

    Raises:
        ValueError: for fewer than two rows.
    """
    if z.dim() != 2 or z.shape[0] < 2:
        raise MonaiTFMError(f"variance_loss needs (N >= 2, D) samples, got shape {tuple(z.shape)}.")
    std = torch.sqrt(z.var(dim=0) + eps)
    return F.relu(threshold - std).mean()


def covariance_loss(z: torch.Tensor) -> torch.Tensor:
    """Sum of squared off-diagonal covariances divided by the dimension (paper eq. 4, VICReg).

    ``C = 1/(N-1) sum_i (z_i - mean)(z_i - mean)^T``; the loss is ``sum_{u != v} C_uv^2 / D``.

    Args:
        z: projections ``(N, D)``, ``N >= 2``.

    Returns:
        scalar >= 0.

    Raises:
        ValueError: for fewer than two rows.
    """
    if z.dim() != 2 or z.shape[0] < 2:
        raise MonaiTFMError(f"covariance_loss needs (N >= 2, D) samples, got shape {tuple(z.shape)}.")
    n, d = z.shape
    zc = z - z.mean(dim=0, keepdim=True)
    cov = zc.T @ zc / (n - 1)
    off = cov - torch.diag(torch.diagonal(cov))
    return (off**2).sum() / d


def orthogonality_loss(z_e: torch.Tensor, z_d: torch.Tensor) -> torch.Tensor:
    """Mean absolute cosine between matched encoder and decoder projections (paper eq. 2, see module notes).

    Args:
        z_e: encoder projections ``(M, D)``.
        z_d: decoder projections ``(M, D)`` at the same locations.

    Returns:
        scalar in ``[0, 1]``, zero for orthogonal rows.
    """
    return (F.normalize(z_e, dim=1) * F.normalize(z_d, dim=1)).sum(dim=1).abs().mean()


class LongitudinalSSLLoss(nn.Module):
    """Total pretraining loss ``L_PT`` (paper eq. 7) on the output of :class:`monai_tfm.ssl.LongitudinalSSLNet`.

    The terms of the last call are kept in :attr:`last_terms` (floats) for logging.

    Args:
        sim_weight: ``lambda`` (similarity).
        rec_weight: ``alpha`` (reconstruction).
        var_weight: ``mu`` (variance).
        cov_weight: ``gamma`` (covariance).
        orth_weight: ``beta`` (orthogonality).
        var_threshold: ``eta``.
        eps: variance stabiliser.

    Raises:
        ValueError: for a negative weight.
    """

    def __init__(
        self,
        sim_weight: float = 1.0,
        rec_weight: float = 10.0,
        var_weight: float = 1e-2,
        cov_weight: float = 1e-3,
        orth_weight: float = 100.0,
        var_threshold: float = 1.0,
        eps: float = 1e-4,
    ) -> None:
        super().__init__()
        self.weights = {
            "sim": float(sim_weight),
            "rec": float(rec_weight),
            "var": float(var_weight),
            "cov": float(cov_weight),
            "orth": float(orth_weight),
        }
        bad = {k: v for k, v in self.weights.items() if v < 0}
        if bad:
            raise MonaiTFMError(f"loss weights must be >= 0, got {bad}.")
        self.var_threshold = float(var_threshold)
        self.eps = float(eps)
        self.last_terms: dict[str, float] = {}

    def terms(self, output: Mapping, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """The five unweighted terms.

        Args:
            output: the network's dict (``pred``, ``z``, ``p``, layer names).
            target: the clean targets of the reconstruction, stacked like the input ``(2B, C, *S)``.

        Returns:
            ``{"sim", "rec", "var", "cov", "orth"}`` scalars (zero for an empty selection).

        Raises:
            KeyError: the output lacks a key.
            ValueError: reconstruction and target shapes differ.
        """
        for key in ("pred", "z", "p", "encoder_layers", "decoder_layers", "orthogonal_pairs"):
            if key not in output:
                raise KeyError(f"the SSL network output has no {key!r}; use monai_tfm.ssl.LongitudinalSSLNet.")
        pred = output["pred"]
        if pred.shape != target.shape:
            raise MonaiTFMError(f"reconstruction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape.")
        zero = pred.new_zeros(())
        z, p = output["z"], output["p"]
        layers = list(output["encoder_layers"]) + list(output["decoder_layers"])
        sim = torch.stack([patch_similarity_loss(p[n][0], p[n][1], z[n][0], z[n][1]) for n in layers]).mean()
        dec = list(output["decoder_layers"])
        var = (
            torch.stack([variance_loss(t, self.var_threshold, self.eps) for n in dec for t in z[n]]).mean()
            if dec
            else zero
        )
        cov = torch.stack([covariance_loss(t) for n in dec for t in z[n]]).mean() if dec else zero
        pairs = list(output["orthogonal_pairs"])
        orth = (
            torch.stack([orthogonality_loss(ze, zd) for e, d in pairs for ze, zd in zip(z[e], z[d])]).mean()
            if pairs
            else zero
        )
        rec = F.mse_loss(pred, target)
        return {"sim": sim, "rec": rec, "var": var, "cov": cov, "orth": orth}

    def forward(self, output: Mapping, target: torch.Tensor) -> torch.Tensor:
        """Weighted sum of the terms.

        Args:
            output: the network's dict.
            target: reconstruction targets ``(2B, C, *S)``.

        Returns:
            scalar loss.
        """
        terms = self.terms(output, target)
        self.last_terms = {k: float(v.detach()) for k, v in terms.items()}
        return sum(self.weights[k] * v for k, v in terms.items())


class ConsistencyLoss(nn.Module):
    """``L_cs = 1 - Dice(softmax(G(x_j)), softmax(G(x_j+1)))`` (paper eq. 6), gradients into both predictions.

    Args:
        include_background: count the background class in the Dice (default no: the background would dominate).
        softmax: apply a softmax over channels first (the inputs are logits).

    Raises:
        ValueError: in :meth:`forward`, for predictions of different shapes.
    """

    def __init__(self, include_background: bool = False, softmax: bool = True) -> None:
        super().__init__()
        self.softmax = softmax
        self.dice = DiceLoss(include_background=include_background, squared_pred=True, reduction="mean")

    def forward(self, pred_a: torch.Tensor, pred_b: torch.Tensor) -> torch.Tensor:
        """Consistency of two predictions of one subject.

        Args:
            pred_a: ``(B, K, *S)`` logits (or probabilities with ``softmax=False``) of timepoint ``j``.
            pred_b: the same of timepoint ``j + 1``.

        Returns:
            scalar in ``[0, 1]``; zero for identical predictions.
        """
        if pred_a.shape != pred_b.shape:
            raise MonaiTFMError(f"predictions differ in shape: {tuple(pred_a.shape)} vs {tuple(pred_b.shape)}.")
        if self.softmax:
            pred_a, pred_b = torch.softmax(pred_a, dim=1), torch.softmax(pred_b, dim=1)
        return self.dice(pred_a, pred_b)


class LongitudinalFinetuneLoss(nn.Module):
    """``L_FT = (1 - Dice + CE)(G(x), y) + w L_cs`` on a batch that stacks labelled images and unlabelled pairs.

    The predictions stack ``[G(x) ; G(x_j) ; G(x_j+1)]`` along the batch (``3B`` items, see
    :class:`monai_tfm.ssl.FinetunePrepareBatch`) or hold only ``G(x)`` (``B`` items: no consistency term); ``B`` is
    the batch of the label.

    Args:
        consistency_weight: ``w`` (paper 1; 0 switches the consistency term off).
        include_background: background class in the consistency Dice.
        dice_ce_kwargs: further arguments of MONAI's ``DiceCELoss`` (default ``to_onehot_y=True, softmax=True``).

    Raises:
        ValueError: for a negative weight.
    """

    def __init__(
        self, consistency_weight: float = 1.0, include_background: bool = False, dice_ce_kwargs: dict | None = None
    ) -> None:
        super().__init__()
        if consistency_weight < 0:
            raise MonaiTFMError(f"consistency_weight must be >= 0, got {consistency_weight}.")
        self.consistency_weight = float(consistency_weight)
        kwargs = {"to_onehot_y": True, "softmax": True, **(dice_ce_kwargs or {})}
        self.supervised = DiceCELoss(**kwargs)
        self.consistency = ConsistencyLoss(include_background=include_background)
        self.last_terms: dict[str, float] = {}

    def forward(self, pred: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """Supervised plus consistency loss.

        Args:
            pred: ``(B, K, *S)`` or ``(3B, K, *S)`` logits.
            label: ``(B, 1, *S)`` class indices.

        Returns:
            scalar loss.

        Raises:
            ValueError: when the prediction batch is neither ``B`` nor ``3B``.
        """
        b = label.shape[0]
        if pred.shape[0] not in (b, 3 * b):
            raise MonaiTFMError(
                f"expected {b} (labelled only) or {3 * b} (labelled + pairs) predictions for {b} labels, "
                f"got {pred.shape[0]}."
            )
        sup = self.supervised(pred[:b], label)
        terms = {"sup": sup}
        loss = sup
        if pred.shape[0] == 3 * b:
            cs = self.consistency(pred[b : 2 * b], pred[2 * b :])
            terms["cs"] = cs
            loss = loss + self.consistency_weight * cs
        self.last_terms = {k: float(v.detach()) for k, v in terms.items()}
        return loss
