# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""``monai-tfm`` command line (python-fire): thin wrappers around ``monai.bundle run`` and the data tools.

Every command that trains or evaluates builds the bundle's config list (``train.yaml``, a method overlay,
``evaluate.yaml``) and calls MONAI's bundle runner, so ``monai-tfm train`` and
``python -m monai.bundle run training --config_file ...`` do the same thing.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

__all__ = ["Commands", "main", "bundle_configs"]

logger = logging.getLogger("monai_tfm.cli")


class CLIError(Exception):
    """An expected user error: printed as one line, exit code 2, no traceback."""


def bundle_configs(bundle: str | Path, method: str | None = None, evaluate: bool = False) -> list[str]:
    """The config files of a bundle run: ``train.yaml`` [+ ``methods/<method>.yaml``] [+ ``evaluate.yaml``].

    Args:
        bundle: bundle folder.
        method: method overlay name (``None``: the bundle default).
        evaluate: add ``evaluate.yaml``.

    Returns:
        list of config file paths.

    Raises:
        CLIError: the bundle or the overlay does not exist (the message lists the available methods).
    """
    root = Path(bundle)
    configs = root / "configs"
    if not (configs / "train.yaml").is_file():
        raise CLIError(f"{root} is not a monai_tfm bundle: {configs / 'train.yaml'} does not exist.")
    files = [str(configs / "train.yaml")]
    if method:
        overlay = configs / "methods" / f"{method}.yaml"
        if not overlay.is_file():
            known = sorted(p.stem for p in (configs / "methods").glob("*.yaml"))
            raise CLIError(f"unknown method {method!r} for bundle {root}; available: {known}.")
        files.append(str(overlay))
    if evaluate:
        files.append(str(configs / "evaluate.yaml"))
    return files


def _default_bundle(bundle: str | None) -> Path:
    if bundle is not None:
        return Path(bundle)
    from monai_tfm.utils.bundle import find_bundle_root

    return Path(find_bundle_root("synthetic_forecasting"))


def _run(run_id: str, files: list[str], bundle_root: Path, overrides: dict[str, Any]) -> None:
    from monai.bundle import run

    overrides.setdefault("bundle_root", str(bundle_root.resolve()))
    run(run_id, config_file=files, **overrides)


class Commands:
    """Forecast 3D medical scans with Temporal Flow Matching / CRONOS (MONAI bundles)."""

    def train(self, bundle: str | None = None, method: str | None = None, **overrides: Any) -> None:
        """Train a bundle (``python -m monai.bundle run training``).

        Args:
            bundle: bundle folder (default: the built-in synthetic bundle).
            method: method overlay (``cronos_discrete``, ``cronos_continuous``, ``tfm``, ...).
            overrides: config ids to override, e.g. ``--max_epochs 5 --output_dir runs/x``.
        """
        root = _default_bundle(bundle)
        _run("training", bundle_configs(root, method), root, overrides)

    def evaluate(self, bundle: str | None = None, method: str | None = None, **overrides: Any) -> None:
        """Evaluate a trained model against LCI (``python -m monai.bundle run evaluating``).

        Args:
            bundle: bundle folder (default: the built-in synthetic bundle).
            method: method overlay.
            overrides: config ids to override, e.g. ``--output_dir runs/x --eval_split validation``.
        """
        root = _default_bundle(bundle)
        _run("evaluating", bundle_configs(root, method, evaluate=True), root, overrides)

    def quickstart(
        self, output_dir: str = "runs/quickstart", method: str = "cronos_continuous", **overrides: Any
    ) -> None:
        """Train on the synthetic phantoms, then evaluate on the test split: the README's main job.

        Args:
            output_dir: run folder (checkpoints, TensorBoard logs, evaluation report).
            method: method overlay (default: continuous CRONOS, which gets the target time).
            overrides: further config overrides, e.g. ``--max_epochs 10``.
        """
        root = _default_bundle(None)
        overrides["output_dir"] = str(Path(output_dir).resolve())
        _run("training", bundle_configs(root, method), root, dict(overrides))
        _run("evaluating", bundle_configs(root, method, evaluate=True), root, dict(overrides))
        summary = Path(output_dir) / "eval_test" / "summary.md"
        if summary.is_file():
            sys.stdout.write(summary.read_text() + "\n")

    def synthetic(self, out: str, kind: str = "heart", overwrite: bool = False, **kwargs: Any) -> str:
        """Generate a synthetic phantom dataset (NIfTI frames + datalist.json).

        Args:
            out: output folder.
            kind: ``heart`` (cine-like, regular frames) or ``tumour`` (irregular visits in weeks).
            overwrite: regenerate when the folder already holds a dataset.
            kwargs: generator options (``num_train``, ``spatial_size``, ``seed``, ...).

        Returns:
            the datalist path.
        """
        from monai_tfm.data import generate_synthetic_dataset

        return str(generate_synthetic_dataset(out, kind=kind, overwrite=overwrite, **kwargs))

    def prepare(self, dataset: str, src: str, dst: str, **kwargs: Any) -> str:
        """Convert an official dataset download into per-frame NIfTI files + ``datalist.json`` (SPEC section 6).

        Example: ``monai-tfm prepare acdc /data/ACDC/database /data/acdc_prep --num_frames 12``.

        Args:
            dataset: dataset name; ``acdc`` (cine MRI, :func:`monai_tfm.data.acdc.prepare_acdc`).
            src: the download folder (read only).
            dst: output folder.
            kwargs: options of the dataset's preparer (ACDC: ``spatial_size``, ``num_frames``, ``num_folds``,
                ``seed``, ``overwrite``, ``include_labels``, ``progress``).

        Returns:
            the datalist path.

        Raises:
            CLIError: for an unknown dataset or unknown options.
        """
        name = str(dataset).lower()
        if name == "acdc":
            import inspect

            from monai_tfm.data.acdc import prepare_acdc

            allowed = set(inspect.signature(prepare_acdc).parameters) - {"src", "dst"}
            unknown = sorted(set(kwargs) - allowed)
            if unknown:
                raise CLIError(f"unknown option(s) {unknown} for 'prepare acdc'; available: {sorted(allowed)}.")
            return str(prepare_acdc(src, dst, **kwargs))
        raise CLIError(f"unknown dataset {dataset!r} for 'prepare'; available: ['acdc'].")

    def version(self) -> str:
        """Versions of monai_tfm and its main dependencies.

        Returns:
            one line.
        """
        import monai
        import torch

        import monai_tfm

        return f"monai_tfm {monai_tfm.__version__}, monai {monai.__version__}, torch {torch.__version__}"


def main(argv: list[str] | None = None) -> int:
    """Console entry point.

    Args:
        argv: arguments (default: ``sys.argv[1:]``).

    Returns:
        exit code.
    """
    import fire

    from monai_tfm.utils.bundle import setup_logging

    setup_logging()
    try:
        fire.Fire(Commands, command=argv if argv is not None else sys.argv[1:], name="monai-tfm")
    except (CLIError, FileNotFoundError, FileExistsError, ValueError) as e:
        sys.stderr.write(f"monai-tfm: error: {e}\n")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
