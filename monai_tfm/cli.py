# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""``monai-tfm`` command line (python-fire): thin wrappers around ``monai.bundle run`` and the data tools.

Every command that trains or evaluates builds the bundle's config list with
:func:`monai_tfm.apps.bundle_loading.bundle_run_files` (``train.yaml`` with its shared part, a method overlay,
``evaluate.yaml``) and calls MONAI's bundle runner, so ``monai-tfm train`` and
``python -m monai.bundle run training --config_file "$(monai-tfm configs BUNDLE)"`` do the same thing.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from monai_tfm.utils.errors import USER_ERRORS as PACKAGE_USER_ERRORS
from monai_tfm.utils.errors import MonaiTFMError, user_error_in_chain

__all__ = ["Commands", "main", "bundle_configs", "help_text", "PREPARERS"]

logger = logging.getLogger("monai_tfm.cli")


class CLIError(MonaiTFMError):
    """An expected user error: printed as one line, exit code 2, no traceback."""


def bundle_configs(
    bundle: str | Path,
    method: str | None = None,
    evaluate: bool = False,
    run: str | None = None,
    overlays: tuple[str, ...] | list[str] = (),
) -> list[str]:
    """The config files of a bundle run (:func:`monai_tfm.apps.bundle_loading.bundle_run_files`), as strings.

    Args:
        bundle: bundle folder.
        method: method overlay name (``None``: the bundle default).
        evaluate: the evaluation (``run="evaluate"``).
        run: ``train`` (default), ``evaluate``, ``inference`` or ``multi_gpu_train``.
        overlays: further overlays, relative to ``configs/`` (``protocols/continuous_time.yaml``).

    Returns:
        list of config file paths.

    Raises:
        CLIError: the bundle, run or an overlay does not exist (the message lists the available methods).
    """
    from monai_tfm.apps.bundle_loading import bundle_run_files

    run = run or ("evaluate" if evaluate else "train")
    return [str(f) for f in bundle_run_files(Path(bundle), run, method=method, overlays=overlays, error=CLIError)]


def _default_bundle(bundle: str | None) -> Path:
    if bundle is not None:
        return Path(bundle)
    from monai_tfm.utils.bundle import find_bundle_root

    return Path(find_bundle_root("synthetic_forecasting"))


def _run(run_id: str, files: list[str], bundle_root: Path, overrides: dict[str, Any]) -> None:
    from monai.bundle import run

    overrides.setdefault("bundle_root", str(bundle_root.resolve()))
    try:
        run(run_id, config_file=files, **overrides)
    except Exception as e:
        # MONAI's config runner wraps an error raised inside a config expression in a RuntimeError ("Failed to
        # evaluate ConfigExpression"); a user error found in the chain is re-raised alone (printed as one line)
        user_error = _user_error_in_chain(e)
        if user_error is None:
            raise
        raise user_error from None


USER_ERRORS = (CLIError, *PACKAGE_USER_ERRORS)


def _user_error_in_chain(error: BaseException) -> BaseException | None:
    """The first expected user error (the CLI's or the package's) in an exception's cause/context chain."""
    return user_error_in_chain(error, USER_ERRORS)


# options that take several values; fire gives a flag one value, so ``--scans a b c`` is joined into one list first
LIST_FLAGS = {"forecast": ("--scans", "--times")}


def _is_flag(token: str) -> bool:
    if token.startswith("--"):
        return True
    return len(token) > 1 and token.startswith("-") and not token[1].isdigit() and token[1] != "."


def _list_value(value: str) -> str:
    """``[a,b]`` with bare paths (which fire would keep as one string) -> ``['a', 'b']``."""
    import ast

    if not (value.startswith("[") and value.endswith("]")):
        return value
    try:
        if isinstance(ast.literal_eval(value), list):
            return value
    except (ValueError, SyntaxError):
        pass
    return repr([item.strip().strip("'\"") for item in value[1:-1].split(",") if item.strip()])


def _group_list_flags(argv: list[str]) -> list[str]:
    """Join the values of list options into one Python list literal that fire parses.

    ``forecast --scans a.nii.gz b.nii.gz --times 0 0.3`` becomes
    ``forecast --scans "['a.nii.gz', 'b.nii.gz']" --times "['0', '0.3']"``; one value (``--scans a.nii.gz``) or a
    bracketed list (``--scans '[a.nii.gz,b.nii.gz]'``) also work.

    Args:
        argv: the command line after the program name.

    Returns:
        the command line for fire.
    """
    flags = LIST_FLAGS.get(argv[0], ()) if argv else ()
    out, i = argv[:1], 1
    while i < len(argv):
        token = argv[i]
        out.append(token)
        i += 1
        if token not in flags:
            continue
        values = []
        while i < len(argv) and not _is_flag(argv[i]):
            values.append(argv[i])
            i += 1
        if len(values) == 1:
            out.append(_list_value(values[0]))
        elif values:
            out.append(repr(values))
    return out


def _parse_bool_options(func: Any, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` with every switch of ``func`` (a parameter whose default is a bool) parsed by ``as_bool``.

    fire hands ``--overwrite false`` over as the string ``'false'``, which Python reads as true.
    """
    import inspect

    from monai_tfm.utils.options import as_bool

    params = inspect.signature(func).parameters
    return {
        k: as_bool(v, k, CLIError) if k in params and isinstance(params[k].default, bool) else v
        for k, v in options.items()
    }


# dataset name -> "module:function" of its preparer (signature ``(src, dst, **options) -> datalist path``); imported
# lazily so that the command line starts fast and one dataset's optional dependencies never break another's.
PREPARERS: dict[str, str] = {
    "acdc": "monai_tfm.data.acdc:prepare_acdc",
    "isles": "monai_tfm.data.isles:prepare_isles",
    "lumiere": "monai_tfm.data.lumiere:prepare_lumiere",
    "series": "monai_tfm.data.series:prepare_series",
}


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
            overrides: config ids to override, e.g. ``--output_dir runs/x --eval_split validation``
                (``--split`` is the same as ``--eval_split``).
        """
        root = _default_bundle(bundle)
        if "split" in overrides:
            if "eval_split" in overrides:
                raise CLIError("give the split once: --split or --eval_split, not both.")
            overrides["eval_split"] = overrides.pop("split")
        _run("evaluating", bundle_configs(root, method, evaluate=True), root, overrides)

    def quickstart(
        self, output_dir: str = "runs/quickstart", method: str = "cronos_continuous", **overrides: Any
    ) -> None:
        """Train on the synthetic phantoms, then evaluate on the test split: the README's main job.

        The evaluation logs its table; the command prints the path of the report (``eval_test/summary.md``).

        Args:
            output_dir: run folder (checkpoints, TensorBoard logs, evaluation report).
            method: method overlay (default: continuous CRONOS, which gets the target time).
            overrides: further config overrides, e.g. ``--max_epochs 10``.
        """
        root = _default_bundle(None)
        overrides["output_dir"] = str(Path(output_dir).resolve())
        _run("training", bundle_configs(root, method), root, dict(overrides))
        _run("evaluating", bundle_configs(root, method, evaluate=True), root, dict(overrides))
        # the evaluation has logged its table; stdout gets where the report is (printing it again showed it twice)
        summary = Path(output_dir) / "eval_test" / "summary.md"
        if summary.is_file():
            sys.stdout.write(f"{summary}\n")

    def configs(
        self, bundle: str | None = None, run: str = "train", method: str | None = None, overlays: Any = ()
    ) -> str:
        """Print the config files of a bundle run as MONAI's ``--config_file`` list.

        A bundle of this repository is its own files plus shared ones (``bundles/_shared/``), so a plain MONAI run
        lists them: ``python -m monai.bundle run evaluating --config_file "$(monai-tfm configs
        bundles/synthetic_forecasting --run evaluate --method lci)"``. A packed bundle's list is its own files.

        Args:
            bundle: bundle folder (default: the built-in synthetic bundle).
            run: ``train``, ``evaluate``, ``inference`` or ``multi_gpu_train``.
            method: method overlay.
            overlays: further overlays (one, or a list): names relative to ``configs/``, e.g.
                ``protocols/continuous_time.yaml``, or paths of other files (another bundle's overlay).

        Returns:
            the files as a Python list literal (paths relative to the current folder where they lie under it).
        """
        import os

        from monai_tfm.apps.bundle_loading import config_parts

        root = _default_bundle(bundle)
        overlays = [overlays] if isinstance(overlays, str) else list(overlays)
        # a name of the bundle's configs, else a file path (another bundle's overlay)
        overlays = [o if config_parts(root, str(o)) or not Path(o).is_file() else Path(o).resolve() for o in overlays]
        files = bundle_configs(root, method, run=str(run), overlays=overlays)
        shown = [
            os.path.relpath(f) if not os.path.relpath(f).startswith("..") else str(Path(f).resolve()) for f in files
        ]
        return "[" + ",".join(repr(f) for f in shown) + "]"

    def synthetic(self, out: str, kind: str = "heart", overwrite: bool = False, **kwargs: Any) -> str:
        """Generate a synthetic phantom dataset (NIfTI frames + datalist.json).

        Args:
            out: output folder.
            kind: ``heart`` (cine-like, regular frames) or ``tumour`` (irregular visits in weeks).
            overwrite: regenerate when the folder already holds a dataset.
            kwargs: generator options (``num_train``, ``spatial_size``, ``seed``, ...); ``--csv`` also writes
                ``scans.csv``, the table of scans that ``monai-tfm prepare series`` reads.

        Returns:
            the datalist path.
        """
        from monai_tfm.data import generate_synthetic_dataset

        options = _parse_bool_options(generate_synthetic_dataset, {"overwrite": overwrite, **kwargs})
        return str(generate_synthetic_dataset(out, kind=kind, **options))

    def prepare(self, dataset: str, src: str | None = None, dst: str | None = None, **kwargs: Any) -> str:
        """Convert an official dataset download into per-frame NIfTI files + ``datalist.json`` (docs/method.md section
        6).

        Examples: ``monai-tfm prepare acdc /data/ACDC/database /data/acdc_prep --num_frames 12``,
        ``monai-tfm prepare isles /data/ISLES24/train /data/isles_prep``,
        ``monai-tfm prepare lumiere /data/LUMIERE/Imaging /data/lumiere_prep --modality CT1``,
        ``monai-tfm prepare series --csv scans.csv --dst /data/my_prep`` (your own scans: ``subject,path,time`` rows).

        Args:
            dataset: dataset name, a key of :data:`PREPARERS`: ``acdc`` (cine MRI,
                :func:`monai_tfm.data.acdc.prepare_acdc`), ``isles`` (ISLES 2024 perfusion CT,
                :func:`monai_tfm.data.isles.prepare_isles`), ``lumiere`` (glioma follow-up MRI,
                :func:`monai_tfm.data.lumiere.prepare_lumiere`), ``series`` (a table of your own scans,
                :func:`monai_tfm.data.series.prepare_series`).
            src: the download folder (read only); for ``series`` the table, also as ``--csv``.
            dst: output folder (also ``--dst``).
            kwargs: options of the dataset's preparer, checked against its signature. ACDC: ``spatial_size``,
                ``num_frames``, ``num_folds``, ``seed``, ``overwrite``, ``include_labels``, ``progress``; ISLES:
                ``pattern``, ``spatial_size``, ``frame_step``, ``percentiles``, ``brain_window``, ``crop_margin``,
                ``clip_region``, ``min_frames``, ``test_fraction``, ``num_folds``, ``seed``, ``overwrite``,
                ``progress``; LUMIERE: ``modality``, ``pattern``, ``spatial_size``, ``test_fraction``,
                ``num_folds``, ``seed``, ``same_week_offset``, ``missing_visits``, ``overwrite``, ``progress``; series:
                ``spatial_size``, ``reference``, ``time_unit``, ``time_scale``, ``time_origin``, ``num_folds``,
                ``test_fraction``, ``seed``, ``short_series``, ``overwrite``, ``progress``.

        Returns:
            the datalist path.

        Raises:
            CLIError: for an unknown dataset or unknown options.
        """
        name = str(dataset).lower()
        if name not in PREPARERS:
            raise CLIError(f"unknown dataset {dataset!r} for 'prepare'; available: {sorted(PREPARERS)}.")
        import importlib
        import inspect

        module_name, func_name = PREPARERS[name].split(":")
        preparer = getattr(importlib.import_module(module_name), func_name)
        first = next(iter(inspect.signature(preparer).parameters))  # the source: src (a folder) or csv (a table)
        if first != "src" and first in kwargs:
            if src is not None:
                raise CLIError(f"give the source of 'prepare {name}' once (as --{first} or positionally).")
            src = kwargs.pop(first)
        if src is None or dst is None:
            what = f"--{first} TABLE" if first != "src" else "SRC"
            raise CLIError(f"'prepare {name}' needs {what} and --dst DIR (monai-tfm prepare {name} --help).")
        allowed = set(inspect.signature(preparer).parameters) - {first, "dst"}
        unknown = sorted(set(kwargs) - allowed)
        if unknown:
            raise CLIError(f"unknown option(s) {unknown} for 'prepare {name}'; available: {sorted(allowed)}.")
        return str(preparer(src, dst, **_parse_bool_options(preparer, kwargs)))

    def forecast(
        self,
        bundle: str | None = None,
        scans: Any = None,
        times: Any = None,
        target_time: Any = None,
        output: str | None = None,
        csv: str | None = None,
        method: str | None = None,
        weights: str | None = None,
        device: str = "cpu",
        reference: str | None = None,
        solver: str | None = None,
        steps: int | None = None,
        samples: int = 1,
        sigma: float | None = None,
        seed: int = 0,
        preview: str | None = None,
        truth: str | None = None,
        overwrite: bool = False,
        allow_extrapolation: bool = False,
        **overrides: Any,
    ) -> str:
        """Forecast a patient's scan at ``--target-time`` from earlier scans (NIfTI files or DICOM series folders).

        ``monai-tfm forecast --bundle B --scans s1.nii.gz s2.nii.gz --times 0 0.3 --target-time 0.8 --output p.nii.gz``
        (lists: space-separated values, or one bracketed list ``--scans '[s1.nii.gz,s2.nii.gz]' --times '[0,0.3]'``),
        or ``--csv scans.csv --output FOLDER`` with ``subject,path,time`` rows (one ``<subject>_forecast.nii.gz`` per
        subject). See :func:`monai_tfm.apps.forecast.forecast`.

        Args:
            bundle: bundle folder (default: the built-in synthetic bundle).
            scans: the scans of one patient.
            times: one time per scan.
            target_time: the time to forecast (``--target-time``).
            output: forecast file (``--scans``) or folder (``--csv``).
            csv: table of ``subject,path,time`` rows.
            method: method overlay of the bundle.
            weights: weights file (default ``<bundle>/models/model.pt``).
            device: ``cpu``, ``cuda``, ``cuda:1``, ...
            reference: write the forecast on this scan's grid (default: the latest scan).
            solver: ODE solver (``euler``, ``midpoint``, ``rk4``, ``dopri5``, ...).
            steps: solver steps.
            samples: stochastic samples (Euler-Maruyama); also writes ``<name>_std.nii.gz``.
            sigma: SDE noise for ``--samples`` (default: the bundle's training sigma).
            seed: seed of the stochastic samples.
            preview: PNG panel of context, forecast (and real scan and residual with ``--truth``).
            truth: the real scan at the target time, for the preview and logged metrics.
            overwrite: replace existing outputs.
            allow_extrapolation: forecast also at times (target or scans) outside the bundle's ``time_range`` plus
                its ``extrapolation_margin`` (continuous variant; refused by default).
            overrides: bundle config ids, e.g. ``--aggregation last``.

        Returns:
            the written forecast file(s), one per line.
        """
        from monai_tfm.apps.forecast import forecast

        options = {k: v for k, v in locals().items() if k not in ("self", "bundle", "overrides", "forecast")}
        results = forecast(_default_bundle(bundle), **options, **overrides)
        return "\n".join(str(r.output) for r in results)

    def generate(
        self,
        bundle: str | None = None,
        n: int = 1,
        mask: str | None = None,
        steps: int | None = None,
        output: str | None = None,
        solver: str | None = None,
        method: str | None = None,
        weights: str | None = None,
        device: str = "cpu",
        seed: int = 0,
        guidance: float | None = None,
        preview: bool = True,
        overwrite: bool = False,
        batch_size: int = 8,
        **options: Any,
    ) -> str:
        """Generate images with a generation bundle (noise-to-image flow matching, or its DDPM baseline).

        ``monai-tfm generate --bundle bundles/acdc_cine_generation --class DCM --mask m.nii.gz --n 8 --steps 5
        --output DIR`` writes ``DIR/DCM_000.nii.gz`` ... (and ``.png`` previews); existing files are never replaced
        unless ``--overwrite``. See :func:`monai_tfm.generation.app.generate`.

        Args:
            bundle: bundle folder (default: the built-in ``synthetic_generation`` bundle).
            n: number of images.
            mask: conditioning mask (NIfTI label map) for mask-conditional models.
            steps: sampling steps (default: the bundle's).
            output: output folder.
            solver: flow models: ``euler``, ``midpoint``, ``rk4``; DDPM models (``--method ddpm``): ``ddpm``, ``ddim``.
            method: method overlay of the bundle (``ddpm``).
            weights: weights file (default ``<bundle>/models/model.pt``).
            device: ``cpu``, ``cuda``, ...
            seed: noise seed.
            guidance: classifier-free guidance weight (1: none).
            preview: write PNG previews.
            overwrite: replace existing outputs.
            batch_size: images per network batch.
            options: ``--class NAME`` (the class, by name or index) and bundle config ids.

        Returns:
            the written files, one per line.

        Raises:
            CLIError: any problem with the inputs, in one line.
        """
        from monai_tfm.generation.app import GenerationError
        from monai_tfm.generation.app import generate as generate_images
        from monai_tfm.utils.bundle import find_bundle_root

        class_name = options.pop("class", options.pop("class_name", None))
        try:
            root = Path(bundle) if bundle is not None else Path(find_bundle_root("synthetic_generation"))
            written = generate_images(
                root,
                n=n,
                class_name=class_name,
                mask=mask,
                steps=steps,
                solver=solver,
                output=output,
                method=method,
                weights=weights,
                device=device,
                seed=seed,
                guidance=guidance,
                preview=preview,
                overwrite=overwrite,
                batch_size=batch_size,
                **options,
            )
        except GenerationError as e:
            raise CLIError(str(e)) from None
        return "\n".join(str(p) for p in written)

    def pack(
        self,
        bundle: str | None = None,
        weights: str | None = None,
        output: str = "bundle.zip",
        overwrite: bool = False,
        dataset_dir: str | None = None,
    ) -> str:
        """Zip a bundle with its weights (``models/model.pt``) reproducibly, without ``runs/`` and ``data/``.

        ``monai-tfm pack --bundle bundles/synthetic_forecasting --weights runs/x/models/model.pt --output b.zip``;
        unzip it anywhere and run ``monai-tfm forecast --bundle <folder>/synthetic_forecasting ...`` offline.

        Args:
            bundle: bundle folder (default: the built-in synthetic bundle).
            weights: weights file (default ``<bundle>/models/model.pt``).
            output: the zip file.
            overwrite: replace an existing zip.
            dataset_dir: the prepared folder a ``series_forecasting`` model was trained on (its time scale,
                range and grid go into the zip as ``configs/dataset_settings.json``).

        Returns:
            the zip path.
        """
        from monai_tfm.apps.pack import pack_bundle
        from monai_tfm.utils.options import as_bool

        return str(
            pack_bundle(
                _default_bundle(bundle),
                output,
                weights=weights,
                overwrite=as_bool(overwrite, "overwrite"),
                dataset_dir=dataset_dir,
            )
        )

    def version(self) -> str:
        """Versions of monai_tfm and its main dependencies.

        Returns:
            one line.
        """
        import monai
        import torch

        import monai_tfm

        return f"monai_tfm {monai_tfm.__version__}, monai {monai.__version__}, torch {torch.__version__}"


HELP_FLAGS = ("-h", "--help")


def help_text(argv: list[str]) -> str:
    """Usage of ``monai-tfm`` (no command), of a command, or of a ``prepare`` dataset; nothing is run.

    Args:
        argv: the command line (the help flag anywhere in it).

    Returns:
        the help text.
    """
    import importlib
    import inspect

    words = [a for a in argv if not a.startswith("-")]
    commands = {n: f for n, f in inspect.getmembers(Commands, inspect.isfunction) if not n.startswith("_")}
    if not words or words[0] not in commands:
        lines = ["usage: monai-tfm COMMAND [--option value ...]", "", inspect.getdoc(Commands) or "", "", "commands:"]
        lines += [f"  {n:<11} {(inspect.getdoc(f) or '').splitlines()[0]}" for n, f in commands.items()]
        lines += ["", "monai-tfm COMMAND --help shows a command's options."]
        return "\n".join(lines) + "\n"
    name = words[0]
    text = f"usage: monai-tfm {name} [--option value ...]\n\n{inspect.getdoc(commands[name])}\n"
    if name == "prepare" and len(words) > 1 and words[1] in PREPARERS:
        module, func = PREPARERS[words[1]].split(":")
        text += f"\n{words[1]} options ({PREPARERS[words[1]]}):\n\n"
        text += (inspect.getdoc(getattr(importlib.import_module(module), func)) or "") + "\n"
    return text


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
    args = list(argv if argv is not None else sys.argv[1:])
    if any(a in HELP_FLAGS for a in args):  # fire would hand --help to **overrides (and train); help only helps
        sys.stdout.write(help_text(args))
        return 0
    try:
        command = _group_list_flags(args)
        fire.Fire(Commands, command=command, name="monai-tfm")
    except USER_ERRORS as e:
        sys.stderr.write(f"monai-tfm: error: {e}\n")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
