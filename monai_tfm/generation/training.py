# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""Small helpers of the generation training workflow (the trainer itself is MONAI's ``SupervisedTrainer``)."""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["log_generation_run"]

logger = logging.getLogger(__name__)


def log_generation_run(checkpointer: Any) -> dict[str, str]:
    """Log where a generation training run left its weights (no validation metric: the last epoch is exported).

    Args:
        checkpointer: the run's :class:`monai_tfm.engines.TrainingCheckpointer`.

    Returns:
        dict with the weights and resume checkpoint paths.
    """
    summary = {"model": str(checkpointer.model_path), "resume_checkpoint": str(checkpointer.last_path)}
    logger.info(
        "generation training finished: weights %s, resume checkpoint %s", summary["model"], summary["resume_checkpoint"]
    )
    return summary
