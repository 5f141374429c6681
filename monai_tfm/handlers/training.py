# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""Small training handlers that MONAI and ignite do not provide."""

from __future__ import annotations

import json
import logging
import math
import statistics
import time

import torch
from ignite.engine import Engine, Events
from monai.engines.utils import IterationEvents

from monai_tfm.utils.errors import MonaiTFMError
from monai_tfm.utils.io import atomic_write_text

__all__ = ["GradientClipHandler", "StepBudget", "epochs_for_steps"]

logger = logging.getLogger(__name__)


def epochs_for_steps(max_steps: int | None, steps_per_epoch: int, max_epochs: int) -> int:
    """The trainer's ``max_epochs`` for an optimiser-step budget (``max_epochs`` itself when there is none).

    Args:
        max_steps: the step budget, or ``None``/``0`` for none.
        steps_per_epoch: iterations per epoch (``len(dataloader)``).
        max_epochs: the epoch budget used without a step budget.

    Returns:
        enough epochs to reach ``max_steps`` (the last one is cut by :class:`StepBudget`).

    Raises:
        ValueError: a negative budget or an empty epoch.
    """
    if not max_steps:
        return int(max_epochs)
    if int(max_steps) < 0 or steps_per_epoch < 1:
        raise MonaiTFMError(f"need max_steps >= 0 and a non-empty epoch, got {max_steps} and {steps_per_epoch}.")
    return math.ceil(int(max_steps) / steps_per_epoch)


class StepBudget:
    """Stop training after ``max_steps`` optimiser steps (mid-epoch if need be) and time the training steps.

    Ignite's ``Engine.run`` counts epochs and MONAI's ``SupervisedTrainer`` has no step limit; a fixed number of
    optimiser steps is the budget that compares methods with different epoch sizes. The handler also measures the
    wall time spent in training iterations alone (validation and checkpointing excluded), so a wall-clock budget can
    be turned into steps (``seconds_per_step``).

    Args:
        max_steps: the budget (``None``/``0``: no limit, only timing).
    """

    def __init__(self, max_steps: int | None = None) -> None:
        self.max_steps = int(max_steps) if max_steps else 0
        self.train_seconds = 0.0  # running sum of step_seconds (the trainer's state reads it at every step)
        self.step_seconds: list[float] = []
        self._t0 = 0.0

    @property
    def steps(self) -> int:
        """Training iterations timed so far."""
        return len(self.step_seconds)

    @property
    def seconds_per_step(self) -> float:
        """Mean wall time of a timed training iteration (NaN before any)."""
        return self.train_seconds / self.steps if self.steps else float("nan")

    @property
    def median_seconds_per_step(self) -> float:
        """Median wall time of a timed training iteration (NaN before any).

        The robust figure for a short calibration run: the first iterations (allocator warm-up, a neighbour's start
        on a shared CPU) inflate the mean of a few dozen steps but not the median.
        """
        return float(statistics.median(self.step_seconds)) if self.step_seconds else float("nan")

    def write(self, path: str, threads: int | None = None) -> None:
        """Write the budget, the steps done and the timed training seconds as JSON (atomically).

        Args:
            path: the JSON file (replaced).
            threads: CPU threads to record (default ``torch.get_num_threads()``).
        """
        record = {
            "max_steps": self.max_steps or None,
            "steps_timed": self.steps,
            "train_seconds": self.train_seconds,
            "seconds_per_step": self.seconds_per_step,
            "median_seconds_per_step": self.median_seconds_per_step,
            "threads": int(threads or torch.get_num_threads()),
        }
        atomic_write_text(path, json.dumps(record, indent=1), overwrite=True)

    def attach(self, engine: Engine) -> None:
        """Attach to the trainer.

        Args:
            engine: the trainer.
        """
        engine.add_event_handler(Events.ITERATION_STARTED, self._start)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._stop)

    def _start(self, engine: Engine) -> None:
        self._t0 = time.perf_counter()

    def _stop(self, engine: Engine) -> None:
        seconds = time.perf_counter() - self._t0
        self.train_seconds += seconds
        self.step_seconds.append(seconds)
        engine.state.train_seconds = self.train_seconds
        if self.max_steps and engine.state.iteration >= self.max_steps:
            logger.info("step budget of %d optimiser steps reached", self.max_steps)
            engine.terminate()


class GradientClipHandler:
    """Clip the global gradient norm between backward and optimizer step.

    MONAI's ``SupervisedTrainer`` has no clipping option but fires ``BACKWARD_COMPLETED`` right before the step;
    with AMP the gradients are unscaled first so that the threshold is in true units.

    Args:
        max_norm: maximum global L2 norm (``<= 0`` disables clipping).
    """

    def __init__(self, max_norm: float = 1.0) -> None:
        self.max_norm = float(max_norm)

    def attach(self, engine: Engine) -> None:
        """Attach to a MONAI trainer.

        Args:
            engine: the trainer.
        """
        if self.max_norm > 0:
            engine.add_event_handler(IterationEvents.BACKWARD_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        """Clip.

        Args:
            engine: the trainer.
        """
        if getattr(engine, "amp", False) and getattr(engine, "scaler", None) is not None:
            engine.scaler.unscale_(engine.optimizer)
        norm = torch.nn.utils.clip_grad_norm_(engine.network.parameters(), self.max_norm)
        engine.state.grad_norm = float(norm)
