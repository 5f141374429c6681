# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""Choosing the target frame and the context of a series (docs/method.md sections 3, 4 and 6).

One protocol object (:class:`ContextProtocol`) describes how a sample is drawn from a series; one function
(:func:`draw_context`) draws it from a NumPy generator; two sources feed it: :class:`RandContextd` (a fresh
draw for every training sample) and :func:`make_fixed_draws` (validation/test draws keyed by
``(seed, subject, draw index)``, written to JSON once and reused by every model at every epoch: TFM paper
section 3.2). :class:`SelectContextd` turns a draw into the batch keys (docs/method.md section 1).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.transforms import MapTransform, Randomizable

from monai_tfm.utils.errors import MonaiTFMError
from monai_tfm.utils.io import atomic_write_text

__all__ = [
    "ContextProtocol",
    "ContextDraw",
    "draw_context",
    "subject_rng",
    "make_fixed_draws",
    "padded_slots",
    "select_context",
    "SelectContextd",
    "RandContextd",
    "InferenceContextd",
    "TimeRange",
]

logger = logging.getLogger(__name__)

DRAWS_FORMAT_VERSION = 1


@dataclass(frozen=True)
class ContextProtocol:
    """How a forecasting sample is drawn from a series of N frames (indices ``0..N-1`` in time order).

    Args:
        target: ``"random"`` (target index uniform in ``[min_target, max_target]``) or ``"last"`` (the last frame;
            with the defaults ``gap=0``, ``keep_prob=1`` the context is every earlier frame, the latest
            ``max_context`` of them: follow-up series such as LUMIERE).
        gap: number of frames right before the target that are hidden from the context (the evaluation
            protocol's gap; an inferer hides the same number of frames).
        min_gap: training only: if set, every draw hides a gap drawn uniformly from ``[min_gap, gap]`` instead of
            exactly ``gap`` frames, so that a model also learns from nearer targets (``None``: always ``gap``).
        window: at most this many candidate frames directly before the hidden gap are eligible as context
            (``None``: all earlier frames).
        keep_prob: probability to keep each eligible context frame (1: keep all).
        min_keep: at least this many context frames are kept (when the draw keeps fewer, random eligible frames are
            forced in).
        max_context: keep at most the latest ``max_context`` context frames (``T_max``; ``None``: no limit).
        min_target: smallest target index (``None``: ``gap + 1``, so that at least one frame is eligible).
        max_target: largest target index (``None``: the last frame).
        num_context_samples: if set, draw exactly this many context frames uniformly among the eligible ones
            instead of Bernoulli masking (CRONOS appendix B.6.2: 2 of a 4-frame grid).
    """

    target: str = "random"
    gap: int = 0
    window: int | None = None
    keep_prob: float = 1.0
    min_keep: int = 1
    max_context: int | None = None
    min_target: int | None = None
    max_target: int | None = None
    num_context_samples: int | None = None
    min_gap: int | None = None

    def __post_init__(self) -> None:
        if self.target not in ("random", "last"):
            raise MonaiTFMError(f"ContextProtocol.target must be 'random' or 'last', got {self.target!r}.")
        if self.gap < 0:
            raise MonaiTFMError(f"ContextProtocol.gap must be >= 0, got {self.gap}.")
        if self.min_gap is not None and not 0 <= self.min_gap <= self.gap:
            raise MonaiTFMError(f"ContextProtocol.min_gap must be in [0, gap={self.gap}] or None, got {self.min_gap}.")
        if not 0.0 <= self.keep_prob <= 1.0:
            raise MonaiTFMError(f"ContextProtocol.keep_prob must be in [0, 1], got {self.keep_prob}.")
        if self.min_keep < 1:
            raise MonaiTFMError(f"ContextProtocol.min_keep must be >= 1, got {self.min_keep}.")
        if self.window is not None and self.window < 1:
            raise MonaiTFMError(f"ContextProtocol.window must be >= 1 or None, got {self.window}.")
        if self.max_context is not None and self.max_context < 1:
            raise MonaiTFMError(f"ContextProtocol.max_context must be >= 1 or None, got {self.max_context}.")

    def target_range(self, num_frames: int) -> tuple[int, int]:
        """Inclusive range of admissible target indices for a series of ``num_frames`` frames.

        Args:
            num_frames: N.

        Returns:
            ``(lo, hi)``.

        Raises:
            ValueError: the series is too short for this protocol.
        """
        if self.target == "last":
            lo = hi = num_frames - 1
        else:
            lo = self.gap + 1 if self.min_target is None else self.min_target
            hi = num_frames - 1 if self.max_target is None else min(self.max_target, num_frames - 1)
        if lo - self.gap < 1 or lo > hi:
            raise MonaiTFMError(
                f"a series of {num_frames} frames is too short for this protocol (gap {self.gap}, "
                f"target indices {lo}..{hi}): the target needs at least one context frame before the hidden gap."
            )
        return lo, hi


@dataclass(frozen=True)
class ContextDraw:
    """One drawn sample: target index and the (sorted) context frame indices."""

    target_index: int
    context_indices: tuple[int, ...]


def draw_context(rng: np.random.Generator, num_frames: int, protocol: ContextProtocol) -> ContextDraw:
    """Draw a target index and context indices for a series of ``num_frames`` frames.

    Args:
        rng: NumPy generator (the only source of randomness).
        num_frames: N.
        protocol: the sampling protocol.

    Returns:
        the draw.
    """
    lo, hi = protocol.target_range(num_frames)
    k = int(rng.integers(lo, hi + 1))
    gap = protocol.gap if protocol.min_gap is None else int(rng.integers(protocol.min_gap, protocol.gap + 1))
    last_eligible = k - gap - 1
    first_eligible = 0 if protocol.window is None else max(0, last_eligible - protocol.window + 1)
    eligible = np.arange(first_eligible, last_eligible + 1)
    if protocol.num_context_samples is not None:
        n = min(protocol.num_context_samples, len(eligible))
        chosen = np.sort(rng.choice(eligible, size=n, replace=False))
    else:
        keep = rng.random(len(eligible)) < protocol.keep_prob
        n_force = min(protocol.min_keep, len(eligible))
        if keep.sum() < n_force:
            # force in random eligible frames until the minimum is met (at least one context frame)
            missing = np.flatnonzero(~keep)
            keep[rng.choice(missing, size=n_force - int(keep.sum()), replace=False)] = True
        chosen = eligible[keep]
    if protocol.max_context is not None:
        chosen = chosen[-protocol.max_context :]
    return ContextDraw(k, tuple(int(i) for i in chosen))


def subject_rng(seed: int, subject: str, draw: int) -> np.random.Generator:
    """A NumPy generator keyed by ``(seed, subject, draw)``, independent of order, workers and platform.

    Args:
        seed: the run's validation seed.
        subject: subject id.
        draw: draw index.

    Returns:
        a fresh ``numpy.random.Generator``.
    """
    digest = hashlib.sha256(f"{int(seed)}|{subject}|{int(draw)}".encode()).digest()
    return np.random.default_rng(np.frombuffer(digest[:16], dtype=np.uint32).tolist())


def _num_frames(item: Mapping) -> int:
    if "frames" in item:
        return len(item["frames"])
    if "series_time" in item:
        return len(item["series_time"])
    raise KeyError(f"datalist item of subject {item.get('subject', '?')!r} has no 'frames' list.")


def make_fixed_draws(
    items: Sequence[Mapping],
    protocol: ContextProtocol,
    seed: int = 0,
    num_draws: int = 1,
    path: str | Path | None = None,
) -> list[dict]:
    """Expand datalist items into fixed validation/test samples and persist the draws as JSON.

    Every draw comes from :func:`subject_rng` ``(seed, subject, draw)``, so two runs, two models or two
    machines get the same samples. If ``path`` exists, its draws are loaded and must match the protocol and
    the subjects; otherwise they are written there (atomically) for inspection and reuse.

    Args:
        items: datalist items (need ``subject`` and ``frames``).
        protocol: sampling protocol.
        seed: validation seed.
        num_draws: draws per subject.
        path: JSON file next to the run (``None``: do not persist).

    Returns:
        one item per (subject, draw), a copy of the datalist item plus ``draw``, ``target_index`` and
        ``context_indices``.

    Raises:
        ValueError: an existing draws file that was made with another protocol, seed or subject set.
    """
    items = list(items)
    record = {
        "version": DRAWS_FORMAT_VERSION,
        "seed": int(seed),
        "num_draws": int(num_draws),
        "protocol": asdict(protocol),
        "draws": [],
    }
    for item in items:
        subject = str(item["subject"])
        n = _num_frames(item)
        for d in range(int(num_draws)):
            drawn = draw_context(subject_rng(seed, subject, d), n, protocol)
            record["draws"].append(
                {
                    "subject": subject,
                    "draw": d,
                    "target_index": drawn.target_index,
                    "context_indices": list(drawn.context_indices),
                }
            )
    if path is not None:
        path = Path(path)
        if path.exists():
            saved = json.loads(path.read_text())
            try:  # a file of an older version lacks the newer protocol fields: their defaults apply
                same_protocol = ContextProtocol(**saved.get("protocol", {})) == protocol
            except TypeError:
                same_protocol = False
            same_draws = (saved.get("seed"), saved.get("num_draws")) == (record["seed"], record["num_draws"])
            same = same_protocol and same_draws
            if not same or saved.get("draws") != record["draws"]:
                raise MonaiTFMError(
                    f"fixed draws file {path} was written for another protocol, seed or subject set; "
                    "delete it or point the run to a new output folder."
                )
            logger.info("reusing fixed draws from %s", path)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, json.dumps(record, indent=1))
            logger.info("wrote %d fixed draws to %s", len(record["draws"]), path)
    by_subject = {str(i["subject"]): i for i in items}
    out = []
    for rec in record["draws"]:
        new = dict(by_subject[rec["subject"]])
        new.update(draw=rec["draw"], target_index=rec["target_index"], context_indices=rec["context_indices"])
        out.append(new)
    return out


def padded_slots(indices: Sequence[int], max_context: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Frame index of each context slot and the real-frame mask: the latest ``max_context`` indices, padded by
    repeating the last one (so the last slot is always the last real frame).

    Args:
        indices: sorted frame indices of the context (at least one).
        max_context: number of slots (``None``: one per index, no padding).

    Returns:
        ``(slots (T,) long, mask (T,) bool)``.
    """
    idx = [int(i) for i in indices]
    if max_context is not None:
        idx = idx[-max_context:]
    n_pad = 0 if max_context is None else max_context - len(idx)
    slots = torch.as_tensor(idx + [idx[-1]] * n_pad, dtype=torch.long)
    return slots, torch.arange(len(slots)) < len(idx)


def select_context(
    series: torch.Tensor,
    times: torch.Tensor,
    target_index: int,
    context_indices: Sequence[int],
    max_context: int | None = None,
) -> dict[str, torch.Tensor]:
    """Cut a drawn sample out of a series, in the batch layout (docs/method.md section 1) with padding to
    ``max_context``.

    Padded slots repeat the last real frame (and its time) and have ``context_mask`` False, so the last slot
    is always the last context image.

    Args:
        series: ``(N, C, D, H, W)`` frames in time order.
        times: ``(N,)`` times.
        target_index: index of the target frame.
        context_indices: sorted indices of the context frames (all before the target).
        max_context: pad (and if needed cut, keeping the latest) to this many slots; ``None``: no padding.

    Returns:
        dict with ``context``, ``context_time``, ``context_mask``, ``target``, ``target_time``.

    Raises:
        ValueError: empty context, unsorted indices or a context frame not before the target.
    """
    idx = [int(i) for i in context_indices]
    if not idx:
        raise MonaiTFMError("a sample needs at least one context frame.")
    if sorted(idx) != idx or idx[-1] >= int(target_index):
        raise MonaiTFMError(f"context indices {idx} must be sorted and before the target index {target_index}.")
    slot_t, mask = padded_slots(idx, max_context)
    series_t = torch.as_tensor(series).as_subclass(torch.Tensor)  # plain tensors in the batch; affine kept apart
    times_t = torch.as_tensor(times, dtype=torch.float32)
    return {
        "context": series_t[slot_t],
        "context_time": times_t[slot_t],
        "context_mask": mask,
        "target": series_t[int(target_index)],
        "target_time": times_t[int(target_index)],
    }


class SelectContextd(MapTransform):
    """Apply a stored draw (``target_index``, ``context_indices``) to a loaded series.

    Args:
        series_key: key of the ``(N, C, D, H, W)`` series.
        time_key: key of the ``(N,)`` times.
        max_context: slots to pad to (``T_max``).
        remove_series: drop the full series and its times from the output (memory; and series of different
            lengths, e.g. follow-up visits, would not collate).
        drop_keys: keys of the datalist item that do not collate (variable-length lists) and are removed.
    """

    def __init__(
        self,
        series_key: str = "series",
        time_key: str = "series_time",
        max_context: int | None = None,
        remove_series: bool = True,
        drop_keys: Sequence[str] = ("frames", "context_indices", "series_label", "series_label_mask", "metadata"),
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__([series_key, time_key], allow_missing_keys)
        self.drop_keys = tuple(drop_keys)
        self.series_key = series_key
        self.time_key = time_key
        self.max_context = max_context
        self.remove_series = remove_series

    def _select(self, d: dict, target_index: int, context_indices: Sequence[int]) -> dict:
        n = len(d[self.time_key])
        if not 0 <= target_index < n:
            raise MonaiTFMError(
                f"subject {d.get('subject', '?')!r}: target index {target_index} outside a series of {n} frames."
            )
        series = d[self.series_key]
        if hasattr(series, "affine"):
            d["affine"] = torch.as_tensor(series.affine).as_subclass(torch.Tensor).clone()
        d.update(select_context(series, d[self.time_key], target_index, context_indices, self.max_context))
        if self.remove_series:
            d.pop(self.series_key)
            d.pop(self.time_key, None)
        for key in self.drop_keys:
            d.pop(key, None)
        return d

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        """Select the stored draw of ``data``.

        Args:
            data: item with the series, its times, ``target_index`` and ``context_indices``.

        Returns:
            the item with the batch keys of docs/method.md section 1 added.
        """
        d = dict(data)
        return self._select(d, int(d["target_index"]), list(d["context_indices"]))


class RandContextd(Randomizable, SelectContextd):
    """Draw a fresh target and context for every training sample (docs/method.md section 6).

    Args:
        protocol: the sampling protocol (its ``max_context`` is used for padding unless ``max_context`` is given).
        series_key: key of the series.
        time_key: key of the times.
        max_context: slots to pad to.
        remove_series: drop the full series and its times from the output.
    """

    def __init__(
        self,
        protocol: ContextProtocol,
        series_key: str = "series",
        time_key: str = "series_time",
        max_context: int | None = None,
        remove_series: bool = True,
    ) -> None:
        SelectContextd.__init__(
            self, series_key, time_key, protocol.max_context if max_context is None else max_context, remove_series
        )
        self.protocol = protocol

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        """Draw and select.

        Args:
            data: item with the series and its times.

        Returns:
            the item with the batch keys of docs/method.md section 1 added and ``draw = -1``.
        """
        d = dict(data)
        # MONAI's Randomizable state is a legacy RandomState (seeded by set_random_state / the dataloader);
        # derive a Generator from it so that training and fixed draws share one drawing function
        rng = np.random.default_rng(int(self.R.randint(0, 2**31 - 1)))
        drawn = draw_context(rng, len(d[self.time_key]), self.protocol)
        d["target_index"], d["context_indices"], d["draw"] = drawn.target_index, list(drawn.context_indices), -1
        return self._select(d, drawn.target_index, drawn.context_indices)


class InferenceContextd(SelectContextd):
    """Forecasting a new scan: every frame of the item is context, the target time comes from the item or a default.

    A frame acquired exactly at the target time (within ``atol``) is not context: it becomes the ``target``
    (a reference to compare with), which lets the same config forecast held-out frames of a test set. When several
    frames exist, only the latest ``max_context`` ones before the target time are kept as context; frames after the
    target time are context too (the model then interpolates), except in ``forecast_only`` mode.

    The target time may be ``"last"`` (as default or in the item): the time of the item's last frame, which becomes
    the reference, with all earlier frames as context (follow-up series whose visits fall on different weeks for
    every patient: forecast each patient's last visit from the earlier ones).

    Args:
        target_time: default target time when the item has no ``target_time`` key: a number or ``"last"``.
        max_context: slots to pad to (``T_max``).
        forecast_only: use only frames strictly before the target time as context.
        atol: tolerance to match a frame to the target time.
        series_key: key of the series.
        time_key: key of the times.
        min_lead: frames acquired less than ``min_lead`` before the target time are not context, as in a training
            protocol that hides the frames right before the target (ISLES perfusion: ``gap`` 2 frames, so
            ``min_lead=3``); 0: every earlier frame is context.

    Raises:
        ValueError: an unknown target time string or a negative ``min_lead``.
    """

    def __init__(
        self,
        target_time: float | str | None = None,
        max_context: int | None = None,
        forecast_only: bool = True,
        atol: float = 1e-6,
        series_key: str = "series",
        time_key: str = "series_time",
        min_lead: float = 0.0,
    ) -> None:
        super().__init__(series_key, time_key, max_context)
        if isinstance(target_time, str) and target_time != "last":
            raise MonaiTFMError(f"InferenceContextd target_time must be a number, 'last' or None, got {target_time!r}.")
        if not float(min_lead) >= 0:
            raise MonaiTFMError(f"InferenceContextd min_lead must be >= 0, got {min_lead!r}.")
        self.target_time = target_time
        self.forecast_only = forecast_only
        self.atol = atol
        self.min_lead = float(min_lead)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        """Build the inference sample.

        Args:
            data: item with the series, its times and optionally ``target_time``.

        Returns:
            the item with the batch keys of docs/method.md section 1; ``target`` only when a frame sits at the target
            time.

        Raises:
            ValueError: no target time, an unknown target time string, or no frame usable as context.
        """
        d = dict(data)
        who = d.get("subject", "?")
        t_target = d.get("target_time", self.target_time)
        if t_target is None:
            raise MonaiTFMError(f"subject {who!r}: no target time (give the item a 'target_time' or set a default).")
        times = torch.as_tensor(d[self.time_key], dtype=torch.float64)
        if isinstance(t_target, str):
            if t_target != "last":
                raise MonaiTFMError(f"subject {who!r}: target time must be a number or 'last', got {t_target!r}.")
            if len(times) == 0:
                raise MonaiTFMError(f"subject {who!r}: target time 'last' of a series without frames.")
            t_target = times.max()
        t_target = float(t_target)
        at_target = torch.isclose(times, torch.tensor(t_target, dtype=torch.float64), atol=self.atol, rtol=0)
        usable = ~at_target & ((times < t_target) if self.forecast_only else torch.ones_like(at_target))
        if self.min_lead > 0:  # hidden frames right before the target
            usable &= ~((times > t_target - self.min_lead + self.atol) & (times < t_target))
        idx = torch.nonzero(usable).flatten().tolist()
        if not idx:
            lead = f" at least {self.min_lead} before" if self.min_lead > 0 else " before"
            raise MonaiTFMError(f"subject {who!r}: no frame{lead} the target time {t_target} to use as context.")
        series = d[self.series_key]
        if hasattr(series, "affine"):
            d["affine"] = torch.as_tensor(series.affine).as_subclass(torch.Tensor).clone()
        slots, d["context_mask"] = padded_slots(idx, self.max_context)
        plain = torch.as_tensor(series).as_subclass(torch.Tensor)
        d["context"] = plain[slots]
        d["context_time"] = times[slots].float()
        d["target_time"] = torch.tensor(t_target, dtype=torch.float32)
        if bool(at_target.any()):
            d["target"] = plain[int(torch.nonzero(at_target)[0])]
        d.pop(self.series_key)
        d.pop(self.time_key, None)
        for key in self.drop_keys:
            d.pop(key, None)
        return d


@dataclass(frozen=True)
class TimeRange:
    """The times a continuous-time model was trained on, ``[lo, hi]``, and how far beyond them it may forecast.

    A continuous-time flow (CRONOS appendix B.6) accepts any time, but it has only learnt the times of its training
    series; a forecast far outside them is an extrapolation with no evidence behind it, so an inference path refuses
    target and scan times outside ``[lo - pad, hi + pad]`` with ``pad = margin * (hi - lo)`` unless asked not to.

    Args:
        lo: first training time.
        hi: last training time.
        margin: the accepted extrapolation as a fraction of ``hi - lo`` on both sides.
    """

    lo: float
    hi: float
    margin: float = 0.0

    @classmethod
    def from_config(cls, value: Any, margin: Any = 0.0, error: type[Exception] = MonaiTFMError) -> TimeRange | None:
        """A bundle's ``time_range`` ``[lo, hi]`` and ``extrapolation_margin``; ``None`` when it has no range.

        Raises:
            error: a malformed range or margin.
        """
        if value is None:
            return None
        try:
            lo, hi = (float(v) for v in value)
            margin = float(margin)
        except (TypeError, ValueError):
            raise error(
                f"the bundle's time_range must be [lo, hi] and extrapolation_margin a number, got {value!r}, "
                f"{margin!r}."
            ) from None
        if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi and margin >= 0):
            raise error(f"the bundle's time_range {value!r} must be finite with lo <= hi, the margin >= 0.")
        return cls(lo, hi, margin)

    @property
    def accepted(self) -> tuple[float, float]:
        """The widened range ``(lo - pad, hi + pad)``."""
        pad = self.margin * (self.hi - self.lo)
        return self.lo - pad, self.hi + pad

    def check(
        self,
        times: Sequence[float],
        target_time: float,
        names: Sequence[str] | None = None,
        error: type[Exception] = MonaiTFMError,
    ) -> None:
        """Refuse a target or scan time outside :attr:`accepted`.

        Args:
            times: scan times.
            target_time: the time to forecast.
            names: scan names for messages.
            error: the exception class to raise.

        Raises:
            error: the first time outside the accepted range, named.
        """
        lo_m, hi_m = self.accepted
        text = (
            f"this model was trained on times {self.lo:g}..{self.hi:g} and forecasts within {lo_m:g}..{hi_m:g} "
            "(its bundle's time_range and extrapolation_margin); pass --allow-extrapolation to forecast anyway"
        )
        if not lo_m <= target_time <= hi_m:
            raise error(f"target time {target_time:g} lies outside the trained times: {text}.")
        names = list(names) if names is not None else [f"scan {i}" for i in range(len(times))]
        for name, t in zip(names, times):
            if not lo_m <= t <= hi_m:
                raise error(f"scan '{name}' at time {t:g} lies outside the trained times: {text}.")
