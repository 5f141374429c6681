# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""Shared test settings."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Run the suite on one intra-op thread: on the 2-core CI machine two threads contend and small convolutions
    become many times slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
