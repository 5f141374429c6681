# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""Every bundle: its metadata verifies; the forecasting bundles share one ``inference.yaml`` (an overlay read after
their ``train.yaml``, which holds every dataset-specific value), and every method overlay builds the same network in
training and in inference (the files ``monai-tfm forecast`` reads), so trained weights load for forecasting.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
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
_spec = importlib.util.spec_from_file_location("bundle_wiring", REPO / "tools" / "bundle_wiring.py")
bundle_wiring = importlib.util.module_from_spec(_spec)
sys.modules["bundle_wiring"] = bundle_wiring  # dataclasses look their module up
_spec.loader.exec_module(bundle_wiring)
FORECASTING = bundle_wiring.forecasting_bundles(BUNDLES)
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


PARTS = bundle_wiring.generic_parts()


def test_the_generic_parts_cover_every_shared_file():
    """The rule of tools/bundle_wiring.py names the whole files, train.yaml's shared tail and the method overlays."""
    names = {(p.relpath, p.from_mark) for p in PARTS}
    for name in ("evaluate.yaml", "inference.yaml", "multi_gpu_train.yaml"):
        assert (f"configs/{name}", False) in names
    assert ("configs/train.yaml", True) in names
    overlays = {p.relpath for p in PARTS if "/methods/" in p.relpath}
    assert {"configs/methods/lci.yaml", "configs/methods/cronos_discrete.yaml"} <= overlays
    assert "configs/methods/tfm.yaml" not in overlays  # it holds each dataset's width and slice axis
    assert all(len(p.bundles) >= 2 for p in PARTS)


@pytest.mark.parametrize("part", PARTS, ids=[f"{p.relpath}{'-tail' if p.from_mark else ''}" for p in PARTS])
def test_forecasting_bundles_share_the_generic_wiring(part):
    """The generic wiring is the same text everywhere (a fix is one edit, copied by tools/bundle_wiring.py --write)."""
    assert part.differing() == [], f"{part.relpath} differs: run python tools/bundle_wiring.py --write"


def test_bundle_wiring_copies_one_edit_to_every_bundle(tmp_path):
    """An edit of the generic tail of one bundle's train.yaml and of one shared overlay reaches the others; their
    dataset parts stay theirs; with two different edits the tool asks which is right and changes nothing."""
    root = tmp_path / "bundles"
    for b in FORECASTING:
        shutil.copytree(BUNDLES / b / "configs", root / b / "configs")
    edited = root / FORECASTING[0] / "configs"
    (edited / "train.yaml").write_text((edited / "train.yaml").read_text() + "# a wiring fix\n")
    (edited / "methods" / "lci.yaml").write_text((edited / "methods" / "lci.yaml").read_text() + "# fix\n")
    heads = {
        b: (root / b / "configs" / "train.yaml").read_text().split(bundle_wiring.SHARED_MARK)[0] for b in FORECASTING
    }
    assert bundle_wiring.main(["--bundles", str(root)]) == 1  # the check sees the edits
    assert bundle_wiring.main(["--bundles", str(root), "--write"]) == 0
    for b in FORECASTING:
        train = (root / b / "configs" / "train.yaml").read_text()
        assert train.endswith("# a wiring fix\n") and train.startswith(heads[b])
        assert (root / b / "configs" / "methods" / "lci.yaml").read_text().endswith("# fix\n")
    assert bundle_wiring.main(["--bundles", str(root)]) == 0
    for b, text in ((FORECASTING[0], "# one\n"), (FORECASTING[1], "# two\n")):
        path = root / b / "configs" / "inference.yaml"
        path.write_text(path.read_text() + text)
    before = {b: (root / b / "configs" / "inference.yaml").read_text() for b in FORECASTING}
    assert bundle_wiring.main(["--bundles", str(root), "--write"]) == 1
    assert {b: (root / b / "configs" / "inference.yaml").read_text() for b in FORECASTING} == before
    with pytest.raises(SystemExit) as bad:  # a usage error, before anything is written
        bundle_wiring.main(["--bundles", str(root), "--write", "--source", "no_such_bundle"])
    assert bad.value.code == 2
    assert {b: (root / b / "configs" / "inference.yaml").read_text() for b in FORECASTING} == before
    assert bundle_wiring.main(["--bundles", str(root), "--write", "--source", FORECASTING[1]]) == 0
    assert all((root / b / "configs" / "inference.yaml").read_text().endswith("# two\n") for b in FORECASTING)


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
