# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""Loading a trained bundle for an application (``monai-tfm forecast``, ``monai-tfm generate``).

One home for what both applications do before their own work: find the inference configs and a method overlay,
apply command-line config overrides, check the device, and load the weights. Each problem is raised as the calling
application's own one-line error class (``error``), so that its command line can print it without a traceback.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.bundle import ConfigParser

from monai_tfm.handlers.checkpoint import load_weights
from monai_tfm.utils.errors import one_line

__all__ = [
    "apply_overrides",
    "bundle_config_files",
    "config_getter",
    "load_bundle_weights",
    "one_line",
    "read_bundle_config",
    "resolve_device",
]


def bundle_config_files(root: Path, method: str | None, error: type[Exception]) -> list[Path]:
    """The config files of a bundle's inference, in reading order.

    ``configs/train.yaml`` (when the bundle has one: a forecasting bundle's ``inference.yaml`` is an overlay on it,
    and the standalone ``inference.yaml`` of a generation bundle re-defines every id it uses, so reading it first
    changes nothing there), ``configs/inference.yaml`` and, if ``method`` is given, ``configs/methods/<method>.yaml``.
    The same order as ``python -m monai.bundle run --config_file "['configs/train.yaml','configs/inference.yaml']"``.

    Args:
        root: bundle folder.
        method: method overlay name (``None``/empty: the bundle default).
        error: the exception class to raise.

    Returns:
        the config files, in reading order.

    Raises:
        error: no ``configs/inference.yaml``, or an unknown method (the message lists the available ones).
    """
    configs = root / "configs"
    inference = configs / "inference.yaml"
    if not inference.is_file():
        raise error(f"'{root}' is not a monai_tfm bundle: '{inference}' does not exist.")
    files = [f for f in (configs / "train.yaml", inference) if f.is_file()]
    if method:
        overlay = configs / "methods" / f"{method}.yaml"
        if not overlay.is_file():
            known = sorted(p.stem for p in (configs / "methods").glob("*.yaml"))
            raise error(f"unknown method {method!r} for bundle '{root}'; available: {known}.")
        files.append(overlay)
    return files


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
