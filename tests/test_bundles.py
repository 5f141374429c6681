# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""Every bundle: its metadata verifies; the forecasting bundles share one ``inference.yaml`` (an overlay read after
their ``train.yaml``, which holds every dataset-specific value), and every method overlay builds the same network in
training and in inference (the files ``monai-tfm forecast`` reads), so trained weights load for forecasting.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser, verify_metadata

from monai_tfm.apps.bundle_loading import bundle_config_files

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


def _network(files: list[Path]) -> torch.nn.Module:
    parser = ConfigParser()
    parser.read_config([str(f) for f in files])
    net = parser.get_parsed_content("network_def")
    assert isinstance(net, torch.nn.Module)
    return net


@pytest.mark.parametrize("bundle,method", OVERLAYS, ids=[f"{b}-{m}" for b, m in OVERLAYS])
def test_overlay_builds_the_same_network_for_training_and_inference(bundle, method):
    configs = BUNDLES / bundle / "configs"
    trained = {
        k: tuple(v.shape)
        for k, v in _network([configs / "train.yaml", configs / "methods" / f"{method}.yaml"]).state_dict().items()
    }
    served_files = bundle_config_files(BUNDLES / bundle, method, ValueError)
    assert [f.name for f in served_files] == ["train.yaml", "inference.yaml", f"{method}.yaml"]
    served = {k: tuple(v.shape) for k, v in _network(served_files).state_dict().items()}
    assert served == trained


SHARED_MARK = "# ---- shared wiring:"


def _shared_part(bundle: str, name: str) -> str:
    """The part of a config file that must be the same in every forecasting bundle: the whole file, or for
    ``train.yaml`` everything from its shared-wiring line on (above it: the dataset's own values)."""
    text = (BUNDLES / bundle / "configs" / name).read_text()
    if name == "train.yaml":
        assert text.count(SHARED_MARK) == 1, f"{bundle}/configs/train.yaml has no single '{SHARED_MARK}' line"
        return text[text.index(SHARED_MARK) :]
    return text


@pytest.mark.parametrize("name", ["train.yaml", "evaluate.yaml", "inference.yaml", "multi_gpu_train.yaml"])
def test_forecasting_bundles_share_the_generic_wiring(name):
    """The generic wiring is the same text everywhere: a fix to it is one edit (copied to every bundle)."""
    texts = {b: _shared_part(b, name) for b in FORECASTING}
    first = texts[FORECASTING[0]]
    assert [b for b, t in texts.items() if t != first] == []


@pytest.mark.parametrize("bundle", FORECASTING)
def test_train_yaml_holds_the_inference_settings(bundle):
    """What inference.yaml reads but does not define comes from the bundle's train.yaml, with usable values."""
    parser = ConfigParser()
    parser.read_config([str(f) for f in bundle_config_files(BUNDLES / bundle, None, ValueError)])
    keys = ("ckpt_path", "infer_split", "target_time", "context_lead", "load_transforms", "variant_transforms")
    keys += ("train_data", "val_data", "eval_split", "eval_draws", "report_title", "train_protocol", "max_steps")
    for key in keys:
        assert key in parser, f"{bundle}: no '{key}'"
    assert float(parser.get_parsed_content("context_lead")) >= 0
    assert parser.get_parsed_content("infer_split") in ("test", "validation", "training")


# bundles whose time grid is their own (follow-up visits: LUMIERE; a user's series) have their own variant overlays
FIXED_GRID = ["acdc_cine_forecasting", "isles_ctp_forecasting", "synthetic_forecasting"]
PARAMETER_FREE = ("lci", "linear")  # the same in all five bundles


@pytest.mark.parametrize("method", sorted({m for _, m in OVERLAYS}))
def test_method_overlays_are_one_text_where_the_method_is_the_same(method):
    """A method overlay is the same file in every bundle whose data need nothing of their own (a fix is one edit,
    copied): in all five bundles for the parameter-free baselines, in the fixed-grid bundles for the others; TFM's
    overlay states each dataset's width and slice axis."""
    if method == "tfm":
        pytest.skip("tfm.yaml holds the dataset's network width and slice axis")
    have = [b for b in FORECASTING if (BUNDLES / b / "configs" / "methods" / f"{method}.yaml").is_file()]
    group = have if method in PARAMETER_FREE else [b for b in FIXED_GRID if b in have]
    texts = {b: (BUNDLES / b / "configs" / "methods" / f"{method}.yaml").read_text() for b in group}
    assert len(group) >= 2 and len(set(texts.values())) == 1, f"{method}.yaml differs between {sorted(texts)}"
