# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""MONAI Label serving of forecasts.

A real ``monailabel start_server`` on 127.0.0.1 serves a copy of the synthetic bundle whose weights are the freshly
built network (zero-initialised head: zero velocity) with ``aggregation=last``, i.e. the Last Context Image model: the
forecast must be the last context scan in the original intensity scale (clipped to the 0.5/99.5 percentiles of the
series, as the bundle's normalisation does), on the requested scan's grid. The server tests skip when the
``monailabel`` extra is not installed; the studies-layout tests and the import check run everywhere.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from monai_tfm.apps.forecast import ForecastError
from monai_tfm.apps.monailabel.local_server import (
    DEMO_STEP,
    LocalServer,
    demo_affine,
    demo_study,
    http_request,
    local_server,
)
from monai_tfm.apps.monailabel.study import find_series, read_series_sidecar
from monai_tfm.data.synthetic import make_heart_series
from monai_tfm.utils.errors import MonaiTFMError

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "synthetic_forecasting"
STEP = DEMO_STEP  # the synthetic bundle's frame spacing
START_TIMEOUT_S = 120.0


def _save(path: Path, array: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(np.asarray(array, dtype=np.float32), demo_affine()), str(path))
    return path


def _sidecar(path: Path, scans: list[tuple[str, float | str]]) -> Path:
    path.write_text(json.dumps({"scans": [{"image": name, "time": t} for name, t in scans]}))
    return path


# ------------------------------------------------------------------------------------------------ without a server


def test_package_imports_without_monailabel():
    """``import monai_tfm`` and the app's locator work when MONAI Label is not importable."""
    code = (
        "import sys; sys.modules['monailabel'] = None\n"
        "import monai_tfm, monai_tfm.apps.monailabel as m, monai_tfm.apps.monailabel.study\n"
        "assert (m.app_dir() / 'main.py').is_file(), m.app_dir()\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr


def test_series_sidecars(tmp_path):
    """Which series holds an image, and one-line errors naming the image or the sidecar."""
    for name in ("a_t0", "a_t1", "b_t0", "lonely"):
        (tmp_path / f"{name}.nii.gz").write_bytes(b"")
    _sidecar(tmp_path / "a.series.json", [("a_t0.nii.gz", 0.0), ("a_t1.nii.gz", 0.1)])
    (tmp_path / "broken.series.json").write_text("{not json")
    series = find_series(tmp_path, tmp_path / "a_t1.nii.gz")
    assert series.name == "a" and series.times == [0.0, 0.1]
    assert series.scans == [os.path.realpath(tmp_path / f"a_t{k}.nii.gz") for k in range(2)]
    with pytest.raises(
        ForecastError, match=r"image '.*lonely\.nii\.gz' is listed in no series sidecar.*not valid JSON"
    ):
        find_series(tmp_path, tmp_path / "lonely.nii.gz")
    _sidecar(tmp_path / "a_again.series.json", [("a_t0.nii.gz", 0.0)])
    with pytest.raises(ForecastError, match=r"several series sidecars .*a\.series\.json.*a_again\.series\.json"):
        find_series(tmp_path, tmp_path / "a_t0.nii.gz")
    (tmp_path / "c.series.json").write_text(json.dumps({"scans": [{"image": "b_t0.nii.gz"}]}))
    with pytest.raises(ForecastError, match=r"c\.series\.json': scans\[0\] = .* needs the keys 'image' and 'time'"):
        read_series_sidecar(tmp_path / "c.series.json")
    (tmp_path / "d.series.json").write_text(json.dumps({"scans": []}))
    with pytest.raises(ForecastError, match=r"d\.series\.json' must hold"):
        read_series_sidecar(tmp_path / "d.series.json")


def test_a_broken_sidecar_is_warned_about_once_per_change(tmp_path, caplog):
    """Every request reads every sidecar; a broken one of another series is logged once, again only after it changes."""
    for name in ("a_t0", "a_t1"):
        (tmp_path / f"{name}.nii.gz").write_bytes(b"")
    _sidecar(tmp_path / "a.series.json", [("a_t0.nii.gz", 0.0), ("a_t1.nii.gz", 0.1)])
    broken = tmp_path / "broken.series.json"
    broken.write_text("{not json")
    with caplog.at_level("WARNING", logger="monai_tfm.apps.monailabel.study"):
        for _ in range(3):
            find_series(tmp_path, tmp_path / "a_t1.nii.gz")
        assert caplog.text.count("broken.series.json") == 1
        broken.write_text('{"scans": 1}')  # another defect: warned about again
        find_series(tmp_path, tmp_path / "a_t1.nii.gz")
        find_series(tmp_path, tmp_path / "a_t1.nii.gz")
    assert caplog.text.count("broken.series.json") == 2


# ------------------------------------------------------------------------------------------------ the server


@dataclass(frozen=True)
class _Server:
    url: str
    bundle: Path
    studies: Path
    scans: list[Path]
    log: Path
    tmp: Path

    def infer(self, image: str, params: dict | None, output: str = "image", model: str = "forecast", **kw):
        return LocalServer(self.url, self.log, self.tmp).infer(image, params, output, model, **kw)


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[_Server]:
    """``monailabel start_server`` with the app of the package, a bundle copy with LCI weights and one study (plus a
    scan in no series and a series with two scans at one time)."""
    pytest.importorskip("monailabel")
    root = tmp_path_factory.mktemp("monailabel")
    bundle, studies, scans = demo_study(root, BUNDLE)
    frames, _ = make_heart_series(5, spatial_size=(16, 14, 6), num_frames=12)
    _save(studies / "lonely.nii.gz", frames[0])
    _save(studies / "p2_a.nii.gz", frames[0])
    _save(studies / "p2_b.nii.gz", frames[1])
    _sidecar(studies / "p2.series.json", [("p2_a.nii.gz", 0.0), ("p2_b.nii.gz", 0.0)])
    # the monailabel launcher splits arguments at spaces: JSON without them
    conf = {"bundle": str(bundle), "device": "cpu", "overrides": '{"aggregation":"last"}'}
    try:
        with local_server(root, studies, conf, start_timeout=START_TIMEOUT_S) as srv:
            yield _Server(srv.url, bundle, studies, scans, srv.log, srv.tmp)
    except MonaiTFMError as e:
        pytest.fail(str(e))


def test_server_info(server):
    status, body = http_request(f"{server.url}/info/")
    assert status == 200
    model = json.loads(body)["models"]["forecast"]
    assert model["variant"] == "discrete" and model["num_slots"] == 11
    assert "target_time" in model["params"]


def test_forecast_over_http_lci_returns_last_scan(server, tmp_path):
    """The forecast volume: the reference grid (shape, affine), the original intensity scale, float32."""
    status, body = server.infer("p1_t3", {"target_time": 0.5, "steps": 1})
    assert status == 200, body[:500]
    out = tmp_path / "forecast.nii.gz"
    out.write_bytes(body)
    pred, ref = nib.load(str(out)), nib.load(str(server.scans[-1]))
    assert pred.shape == ref.shape and pred.get_data_dtype() == np.float32
    np.testing.assert_allclose(pred.affine, ref.affine, rtol=0, atol=1e-5)
    expected, scale = _lci_expected(server.scans)
    np.testing.assert_allclose(pred.get_fdata(), expected, rtol=0, atol=1e-5 * scale)
    # the same bits as `monai-tfm forecast` on the same scans, times and bundle (one forecast path)
    from monai_tfm.apps.forecast import BundleForecaster, forecast_series

    cli = tmp_path / "cli.nii.gz"
    model = BundleForecaster(server.bundle, overrides={"aggregation": "last"}, steps=1)
    forecast_series(model, server.scans, [f"{k * STEP:.6f}" for k in range(4)], 0.5, cli, reference=server.scans[-1])
    np.testing.assert_array_equal(np.asarray(pred.dataobj), np.asarray(nib.load(str(cli)).dataobj))

    status, body = server.infer("p1_t3", {"target_time": "0.5", "steps": "1"}, output="json")
    assert status == 200, body[:500]
    params = json.loads(body)
    assert params["context_scans"] == [s.name for s in server.scans] and params["reference"] == "p1_t3.nii.gz"
    np.testing.assert_allclose(params["context_times"], [k * STEP for k in range(4)], atol=1e-6)
    assert params["target_time"] == 0.5 and params["nfe"] >= 1 and params["samples"] == 1


@pytest.mark.parametrize(
    "model, image, params, code, needles",
    [
        (
            "forecast",
            "nope",
            {"target_time": 0.5},
            404,
            ["image 'nope' is not a scan id of the studies folder", "p1_t3"],
        ),
        # a path is never an image id: the same 404 whether the file exists or not (no probing of the server's files)
        ("forecast", "/etc/passwd", {"target_time": 0.5}, 404, ["image '/etc/passwd' is not a scan id"]),
        ("forecast", "/etc/no_such_file", {"target_time": 0.5}, 404, ["image '/etc/no_such_file' is not a scan id"]),
        ("forecast", "p1_t3", {"target_time": 0.5, "steps": 1000}, 400, ["'steps' = 1000 exceeds", "limit of 100"]),
        ("forecast", "p1_t3", {"target_time": 0.5, "samples": 17}, 400, ["'samples' = 17 exceeds", "limit of 16"]),
        ("nomodel", "p1_t3", {"target_time": 0.5}, 404, ["unknown model 'nomodel'", "forecast"]),
        ("forecast", "p1_t3", {}, 400, ["'target_time' is missing"]),
        ("forecast", "p1_t3", {"target_time": "soon"}, 400, ["target time must be a number, got 'soon'"]),
        ("forecast", "p1_t3", {"target_time": 5.0}, 400, ["target time 5 lies outside"]),
        ("forecast", "p1_t3", {"target_time": 0.5, "steps": "x"}, 400, ["'steps' must be an integer, got 'x'"]),
        ("forecast", "p1_t3", {"target_time": 0.5, "result": "std"}, 400, ["result='std' needs samples > 1"]),
        ("forecast", "lonely", {"target_time": 0.5}, 400, ["image 'lonely.nii.gz' is listed in no series sidecar"]),
        ("forecast", "p2_b", {"target_time": 0.5}, 400, ["p2.series.json", "have the same time 0"]),
    ],
)
def test_bad_requests_give_clear_errors(server, model, image, params, code, needles):
    status, body = server.infer(image, params, output="json", model=model)
    assert status == code, body[:500]
    detail = json.loads(body)["detail"]
    assert "\n" not in detail
    for needle in needles:
        assert needle in detail, (needle, detail)
    assert str(server.studies) not in detail and os.path.realpath(server.studies) not in detail  # no server paths


@pytest.mark.parametrize(
    "raw, needle",
    [("{not json", "params must be a JSON object, got invalid JSON"), ("[0.5]", "params must be a JSON object such")],
)
def test_params_that_are_not_a_json_object_give_400(server, raw, needle):
    query = urllib.parse.urlencode({"image": "p1_t3", "output": "json"})
    data = urllib.parse.urlencode({"params": raw}).encode()
    req = urllib.request.Request(f"{server.url}/infer/forecast?{query}", data=data, method="POST")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=60)
    assert err.value.code == 400 and needle in json.loads(err.value.read())["detail"]


def test_no_temporary_files_left(server):
    """Forecast files are sent and deleted; failed requests leave nothing behind."""
    deadline = time.monotonic() + 10
    while (left := sorted(server.tmp.glob("monai_tfm_forecast_*"))) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left


def _lci_expected(scans: list[Path]) -> tuple[np.ndarray, float]:
    """What the LCI model must return: the last scan clipped to the series' 0.5/99.5 percentiles, and that range."""
    series = np.stack([nib.load(str(s)).get_fdata() for s in scans])
    lo, hi = np.percentile(series, [0.5, 99.5])
    return np.clip(series[-1], lo, hi), float(hi - lo)


def test_many_clients_at_once(server, tmp_path):
    """20 concurrent forecasts: every answer correct, the first back well before the last forecast is done, /info/
    under a second meanwhile; a client that gives up while waiting is dropped and delays nobody."""
    from concurrent.futures import ThreadPoolExecutor

    expected, scale = _lci_expected(server.scans)

    def forecast(k: int) -> tuple[float, np.ndarray]:
        status, body = server.infer("p1_t3", {"target_time": 0.5, "steps": 20, "solver": "euler"})
        assert status == 200, body[:300]
        out = tmp_path / f"f{k}.nii.gz"
        out.write_bytes(body)
        return time.monotonic() - t0, nib.load(str(out)).get_fdata()

    with ThreadPoolExecutor(max_workers=21) as clients:
        t0 = time.monotonic()
        jobs = [clients.submit(forecast, k) for k in range(20)]
        time.sleep(0.5)
        info_started = time.monotonic()
        assert http_request(f"{server.url}/info/", timeout=30)[0] == 200
        info_seconds = time.monotonic() - info_started
        # a client that gives up at once: its request waits behind the others and is dropped, not computed
        with pytest.raises(OSError):
            server.infer("p1_t3", {"target_time": 0.4}, output="json", timeout=0.2)
        results = [job.result() for job in jobs]
    finished = sorted(t for t, _ in results)
    for _, pred in results:
        np.testing.assert_allclose(pred, expected, rtol=0, atol=1e-5 * scale)
    assert info_seconds < 1.0, f"/info/ took {info_seconds:.2f} s while forecasts ran"
    assert finished[0] < 0.5 * finished[-1], f"answers were held back: finished at {finished}"
    deadline = time.monotonic() + 10
    while "dropped before it was computed" not in server.log.read_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert server.log.read_text().count("dropped before it was computed") == 1


def test_a_target_at_a_scan_time_is_forecast(server):
    """As with ``monai-tfm forecast``: a target at the time of the series' last scan is allowed (the scan stays
    context), and the answer names the scans used."""
    status, body = server.infer("p1_t3", {"target_time": f"{3 * STEP:.6f}"}, output="json")
    assert status == 200, body[:500]
    params = json.loads(body)
    assert params["context_scans"][-1] == "p1_t3.nii.gz" and len(params["context_times"]) == 4
