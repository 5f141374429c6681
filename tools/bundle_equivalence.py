# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""The merged config of every bundle run, recorded once (``tests/fixtures/bundle_configs.json``) as the proof that a
change of the bundles' file layout changes no config value.

Each run is named ``base|run|method|overlays`` (e.g. ``train.yaml|evaluate|lci|protocols/continuous_time.yaml``);
its config files are read in order with ``monai.bundle.ConfigParser().read_config(files)`` and ``parser.config`` (the
merged raw dict: nothing parsed or instantiated) is recorded as the SHA-256 of its canonical JSON (sorted keys).
``tests/test_bundle_equivalence.py`` rebuilds every run with :func:`monai_tfm.apps.bundle_loading.bundle_run_files`
and compares. The fixture was first written (commit 8bd47ee) from the layout before the shared folders (one folder per
bundle, every file a copy) with that layout's file rule, :func:`copied_layout_files`; the shared layout reproduced it.
A deliberate change of a config value changes its runs' digests: check with ``--dump`` that only the intended values
changed, then record the new reference with ``--write`` (the current layout, through ``bundle_run_files``)::

    python tools/bundle_equivalence.py --dump DIR  # the merged dicts of the recorded runs as JSON files (to diff)
    python tools/bundle_equivalence.py --write     # record the current layout's runs as the reference
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from monai.bundle import ConfigParser

__all__ = ["FIXTURE", "canonical", "copied_layout_files", "digest", "merged_config", "run_names", "split_name"]

logger = logging.getLogger("bundle_equivalence")

REPO = Path(__file__).resolve().parents[1]
BUNDLES = REPO / "bundles"
FIXTURE = REPO / "tests" / "fixtures" / "bundle_configs.json"
SSL = "acdc_cine_longitudinal_ssl"
# the SSL overlay that initialises the ACDC forecaster's encoder (stacked on the forecasting bundle's training)
ENCODER_INIT = f"{SSL}/configs/forecasting_encoder_init.yaml"


def split_name(name: str) -> tuple[str, str, str | None, tuple[str, ...]]:
    """``base|run|method|overlays`` -> ``(base, run, method or None, overlays)``."""
    base, run, method, overlays = name.split("|")
    return base, run, method or None, tuple(o for o in overlays.split("+") if o)


def run_names(bundle: str, methods: list[str], extras: list[str]) -> list[str]:
    """Every run of a bundle: its base config alone, with each method overlay, each extra overlay (protocols,
    ``volumes_3d.yaml``), and evaluation, inference and DDP where the bundle has them.

    Args:
        bundle: the bundle's folder name.
        methods: its method overlays (``lci``, ...).
        extras: its other overlays, relative to ``configs/`` (``protocols/continuous_time.yaml``).

    Returns:
        run names.
    """
    if bundle == SSL:
        names = ["pretrain.yaml|train||", "finetune.yaml|train||", "finetune.yaml|evaluate||"]
        return names + ["finetune.yaml|inference||"]
    runs = ["train", "evaluate", "inference"] + (["multi_gpu_train"] if bundle.endswith("_forecasting") else [])
    names = []
    for run in runs:
        for method in [""] + methods:
            names.append(f"train.yaml|{run}|{method}|")
        for extra in extras:
            names.append(f"train.yaml|{run}||{extra}")
            names += [f"train.yaml|{run}|{m}|{extra}" for m in methods[:1] + methods[-1:]]
    if bundle == "acdc_cine_forecasting":
        names.append(f"train.yaml|train||{ENCODER_INIT}")
    return names


def copied_layout_files(root: Path, base: str, run: str, method: str | None, overlays: tuple[str, ...]) -> list[Path]:
    """The files of a run in the copied layout (every file in the bundle's own ``configs/``)."""
    configs = root / "configs"
    files = [configs / base]
    tail = [configs / "methods" / f"{method}.yaml"] if method else []
    tail += [BUNDLES / o if o == ENCODER_INIT else configs / o for o in overlays]
    if run == "inference":
        return files + [configs / "inference.yaml"] + tail
    return files + tail + ([] if run == "train" else [configs / f"{run}.yaml"])


def merged_config(files: list[Path]) -> dict[str, Any]:
    """``parser.config`` after ``ConfigParser().read_config(files)``: the merged raw dict."""
    parser = ConfigParser()
    parser.read_config([str(f) for f in files])
    return parser.config


def canonical(config: dict[str, Any]) -> str:
    """The config as canonical JSON (sorted keys), the form that is hashed."""
    return json.dumps(config, sort_keys=True, separators=(",", ":"))


def digest(config: dict[str, Any]) -> str:
    """SHA-256 of :func:`canonical`."""
    return hashlib.sha256(canonical(config).encode("utf-8")).hexdigest()


def _current_runs() -> dict[str, list[str]]:
    """Every run of every bundle under ``bundles/`` (methods, protocols and ``volumes_3d.yaml``, own or shared)."""
    from monai_tfm.apps.bundle_loading import bundle_methods, config_names

    out = {}
    for meta in sorted(BUNDLES.glob("*/configs/metadata.json")):
        root = meta.parent.parent
        names = config_names(root)
        extras = [n for n in names if n.startswith("protocols/")] + [n for n in names if n == "volumes_3d.yaml"]
        out[root.name] = run_names(root.name, bundle_methods(root), extras)
    return out


def main(argv: list[str] | None = None, files_of: Callable[..., list[Path]] | None = None) -> int:
    """Write the fixture from the current layout (``--write``) or dump the current merged dicts (``--dump DIR``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="record the current layout's runs as the reference")
    parser.add_argument("--dump", type=Path, help="write each merged dict of the fixture's runs as JSON here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if files_of is None:
        from monai_tfm.apps.bundle_loading import bundle_run_files

        files_of = bundle_run_files_for_name(bundle_run_files)
    if args.write:
        record = {b: {n: digest(merged_config(files_of(b, n))) for n in names} for b, names in _current_runs().items()}
        FIXTURE.parent.mkdir(parents=True, exist_ok=True)
        FIXTURE.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
        logger.info("%d runs of %d bundles -> %s", sum(map(len, record.values())), len(record), FIXTURE)
    if args.dump:
        for bundle, names in json.loads(FIXTURE.read_text()).items():
            for name in names:
                out = args.dump / bundle / (name.replace("|", "__").replace("/", "_") + ".json")
                out.parent.mkdir(parents=True, exist_ok=True)
                config = merged_config(files_of(bundle, name))
                out.write_text(json.dumps(config, indent=1, sort_keys=True) + "\n")
    return 0


def bundle_run_files_for_name(bundle_run_files: Callable[..., list[Path]]) -> Callable[[str, str], list[Path]]:
    """``files(bundle, run name)`` through the package's file rule (``bundle_run_files``)."""

    def files(bundle: str, name: str) -> list[Path]:
        base, run, method, overlays = split_name(name)
        extra = [BUNDLES / o if o == ENCODER_INIT else o for o in overlays]
        return bundle_run_files(BUNDLES / bundle, run, method=method, overlays=extra, base=base)

    return files


if __name__ == "__main__":
    sys.exit(main())
