# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""Small training handlers that MONAI and ignite do not provide."""

from __future__ import annotations

import torch
from ignite.engine import Engine
from monai.engines.utils import IterationEvents

__all__ = ["GradientClipHandler"]


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
