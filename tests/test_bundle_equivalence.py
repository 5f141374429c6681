# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""The bundles' file layout changes no config value: every run of every bundle (its base config alone, with each method
overlay, protocol and other overlays, evaluation, inference, DDP), read with the package's file rule
(:func:`monai_tfm.apps.bundle_loading.bundle_run_files`), merges to the very raw config recorded in
``tests/fixtures/bundle_configs.json`` from the layout of one self-contained folder per bundle
(``tools/bundle_equivalence.py``), in the repository and in the self-contained copy that ``monai-tfm pack`` writes.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from monai_tfm.apps.bundle_loading import assembled_configs, bundle_run_files

__all__: list[str] = []

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("bundle_equivalence", REPO / "tools" / "bundle_equivalence.py")
bundle_equivalence = importlib.util.module_from_spec(_spec)
sys.modules["bundle_equivalence"] = bundle_equivalence
_spec.loader.exec_module(bundle_equivalence)
RECORDED = json.loads(bundle_equivalence.FIXTURE.read_text())
FILES = bundle_equivalence.bundle_run_files_for_name(bundle_run_files)


def test_every_bundle_and_run_is_recorded():
    bundles = sorted(p.parent.parent.name for p in (REPO / "bundles").glob("*/configs/metadata.json"))
    assert sorted(RECORDED) == bundles
    assert sum(map(len, RECORDED.values())) >= 250


@pytest.mark.parametrize("bundle", sorted(RECORDED))
def test_every_run_merges_to_the_recorded_config(bundle):
    differ = [
        name
        for name, digest in RECORDED[bundle].items()
        if bundle_equivalence.digest(bundle_equivalence.merged_config(FILES(bundle, name))) != digest
    ]
    assert differ == [], f"{bundle}: merged configs differ from the recorded ones: {differ}"


@pytest.mark.parametrize("bundle", sorted(RECORDED))
def test_the_self_contained_copy_merges_to_the_recorded_config(bundle, tmp_path):
    """The configs ``monai-tfm pack`` writes (each config's parts joined into one file) give the same runs."""
    copy = tmp_path / bundle
    for rel, data in assembled_configs(REPO / "bundles" / bundle).items():
        (copy / rel).parent.mkdir(parents=True, exist_ok=True)
        (copy / rel).write_bytes(data)
    meta = copy / "configs" / "metadata.json"
    if not meta.is_file():
        meta.write_bytes((REPO / "bundles" / bundle / "configs" / "metadata.json").read_bytes())
    assert "shared_configs" not in json.loads(meta.read_text())
    differ = []
    for name, digest in RECORDED[bundle].items():
        base, run, method, overlays = bundle_equivalence.split_name(name)
        extra = [REPO / "bundles" / o if o == bundle_equivalence.ENCODER_INIT else o for o in overlays]
        files = bundle_run_files(copy, run, method=method, overlays=extra, base=base)
        assert all(f.is_relative_to(copy) for f in files if f not in extra)
        if bundle_equivalence.digest(bundle_equivalence.merged_config(files)) != digest:
            differ.append(name)
    assert differ == [], f"{bundle}: the self-contained copy's configs differ from the recorded ones: {differ}"


@pytest.mark.parametrize("bundle", sorted(b for b in RECORDED if b != "series_forecasting"))
def test_monai_tfm_pack_writes_the_self_contained_configs(bundle, tmp_path):
    """The zip of ``monai-tfm pack`` holds exactly the self-contained configs checked above (series_forecasting needs
    a prepared dataset to pack: tests/test_series.py packs it)."""
    import zipfile

    import torch

    from monai_tfm.apps.pack import pack_bundle

    torch.save({"w": torch.zeros(1)}, tmp_path / "w.pt")
    zipped = pack_bundle(REPO / "bundles" / bundle, tmp_path / "b.zip", weights=tmp_path / "w.pt")
    expected = assembled_configs(REPO / "bundles" / bundle)
    with zipfile.ZipFile(zipped) as zf:
        packed = {n[len(bundle) + 1 :]: zf.read(n) for n in zf.namelist() if n.startswith(f"{bundle}/configs/")}
    assert {n: d for n, d in packed.items() if n in expected} == expected
    own = {
        p.relative_to(REPO / "bundles" / bundle).as_posix() for p in (REPO / "bundles" / bundle / "configs").rglob("*")
    }
    assert set(packed) == set(expected) | {n for n in own if "." in Path(n).name}
