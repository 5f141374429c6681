# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""Resumable, atomic checkpoints and best-model export for the training workflow.

MONAI's ``CheckpointSaver`` writes non-atomically (ignite ``DiskSaver(atomic=False)``), names files by epoch,
and does not keep the best validation score across a resume; an interrupted write could destroy the only
checkpoint. This handler keeps one stable ``last.pt`` (everything needed to resume: tensors and plain numbers
only, loadable with ``torch.load(weights_only=True)``) and a flat ``models/model.pt`` (network weights of the best
validation epoch, the bundle's shared-weights format).

In a multi-process (DDP) run only rank 0 writes files (the others wait at a barrier after each save), and a
``DistributedDataParallel`` network is saved as its inner module, so the files are the same as in a
single-process run.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events

from monai_tfm.utils.distributed import barrier, is_main_process, unwrap_module
from monai_tfm.utils.errors import MonaiTFMError
from monai_tfm.utils.io import atomic_save_torch
from monai_tfm.utils.options import as_bool

__all__ = ["TrainingCheckpointer", "WeightsLoader", "check_run_folder", "load_weights", "read_network_state"]

LAST_CHECKPOINT = Path("checkpoints") / "last.pt"
BEST_MODEL = Path("models") / "model.pt"


def check_run_folder(output_dir: str | Path, resume: bool | str = False, overwrite: bool | str = False) -> bool:
    """Refuse to start a training run in a folder that already holds one, unless asked to resume or overwrite.

    Bundles call this first (before any file is written: draws, TensorBoard events, checkpoints), so that a refused
    run leaves the folder exactly as it was; :class:`TrainingCheckpointer` applies the same rule when it starts.

    Args:
        output_dir: run folder.
        resume: continue the run in it (a switch: a bool or ``true``/``false``, see
            :func:`monai_tfm.utils.as_bool`).
        overwrite: start a new run in it, replacing the old one's files.

    Returns:
        whether the folder holds a run (``checkpoints/last.pt`` or ``models/model.pt``).

    Raises:
        ValueError: ``resume`` or ``overwrite`` is not a boolean switch value.
        FileExistsError: the folder holds a run and neither ``resume`` nor ``overwrite`` is true.
    """
    resume, overwrite = as_bool(resume, "resume"), as_bool(overwrite, "overwrite")
    output_dir = Path(output_dir)
    found = [p for p in (output_dir / LAST_CHECKPOINT, output_dir / BEST_MODEL) if p.exists()]
    if found and not (resume or overwrite):
        raise FileExistsError(
            f"{output_dir} already holds a training run ({found[0]}); pass --resume true to continue it, "
            "--overwrite true to start again in it, or choose another --output_dir."
        )
    return bool(found)


logger = logging.getLogger(__name__)


def read_network_state(path: str | Path) -> tuple[dict[str, torch.Tensor], bool]:
    """The network weights in a weights file: the one home of the package's checkpoint format.

    A weights file is either a flat state dict (``models/model.pt``, what training exports and bundles ship) or a
    resume checkpoint (``checkpoints/last.pt``: ``network``, ``optimizer``, ... entries), whose ``network`` entry is
    taken. Both are read with ``torch.load(weights_only=True)``, so a file cannot run code.

    Args:
        path: the weights file (it must exist).

    Returns:
        the state dict and whether it came from a resume checkpoint.

    Raises:
        MonaiTFMError: the file cannot be loaded with ``weights_only=True``, or holds no state dict of tensors.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # not a torch file, or objects that weights_only refuses
        msg = " ".join(str(e).split())[:200]
        raise MonaiTFMError(f"cannot load weights '{path}' with weights_only=True: {msg}") from e
    from_checkpoint = isinstance(state, Mapping) and isinstance(state.get("network"), Mapping)
    if from_checkpoint:
        state = state["network"]
    if not isinstance(state, Mapping) or not all(torch.is_tensor(v) for v in state.values()):
        raise MonaiTFMError(f"'{path}' is not a state dict of tensors (a flat models/model.pt file).")
    return dict(state), from_checkpoint


def load_weights(network: torch.nn.Module, path: str | Path, strict: bool = True) -> torch.nn.Module:
    """Load a flat state dict (``models/model.pt``) or a resume checkpoint's ``network`` entry.

    Args:
        network: the network to fill.
        path: checkpoint file.
        strict: passed to ``load_state_dict``.

    Returns:
        the network.

    Raises:
        FileNotFoundError: no such file, with a hint to train first.
        ValueError: the file does not hold matching weights.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no weights at {path}: train the bundle first or pass the path of a model.pt file.")
    state, _ = read_network_state(path)
    try:
        network.load_state_dict(state, strict=strict)
    except RuntimeError as e:
        raise MonaiTFMError(f"weights in {path} do not match the network: {e}") from e
    return network


class WeightsLoader:
    """Load network weights when an engine starts (for evaluation and inference configs).

    Like MONAI's ``CheckpointLoader`` for a single network, but it reads flat ``model.pt`` files and resume
    checkpoints alike, with ``weights_only=True``, and fails with a message that names the missing file.

    Nothing is loaded (and no file is needed) when ``path`` is ``None`` or the network has no state at all
    (parameter-free baselines such as LCI and linear extrapolation).

    Args:
        network: the network to fill.
        path: weights file, or ``None`` for nothing to load.
        strict: passed to ``load_state_dict``.
    """

    def __init__(self, network: torch.nn.Module, path: str | Path | None, strict: bool = True) -> None:
        self.network = network
        self.path = None if path is None else Path(path)
        self.strict = strict

    def _load(self, _: Engine) -> None:
        if self.path is None:
            logger.info("no weights path given: evaluating %s as constructed", type(self.network).__name__)
            return
        if not self.network.state_dict():
            logger.info("%s has no parameters or buffers: nothing to load", type(self.network).__name__)
            return
        load_weights(self.network, self.path, self.strict)

    def attach(self, engine: Engine) -> None:
        """Attach to an evaluator.

        Args:
            engine: the engine.
        """
        engine.add_event_handler(Events.STARTED, self._load)


class TrainingCheckpointer:
    """Save ``last.pt`` every ``save_interval`` epochs, export the best network, resume on request.

    Args:
        output_dir: run folder; files go to ``output_dir/checkpoints/last.pt`` and ``output_dir/models/model.pt``.
        save_dict: objects with ``state_dict``/``load_state_dict`` to save and restore (network, optimizer,
            lr scheduler, ...); the trainer itself is added under ``"trainer"``.
        network: the network whose weights are exported as the best model (the EMA copy if used).
        evaluator: validation engine whose ``state.metrics[key_metric]`` selects the best epoch.
        key_metric: metric name in the evaluator's state.
        mode: ``"min"`` or ``"max"``.
        save_interval: epochs between resume checkpoints.
        resume: load ``last.pt`` at start when it exists (a fresh start with a warning when it does not).
        overwrite: allow starting a new run in a folder that already holds a checkpoint.
        validate_at_end: run the evaluator after the last epoch if the validation interval skipped it, so that
            the final weights always compete for the best model.
    """

    def __init__(
        self,
        output_dir: str | Path,
        save_dict: Mapping[str, Any],
        network: torch.nn.Module | None = None,
        evaluator: Engine | None = None,
        key_metric: str = "val_nrmse",
        mode: str = "min",
        save_interval: int = 1,
        resume: bool = False,
        overwrite: bool = False,
        validate_at_end: bool = True,
    ) -> None:
        if mode not in ("min", "max"):
            raise MonaiTFMError(f"mode must be 'min' or 'max', got {mode!r}.")
        self.output_dir = Path(output_dir)
        self.last_path = self.output_dir / LAST_CHECKPOINT
        self.model_path = self.output_dir / BEST_MODEL
        self.save_dict = dict(save_dict)
        self.network = unwrap_module(network)
        self.evaluator = evaluator
        self.key_metric = key_metric
        self.mode = mode
        self.save_interval = max(1, int(save_interval))
        self.resume = as_bool(resume, "resume")
        self.overwrite = as_bool(overwrite, "overwrite")
        self.validate_at_end = as_bool(validate_at_end, "validate_at_end")
        self._validated_epoch = -1
        self.best = math.inf if mode == "min" else -math.inf
        self.best_epoch = 0

    # the best score travels inside last.pt so that a resumed run does not forget it
    def state_dict(self) -> dict[str, float]:
        """Best score so far.

        Returns:
            dict with ``best`` and ``best_epoch``.
        """
        return {"best": float(self.best), "best_epoch": int(self.best_epoch)}

    def load_state_dict(self, state: Mapping[str, float]) -> None:
        """Restore the best score.

        Args:
            state: from :meth:`state_dict`.
        """
        self.best = float(state["best"])
        self.best_epoch = int(state["best_epoch"])

    def attach(self, engine: Engine) -> None:
        """Attach to the trainer (and to the evaluator for best-model selection).

        Args:
            engine: the trainer.
        """
        self._trainer = engine
        engine.add_event_handler(Events.STARTED, self._on_start)
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.save_interval), self._save_last)
        engine.add_event_handler(Events.COMPLETED, self._on_complete)
        if self.evaluator is not None:
            self.evaluator.add_event_handler(Events.EPOCH_COMPLETED, self._on_validation)

    def _objects(self) -> dict[str, Any]:
        objects = {name: unwrap_module(obj) for name, obj in self.save_dict.items()}
        return {**objects, "trainer": self._trainer, "checkpointer": self}

    def _on_start(self, engine: Engine) -> None:
        if self.resume and self.last_path.is_file():
            state = torch.load(self.last_path, map_location="cpu", weights_only=True)
            max_epochs = engine.state.max_epochs
            for name, obj in self._objects().items():
                if name not in state:
                    raise KeyError(f"resume checkpoint {self.last_path} has no entry {name!r}.")
                obj.load_state_dict(state[name])
            # keep a larger max_epochs given on the command line when resuming
            engine.state.max_epochs = max(int(max_epochs or 0), int(engine.state.max_epochs or 0))
            logger.info("resumed from %s at epoch %d", self.last_path, engine.state.epoch)
        elif self.resume:
            logger.warning("resume requested but %s does not exist: starting a new run", self.last_path)
        else:
            check_run_folder(self.output_dir, resume=False, overwrite=self.overwrite)

    def _save_last(self, engine: Engine) -> None:
        if is_main_process():
            state = {name: obj.state_dict() for name, obj in self._objects().items()}
            atomic_save_torch(state, self.last_path, overwrite=True)
            if self.evaluator is None and self.network is not None:
                atomic_save_torch(self.network.state_dict(), self.model_path, overwrite=True)
        barrier()

    def _on_complete(self, engine: Engine) -> None:
        if self.evaluator is not None and self.validate_at_end and self._validated_epoch != engine.state.epoch:
            self.evaluator.run(engine.state.epoch)
        self._save_last(engine)

    def _on_validation(self, evaluator: Engine) -> None:
        self._validated_epoch = int(self._trainer.state.epoch)
        value = evaluator.state.metrics.get(self.key_metric)
        if value is None:
            raise KeyError(
                f"key metric {self.key_metric!r} not among the validation metrics {sorted(evaluator.state.metrics)}."
            )
        value = float(value)
        better = value < self.best if self.mode == "min" else value > self.best
        if better and not math.isnan(value):
            self.best, self.best_epoch = value, int(self._trainer.state.epoch)
            if self.network is not None and is_main_process():
                atomic_save_torch(self.network.state_dict(), self.model_path, overwrite=True)
            self._save_last(self._trainer)  # keep the new best score in the resume checkpoint
            logger.info(
                "new best %s = %.5f at epoch %d -> %s", self.key_metric, value, self.best_epoch, self.model_path
            )
