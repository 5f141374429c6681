# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""Every bundle: its metadata verifies, its workflows have MONAI's required properties, and every overlay builds the
same network in training and in inference (the files ``monai-tfm forecast`` reads), so trained weights load.

The bundles of this repository are assembled from their own files plus shared folders (``bundles/_shared/``, named in
each bundle's metadata as ``shared_configs``; :func:`monai_tfm.apps.bundle_loading.bundle_run_files` is the one rule
of which files make up a run). The shared text is stored once: no bundle holds a copy of a shared file, every shared
folder serves several bundles, and the parts of one config define disjoint ids, so that joining them into one file
(``monai-tfm pack``) or reading them in any order gives the same config.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from helpers import workflow
from monai.bundle import ConfigParser, verify_metadata

from monai_tfm.apps.bundle_loading import (
    bundle_config_files,
    bundle_methods,
    bundle_run_files,
    config_names,
    config_parts,
    shared_config_folders,
)

__all__: list[str] = []

REPO = Path(__file__).resolve().parents[1]
BUNDLES = REPO / "bundles"
SHARED = BUNDLES / "_shared"
SCHEMA = BUNDLES / "schema" / "monai_tfm_meta_schema_v1.json"
ALL = sorted(p.parent.parent.name for p in BUNDLES.glob("*/configs/metadata.json"))
FORECASTING = [b for b in ALL if b.endswith("_forecasting")]
# base configs of a bundle that has no train.yaml (the SSL bundle: pretraining, then finetuning)
BASES = {"acdc_cine_longitudinal_ssl": ("pretrain.yaml", "finetune.yaml")}
# MONAI's property check parses the properties, data included: here for the bundles with built-in data (tiny); the
# dataset bundles check theirs on tiny prepared data in tests/test_{acdc_bundle,isles,lumiere,series,ssl,generation}.py
BUILT_IN_DATA = {
    "synthetic_forecasting": {"num_train": 2, "num_val": 1, "num_test": 1, "spatial_size": [16, 16, 8]},
    "synthetic_generation": {"num_train": 8, "num_val": 4},
}


def test_the_bundle_lists_are_found():
    assert {"synthetic_forecasting", "acdc_cine_forecasting", "series_forecasting"} <= set(FORECASTING)
    assert {"synthetic_generation", "acdc_cine_generation", "acdc_cine_longitudinal_ssl"} <= set(ALL)
    assert all(len(bundle_methods(BUNDLES / b)) >= 10 for b in FORECASTING)


def _network_shapes(files: list[Path]) -> dict[str, tuple[int, ...]]:
    parser = ConfigParser()
    parser.read_config([str(f) for f in files])
    net = parser.get_parsed_content("network_def")
    assert isinstance(net, torch.nn.Module)
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


def _overlays(root: Path) -> list[tuple[str | None, tuple[str, ...]]]:
    """(method, other overlays) of every overlay of a bundle: each method, each protocol and other overlay."""
    others = [
        n
        for n in config_names(root)
        if "/" in n and not n.startswith("methods/") or n == "volumes_3d.yaml"  # protocols/..., volumes_3d.yaml
    ]
    return [(None, ())] + [(m, ()) for m in bundle_methods(root)] + [(None, (o,)) for o in others]


@pytest.mark.parametrize("bundle", ALL)
def test_bundle(bundle, tmp_path):
    """verify_metadata; check_properties of its training (and inference) workflow where its data is built in; every
    overlay builds the same network for training and for inference."""
    root = BUNDLES / bundle
    meta = root / "configs" / "metadata.json"
    verify_metadata(meta_file=str(meta), filepath=str(SCHEMA))
    if bundle in BUILT_IN_DATA:
        small = {"bundle_root": str(root), "output_dir": str(tmp_path / "run"), **BUILT_IN_DATA[bundle]}
        small.update({"dataset_dir": str(tmp_path / "data")} if bundle in FORECASTING else {})
        train = workflow(bundle_run_files(root, "train"), "train", "training", meta, **small)
        assert train.check_properties() == []
        if bundle in FORECASTING:
            infer = workflow(bundle_config_files(root, None, ValueError), "infer", "run", meta, **small)
            assert infer.check_properties() == []
    if bundle in BASES:  # pretraining builds its own network; finetuning's is the one its inference serves
        pretrain, finetune = BASES[bundle]
        assert _network_shapes(bundle_run_files(root, "train", base=pretrain))
        trained = _network_shapes(bundle_run_files(root, "train", base=finetune))
        assert _network_shapes(bundle_run_files(root, "inference", base=finetune)) == trained
        return
    for method, overlays in _overlays(root):
        trained = _network_shapes(bundle_run_files(root, "train", method=method, overlays=overlays))
        served_files = bundle_run_files(root, "inference", method=method, overlays=overlays)
        assert served_files == bundle_config_files(root, method, ValueError) or overlays
        assert _network_shapes(served_files) == trained, (method, overlays)
        for files in (served_files, bundle_run_files(root, "evaluate", method=method, overlays=overlays)):
            assert len({f.stem for f in files}) == len(files), f"two files of one name (ckpt_export refuses): {files}"


def test_the_shared_text_is_stored_once():
    """Every shared folder serves two or more bundles and each of its files is read by one of them at least; no
    bundle holds a copy of a shared file, and no two shared folders hold the same file."""
    users: dict[Path, list[str]] = {}
    for bundle in ALL:
        for folder in shared_config_folders(BUNDLES / bundle):
            assert folder.is_dir() and folder.parent == SHARED, f"{bundle}: shared folder {folder} is not in {SHARED}"
            users.setdefault(folder, []).append(bundle)
    folders = sorted(p for p in SHARED.iterdir() if p.is_dir())
    assert sorted(users) == folders, "a folder of bundles/_shared that no bundle names"
    texts: dict[str, str] = {}
    for folder in folders:
        assert len(users[folder]) >= 2, f"{folder.name} serves only {users[folder]}: move it into the bundle"
        for path in sorted(folder.rglob("*.yaml")):
            text = path.read_text()
            assert text not in texts, f"{path} is a copy of {texts.get(text)}"
            texts[text] = str(path)
    for bundle in ALL:
        for path in sorted((BUNDLES / bundle / "configs").rglob("*.yaml")):
            assert path.read_text() not in texts, f"{path} is a copy of {texts.get(path.read_text())}"


@pytest.mark.parametrize("bundle", ALL)
def test_the_parts_of_a_config_define_disjoint_ids(bundle):
    """A bundle's own part and the shared parts of one config never set the same id (nor one inside another's), so
    the order of the parts and joining them into one file change nothing."""
    root = BUNDLES / bundle
    for name in config_names(root):
        seen: dict[str, Path] = {}
        for part in config_parts(root, name):
            tops = {key.lstrip("+").split("#")[0].split("::")[0] for key in yaml.safe_load(part.read_text()) or {}}
            for top in sorted(tops):
                assert top not in seen, f"{bundle}: '{top}' of {part} is also set by {seen[top]}"
                seen[top] = part


@pytest.mark.parametrize("bundle", FORECASTING)
def test_train_yaml_holds_the_inference_settings(bundle):
    """What inference.yaml reads but does not define comes from the bundle's own train.yaml, with usable values."""
    root = BUNDLES / bundle
    own = yaml.safe_load((root / "configs" / "train.yaml").read_text())
    keys = ("ckpt_path", "infer_split", "target_time", "context_lead", "load_transforms", "variant_transforms")
    keys += ("train_data", "val_data", "eval_split", "eval_draws", "report_title", "train_protocol", "network_def")
    for key in keys:
        assert key in own, f"{bundle}: no '{key}' in its configs/train.yaml"
    parser = ConfigParser()
    parser.read_config([str(f) for f in bundle_config_files(root, None, ValueError)])
    assert float(parser.get_parsed_content("context_lead")) >= 0
    assert parser.get_parsed_content("infer_split") in ("test", "validation", "training")


def test_monai_tfm_configs_prints_the_run_files(capsys, monkeypatch):
    """``monai-tfm configs`` prints bundle_run_files as MONAI's --config_file list (relative to the working folder);
    an unknown method is a one-line error listing the shared and own overlays."""
    import ast

    from helpers import assert_one_line_error, run_cli

    monkeypatch.chdir(REPO)
    root = BUNDLES / "acdc_cine_forecasting"
    ssl_overlay = "bundles/acdc_cine_longitudinal_ssl/configs/forecasting_encoder_init.yaml"
    for argv, files in (
        (["--run", "evaluate", "--method", "lci"], bundle_run_files(root, "evaluate", "lci")),
        (
            ["--overlays", "protocols/continuous_time.yaml"],
            bundle_run_files(root, overlays=["protocols/continuous_time.yaml"]),
        ),
        (["--overlays", ssl_overlay], bundle_run_files(root, overlays=[REPO / ssl_overlay])),
    ):
        rc, out, err = run_cli(["configs", "bundles/acdc_cine_forecasting", *argv], capsys)
        assert rc == 0, err
        assert [REPO / f for f in ast.literal_eval(out.strip())] == files
    rc, _, err = run_cli(["configs", "bundles/acdc_cine_forecasting", "--method", "nope"], capsys)
    assert_one_line_error(rc, err, "unknown method 'nope'", "'lci'", "'tfm'")
