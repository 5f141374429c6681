# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""Subject selection and the finetuning dataset (labelled frames zipped with unlabelled timepoint pairs)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from monai_tfm.data.datalist import load_series_datalist
from monai_tfm.utils.errors import MonaiTFMError

__all__ = ["CycledZipDataset", "few_subjects", "has_labels", "select_subjects"]

logger = logging.getLogger(__name__)


def has_labels(item: dict) -> bool:
    """Whether a series datalist item has at least one labelled frame.

    Args:
        item: a datalist item.

    Returns:
        True when a frame has a ``label``.
    """
    return any("label" in f for f in item.get("frames", []))


def select_subjects(
    datalist: str | os.PathLike | Sequence[dict],
    include: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
    section: str = "training",
    require_labels: bool = False,
) -> list[dict]:
    """Items of a series datalist, by subject id.

    Args:
        datalist: a datalist file (``load_series_datalist``) or a list of items.
        include: subject ids to keep, in this order (None: all).
        exclude: subject ids to drop.
        section: datalist section.
        require_labels: every selected subject must have a labelled frame.

    Returns:
        the items.

    Raises:
        ValueError: an included subject is not in the datalist, a subject is both included and excluded, the
            selection is empty, or (``require_labels``) a subject has no labelled frame.
    """
    items = (
        load_series_datalist(datalist, section=section)
        if isinstance(datalist, (str, os.PathLike))
        else [dict(i) for i in datalist]
    )
    where = f"datalist '{datalist}' section '{section}'" if isinstance(datalist, (str, os.PathLike)) else "datalist"
    by_id = {i["subject"]: i for i in items}
    excluded = set(exclude or [])
    if include is not None:
        missing = [s for s in include if s not in by_id]
        if missing:
            raise MonaiTFMError(f"{where}: subjects {missing} not found; it has {sorted(by_id)}.")
        both = sorted(set(include) & excluded)
        if both:
            raise MonaiTFMError(f"subjects {both} are both included and excluded.")
        out = [by_id[s] for s in include]
    else:
        out = [i for i in items if i["subject"] not in excluded]
    if not out:
        raise MonaiTFMError(f"{where}: no subject left (include={include}, exclude={sorted(excluded)}).")
    if require_labels:
        bad = [i["subject"] for i in out if not has_labels(i)]
        if bad:
            raise MonaiTFMError(f"{where}: subjects {bad} have no labelled frame (expected ED/ES masks).")
    return out


def few_subjects(items: Sequence[dict], num: int | None, seed: int = 0, group_key: str = "group") -> list[dict]:
    """A deterministic subset of ``num`` subjects spread over the groups (round robin over shuffled groups).

    Used to train with few patients: with 5 ACDC patients every diagnostic group (DCM, HCM, MINF, NOR, RV) present
    in ``items`` contributes one.

    Args:
        items: datalist items (``metadata[group_key]`` optional).
        num: number of subjects (None: all, in the given order).
        seed: shuffling seed.
        group_key: metadata key of the group.

    Returns:
        the subset, sorted by subject id.

    Raises:
        ValueError: for ``num`` < 1 or larger than the number of items.
    """
    if num is None:
        return list(items)
    num = int(num)
    if not 1 <= num <= len(items):
        raise MonaiTFMError(f"cannot pick {num} subjects out of {len(items)}.")
    rng = np.random.RandomState(seed)
    groups: dict[Any, list[dict]] = {}
    for item in sorted(items, key=lambda i: i["subject"]):
        groups.setdefault(item.get("metadata", {}).get(group_key), []).append(item)
    queues = []
    for key in sorted(groups, key=str):
        members = groups[key]
        queues.append([members[i] for i in rng.permutation(len(members))])
    picked: list[dict] = []
    while len(picked) < num:
        for q in queues:
            if q and len(picked) < num:
                picked.append(q.pop(0))
    return sorted(picked, key=lambda i: i["subject"])


class CycledZipDataset(Dataset):
    """Item ``i`` merges ``labelled[i % L]`` and ``unlabelled[i % U]`` (dicts with disjoint keys).

    MONAI's ``ZipDataset`` stops at the shorter dataset and returns tuples; finetuning pairs a handful of labelled
    frames (one patient in the one-shot setting) with many unlabelled timepoint pairs, so the shorter one is cycled
    and the dicts are merged into one batch dict. With a shuffling loader every epoch sees new combinations.

    Args:
        labelled: dataset of labelled samples (``image``, ``label``).
        unlabelled: dataset of unlabelled pairs (``image_a``, ``image_b``, ...), or None (labelled only).
        length: items per epoch (default the longer dataset).

    Raises:
        ValueError: for an empty dataset or a non-positive length.
    """

    def __init__(self, labelled: Dataset, unlabelled: Dataset | None = None, length: int | None = None) -> None:
        if len(labelled) == 0 or (unlabelled is not None and len(unlabelled) == 0):
            raise MonaiTFMError("CycledZipDataset needs non-empty datasets.")
        self.labelled = labelled
        self.unlabelled = unlabelled
        default = max(len(labelled), len(unlabelled) if unlabelled is not None else 0)
        self.length = default if length is None else int(length)
        if self.length < 1:
            raise MonaiTFMError(f"length must be >= 1, got {length}.")

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        item = dict(self.labelled[index % len(self.labelled)])
        if self.unlabelled is not None:
            pair = self.unlabelled[index % len(self.unlabelled)]
            clash = sorted(set(item) & set(pair) - {"subject", "frames", "metadata", "fold"})
            if clash:
                raise MonaiTFMError(f"labelled and unlabelled samples share the keys {clash}; rename one side.")
            for key, value in pair.items():
                if key in item:  # bookkeeping keys of the two sources stay apart
                    key = f"pair_{key}"
                item[key] = value
        return item
