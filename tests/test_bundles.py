# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""Every bundle: its metadata verifies, and for the forecasting bundles every method overlay builds the same network
in training and in inference.

``inference.yaml`` re-declares the model ids of ``train.yaml`` (width, levels, slots, time mode): weights trained
with an overlay load only if both builds agree, so the test compares the two networks' parameter names and shapes.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser, verify_metadata

__all__: list[str] = []

REPO = Path(__file__).resolve().parents[1]
BUNDLES = REPO / "bundles"
SCHEMA = BUNDLES / "schema" / "monai_tfm_meta_schema_v1.json"
ALL = sorted(p.parent.parent.name for p in BUNDLES.glob("*/configs/metadata.json"))
FORECASTING = sorted(p.parent.parent.name for p in BUNDLES.glob("*_forecasting/configs/methods"))
OVERLAYS = [(b, p.stem) for b in FORECASTING for p in sorted((BUNDLES / b / "configs" / "methods").glob("*.yaml"))]


def test_the_bundle_lists_are_found():
    assert {"synthetic_forecasting", "acdc_cine_forecasting", "series_forecasting"} <= set(FORECASTING)
    assert set(FORECASTING) <= set(ALL) and len(OVERLAYS) >= 5 * len(FORECASTING)


@pytest.mark.parametrize("bundle", ALL)
def test_metadata_verifies(bundle):
    verify_metadata(meta_file=str(BUNDLES / bundle / "configs" / "metadata.json"), filepath=str(SCHEMA))


def _network(bundle: str, main: str, method: str) -> torch.nn.Module:
    configs = BUNDLES / bundle / "configs"
    parser = ConfigParser()
    parser.read_config([str(configs / main), str(configs / "methods" / f"{method}.yaml")])
    net = parser.get_parsed_content("network_def")
    assert isinstance(net, torch.nn.Module)
    return net


@pytest.mark.parametrize("bundle,method", OVERLAYS, ids=[f"{b}-{m}" for b, m in OVERLAYS])
def test_overlay_builds_the_same_network_for_training_and_inference(bundle, method):
    trained = {k: tuple(v.shape) for k, v in _network(bundle, "train.yaml", method).state_dict().items()}
    served = {k: tuple(v.shape) for k, v in _network(bundle, "inference.yaml", method).state_dict().items()}
    assert served == trained
