# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""The MONAI Label app of monai_tfm: serves one bundle's forecasts.

MONAI Label loads this file from the ``--app`` folder and instantiates the class in it that derives directly from
``MONAILabelApp``::

    monailabel start_server --app "$(python -c 'import monai_tfm.apps.monailabel as m; print(m.app_dir())')" \\
        --studies studies --conf bundle bundles/synthetic_forecasting --host 127.0.0.1 --port 8000

``--conf`` keys (all optional but ``bundle``): ``bundle``, ``method`` (overlay), ``weights``, ``device``, ``solver``,
``steps``, ``samples``, ``sigma``, ``seed``, ``overrides`` (a JSON object of bundle config ids, e.g.
``'{"aggregation": "last"}'``), ``model`` (the model name in ``/infer/<model>``, default ``forecast``), ``workers``
(forecasts at once, default: one per GPU, else half the CPU cores up to 4), ``max_steps`` and ``max_samples`` (the
largest ``steps``/``samples`` a request may ask for, default 100 and 16).
The studies layout is described in :mod:`monai_tfm.apps.monailabel.study`.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from typing import Any

from fastapi import HTTPException
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.tasks.infer_v2 import InferTask

import monai_tfm
from monai_tfm.apps.forecast import ForecastError
from monai_tfm.apps.monailabel.infer import DEFAULT_MAX_SAMPLES, DEFAULT_MAX_STEPS, ForecastInferTask
from monai_tfm.apps.monailabel.serving import ForecastQueue, default_workers, install_infer_route

__all__ = ["CONF_KEYS", "ForecastApp"]

logger = logging.getLogger(__name__)

CONF_KEYS = (
    "bundle",
    "method",
    "weights",
    "device",
    "solver",
    "steps",
    "samples",
    "sigma",
    "seed",
    "overrides",
    "model",
    "workers",
    "max_steps",
    "max_samples",
)
_MONAILABEL_CONF_KEYS = ("server_mode",)  # read by MONAILabelApp itself


def _conf_number(conf: Mapping[str, str], key: str, kind: type, default: Any) -> Any:
    value = conf.get(key)
    if value is None or str(value).strip().lower() in ("", "none", "null"):
        return default
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise ForecastError(
            f"--conf {key} must be {'an integer' if kind is int else 'a number'}, got {value!r}."
        ) from None


def _conf_overrides(conf: Mapping[str, str]) -> dict[str, Any]:
    text = conf.get("overrides")
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise ForecastError(f"--conf overrides must be a JSON object of bundle config ids, got {text!r}: {e}") from e
    if not isinstance(value, dict):
        raise ForecastError(f"--conf overrides must be a JSON object of bundle config ids, got {text!r}.")
    return value


class ForecastApp(MONAILabelApp):
    """MONAI Label app with one infer task, :class:`~monai_tfm.apps.monailabel.infer.ForecastInferTask`.

    Errors of a request come back as HTTP errors with a one-line ``detail``: 404 for an unknown model or image id,
    400 for anything the forecast rejects (missing or invalid ``target_time``, no series sidecar, bad times or scans).

    Args:
        app_dir: the app folder (this file's folder).
        studies: the local studies folder (scans and ``<name>.series.json`` sidecars).
        conf: the ``--conf`` key/value pairs.

    Raises:
        ForecastError: no ``bundle`` in ``conf``, invalid ``conf`` values, a remote studies URL, or a bundle/weights
            that do not load (the server does not start).
    """

    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]) -> None:
        conf = dict(conf or {})
        unknown = sorted(k for k in conf if k not in CONF_KEYS + _MONAILABEL_CONF_KEYS)
        if unknown:
            logger.warning("ignoring unknown --conf key(s) %s; this app reads %s", unknown, list(CONF_KEYS))
        if not conf.get("bundle"):
            raise ForecastError("the forecasting app needs the bundle: --conf bundle <bundle folder>.")
        if studies.startswith(("http://", "https://")):
            raise ForecastError(f"the forecasting app needs a local studies folder, got the URL '{studies}'.")
        self.model_name = conf.get("model") or "forecast"
        self.task_args: dict[str, Any] = {
            "bundle": conf["bundle"],
            "method": conf.get("method") or None,
            "weights": conf.get("weights") or None,
            "device": conf.get("device") or None,
            "solver": conf.get("solver") or None,
            "steps": _conf_number(conf, "steps", int, None),
            "samples": _conf_number(conf, "samples", int, 1),
            "sigma": _conf_number(conf, "sigma", float, None),
            "seed": _conf_number(conf, "seed", int, 0),
            "overrides": _conf_overrides(conf),
            "max_steps": _conf_number(conf, "max_steps", int, DEFAULT_MAX_STEPS),
            "max_samples": _conf_number(conf, "max_samples", int, DEFAULT_MAX_SAMPLES),
        }
        workers = _conf_number(conf, "workers", int, None)
        workers = default_workers(self.task_args["device"]) if workers is None else workers
        if workers < 1:
            raise ForecastError(f"--conf workers must be >= 1, got {workers}.")
        self.queue = ForecastQueue(workers)
        self._studies_root = os.path.realpath(studies)
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="monai_tfm forecasting",
            description="Forecast a 3D scan at a chosen time from a patient's earlier scans (TFM / CRONOS bundles)",
            version=monai_tfm.__version__,
        )

    def init_infers(self) -> dict[str, InferTask]:
        """The forecasting task, built now so that a broken bundle stops the server at start.

        Returns:
            ``{model name: task}``.
        """
        logger.info("forecasting app: %s", {k: v for k, v in self.task_args.items() if v is not None})
        task = ForecastInferTask(studies=self.studies, **self.task_args)
        import monailabel.app as server  # the running server's FastAPI application

        install_infer_route(server.app, self.queue)
        return {self.model_name: task}

    def infer(self, request: dict[str, Any], datastore: Any = None) -> dict[str, Any]:
        """MONAI Label's inference with the request checked first and expected errors turned into HTTP errors.

        Args:
            request: ``model``, ``image`` (an image id of the studies folder, or a path) and the forecast parameters.
            datastore: the datastore (default: the app's).

        Returns:
            MONAI Label's result: the forecast file (``file``/``label``) and its parameters (``params``).

        Raises:
            HTTPException: 404 for an unknown model or image, 400 for a request the forecast rejects.
        """
        model = request.get("model")
        if model not in self._infers:
            raise HTTPException(
                status_code=404, detail=f"unknown model {model!r}; this app serves {list(self._infers)}."
            )
        image = request.get("image")
        store = datastore if datastore else self.datastore()
        # only scan ids of the studies folder, never paths: the same 404 for an existing and a missing path, so the
        # server cannot be used to probe its file system
        if not isinstance(image, str) or not image or os.sep in image or not store.get_image_uri(image):
            known = sorted(store.list_images())
            shown = ", ".join(known[:5]) + (", ..." if len(known) > 5 else "")
            raise HTTPException(
                status_code=404,
                detail=f"image {image!r} is not a scan id of the studies folder ({len(known)} scans: "
                f"{shown or 'none'}).",
            )
        try:
            return super().infer(request, datastore)
        except ForecastError as e:
            logger.info("forecast request rejected: %s", e)
            # the message names files relative to the studies folder, not as server paths
            detail = str(e).replace(self._studies_root + os.sep, "").replace(str(self.studies) + os.sep, "")
            raise HTTPException(status_code=400, detail=detail) from e
