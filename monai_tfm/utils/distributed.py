# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""Helpers for multi-process (DDP) training with ``torchrun`` and the bundles' ``multi_gpu_train.yaml`` overlays.

Every function is a no-op (or returns the single-process answer) when ``torch.distributed`` is not initialised,
so library code can call them unconditionally and single-process behaviour does not change.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Hashable, Sequence
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "is_distributed",
    "get_rank",
    "get_world_size",
    "is_main_process",
    "barrier",
    "default_backend",
    "local_device",
    "init_distributed",
    "destroy_distributed",
    "rank_zero_first",
    "gather_rows",
    "unwrap_module",
]

T = TypeVar("T")


def is_distributed() -> bool:
    """Whether a default process group with more than one process is active.

    Returns:
        True in a multi-process run.
    """
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    """Rank of this process (0 when not distributed).

    Returns:
        the global rank.
    """
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    """Number of processes (1 when not distributed).

    Returns:
        the world size.
    """
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    """Whether this process writes files (rank 0, or the only process).

    Returns:
        True on rank 0.
    """
    return get_rank() == 0


def barrier() -> None:
    """Wait for all processes (no-op when not distributed)."""
    if is_distributed():
        dist.barrier()


def default_backend() -> str:
    """The process-group backend for this machine: ``nccl`` with CUDA, ``gloo`` on CPU.

    Returns:
        the backend name.
    """
    return "nccl" if torch.cuda.is_available() else "gloo"


def local_device(backend: str | None = None) -> torch.device:
    """The device of this process: ``cuda:LOCAL_RANK`` with CUDA (unless the backend is gloo), else CPU.

    Args:
        backend: process-group backend; ``gloo`` forces CPU so that a CPU test also runs on a GPU machine.

    Returns:
        the device.
    """
    if torch.cuda.is_available() and backend != "gloo":
        return torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")
    return torch.device("cpu")


def init_distributed(backend: str | None = None, device: torch.device | str | None = None) -> bool:
    """Initialise the default process group from the ``torchrun`` environment, once.

    Args:
        backend: ``nccl``, ``gloo`` or ``None`` (:func:`default_backend`).
        device: this process's device; a CUDA device becomes the current device.

    Returns:
        True if this call created the process group.
    """
    created = False
    if not dist.is_initialized():
        dist.init_process_group(backend=backend or default_backend())
        created = True
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.set_device(torch.device(device))
    return created


def destroy_distributed() -> None:
    """Destroy the default process group if there is one, after every rank has arrived.

    The barrier keeps a rank that finishes early (rank 0 writes the summaries) from tearing down its process group
    while another rank still uses it (a two-rank CPU run on a loaded machine once ended, after training, with
    ``terminate called without an active exception``, exit -6).
    """
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def rank_zero_first(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call ``fn`` on rank 0 first, then on the other ranks (for steps that create files once: data, draws).

    Args:
        fn: the callable (should be idempotent: it finds the files rank 0 wrote).
        args: its positional arguments.
        kwargs: its keyword arguments.

    Returns:
        what ``fn`` returned on this rank.
    """
    if not is_distributed():
        return fn(*args, **kwargs)
    if is_main_process():
        out = fn(*args, **kwargs)
        dist.barrier()
        return out
    dist.barrier()
    return fn(*args, **kwargs)


def gather_rows(rows: Sequence[T], key: Callable[[T], Hashable | None] | None = None) -> list[T]:
    """All ranks' rows in rank order, with duplicates (same non-``None`` key) dropped; identical on every rank.

    ``DistributedSampler`` pads the last round by repeating samples so that all ranks run the same number of
    batches; ``key`` (e.g. ``(subject, draw)``) identifies such repeats.

    Args:
        rows: this rank's rows (picklable).
        key: identity of a row; rows whose key is ``None`` are always kept.

    Returns:
        the gathered rows (a copy of ``rows`` when not distributed; then nothing is dropped).
    """
    if not is_distributed():
        return list(rows)
    parts: list[list[T] | None] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, list(rows))
    out: list[T] = []
    seen: set = set()
    for part in parts:
        for row in part or []:
            k = None if key is None else key(row)
            if k is not None:
                if k in seen:
                    continue
                seen.add(k)
            out.append(row)
    return out


def unwrap_module(module: Any) -> Any:
    """The wrapped network of ``DistributedDataParallel`` / ``DataParallel`` (anything else unchanged).

    Args:
        module: a network or any object.

    Returns:
        the underlying module.
    """
    while isinstance(module, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        module = module.module
    return module
