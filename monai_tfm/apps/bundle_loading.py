# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""Loading a trained bundle for an application (``monai-tfm forecast``, ``monai-tfm generate``), and the one rule of
which config files make up a bundle's run (:func:`bundle_run_files`; docs/DESIGN.md, "Bundle layering").

One home for what both applications do before their own work: find the inference configs and a method overlay,
apply command-line config overrides, check the device, and load the weights. Each problem is raised as the calling
application's own one-line error class (``error``), so that its command line can print it without a traceback.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.bundle import ConfigParser

from monai_tfm.handlers.checkpoint import load_weights
from monai_tfm.utils.errors import one_line

__all__ = [
    "RUNS",
    "SHARED_CONFIGS_KEY",
    "WIRING_SUFFIX",
    "apply_overrides",
    "assembled_configs",
    "bundle_config_files",
    "bundle_methods",
    "bundle_run_files",
    "config_names",
    "config_parts",
    "copy_bundle_configs",
    "config_getter",
    "load_bundle_weights",
    "one_line",
    "read_bundle_config",
    "resolve_device",
    "shared_config_folders",
]

# the metadata.json key of a repository bundle that names the shared config folders it is assembled from
SHARED_CONFIGS_KEY = "shared_configs"
RUNS = ("train", "evaluate", "inference", "multi_gpu_train")
# a shared file named <stem>_wiring.yaml is the generic part of the config <stem>.yaml that a bundle also has
WIRING_SUFFIX = "_wiring"


def shared_config_folders(root: str | os.PathLike) -> list[Path]:
    """The shared config folders a repository bundle is assembled from, most specific first.

    A bundle of this repository names them in its ``configs/metadata.json`` as ``"shared_configs"`` (paths relative
    to the bundle folder, e.g. ``["../_shared/forecasting_fixed_grid", "../_shared/forecasting"]``); a packed bundle
    (``monai-tfm pack``) or a bundle without that key is self-contained and has none.

    Args:
        root: bundle folder.

    Returns:
        absolute folder paths (each mirrors a bundle's ``configs/`` folder).
    """
    meta = Path(root) / "configs" / "metadata.json"
    if not meta.is_file():
        return []
    names = json.loads(meta.read_text(encoding="utf-8")).get(SHARED_CONFIGS_KEY, [])
    return [(Path(root) / name).resolve() for name in names]


def config_parts(root: str | os.PathLike, name: str) -> list[Path]:
    """The files that make up the config ``name`` of a bundle, in reading order.

    The bundle's own ``configs/<name>`` (its dataset values), then, in each shared folder
    (:func:`shared_config_folders`), ``<name>`` itself (a whole config the bundle does not have) or
    ``<stem>_wiring.yaml`` (the generic part that follows the bundle's own ``<name>``: MONAI's ``ckpt_export`` keys
    the files of a run by their names, so two parts may not share one), those that exist. The parts of one config
    define disjoint ids (``tests/test_bundles.py``), so their order changes no value and their concatenation is the
    same config (:func:`assembled_configs`).

    Args:
        root: bundle folder.
        name: config path relative to ``configs/`` (``train.yaml``, ``methods/lci.yaml``).

    Returns:
        the existing parts (empty: the bundle has no such config).
    """
    rel = Path(name)
    wiring = rel.with_name(f"{rel.stem}{WIRING_SUFFIX}{rel.suffix}")
    candidates = [Path(root) / "configs" / rel]
    for folder in shared_config_folders(root):
        candidates += [folder / rel, folder / wiring]
    return [c for c in candidates if c.is_file()]


def config_names(root: str | os.PathLike) -> list[str]:
    """Every YAML config of a bundle (its own and its shared ones), relative to ``configs/``, sorted."""
    folders = [Path(root) / "configs"] + shared_config_folders(root)
    names = {p.relative_to(f).as_posix() for f in folders if f.is_dir() for p in f.rglob("*.yaml")}
    return sorted(
        {n.replace(f"{WIRING_SUFFIX}.yaml", ".yaml") if n.endswith(f"{WIRING_SUFFIX}.yaml") else n for n in names}
    )


def bundle_methods(root: str | os.PathLike) -> list[str]:
    """The method overlays of a bundle (``configs/methods/<name>.yaml``, its own or shared), sorted."""
    return sorted(Path(n).stem for n in config_names(root) if n.startswith("methods/"))


def bundle_run_files(
    root: str | os.PathLike,
    run: str = "train",
    method: str | None = None,
    overlays: Sequence[str | os.PathLike] = (),
    base: str = "train.yaml",
    error: type[Exception] = ValueError,
) -> list[Path]:
    """The config files of bundle ``root``'s run ``run`` with method ``method``, in reading order.

    The one rule of which files make up a run (``monai-tfm train/evaluate/forecast/pack``, MONAI Label, tests and
    benchmarks use it). Each config below is all of its parts (:func:`config_parts`: the bundle's own file, then the
    shared ones):

    * ``train``: ``base`` (``train.yaml``), the method overlay ``methods/<method>.yaml``, then ``overlays``;
    * ``evaluate``, ``multi_gpu_train``: the same followed by ``evaluate.yaml`` / ``multi_gpu_train.yaml``;
    * ``inference``: ``base``, ``inference.yaml``, then the method overlay and ``overlays`` (so that a forecast uses
      the network, transforms, prepare-batch and inferer of training).

    For a bundle of this repository, e.g. the synthetic bundle's evaluation of ``lci``:
    ``["bundles/synthetic_forecasting/configs/train.yaml", "bundles/_shared/forecasting/train_wiring.yaml",
    "bundles/_shared/forecasting/methods/lci.yaml", "bundles/_shared/forecasting/evaluate.yaml"]``; for a packed
    bundle every part is its own (``configs/train.yaml``, ``configs/methods/lci.yaml``, ``configs/evaluate.yaml``).

    Args:
        root: bundle folder.
        run: ``train``, ``evaluate``, ``inference`` or ``multi_gpu_train``.
        method: method overlay name (``None``/empty: the bundle default).
        overlays: further configs, relative to ``configs/`` (``protocols/continuous_time.yaml``, ``volumes_3d.yaml``)
            or absolute paths (another bundle's overlay), in order.
        base: the bundle's base config (``finetune.yaml`` of the SSL bundle).
        error: the exception class to raise.

    Returns:
        the config files, in reading order.

    Raises:
        error: an unknown run, a bundle without ``base`` or the run's config, an unknown method (the message lists the
            available ones) or overlay.
    """
    if run not in RUNS:
        raise error(f"unknown bundle run {run!r}; one of {list(RUNS)}.")
    files = config_parts(root, base)
    if not files:
        raise error(f"'{root}' is not a monai_tfm bundle: '{Path(root) / 'configs' / base}' does not exist.")
    run_files = [] if run == "train" else config_parts(root, f"{run}.yaml")
    if run != "train" and not run_files:
        raise error(
            f"'{root}' is not a monai_tfm bundle with {run}: '{Path(root) / 'configs' / run}.yaml' does not exist."
        )
    tail = []
    if method:
        tail = config_parts(root, f"methods/{method}.yaml")
        if not tail:
            raise error(f"unknown method {method!r} for bundle '{root}'; available: {bundle_methods(root)}.")
    for overlay in overlays:
        parts = [Path(overlay)] if Path(overlay).is_absolute() else config_parts(root, str(overlay))
        if not parts or not parts[0].is_file():
            raise error(f"no config overlay '{overlay}' in bundle '{root}'.")
        tail += parts
    return files + run_files + tail if run == "inference" else files + tail + run_files


def bundle_config_files(root: Path, method: str | None, error: type[Exception]) -> list[Path]:
    """The config files of a bundle's inference, in reading order: :func:`bundle_run_files` with ``run="inference"``.

    The same order as ``python -m monai.bundle run --config_file "$(monai-tfm configs BUNDLE --run inference)"``
    (``inference.yaml`` is an overlay on ``train.yaml``: the network, sampler or inferer and transforms of training).

    Args:
        root: bundle folder.
        method: method overlay name (``None``/empty: the bundle default).
        error: the exception class to raise.

    Returns:
        the config files, in reading order.

    Raises:
        error: no ``inference.yaml``, or an unknown method (the message lists the available ones).
    """
    return bundle_run_files(root, "inference", method=method, error=error)


def assembled_configs(root: str | os.PathLike) -> dict[str, bytes]:
    """The configs of a self-contained copy of a bundle: ``configs/<name>`` -> its bytes.

    Each YAML config is its parts (:func:`config_parts`) joined in reading order, so that it is read as one file with
    the same result; ``configs/metadata.json`` loses its ``"shared_configs"`` key (the copy has nothing to share).
    ``monai-tfm pack`` and the MONAI Label demo write them; a self-contained bundle gives its own files back.

    Args:
        root: bundle folder.

    Returns:
        relative path (under the bundle folder) -> content.
    """
    out = {}
    for name in config_names(root):
        texts = [p.read_text(encoding="utf-8") for p in config_parts(root, name)]
        out[f"configs/{name}"] = "".join(t if t.endswith("\n") else t + "\n" for t in texts).encode("utf-8")
    meta_path = Path(root) / "configs" / "metadata.json"
    if meta_path.is_file():
        text = meta_path.read_text(encoding="utf-8")
        meta = json.loads(text)
        if SHARED_CONFIGS_KEY in meta:
            del meta[SHARED_CONFIGS_KEY]
            # the key's own line goes (the file keeps its layout); any other layout is written anew
            lines = [line for line in text.splitlines(keepends=True) if f'"{SHARED_CONFIGS_KEY}":' not in line]
            kept = "".join(lines)
            try:
                same = json.loads(kept) == meta
            except ValueError:
                same = False
            out["configs/metadata.json"] = (kept if same else json.dumps(meta, indent=4) + "\n").encode("utf-8")
    return out


def copy_bundle_configs(root: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Write a self-contained ``configs/`` folder of a bundle into ``dest`` (its own files, then
    :func:`assembled_configs` over them): ``dest/configs`` needs no shared folder.

    Args:
        root: bundle folder.
        dest: the new bundle folder (created; an existing ``dest/configs`` is refused by ``shutil.copytree``).

    Returns:
        ``dest/configs``.
    """
    configs = Path(dest) / "configs"
    shutil.copytree(Path(root) / "configs", configs)
    for rel, data in assembled_configs(root).items():
        (Path(dest) / rel).parent.mkdir(parents=True, exist_ok=True)
        (Path(dest) / rel).write_bytes(data)
    return configs


def read_bundle_config(root: Path, files: Sequence[Path]) -> ConfigParser:
    """MONAI's config parser over ``files`` with ``bundle_root`` set to the absolute bundle folder.

    Args:
        root: bundle folder.
        files: config files from :func:`bundle_config_files`.

    Returns:
        the parser (nothing instantiated yet).
    """
    parser = ConfigParser()
    parser.read_config([str(f) for f in files])
    parser["bundle_root"] = str(Path(root).resolve())
    return parser


def apply_overrides(
    parser: ConfigParser,
    overrides: Mapping[str, Any] | None,
    files: Sequence[Path],
    error: type[Exception],
    command: str,
) -> None:
    """Set config ids given on the command line; ids the configs do not define are refused.

    Args:
        parser: the bundle's parser.
        overrides: config id -> value.
        files: the config files (named in the error).
        error: the exception class to raise.
        command: the command's name, for the message (``forecast``, ``generate``).

    Raises:
        error: an id that is neither an option of the command nor a config id.
    """
    for key, value in (overrides or {}).items():
        if key not in parser:
            raise error(
                f"unknown option '--{key}': neither a {command} option nor a config id of {[str(f) for f in files]}."
            )
        parser[key] = value


def config_getter(parser: ConfigParser, files: Sequence[Path], error: type[Exception]) -> Callable[..., Any]:
    """``get(key, default)``: the parsed content of ``key``; without a default a missing key raises ``error``.

    Args:
        parser: the bundle's parser.
        files: the config files (named in the error).
        error: the exception class to raise.

    Returns:
        the getter.
    """
    missing = object()

    def get(key: str, default: Any = missing) -> Any:
        if key in parser:
            return parser.get_parsed_content(key)
        if default is missing:
            raise error(f"the bundle config {[Path(f).name for f in files]} defines no '{key}'.")
        return default

    return get


def resolve_device(device: str | torch.device, error: type[Exception]) -> torch.device:
    """A torch device that exists here.

    Args:
        device: e.g. ``"cpu"``, ``"cuda"``, ``"cuda:1"``.
        error: the exception class to raise.

    Returns:
        the device.

    Raises:
        error: an unknown device, or CUDA asked for where there is none.
    """
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise error(f"unknown device {device!r}: {one_line(e)}") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise error(f"device {device!r} requested but CUDA is not available; use --device cpu.")
    return dev


def load_bundle_weights(
    network: torch.nn.Module, path: str | os.PathLike, files: Sequence[Path], error: type[Exception]
) -> None:
    """Load a weights file (a flat state dict, ``weights_only``) into the bundle's network.

    Args:
        network: the network built from the bundle config.
        path: the weights file.
        files: the config files (named when the weights do not fit).
        error: the exception class to raise.

    Raises:
        error: a missing file, weights of another network, or a file torch cannot load.
    """
    path = Path(path)
    if not path.is_file():
        raise error(f"no weights at '{path}': train the bundle (its models/model.pt) or pass --weights FILE.")
    try:
        load_weights(network, path)
    except ValueError as e:
        raise error(
            f"weights '{path}' do not fit the network of {[Path(f).name for f in files]} (another --method or network "
            f"size?): {one_line(e, 200)}"
        ) from e
    except Exception as e:  # not a torch file, or not loadable with weights_only=True
        raise error(f"cannot load weights '{path}': {one_line(e, 200)}") from e
