# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""Grid embedding and last-observation-carried-forward filling (docs/method.md section 3, CRONOS appendix A.1).

MONAI has no notion of a time grid over a frame stack, so both operators are written here, as array
transforms (operating on ``(T, C, D, H, W)`` frames with ``(T,)`` times and mask) and dictionary transforms
on the batch keys of docs/method.md section 1.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import torch
from monai.transforms import MapTransform, Transform

from monai_tfm.utils.errors import MonaiTFMError

__all__ = ["grid_slots", "GridEmbed", "FillLOCF", "GridEmbedd", "FillLOCFd"]


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
