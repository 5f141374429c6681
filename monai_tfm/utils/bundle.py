# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""Helpers used by the bundle configs: locating the bundle folder, logging set-up, run summaries."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

from monai_tfm.utils.errors import install_user_error_hook

__all__ = ["find_bundle_root", "setup_logging", "log_run_summary", "log_forecasts"]

logger = logging.getLogger("monai_tfm")


def find_bundle_root(name: str) -> str:
    """Locate the folder of bundle ``name`` so that configs work from the repository root or the bundle folder.

    Search order: ``$MONAI_TFM_BUNDLES/<name>``, the current folder if it is that bundle, ``./bundles/<name>``,
    and the ``bundles/`` folder beside the installed package (editable installs). Users can always pass
    ``--bundle_root`` instead.

    Args:
        name: bundle folder name, e.g. ``"synthetic_forecasting"``.

    Returns:
        absolute path of the bundle folder.

    Raises:
        FileNotFoundError: none of the candidates holds ``configs/metadata.json``.
    """
    candidates = []
    if os.environ.get("MONAI_TFM_BUNDLES"):
        candidates.append(Path(os.environ["MONAI_TFM_BUNDLES"]) / name)
    cwd = Path.cwd()
    candidates += [cwd, cwd / "bundles" / name, Path(__file__).resolve().parents[2] / "bundles" / name]
    for c in candidates:
        if (c / "configs" / "metadata.json").is_file() and (c.name == name or c != cwd):
            return str(c.resolve())
    raise FileNotFoundError(
        f"bundle {name!r} not found in {[str(c) for c in candidates]}; pass --bundle_root PATH to the bundle folder."
    )


def setup_logging(level: int | str = logging.INFO) -> None:
    """Show the package's log records on stderr (MONAI's bundle runner configures only its own logger), and log the
    user error of an uncaught exception as one ERROR line (:func:`monai_tfm.utils.errors.install_user_error_hook`).

    A handler is added to the ``monai_tfm`` logger once, and only when the root logger has none (an application that
    configured logging keeps its own). Records still propagate, so log capture (e.g. pytest's) keeps working.

    Args:
        level: log level of the ``monai_tfm`` logger.
    """
    install_user_error_hook()  # `python -m monai.bundle run`: a user error is logged as one line before its traceback
    pkg = logging.getLogger("monai_tfm")
    pkg.setLevel(level)
    if logging.getLogger().handlers or any(getattr(h, "_monai_tfm", False) for h in pkg.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    handler._monai_tfm = True  # type: ignore[attr-defined]
    pkg.addHandler(handler)


def log_run_summary(checkpointer: Any) -> dict[str, Any]:
    """Log where a training run left its best model and how good it was.

    A run without validation (no evaluator, e.g. the generation bundles) exports the weights of its last epoch; its
    summary holds only the paths.

    Args:
        checkpointer: the run's :class:`monai_tfm.handlers.TrainingCheckpointer`.

    Returns:
        the summary dict (best value, epoch, paths; only the paths without validation).
    """
    if checkpointer.evaluator is None:
        summary = {"model": str(checkpointer.model_path), "resume_checkpoint": str(checkpointer.last_path)}
        logger.info(
            "training finished (no validation: the last epoch's weights): weights %s, resume checkpoint %s",
            summary["model"],
            summary["resume_checkpoint"],
        )
        return summary
    summary = {
        "key_metric": checkpointer.key_metric,
        "best": checkpointer.best,
        "best_epoch": checkpointer.best_epoch,
        "model": str(checkpointer.model_path),
        "resume_checkpoint": str(checkpointer.last_path),
    }
    logger.info(
        "training finished: best %s = %.5f at epoch %d; weights %s",
        summary["key_metric"],
        summary["best"],
        summary["best_epoch"],
        summary["model"],
    )
    return summary


def log_forecasts(folder: str | Path) -> list[str]:
    """Log the forecast files an inference run wrote.

    Args:
        folder: output folder of the inference.

    Returns:
        the sorted file names.
    """
    files = sorted(p.name for p in Path(folder).glob("*.nii*")) if Path(folder).is_dir() else []
    logger.info("%d forecast(s) in %s", len(files), folder)
    return files
