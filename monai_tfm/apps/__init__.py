# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""Applications on top of the engine, imported on demand (nothing is imported here, so that optional dependencies
of one application never break another):

* :mod:`monai_tfm.apps.forecast`: forecast a patient's own scans with a trained bundle (``monai-tfm forecast``);
  the model is :mod:`monai_tfm.apps.forecaster`, the scans as its context :mod:`monai_tfm.apps.scans`;
* :mod:`monai_tfm.apps.pack`: a reproducible, shareable zip of a bundle with its weights (``monai-tfm pack``);
* :mod:`monai_tfm.apps.monailabel`: the MONAI Label app;
* :mod:`monai_tfm.apps.bundle_loading`: loading a trained bundle's config, device and weights, shared by forecast and
  :mod:`monai_tfm.generation.app`.
"""

from __future__ import annotations

__all__: list[str] = []
