# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""MONAI Label serving of forecasts (``pip install 'monai_tfm[monailabel]'``).

``monailabel start_server --app <app_dir()> --studies <folder> --conf bundle <bundle>`` serves one bundle's forecasts:
a request names a scan of a patient (``/infer/forecast?image=<id>``) and gives ``target_time``; the response is the
forecast volume (NIfTI on the grid of the requested scan, original intensity scale). See ``docs/monailabel.md``.

* :func:`app_dir`: the ``--app`` folder (its ``main.py`` holds the ``MONAILabelApp`` subclass the server loads);
* :mod:`monai_tfm.apps.monailabel.study`: the studies layout (scans plus a ``<name>.series.json`` sidecar with their
  times); no MONAI Label needed;
* :mod:`monai_tfm.apps.monailabel.infer`: the infer task (imports MONAI Label).

Nothing here imports MONAI Label, so this package (and ``import monai_tfm``) works without the extra.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["app_dir"]


def app_dir() -> Path:
    """The MONAI Label app folder of this package, to pass as ``monailabel start_server --app``.

    ``start_server`` creates ``model/``, ``lib/``, ``logs/`` and ``bin/`` in the app folder; copy the folder elsewhere
    first where the package is installed read-only.

    Returns:
        the folder holding the app's ``main.py``.
    """
    return Path(__file__).resolve().parent / "app"
