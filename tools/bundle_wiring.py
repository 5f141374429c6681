# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""The generic wiring of the forecasting bundles: which config text must be the same in each, checked and copied.

Every bundle folder stays self-contained (MONAI's bundle convention: ``python -m monai.bundle run --config_file
bundles/<name>/configs/train.yaml`` needs no other folder, and ``monai-tfm pack`` zips the folder as it is), so the
generic files are copies. This module is their one rule: ``tests/test_bundles.py`` checks it, and a wiring fix is one
edit in any one bundle followed by::

    python tools/bundle_wiring.py --write            # copies the one bundle that differs to the others
    python tools/bundle_wiring.py --write --source acdc_cine_forecasting   # when several differ: say which is right

Without ``--write`` it lists the parts that differ and exits with 1 if any do.

Generic parts: ``evaluate.yaml``, ``inference.yaml`` and ``multi_gpu_train.yaml`` whole; ``train.yaml`` from its
``# ---- shared wiring`` line on (above it: the dataset's own values); the method overlays of the parameter-free
baselines in every bundle, and every other method overlay except ``tfm.yaml`` (which states the dataset's network
width and slice axis) in the bundles on a fixed time grid.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

__all__ = ["BUNDLES", "FIXED_GRID", "SHARED_MARK", "GenericPart", "forecasting_bundles", "generic_parts", "main"]

logger = logging.getLogger("bundle_wiring")

BUNDLES = Path(__file__).resolve().parents[1] / "bundles"
SHARED_MARK = "# ---- shared wiring"
# bundles whose time grid is their own (follow-up visits: LUMIERE; a user's series) have their own variant overlays
FIXED_GRID = ["acdc_cine_forecasting", "isles_ctp_forecasting", "synthetic_forecasting"]
PARAMETER_FREE = ("lci", "linear")  # the same in all five bundles
WHOLE_FILES = ("evaluate.yaml", "inference.yaml", "multi_gpu_train.yaml")
OWN_OVERLAYS = ("tfm",)  # overlays that hold dataset values


@dataclass(frozen=True)
class GenericPart:
    """One config text that is the same in a group of bundles.

    Attributes:
        root: the folder of the bundles.
        relpath: the file, relative to a bundle folder (``configs/inference.yaml``).
        bundles: the bundles that share it.
        from_mark: only the text from ``SHARED_MARK`` on is shared (``train.yaml``).
    """

    root: Path
    relpath: str
    bundles: tuple[str, ...]
    from_mark: bool = False

    def text(self, bundle: str) -> str:
        """The shared text in ``bundle``.

        Raises:
            ValueError: a ``from_mark`` file without exactly one ``SHARED_MARK`` line.
        """
        text = (self.root / bundle / self.relpath).read_text()
        if not self.from_mark:
            return text
        if text.count(SHARED_MARK) != 1:
            raise ValueError(f"{bundle}/{self.relpath} has no single '{SHARED_MARK}' line")
        return text[text.index(SHARED_MARK) :]

    def differing(self) -> list[str]:
        """The bundles whose text is not the most common one (all but one of them when every text differs)."""
        texts = {b: self.text(b) for b in self.bundles}
        common, _ = Counter(texts.values()).most_common(1)[0]
        return [b for b, t in texts.items() if t != common]

    def copy_from(self, source: str) -> list[str]:
        """Write ``source``'s shared text into the other bundles (the part above the mark stays theirs).

        Returns:
            the bundles that changed.
        """
        shared = self.text(source)
        changed = []
        for bundle in self.bundles:
            if bundle == source or self.text(bundle) == shared:
                continue
            path = self.root / bundle / self.relpath
            old = path.read_text()
            path.write_text(old[: old.index(SHARED_MARK)] + shared if self.from_mark else shared)
            changed.append(bundle)
        return changed


def forecasting_bundles(root: Path = BUNDLES) -> list[str]:
    """The forecasting bundles under ``root`` (folders ``*_forecasting`` with method overlays)."""
    return sorted(p.parent.parent.name for p in root.glob("*_forecasting/configs/methods"))


def generic_parts(root: Path = BUNDLES) -> list[GenericPart]:
    """Every generic part of the forecasting bundles under ``root`` (the rule of the module docstring)."""
    forecasting = tuple(forecasting_bundles(root))
    parts = [GenericPart(root, f"configs/{name}", forecasting) for name in WHOLE_FILES]
    parts.append(GenericPart(root, "configs/train.yaml", forecasting, from_mark=True))
    methods = sorted({p.stem for b in forecasting for p in (root / b / "configs" / "methods").glob("*.yaml")})
    for method in methods:
        if method in OWN_OVERLAYS:
            continue
        rel = f"configs/methods/{method}.yaml"
        have = [b for b in forecasting if (root / b / rel).is_file()]
        group = have if method in PARAMETER_FREE else [b for b in FIXED_GRID if b in have]
        if len(group) >= 2:
            parts.append(GenericPart(root, rel, tuple(group)))
    return parts


def main(argv: list[str] | None = None) -> int:
    """Check (default) or copy (``--write``) the generic parts.

    Returns:
        0 when every part is the same everywhere (after ``--write``), else 1.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="copy the edited bundle's text to the others")
    parser.add_argument("--source", help="the bundle whose text is right (default: the one odd out)")
    parser.add_argument(
        "--bundles", type=Path, default=BUNDLES, help="folder of the bundles (default: this repository's)"
    )
    args = parser.parse_args(argv)
    if args.source is not None and args.source not in forecasting_bundles(args.bundles):
        parser.error(f"--source {args.source!r} is not a forecasting bundle of {args.bundles}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    status = 0
    for part in generic_parts(args.bundles):
        odd = part.differing()
        if not odd:
            continue
        if not args.write:
            logger.info("%s differs in %s", part.relpath, ", ".join(odd))
            status = 1
            continue
        # the one bundle odd out is the edited one (with three or more sharing the part, the others agree)
        source = args.source or (odd[0] if len(odd) == 1 and len(part.bundles) >= 3 else None)
        if source is None or source not in part.bundles:
            logger.info("%s differs in %s: say which is right with --source", part.relpath, ", ".join(odd))
            status = 1
            continue
        logger.info("%s: copied from %s to %s", part.relpath, source, ", ".join(part.copy_from(source)) or "none")
    return status


if __name__ == "__main__":
    sys.exit(main())
