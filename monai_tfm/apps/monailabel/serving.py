# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""Serving many forecast requests at once: a worker pool off MONAI Label's event loop.

MONAI Label 0.8 answers ``POST /infer/{model}`` with an ``async`` endpoint that calls the whole (blocking) inference
directly, so one forecast holds the server's event loop: every other request, ``GET /info/`` included, waits until
it is done, and answers queue up. Nothing in MONAI Label or FastAPI configures this away (a blocking call inside an
``async`` endpoint is the endpoint's choice), so this module replaces that one route with an endpoint that

* checks the ``params`` form field first (a JSON object; anything else is a 400 with one line),
* waits for one of ``workers`` slots on the event loop, drops the request if its client has gone meanwhile
  (status 499, nothing computed), and
* runs MONAI Label's own request handling (``monailabel.endpoints.infer.run_inference``: defaults, datastore, the
  app's ``infer`` and the response) in a thread pool of ``workers`` threads, so answers go out as each finishes and
  the event loop stays free for ``/info/`` and new requests.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Optional

import torch
from fastapi import Depends, FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.background import BackgroundTasks
from fastapi.responses import Response
from monailabel.config import settings
from monailabel.endpoints.infer import ResultType, run_inference
from monailabel.endpoints.user.auth import RBAC, User

__all__ = ["CLIENT_GONE", "ForecastQueue", "default_workers", "install_infer_route"]

logger = logging.getLogger(__name__)

#: status of a request dropped because its client disconnected while it waited (nginx's convention)
CLIENT_GONE = 499


def default_workers(device: str | None) -> int:
    """Forecasts run at once by default: one per GPU on CUDA, else half the CPU cores (1 to 4).

    On a CPU each forecast also uses torch's intra-op threads, so workers and threads share the cores; for small
    volumes several single-threaded workers give more answers per second than one multi-threaded one
    (``docs/results/monailabel_load*.md``: 2 cores, 5.6 vs 3.3 answers/s), so set ``--conf workers`` to the cores and
    ``OMP_NUM_THREADS=1`` there.

    Args:
        device: the app's device (None: MONAI Label's default, CUDA when available).

    Returns:
        the number of workers (>= 1).
    """
    cuda = (device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda")
    if cuda and torch.cuda.is_available():
        return max(1, torch.cuda.device_count())
    return max(1, min(4, (os.cpu_count() or 2) // 2))


class ForecastQueue:
    """At most ``workers`` forecasts at once, in a thread pool; waiting requests wait on the event loop.

    Args:
        workers: the pool size (>= 1).
    """

    def __init__(self, workers: int) -> None:
        self.workers = max(1, int(workers))
        self.executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="monai_tfm_forecast")
        self._slots: asyncio.Semaphore | None = None  # made in the server's loop on first use

    async def run(self, request: Request, fn: Any, *args: Any) -> Any:
        """Run ``fn(*args)`` in the pool once a slot is free, unless the client has gone by then.

        Args:
            request: the HTTP request (to see a disconnected client).
            fn: the blocking function.
            args: its arguments.

        Returns:
            what ``fn`` returns, or an empty 499 response for a client that disconnected while waiting.
        """
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.workers)
        async with self._slots:
            if await request.is_disconnected():
                logger.info("forecast request dropped before it was computed: its client has gone")
                return Response(status_code=CLIENT_GONE)
            return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)


def _params_object(params: str) -> str:
    """The ``params`` form field, checked to be a JSON object.

    Raises:
        HTTPException: 400 for invalid JSON or another JSON value.
    """
    try:
        value = json.loads(params) if params else {}
    except json.JSONDecodeError as e:
        raise HTTPException(status_code=400, detail=f"params must be a JSON object, got invalid JSON: {e.msg}.") from e
    if not isinstance(value, dict):
        raise HTTPException(
            status_code=400, detail=f'params must be a JSON object such as {{"target_time": 0.5}}, got {params!r}.'
        )
    return params


def install_infer_route(app: FastAPI, queue: ForecastQueue) -> None:
    """Serve ``POST /infer/{model}`` of ``app`` with the pooled endpoint of this module instead of MONAI Label's.

    Args:
        app: MONAI Label's FastAPI application (``monailabel.app.app``).
        queue: the worker pool.
    """
    path = f"{settings.MONAI_LABEL_API_STR}/infer/{{model}}"

    async def infer(
        request: Request,
        background_tasks: BackgroundTasks,
        model: str,
        image: str = "",
        session_id: str = "",
        params: str = Form("{}"),
        file: UploadFile = File(None),
        label: UploadFile = File(None),
        output: Optional[ResultType] = None,  # noqa: UP045  (FastAPI reads this annotation)
        user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_USER)),
    ) -> Any:
        params = _params_object(params)
        if file is not None or label is not None:
            raise HTTPException(
                status_code=400,
                detail="this server forecasts the scans of its studies folder: name one with ?image=<scan id> "
                "(uploads are not supported).",
            )
        return await queue.run(
            request, run_inference, background_tasks, model, image, session_id, params, None, None, output
        )

    # routes are matched in order: the pooled endpoint goes first and MONAI Label's own is never reached (its
    # routers are included as a whole, so the route itself is left in place)
    app.add_api_route(path, infer, methods=["POST"], summary="Run a forecast (pooled)", tags=["Infer"])
    app.router.routes.insert(0, app.router.routes.pop())
    logger.info("forecasts run in a pool of %d worker(s), off the server's event loop", queue.workers)
