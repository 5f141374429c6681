# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""Helpers shared by the bundle tests."""

from __future__ import annotations

from pathlib import Path

from monai.bundle import ConfigWorkflow
from monai.transforms import ScaleIntensityRangePercentilesd

from monai_tfm.cli import main
from monai_tfm.data import load_series_datalist
from monai_tfm.metrics import compute_forecast_metrics
from monai_tfm.transforms import LoadSeriesd

REPO = Path(__file__).resolve().parents[1]
SHARED_ACDC = REPO.parent / "shared" / "data" / "acdc_cine"


def workflow(files, workflow_type: str, run_id: str, meta_file: Path, **overrides) -> ConfigWorkflow:
    """An initialised MONAI ``ConfigWorkflow`` of bundle config files with overrides."""
    wf = ConfigWorkflow(
        config_file=[str(f) for f in files],
        meta_file=str(meta_file),
        workflow_type=workflow_type,
        run_id=run_id,
        **overrides,
    )
    wf.initialize()
    return wf


def lci_metrics_from_draws(row: dict, draws: dict, items: list[dict]) -> dict:
    """LCI's metrics for one per-sample CSV row, recomputed from the saved draws without the engine."""
    rec = next(d for d in draws["draws"] if d["subject"] == row["subject"] and d["draw"] == int(row["draw"]))
    item = next(i for i in items if i["subject"] == row["subject"])
    s = ScaleIntensityRangePercentilesd("series", 0.5, 99.5, 0.0, 1.0, clip=True)(LoadSeriesd()(item))["series"]
    lci = s[rec["context_indices"][-1]]
    return compute_forecast_metrics(lci, s[rec["target_index"]], lci)


def datalist_items(datalist: str, section: str) -> list[dict]:
    """Items of a datalist section."""
    return load_series_datalist(datalist, section)


def run_cli(argv: list, capsys) -> tuple[int, str, str]:
    """Run ``monai-tfm`` in this process; returns the exit code and the captured stdout and stderr."""
    rc = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def assert_one_line_error(rc: int, err: str, *needles: str) -> None:
    """An expected error: exit code 2, no traceback, the last stderr line ``monai-tfm: error: ...`` holding each
    needle."""
    assert rc == 2
    assert "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("monai-tfm: error: "), err
    for needle in needles:
        assert needle in last, (needle, last)
