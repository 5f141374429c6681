# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""Start this app's MONAI Label server on 127.0.0.1 for a test or a benchmark, and stop it again.

``monailabel start_server`` is a long-running command that writes into its app folder; this module copies the app
into a scratch folder, starts the server on a free port, waits until ``/info/`` answers and stops the whole process
group afterwards. It needs the ``monailabel`` extra only in the child process.
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
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from monai_tfm.apps.monailabel import app_dir
from monai_tfm.utils.errors import MonaiTFMError

__all__ = ["LocalServer", "demo_affine", "demo_study", "free_port", "http_request", "local_server"]

#: the frame spacing of the synthetic bundle's phantom series (12 frames over [0, 1])
DEMO_STEP = 1.0 / 11


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_request(url: str, params: Mapping[str, Any] | None = None, timeout: float = 120.0) -> tuple[int, bytes]:
    """GET (``params`` None) or POST with the ``params`` form field MONAI Label's ``/infer`` reads.

    Args:
        url: the full URL.
        params: the request parameters (sent as JSON in the ``params`` form field).
        timeout: seconds before the client gives up (then ``OSError``).

    Returns:
        the HTTP status and the body (also for error statuses).
    """
    data = None if params is None else urllib.parse.urlencode({"params": json.dumps(dict(params))}).encode()
    req = urllib.request.Request(url, data=data, method="GET" if data is None else "POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@dataclass(frozen=True)
class LocalServer:
    """A running server.

    Attributes:
        url: ``http://127.0.0.1:<port>``.
        log: the file with the server's output.
        tmp: the server's temporary folder (``TMPDIR``).
    """

    url: str
    log: Path
    tmp: Path

    def infer(
        self, image: str, params: Mapping[str, Any] | None, output: str = "image", model: str = "forecast", **kw: Any
    ) -> tuple[int, bytes]:
        """``POST /infer/<model>?image=...&output=...`` with ``params``; ``kw`` go to :func:`http_request`."""
        query = urllib.parse.urlencode({"image": image, "output": output})
        return http_request(f"{self.url}/infer/{model}?{query}", params or {}, **kw)


@contextmanager
def local_server(
    workdir: str | os.PathLike,
    studies: str | os.PathLike,
    conf: Mapping[str, str],
    start_timeout: float = 120.0,
    threads: int = 1,
) -> Iterator[LocalServer]:
    """Run ``monailabel start_server`` with this app on 127.0.0.1 while the context is open.

    Args:
        workdir: a scratch folder (the app copy, the log and the server's temporary files go there).
        studies: the studies folder.
        conf: the ``--conf`` keys (``bundle`` at least); values must not contain spaces (the ``monailabel`` launcher
            splits its arguments at spaces).
        start_timeout: seconds to wait for ``/info/``.
        threads: torch/OpenMP threads of the server process.

    Yields:
        the server.

    Raises:
        MonaiTFMError: the server exited or did not answer in time (the message ends with its log).
    """
    root = Path(workdir)
    app = root / "app"
    shutil.copytree(app_dir(), app, ignore=shutil.ignore_patterns("__pycache__", "model", "lib", "logs", "bin"))
    tmp = root / "server_tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    port = free_port()
    script = Path(sys.executable).parent / "monailabel"
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "monailabel.main"]
    command += ["start_server", "--app", str(app), "--studies", str(studies), "--host", "127.0.0.1"]
    command += ["--port", str(port)]
    for key, value in conf.items():
        command += ["--conf", key, str(value)]
    env = dict(os.environ, MONAILABEL_PYEXE=sys.executable, TMPDIR=str(tmp), OMP_NUM_THREADS=str(threads))
    env.update(MKL_NUM_THREADS=str(threads), MONAI_LABEL_SESSIONS="false")
    log = root / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            command, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + start_timeout
        while True:
            if proc.poll() is not None:
                raise MonaiTFMError(f"the server exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
            try:
                if http_request(f"{url}/info/", timeout=5)[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise MonaiTFMError(
                    f"the server did not answer /info/ in {start_timeout:.0f} s:\n{log.read_text()[-4000:]}"
                )
            time.sleep(1.0)
        yield LocalServer(url, log, tmp)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=20)


def demo_affine() -> np.ndarray:
    """The demo scans' grid: anisotropic spacing (1.5, 1.25, 3), a rotation about z and a translation."""
    c, s = np.cos(0.4), np.sin(0.4)
    affine = np.eye(4)
    affine[:3, :3] = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ np.diag([1.5, 1.25, 3.0])
    affine[:3, 3] = [-20.0, 12.0, 7.0]
    return affine


def demo_study(root: str | os.PathLike, bundle: str | os.PathLike, num_scans: int = 4) -> tuple[Path, Path, list[Path]]:
    """A bundle copy whose weights are its freshly built network and a studies folder with one phantom series.

    With the synthetic bundle the fresh network has a zero-initialised head (zero velocity), so with
    ``aggregation=last`` the forecast is the last context scan in the original intensity scale: a model whose
    answer is known, for tests and load benchmarks.

    Args:
        root: a scratch folder (gets ``bundle/`` and ``studies/``).
        bundle: the bundle to copy (its ``configs/``, made self-contained).
        num_scans: scans of the series ``p1`` (``p1_t0`` ... at times ``k / 11``), 16 x 14 x 6 voxels, intensities
            about 30..730, on an anisotropic rotated grid.

    Returns:
        the bundle copy, the studies folder and the scan files.
    """
    import nibabel as nib
    import torch
    from monai.bundle import ConfigParser

    from monai_tfm.apps.bundle_loading import bundle_config_files, copy_bundle_configs
    from monai_tfm.data.synthetic import make_heart_series

    root = Path(root)
    copy = root / "bundle"
    copy_bundle_configs(bundle, copy)  # self-contained: the copy's configs need no shared folder
    parser = ConfigParser()
    parser.read_config([str(f) for f in bundle_config_files(copy, None, ValueError)])
    (copy / "models").mkdir()
    torch.save(parser.get_parsed_content("network_def").state_dict(), copy / "models" / "model.pt")
    studies = root / "studies"
    studies.mkdir()
    affine = demo_affine()
    frames, _ = make_heart_series(5, spatial_size=(16, 14, 6), num_frames=12)
    scans = []
    for k in range(num_scans):
        scans.append(studies / f"p1_t{k}.nii.gz")
        nib.save(nib.Nifti1Image(np.asarray(frames[k] * 700 + 30, dtype=np.float32), affine), str(scans[-1]))
    sidecar = {"scans": [{"image": p.name, "time": f"{k * DEMO_STEP:.6f}"} for k, p in enumerate(scans)]}
    (studies / "p1.series.json").write_text(json.dumps(sidecar))
    return copy, studies, scans
