# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""The MONAI Label infer task that serves a bundle's forecasts (needs ``pip install 'monai_tfm[monailabel]'``).

Why :class:`BasicInferTask` with three stages replaced: its model is *one* image through pre-transforms, a network
called as ``inferer(image, network)``, inverse and post-transforms, and a writer. A forecast reads a whole series
(several scans, resampled onto one grid, one intensity normalisation over all of them), calls the bundle's inferer with
the context times and the target time, and inverts the normalisation on the output. That is what
:class:`monai_tfm.apps.forecast.BundleForecaster` and :func:`monai_tfm.apps.forecast.forecast_series` do for
``monai-tfm forecast``; this task reuses them unchanged instead of splitting them into MONAI Label transforms. From
``BasicInferTask`` it keeps the request handling (defaults from the task config, device choice, the stage order with
its callbacks and latencies, the result JSON); it replaces:

* ``pre_transforms``: one step that finds the requested image's series (:func:`~monai_tfm.apps.monailabel.study.
  find_series`) and checks the request;
* ``run_inferer``: the forecast, with a :class:`BundleForecaster` built once per (device, solver, steps, samples)
  and cached; it writes the forecast NIfTI (grid and affine of the requested scan, original intensity scale);
* ``writer``: returns that file (or the standard deviation map, ``result="std"``) and the result parameters, since
  MONAI Label's writer would write through ITK and another orientation convention.

Request parameters (``params`` form field, JSON): ``target_time`` (required), ``steps``, ``solver``, ``samples``
(> 1: stochastic samples, the mean is returned), ``sigma``, ``seed``, ``result`` (``mean`` or ``std``).
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from monailabel.interfaces.tasks.infer_v2 import InferType
from monailabel.tasks.infer.basic_infer import BasicInferTask

from monai_tfm.apps.forecast import BundleForecaster, ForecastError, ForecastOptions, forecast_series
from monai_tfm.apps.monailabel.study import find_series

__all__ = ["DEFAULT_MAX_SAMPLES", "DEFAULT_MAX_STEPS", "RESULTS", "ForecastInferTask"]

logger = logging.getLogger(__name__)

RESULTS = ("mean", "std")
#: the largest ``steps`` / ``samples`` a request may ask for unless the app is configured otherwise (a request's cost
#: grows with both; the bundles forecast with 2 to 10 steps)
DEFAULT_MAX_STEPS = 100
DEFAULT_MAX_SAMPLES = 16


def _optional_number(value: Any, key: str, kind: type) -> Any:
    """``None`` for a missing/empty request value, else ``kind(value)`` (an ``int`` must be integral).

    Raises:
        ForecastError: a value that is not a number (or not an integer for ``kind=int``), named with its key.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    expected = "an integer" if kind is int else "a number"
    try:
        number = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        number = math.nan
    if math.isnan(number) or (kind is int and not number.is_integer()):
        raise ForecastError(f"request parameter '{key}' must be {expected}, got {value!r}.")
    return int(number) if kind is int else number


def _temp_nifti() -> Path:
    fd, name = tempfile.mkstemp(prefix="monai_tfm_forecast_", suffix=".nii.gz")
    os.close(fd)
    return Path(name)


def _remove(*paths: str | os.PathLike | None) -> None:
    for p in paths:
        if p is not None:
            Path(p).unlink(missing_ok=True)


class ForecastInferTask(BasicInferTask):
    """Forecast the scan at ``target_time`` of the series that holds the requested image.

    The forecast is written on the grid (shape and affine) of the requested image, so a viewer can overlay it there.

    Args:
        bundle: bundle folder (with an inference config, :func:`~monai_tfm.apps.bundle_loading.bundle_config_files`, and
            ``models/model.pt``).
        studies: the studies folder with the ``<name>.series.json`` sidecars.
        method: method overlay of the bundle (None: the bundle's method).
        weights: weights file (default ``<bundle>/models/model.pt``).
        device: default device (None: MONAI Label's default, the first GPU if any).
        solver: default ODE solver (None: the bundle's).
        steps: default solver steps (None: the bundle's).
        samples: default number of stochastic samples.
        sigma: SDE noise for ``samples > 1`` (None: the bundle's training sigma).
        seed: seed of the stochastic sampler.
        overrides: further bundle config ids to set, e.g. ``{"aggregation": "last"}``.
        max_cached_models: how many differently configured forecasters (device, solver, steps, samples) each worker
            thread keeps.
        max_steps: the largest ``steps`` a request may ask for.
        max_samples: the largest ``samples`` a request may ask for.
        description: the task description shown by ``/info/``.

    Raises:
        ForecastError: the bundle, weights or options do not give a working forecaster (checked when the task is
            built, so the server does not start with a broken model).
    """

    def __init__(
        self,
        bundle: str | os.PathLike,
        studies: str | os.PathLike,
        method: str | None = None,
        weights: str | os.PathLike | None = None,
        device: str | None = None,
        solver: str | None = None,
        steps: int | None = None,
        samples: int = 1,
        sigma: float | None = None,
        seed: int | None = 0,
        overrides: Mapping[str, Any] | None = None,
        max_cached_models: int = 4,
        description: str | None = None,
        max_steps: int = DEFAULT_MAX_STEPS,
        max_samples: int = DEFAULT_MAX_SAMPLES,
    ) -> None:
        self.bundle = Path(bundle)
        self.studies = Path(studies)
        self._options = ForecastOptions(method=method, weights=weights, overrides=dict(overrides or {}))
        self._models: OrderedDict[tuple, BundleForecaster] = OrderedDict()
        self._lock = threading.Lock()
        self.max_steps, self.max_samples = int(max_steps), int(max_samples)
        self._max_cached = max(1, int(max_cached_models))
        first_device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.default_model = self._model(first_device, solver, steps, samples, sigma, seed)
        config: dict[str, Any] = {
            "solver": solver,
            "steps": steps,
            "samples": int(samples),
            "sigma": sigma,
            "seed": seed,
            "result": "mean",
        }
        if device is not None:
            config["device"] = device
        super().__init__(
            path=None,
            network=None,
            type=InferType.OTHERS,
            labels=None,
            dimension=3,
            output_json_key="forecast_params",
            description=description
            or f"Forecast the scan at 'target_time' from the patient's earlier scans ({self.bundle.name}, "
            f"{self.default_model.variant} variant)",
            config=config,
        )

    # ------------------------------------------------------------------------------------------------ the model

    def _model(
        self,
        device: str,
        solver: str | None,
        steps: int | None,
        samples: int,
        sigma: float | None,
        seed: int | None,
    ) -> BundleForecaster:
        """The forecaster for these options in this thread, built on first use and cached (least recently used
        dropped). A forecaster's inferer keeps per-call state (NFE, standard deviation), so every worker thread of
        the server has its own and forecasts run side by side without a lock."""
        samples = int(samples)
        key = (
            threading.get_ident(),
            str(device),
            solver,
            steps,
            samples,
            sigma if samples > 1 else None,
            seed if samples > 1 else None,
        )
        with self._lock:
            model = self._models.get(key)
            if model is None:
                options = replace(
                    self._options, device=device, solver=solver, steps=steps, samples=samples, sigma=sigma, seed=seed
                )
                model = BundleForecaster(self.bundle, options)
                self._models[key] = model
                while len(self._models) > self._max_cached * len({k[0] for k in self._models}):
                    self._models.popitem(last=False)
            self._models.move_to_end(key)
            return model

    def is_valid(self) -> bool:
        """The forecaster was built when the task was (weights are checked there; parameter-free models need none).

        Returns:
            True.
        """
        return True

    def info(self) -> dict[str, Any]:
        """What ``/info/`` shows of this model: MONAI Label's fields plus the bundle and the request parameters.

        Returns:
            JSON-serialisable information.
        """
        model = self.default_model
        return {
            **super().info(),
            "bundle": str(self.bundle),
            "method": self._options.method,
            "variant": model.variant,
            "num_slots": model.num_slots,
            "studies_layout": 'scans plus a \'<name>.series.json\' sidecar: {"scans": [{"image": FILE, "time": T}]}',
            "params": {
                "target_time": "required: the time to forecast (the bundle's time unit)",
                "steps": f"solver steps (default: the bundle's; at most {self.max_steps})",
                "solver": "ODE solver (default: the bundle's)",
                "samples": f"stochastic samples (> 1: Euler-Maruyama, mean returned; at most {self.max_samples})",
                "sigma": "SDE noise for samples > 1",
                "seed": "seed of the stochastic sampler",
                "result": "'mean' (default) or 'std' (per-voxel standard deviation of the samples)",
            },
        }

    # ------------------------------------------------------------------------------------------------ the stages

    def pre_transforms(self, data: Mapping[str, Any] | None = None) -> Sequence[Callable]:
        """One step: find the series of the requested image and check the request.

        Args:
            data: the request.

        Returns:
            the steps.
        """
        return [self._resolve_request]

    def post_transforms(self, data: Mapping[str, Any] | None = None) -> Sequence[Callable]:
        """None: the forecast is already in the original intensity scale on the reference grid.

        Args:
            data: the request.

        Returns:
            no steps.
        """
        return []

    def _resolve_request(self, data: dict[str, Any]) -> dict[str, Any]:
        image = data.get("image")
        if not isinstance(image, str) or not image:
            raise ForecastError("the request names no image: pass ?image=<id of a scan in the studies folder>.")
        if data.get("target_time") is None or (
            isinstance(data["target_time"], str) and not data["target_time"].strip()
        ):
            raise ForecastError(
                "request parameter 'target_time' is missing: send params={\"target_time\": T} with the time to "
                "forecast (the bundle's time unit)."
            )
        result = str(data.get("result") or "mean").lower()
        if result not in RESULTS:
            raise ForecastError(f"request parameter 'result' must be one of {list(RESULTS)}, got {data['result']!r}.")
        data["result"] = result
        series = find_series(self.studies, image)
        data["series"] = series.name
        data["series_sidecar"] = str(series.path)
        data["series_scans"] = series.scans
        data["series_times"] = series.times
        return data

    def run_inferer(self, data: dict[str, Any], convert_to_batch: bool = True, device: str = "cuda") -> dict[str, Any]:
        """Forecast the series with :func:`monai_tfm.apps.forecast.forecast_series` into temporary NIfTI files.

        Args:
            data: the request after :meth:`pre_transforms`.
            convert_to_batch: unused (the forecaster batches itself).
            device: the device MONAI Label chose for this request.

        Returns:
            ``data`` with ``pred`` (the forecast file), ``pred_std`` (the standard deviation map or None) and the
            result parameters under ``output_json_key``.

        Raises:
            ForecastError: bad request parameters, scans or times (one line naming the value or file).
        """
        samples = _optional_number(data.get("samples"), "samples", int)
        steps = _optional_number(data.get("steps"), "steps", int)
        for key, value, bound in (("steps", steps, self.max_steps), ("samples", samples, self.max_samples)):
            if value is not None and value > bound:
                raise ForecastError(f"request parameter '{key}' = {value} exceeds this server's limit of {bound}.")
        model = self._model(
            device,
            data.get("solver") or None,
            steps,
            1 if samples is None else samples,
            _optional_number(data.get("sigma"), "sigma", float),
            _optional_number(data.get("seed"), "seed", int),
        )
        if data["result"] == "std" and model.samples < 2:
            raise ForecastError("request parameter result='std' needs samples > 1 (a stochastic forecast).")
        mean_file = _temp_nifti()
        std_file = _temp_nifti() if model.samples > 1 else None
        try:
            written = forecast_series(
                model,
                data["series_scans"],
                data["series_times"],
                data["target_time"],
                mean_file,
                reference=data["image"],
                std_output=std_file,
                overwrite=True,
                who=f"series '{Path(data['series_sidecar']).name}'",
                subject=f"series {data['series']}",
            )
        except BaseException:
            _remove(mean_file, std_file)
            raise
        by_time = {float(t): Path(s).name for s, t in zip(data["series_scans"], data["series_times"])}
        data[self.output_label_key] = str(written.output)
        data["pred_std"] = None if written.std_output is None else str(written.std_output)
        data[self.output_json_key] = {
            "series": data["series"],
            "target_time": written.target_time,
            "context_times": written.context_times,
            "context_scans": [by_time.get(float(t), "?") for t in written.context_times],
            "reference": Path(data["image"]).name,
            "nfe": written.nfe,
            "samples": model.samples,
            "result": data["result"],
            "bundle": self.bundle.name,
            "variant": model.variant,
        }
        return data

    def writer(self, data: dict[str, Any], extension: str | None = None, dtype: Any = None) -> tuple[str, dict]:
        """The forecast file asked for (``result``), the other one removed, and the result parameters.

        Args:
            data: the request after :meth:`run_inferer`.
            extension: unused (always NIfTI).
            dtype: unused (always float32).

        Returns:
            the file MONAI Label sends back (and deletes after sending) and the result parameters.
        """
        keep = data["pred_std"] if data["result"] == "std" else data[self.output_label_key]
        _remove(*(f for f in (data[self.output_label_key], data["pred_std"]) if f is not None and f != keep))
        logger.info("forecast of series '%s' at t=%s written to %s", data["series"], data["target_time"], keep)
        return keep, dict(data[self.output_json_key])
