# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""A trained bundle as a forecasting model: its network, inferer and transforms, parsed once, for many forecasts.

Nothing of the model is rebuilt here: the network (``network_def``), the forecasting inferer (``inferer``, train.yaml's
validation inferer, so that every method overlay applies), the batch preparation (``prepare_batch``, which applies
``time_scale``), the variant's transforms (``variant_transforms``: grid embedding and LOCF for the discrete variant),
the intensity normalisation (``load_transforms``) and the sizes (``num_slots``, ``variant``) all come from the bundle's
``configs/train.yaml`` + ``configs/inference.yaml`` with their shared parts (plus an optional method overlay; the
files of :func:`~monai_tfm.apps.bundle_loading.bundle_config_files`), parsed with MONAI's
``ConfigParser``. Which scans are context is the rule of the bundle's transforms (:meth:`GridEmbedd.context_indices`
for a time grid, :class:`TimeRange` for a continuous model); padding is :func:`padded_slots`'. A user's scans become its
input in :mod:`monai_tfm.apps.scans` (reading, resampling, normalising) and the command around it is
:mod:`monai_tfm.apps.forecast`; the MONAI Label task shares all three.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from monai.bundle import ConfigParser
from monai.data import list_data_collate
from monai.transforms import ScaleIntensityRangePercentilesd

from monai_tfm.apps.bundle_loading import (
    apply_overrides,
    bundle_config_files,
    config_getter,
    load_bundle_weights,
    one_line,
    read_bundle_config,
    resolve_device,
)
from monai_tfm.flows.solvers import check_solver
from monai_tfm.transforms.context import TimeRange, padded_slots
from monai_tfm.transforms.grid import GridEmbedd
from monai_tfm.utils.errors import MonaiTFMError
from monai_tfm.utils.options import as_bool, positive_int

__all__ = ["BundleForecaster", "ForecastError", "ForecastOptions"]

logger = logging.getLogger(__name__)


class ForecastError(MonaiTFMError):
    """An expected problem with the inputs of a forecast; the message is one line naming the file or value."""


@dataclass(frozen=True)
class ForecastOptions:
    """How a bundle forecasts: the one list of the model options of ``monai-tfm forecast``, :func:`forecast`,
    :class:`BundleForecaster` and the MONAI Label task.

    Args:
        method: method overlay ``configs/methods/<method>.yaml`` (None: the bundle default).
        weights: weights file (default ``<bundle>/models/model.pt``; flat state dict or resume checkpoint, loaded
            with ``weights_only=True``).
        device: torch device, e.g. ``cpu`` or ``cuda:0``.
        solver: ODE solver (default: the bundle's ``solver``).
        steps: solver steps (default: the bundle's ``solver_steps``).
        samples: number of stochastic samples (> 1: Euler-Maruyama with ``sigma``; mean and standard deviation).
        sigma: SDE noise scale for ``samples > 1`` (default: the bundle's training ``sigma``).
        seed: seed of the stochastic sampler.
        overrides: further bundle config ids to set, e.g. ``{"aggregation": "last"}``.
        allow_extrapolation: continuous variant: accept target and scan times outside the bundle's ``time_range``
            (the times of its training data, in the bundle's unit) widened by ``extrapolation_margin`` (a fraction
            of the range's length) on both sides; by default they are refused (:class:`TimeRange`). Bundles without
            ``time_range`` check nothing.
    """

    method: str | None = None
    weights: str | os.PathLike | None = None
    device: str | torch.device = "cpu"
    solver: str | None = None
    steps: int | None = None
    samples: int = 1
    sigma: float | None = None
    seed: int | None = 0
    overrides: Mapping[str, Any] = field(default_factory=dict)
    allow_extrapolation: bool = False

    @classmethod
    def from_kwargs(cls, kwargs: Mapping[str, Any]) -> ForecastOptions:
        """The options among ``kwargs``; every other key is a bundle config override (``aggregation="last"``).

        Args:
            kwargs: option names and config ids, as a command line gives them.

        Returns:
            the options, the config ids merged into ``overrides``.
        """
        names = {f.name for f in fields(cls)}
        given = {k: v for k, v in kwargs.items() if k in names}
        extra = {k: v for k, v in kwargs.items() if k not in names}
        return cls(**{**given, "overrides": {**dict(given.get("overrides") or {}), **extra}})


class BundleForecaster:
    """A bundle's network, inferer and transforms, parsed once from its inference configs, for many forecasts.

    Args:
        bundle: bundle folder (with ``inference.yaml``, read after ``train.yaml``: :func:`bundle_config_files`).
        options: the model options (:class:`ForecastOptions`; default: the bundle's own settings).
        kwargs: :class:`ForecastOptions` fields instead of ``options``, e.g. ``method="tfm"``.

    Raises:
        ForecastError: not a bundle, unknown method, option or solver, missing or mismatched weights, an unusable
            device, or ``samples > 1`` with a deterministic model.
    """

    def __init__(self, bundle: str | os.PathLike, options: ForecastOptions | None = None, **kwargs: Any) -> None:
        if options is not None and kwargs:
            raise ForecastError(f"give the forecast options or {sorted(kwargs)}, not both.")
        try:
            options = options or ForecastOptions(**kwargs)
        except TypeError as e:
            raise ForecastError(f"unknown forecast option: {one_line(e)}") from None
        self.options = options
        solver, sigma = options.solver, options.sigma
        self.root = Path(bundle)
        files = bundle_config_files(self.root, options.method, ForecastError)
        self.device = resolve_device(options.device, ForecastError)
        samples = positive_int(options.samples, "samples", ForecastError)
        if solver is not None:
            check_solver(solver, ForecastError, extra=("euler_maruyama",))
        steps = None if options.steps is None else positive_int(options.steps, "steps", ForecastError)

        parser = read_bundle_config(self.root, files)
        apply_overrides(parser, options.overrides, files, ForecastError, "forecast")
        if solver is not None:
            parser["solver"] = solver
        if steps is not None:
            parser["solver_steps"] = int(steps)
        if samples > 1:
            if solver not in (None, "euler_maruyama"):
                raise ForecastError(
                    f"--samples {samples} draws Euler-Maruyama samples; it cannot use --solver {solver}."
                )
            sigma = self._training_sigma(files) if sigma is None else float(sigma)
            if not sigma > 0:
                raise ForecastError(
                    f"--samples {samples} needs a stochastic model, but the bundle's sigma is {sigma:g}; pass "
                    "--sigma S for a model trained with path noise S > 0."
                )
            parser["solver"] = "euler_maruyama"
            # inference.yaml refers to train.yaml's validation inferer (so that method overlays apply)
            inferer_id = "validate#inferer" if "validate#inferer" in parser else "inferer"
            parser[f"{inferer_id}#num_samples"] = samples
            parser[f"{inferer_id}#diffusion"] = sigma
            parser[f"{inferer_id}#seed"] = options.seed
        self.samples = samples

        parsed = config_getter(parser, files, ForecastError)
        self.variant = str(parsed("variant", "discrete"))
        self.num_slots = int(parsed("num_slots"))
        self.variant_transforms = list(parsed("variant_transforms", []))
        self.allow_extrapolation = as_bool(options.allow_extrapolation, "allow-extrapolation", ForecastError)
        self.grid_transform: GridEmbedd | None = next(
            (t for t in self.variant_transforms if isinstance(t, GridEmbedd)), None
        )
        # a time grid states what it can represent itself; the trained range matters to a continuous model only
        self.time_range = (
            TimeRange.from_config(parsed("time_range", None), parsed("extrapolation_margin", 0.0), ForecastError)
            if self.grid_transform is None
            else None
        )
        self.normalise = next(
            (t for t in parsed("load_transforms", []) if isinstance(t, ScaleIntensityRangePercentilesd)), None
        )
        self.prepare_batch = parsed("prepare_batch")
        self.inferer = parsed("inferer")
        self.network = parsed("network_def")
        self.weights = Path(options.weights) if options.weights is not None else self.root / "models" / "model.pt"
        if self.network.state_dict():  # parameter-free baselines need no weights
            load_bundle_weights(self.network, self.weights, files, ForecastError)
        self.network.to(self.device).eval()
        logger.info(
            "bundle %s (%s variant, %d slots), weights %s, solver %s, device %s",
            self.root,
            self.variant,
            self.num_slots,
            self.weights,
            parsed("solver", "?"),
            self.device,
        )

    def _training_sigma(self, files: list[Path]) -> float:
        """The path noise the bundle trains with (``sigma`` of the inference config, else of ``train.yaml``)."""
        for candidates in (files, [self.root / "configs" / "train.yaml", *files[1:]]):
            parser = ConfigParser()
            parser.read_config([str(f) for f in candidates if f.is_file()])
            if "sigma" in parser:
                return float(parser.get_parsed_content("sigma"))
        return 0.0

    def select_context(self, times: Sequence[float], target_time: float, names: Sequence[str]) -> list[int]:
        """Which scans are context for ``target_time``: the rules of the bundle's own transforms.

        Discrete variant: :meth:`GridEmbedd.context_indices` (scans on the time grid, at or before the target,
        outside a hidden gap). Continuous variant: every scan (also after the target: interpolation), the latest
        ``num_slots`` of them (:func:`padded_slots`), within the bundle's :class:`TimeRange` unless extrapolation is
        allowed.

        Args:
            times: scan times in increasing order.
            target_time: the target time.
            names: scan names for messages.

        Returns:
            indices of the context scans.

        Raises:
            ForecastError: a time the model cannot use.
        """
        if self.grid_transform is not None:
            return self.grid_transform.context_indices(times, target_time, names, ForecastError)
        if self.time_range is not None and not self.allow_extrapolation:
            self.time_range.check(times, target_time, names, ForecastError)
        if len(times) > self.num_slots:
            logger.warning("%d scans but the model takes at most %d: using the latest ones", len(times), self.num_slots)
        return list(range(len(times)))[-self.num_slots :]  # the latest ones, the scans predict's padded_slots keeps

    @torch.no_grad()
    def predict(
        self, frames: torch.Tensor, times: Sequence[float], target_time: float
    ) -> tuple[torch.Tensor, torch.Tensor | None, int]:
        """Forecast from normalised context frames (all of them are context; see :meth:`select_context`).

        Args:
            frames: ``(T, C, D, H, W)`` normalised context scans in time order.
            times: their ``T`` times.
            target_time: the target time.

        Returns:
            the forecast ``(C, D, H, W)`` and its per-voxel standard deviation (stochastic samples, else None) on the
            normalised scale, and the number of network evaluations.
        """
        slots, mask = padded_slots(range(len(times)), self.num_slots)  # padding repeats the last scan
        sample: dict[str, Any] = {
            "context": frames[slots],
            "context_time": torch.tensor([float(times[i]) for i in slots], dtype=torch.float32),
            "context_mask": mask,
            "target_time": torch.tensor(float(target_time), dtype=torch.float32),
        }
        for transform in self.variant_transforms:
            sample = transform(sample)
        inputs, _, args, kwargs = self.prepare_batch(list_data_collate([sample]), device=self.device)
        pred = self.inferer(inputs, self.network, *args, **kwargs)
        std = getattr(self.inferer, "last_std", None)
        nfe = int(getattr(self.inferer, "last_nfe", 0))
        return pred[0].float().cpu(), (None if std is None else std[0].float().cpu()), nfe
