# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""monai_tfm: forecast a 3D medical scan at a chosen time from a patient's earlier scans.

Temporal Flow Matching (TFM) and CRONOS as a MONAI plug-in: sequence transforms, flow-matching engines,
ODE inference with counted network evaluations, metrics against the Last Context Image, and MONAI bundles.
"""

from __future__ import annotations

__version__ = "0.1.0"

from . import data, engines, flows, handlers, inferers, losses, metrics, networks, transforms, utils

__all__ = [
    "__version__",
    "data",
    "engines",
    "flows",
    "handlers",
    "inferers",
    "losses",
    "metrics",
    "networks",
    "transforms",
    "utils",
]
