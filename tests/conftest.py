# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""Shared test settings."""

from __future__ import annotations

import logging

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


@pytest.fixture
def fresh_log_handler():
    """Bind the package's log handler to the stderr that ``capsys`` captures in each test: ``setup_logging`` binds
    its handler to the ``sys.stderr`` of its first caller, so each command-line test must get a new one."""

    def drop():
        pkg = logging.getLogger("monai_tfm")
        for handler in [h for h in pkg.handlers if getattr(h, "_monai_tfm", False)]:
            pkg.removeHandler(handler)

    drop()
    yield
    drop()
