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
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser

from monai_tfm.apps.forecast import ForecastError
from monai_tfm.apps.monailabel import app_dir
from monai_tfm.apps.monailabel.study import find_series, read_series_sidecar
from monai_tfm.data.synthetic import make_heart_series

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "synthetic_forecasting"
STEP = 1.0 / 11  # the synthetic bundle's frame spacing
START_TIMEOUT_S = 120.0


def _affine() -> np.ndarray:
    """Anisotropic spacing, a rotation about z and a translation."""
    c, s = np.cos(0.4), np.sin(0.4)
    affine = np.eye(4)
    affine[:3, :3] = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ np.diag([1.5, 1.25, 3.0])
    affine[:3, 3] = [-20.0, 12.0, 7.0]
    return affine


def _save(path: Path, array: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(np.asarray(array, dtype=np.float32), _affine()), str(path))
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


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _request(url: str, params: dict | None = None, timeout: float = 120.0) -> tuple[int, bytes]:
    """GET (``params`` None) or POST with the ``params`` form field MONAI Label's ``/infer`` reads."""
    data = None if params is None else urllib.parse.urlencode({"params": json.dumps(params)}).encode()
    req = urllib.request.Request(url, data=data, method="GET" if data is None else "POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


class _Server:
    def __init__(self, url: str, studies: Path, scans: list[Path], log: Path, tmp: Path) -> None:
        self.url, self.studies, self.scans, self.log, self.tmp = url, studies, scans, log, tmp

    def infer(self, image: str, params: dict | None, output: str = "image", model: str = "forecast"):
        query = urllib.parse.urlencode({"image": image, "output": output})
        return _request(f"{self.url}/infer/{model}?{query}", params or {})


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[_Server]:
    """``monailabel start_server`` with the app of the package, a bundle copy with LCI weights and one study."""
    pytest.importorskip("monailabel")
    root = tmp_path_factory.mktemp("monailabel")

    bundle = root / "bundle"
    shutil.copytree(BUNDLE / "configs", bundle / "configs")
    parser = ConfigParser()
    parser.read_config([str(bundle / "configs" / n) for n in ("train.yaml", "inference.yaml")])
    (bundle / "models").mkdir()
    torch.save(parser.get_parsed_content("network_def").state_dict(), bundle / "models" / "model.pt")

    studies = root / "studies"
    studies.mkdir()
    frames, _ = make_heart_series(5, spatial_size=(16, 14, 6), num_frames=12)
    scans = [_save(studies / f"p1_t{k}.nii.gz", frames[k] * 700 + 30) for k in range(4)]
    _sidecar(studies / "p1.series.json", [(s.name, f"{k * STEP:.6f}") for k, s in enumerate(scans)])
    _save(studies / "lonely.nii.gz", frames[0])
    _save(studies / "p2_a.nii.gz", frames[0])
    _save(studies / "p2_b.nii.gz", frames[1])
    _sidecar(studies / "p2.series.json", [("p2_a.nii.gz", 0.0), ("p2_b.nii.gz", 0.0)])

    app = root / "app"
    shutil.copytree(app_dir(), app, ignore=shutil.ignore_patterns("__pycache__", "model", "lib", "logs", "bin"))
    tmp = root / "server_tmp"
    tmp.mkdir()
    port = _free_port()
    script = Path(sys.executable).parent / "monailabel"
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "monailabel.main"]
    command += ["start_server", "--app", str(app), "--studies", str(studies), "--host", "127.0.0.1"]
    command += ["--port", str(port), "--conf", "bundle", str(bundle), "--conf", "device", "cpu"]
    command += ["--conf", "overrides", '{"aggregation":"last"}']  # the monailabel script splits arguments at spaces
    env = dict(os.environ, MONAILABEL_PYEXE=sys.executable, TMPDIR=str(tmp), OMP_NUM_THREADS="1")
    env.update(MKL_NUM_THREADS="1", MONAI_LABEL_SESSIONS="false")
    log = root / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            command, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the server exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
            try:
                if _request(f"{url}/info/", timeout=5)[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the server did not answer /info/ in {START_TIMEOUT_S:.0f} s:\n{log.read_text()[-4000:]}")
            time.sleep(1.0)
        yield _Server(url, studies, scans, log, tmp)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=20)


def test_server_info(server):
    status, body = _request(f"{server.url}/info/")
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
    series = np.stack([nib.load(str(s)).get_fdata() for s in server.scans])
    lo, hi = np.percentile(series, [0.5, 99.5])
    expected = np.clip(series[-1], lo, hi)
    np.testing.assert_allclose(pred.get_fdata(), expected, rtol=0, atol=1e-5 * float(hi - lo))

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


def test_many_clients_at_once(server):
    """Forecasts run off the event loop: /info/ answers while they run, answers come back as each one finishes, and a
    request whose client gave up while it waited is dropped before it is computed."""
    from concurrent.futures import ThreadPoolExecutor

    def forecast(k: int) -> tuple[int, float]:
        status, _ = server.infer("p1_t3", {"target_time": 0.5, "steps": 100, "solver": "euler"}, output="json")
        return status, time.monotonic() - t0

    with ThreadPoolExecutor(max_workers=6) as clients:
        t0 = time.monotonic()
        jobs = [clients.submit(forecast, k) for k in range(5)]
        time.sleep(0.5)
        info_started = time.monotonic()
        assert _request(f"{server.url}/info/", timeout=30)[0] == 200
        info_seconds = time.monotonic() - info_started
        # a client that gives up at once: its request waits behind the others and is dropped, not computed
        with pytest.raises(OSError):
            _request(f"{server.url}/infer/forecast?image=p1_t3&output=json", {"target_time": 0.4}, timeout=0.2)
        done = sorted(job.result() for job in jobs)
    assert [status for status, _ in done] == [200] * 5
    finished = sorted(t for _, t in done)
    assert info_seconds < 1.0, f"/info/ took {info_seconds:.2f} s while forecasts ran"
    assert finished[0] < 0.7 * finished[-1], f"answers were held back: finished at {finished}"
    deadline = time.monotonic() + 10
    while "dropped before it was computed" not in server.log.read_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "dropped before it was computed" in server.log.read_text()


def test_a_target_at_a_scan_time_is_forecast(server):
    """As with ``monai-tfm forecast``: a target at the time of the series' last scan is allowed (the scan stays
    context), and the answer names the scans used."""
    status, body = server.infer("p1_t3", {"target_time": f"{3 * STEP:.6f}"}, output="json")
    assert status == 200, body[:500]
    params = json.loads(body)
    assert params["context_scans"][-1] == "p1_t3.nii.gz" and len(params["context_times"]) == 4
