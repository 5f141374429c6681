# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""Grid embedding and last-observation-carried-forward filling (docs/method.md section 3, CRONOS appendix A.1).

MONAI has no notion of a time grid over a frame stack, so both operators are written here, as array
transforms (operating on ``(T, C, D, H, W)`` frames with ``(T,)`` times and mask) and dictionary transforms
on the batch keys of docs/method.md section 1.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import torch
from monai.transforms import MapTransform, Transform

from monai_tfm.utils.errors import MonaiTFMError

__all__ = ["grid_slots", "GridEmbed", "FillLOCF", "GridEmbedd", "FillLOCFd"]

logger = logging.getLogger(__name__)


def grid_slots(times: torch.Tensor, origin: float, spacing: float, num_slots: int) -> torch.Tensor:
    """Slot of each time on the grid ``g_k = origin + (k - 1) spacing`` (0-based result).

    ``q(t) = clip(1 + floor((t - g_1) / Delta + 1/2), 1, K)``, returned minus one.

    Args:
        times: ``(T,)`` times.
        origin: ``g_1``.
        spacing: ``Delta`` (> 0).
        num_slots: K.

    Returns:
        ``(T,)`` long slot indices in ``[0, K-1]``.

    Raises:
        ValueError: non-positive spacing or slot count.
    """
    if spacing <= 0:
        raise MonaiTFMError(f"grid spacing must be > 0, got {spacing}.")
    if num_slots < 1:
        raise MonaiTFMError(f"number of grid slots must be >= 1, got {num_slots}.")
    t = torch.as_tensor(times, dtype=torch.float64)
    q = torch.floor((t - origin) / spacing + 0.5).long()
    return torch.clamp(q, 0, num_slots - 1)


class GridEmbed(Transform):
    """Place frames onto a K-slot time grid; empty slots are zeros, occupancy is returned.

    Where several frames fall into one slot the latest (in time) wins.

    Args:
        num_slots: K.
        spacing: grid spacing ``Delta`` in the dataset's time unit.
        origin: ``g_1``.
    """

    def __init__(self, num_slots: int, spacing: float, origin: float = 0.0) -> None:
        self.num_slots = int(num_slots)
        self.spacing = float(spacing)
        self.origin = float(origin)

    def __call__(
        self, frames: torch.Tensor, times: torch.Tensor, mask: torch.Tensor | None = None, origin: float | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Embed.

        Args:
            frames: ``(T, C, D, H, W)``.
            times: ``(T,)``.
            mask: ``(T,)`` bool, real frames (padding is ignored); ``None``: all real.
            origin: ``g_1`` of this call (``None``: the grid's own ``origin``); a grid that moves with each sample,
                e.g. one that ends right before the target time (:class:`GridEmbedd` with ``anchor="target"``).

        Returns:
            ``(slots (K, C, D, H, W), slot_times (K,), occupancy (K,) bool)``.
        """
        g1 = self.origin if origin is None else float(origin)
        frames = torch.as_tensor(frames)
        times = torch.as_tensor(times, dtype=torch.float32)
        mask = torch.ones(len(times), dtype=torch.bool) if mask is None else torch.as_tensor(mask).bool()
        out = torch.zeros((self.num_slots, *frames.shape[1:]), dtype=frames.dtype)
        occupancy = torch.zeros(self.num_slots, dtype=torch.bool)
        slot = grid_slots(times, g1, self.spacing, self.num_slots)
        # latest wins: visit the real frames in time order, later writes overwrite earlier ones
        for i in torch.argsort(times, stable=True).tolist():
            if mask[i]:
                out[slot[i]] = frames[i]
                occupancy[slot[i]] = True
        slot_times = g1 + self.spacing * torch.arange(self.num_slots, dtype=torch.float32)
        return out, slot_times, occupancy


class FillLOCF(Transform):
    """Last observation carried forward over empty slots; leading empty slots take the first observed frame.

    Args:
        fill: ``"locf"`` (paper default) or ``"zeros"`` (ablation "no LOCF": empty slots stay zero).
    """

    def __init__(self, fill: str = "locf") -> None:
        if fill not in ("locf", "zeros"):
            raise MonaiTFMError(f"fill must be 'locf' or 'zeros', got {fill!r}.")
        self.fill = fill

    def __call__(self, slots: torch.Tensor, occupancy: torch.Tensor) -> torch.Tensor:
        """Fill.

        Args:
            slots: ``(K, C, D, H, W)``, empty slots arbitrary.
            occupancy: ``(K,)`` bool.

        Returns:
            filled ``(K, C, D, H, W)`` (a new tensor).

        Raises:
            ValueError: no occupied slot at all.
        """
        occupancy = torch.as_tensor(occupancy).bool()
        if not bool(occupancy.any()):
            raise MonaiTFMError("cannot fill a grid with no observed frame (all slots are missing).")
        slots = torch.as_tensor(slots)
        if self.fill == "zeros":
            return torch.where(occupancy.reshape(-1, *([1] * (slots.ndim - 1))), slots, torch.zeros_like(slots))
        first = int(torch.nonzero(occupancy)[0])
        source = []
        current = first
        for k in range(len(occupancy)):
            if occupancy[k]:
                current = k
            source.append(current)
        return slots[torch.as_tensor(source)].clone()


class GridEmbedd(MapTransform):
    """Dictionary form of :class:`GridEmbed` on the batch keys of docs/method.md section 1 (``context``,
    ``context_time``, ``context_mask``).

    After it, ``context`` holds K slots, ``context_time`` the grid times and ``context_mask`` the occupancy.

    Two kinds of grid:

    * ``anchor="origin"`` (default): a fixed grid ``g_k = origin + (k - 1) spacing`` (cine and perfusion series, whose
      frames already live on one grid of phases or frames);
    * ``anchor="target"``: a grid that ends one ``spacing`` before each sample's ``target_time``,
      ``g_k = target_time - (K - k + 1) spacing``, so slot ``K`` holds the latest context frame within half a spacing
      of ``target_time - spacing`` and the slot position tells how long before the target a frame was acquired
      (irregular follow-up visits, e.g. a grid of weeks before the visit to forecast). Frames older than the grid
      fall into the first slot (latest wins), frames at the target time into the last. ``origin`` is ignored.
      ``lead`` moves the end of the grid further from the target: ``g_K = target_time - lead`` (a protocol that hides
      frames right before the target, e.g. ISLES perfusion: 7 slots ending 3 frames before the target, ``lead=3``).

    Args:
        num_slots: K.
        spacing: grid spacing.
        origin: ``g_1`` of the fixed grid.
        anchor: ``"origin"`` or ``"target"`` (see above).
        lead: ``anchor="target"`` only: time from the last slot to the target time (``None``: one ``spacing``).

    Raises:
        ValueError: an unknown ``anchor``, or a ``lead`` that is not positive.
    """

    def __init__(
        self,
        num_slots: int,
        spacing: float,
        origin: float = 0.0,
        anchor: str = "origin",
        allow_missing_keys: bool = False,
        lead: float | None = None,
    ) -> None:
        super().__init__(["context", "context_time", "context_mask"], allow_missing_keys)
        if anchor not in ("origin", "target"):
            raise MonaiTFMError(f"GridEmbedd anchor must be 'origin' or 'target', got {anchor!r}.")
        if lead is not None and not float(lead) > 0:
            raise MonaiTFMError(f"GridEmbedd lead must be > 0 (time from the last slot to the target), got {lead!r}.")
        self.anchor = anchor
        self.lead = float(spacing) if lead is None else float(lead)
        self.embed = GridEmbed(num_slots, spacing, origin)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        """Embed the context of one sample.

        Args:
            data: sample dict.

        Returns:
            the sample with grid-embedded context.

        Raises:
            KeyError: ``anchor="target"`` and the sample has no ``target_time``.
        """
        d = dict(data)
        origin = None
        if self.anchor == "target":
            if "target_time" not in d:
                raise KeyError(
                    f"subject {d.get('subject', '?')!r}: GridEmbedd(anchor='target') needs the sample's 'target_time'."
                )
            t_target = float(torch.as_tensor(d["target_time"], dtype=torch.float64).reshape(()))
            origin = t_target - self.lead - (self.embed.num_slots - 1) * self.embed.spacing
        d["context"], d["context_time"], d["context_mask"] = self.embed(
            d["context"], d["context_time"], d.get("context_mask"), origin=origin
        )
        return d

    def context_indices(
        self,
        times: Sequence[float],
        target_time: float,
        names: Sequence[str] | None = None,
        error: type[Exception] = MonaiTFMError,
        atol: float = 1e-6,
    ) -> list[int]:
        """The strict inference rule of this grid: which of a new series' scans are context for ``target_time``.

        Training draws always fit the grid; a user's own scans need not, so before a forecast every time is checked
        against what the grid can represent: the scans at or before the target time are context (later ones are
        left out with a warning: the discrete model forecasts forward); on a fixed grid every one of them and the
        target must lie on the grid (the target at most one spacing after the last slot). A grid anchored at the
        target accepts any target; older scans share its first slot, and with ``lead`` longer than one spacing the
        scans within the hidden gap before the target are left out (the model never saw them in training).
        Two scans in one slot are allowed (the later wins, as in :meth:`__call__`), with a warning.

        Args:
            times: scan times in increasing order.
            target_time: the time to forecast.
            names: scan names for messages (default: ``scan 0``, ``scan 1``, ...).
            error: the exception class to raise (a subclass of :class:`MonaiTFMError` for a command's own errors).
            atol: time tolerance, relative to ``max(1, spacing)``.

        Returns:
            indices of the context scans, in time order.

        Raises:
            error: a time the grid cannot represent, or no scan usable as context.
        """
        g = self.embed
        names = list(names) if names is not None else [f"scan {i}" for i in range(len(times))]
        anchored = self.anchor == "target"
        # a fixed grid starts at g.origin; a target-anchored one ends `lead` before the target (as in __call__)
        first = target_time - self.lead - (g.num_slots - 1) * g.spacing if anchored else g.origin
        last = first + (g.num_slots - 1) * g.spacing
        grid_text = (
            f"the discrete model of this bundle places scans on {g.num_slots} time slots {first:g}, "
            f"{first + g.spacing:g}, ..., {last:g} (spacing {g.spacing:g})"
        )
        tol = atol * max(1.0, abs(g.spacing))
        if not anchored and (target_time < first - tol or target_time > last + g.spacing + tol):
            raise error(
                f"target time {target_time:g} lies outside what the time grid can represent: {grid_text} and "
                f"forecasts up to {last + g.spacing:g}."
            )
        idx = list(range(len(times)))
        later = [i for i in idx if times[i] > target_time + tol]
        if later:
            logger.warning(
                "discrete variant: %d scan(s) after the target time %g are not used (%s)",
                len(later),
                target_time,
                ", ".join(names[i] for i in later),
            )
        idx = [i for i in idx if times[i] <= target_time + tol]
        if anchored and self.lead > g.spacing + tol:
            # the protocol hides the frames between the last slot and the target (e.g. ISLES: 7 frames ending 3
            # before the target); the model never saw them, so they are left out
            hidden = [i for i in idx if times[i] >= last + g.spacing / 2 - tol]
            if hidden:
                logger.warning(
                    "%d scan(s) within %g of the target time %g are not used: the model forecasts across that gap (%s)",
                    len(hidden),
                    self.lead - g.spacing / 2,
                    target_time,
                    ", ".join(names[i] for i in hidden),
                )
                idx = [i for i in idx if i not in hidden]
        if not idx:
            raise error(
                f"no scan at or before the target time {target_time:g}"
                + (f" outside the hidden gap before it ({grid_text})" if anchored else "")
                + ": the discrete model forecasts forward in time."
            )
        for i in idx:
            q = math.floor((times[i] - first) / g.spacing + 0.5)
            if anchored and not 0 <= q < g.num_slots:
                logger.info(
                    "scan '%s' at time %g lies outside the time slots %s: it goes into the %s slot",
                    names[i],
                    times[i],
                    f"{first:g}..{last:g}",
                    "first" if q < 0 else "last",
                )
            elif not 0 <= q < g.num_slots:
                raise error(
                    f"scan '{names[i]}' at time {times[i]:g} lies outside the time grid: {grid_text}, so scan times "
                    f"must lie in [{first - g.spacing / 2:g}, {last + g.spacing / 2:g})."
                )
        slots = grid_slots(torch.tensor([times[i] for i in idx]), first, g.spacing, g.num_slots).tolist()
        for a in range(len(idx) - 1):
            if slots[a] == slots[a + 1]:
                logger.warning(
                    "scans '%s' and '%s' fall into the same time slot %d: the later one is used",
                    names[idx[a]],
                    names[idx[a + 1]],
                    slots[a],
                )
        return idx


class FillLOCFd(MapTransform):
    """Dictionary form of :class:`FillLOCF`; the occupancy stays in ``context_mask``.

    Args:
        fill: ``"locf"`` or ``"zeros"``.
    """

    def __init__(self, fill: str = "locf", allow_missing_keys: bool = False) -> None:
        super().__init__(["context", "context_mask"], allow_missing_keys)
        self.filler = FillLOCF(fill)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        """Fill the context of one sample.

        Args:
            data: sample dict.

        Returns:
            the sample with filled context.

        Raises:
            ValueError: all slots missing (names the subject).
        """
        d = dict(data)
        try:
            d["context"] = self.filler(d["context"], d["context_mask"])
        except ValueError as e:
            raise MonaiTFMError(f"subject {d.get('subject', '?')!r}: {e}") from e
        return d
