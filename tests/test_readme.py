# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""Every command of the README runs as written, at tiny settings, in a scratch copy of the bundles.

The README's ``bash`` blocks (and its inline ``monai-tfm pack`` command) are run by bash, line by line as they are
printed, in a temporary folder that holds a copy of ``bundles/`` (``MONAI_TFM_BUNDLES`` points the default bundle
there). The only change is what :data:`RULES` appends to a command: smaller grids, networks and epochs, so the
suite stays fast; nothing is removed from a command. A README command that no rule knows fails the test, so a new
command cannot go untested. The install lines are the CI step itself (``.ci/run``), checked to be identical.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

__all__: list[str] = []

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DATA = "--spatial_size '[16,16,8]'"  # phantoms of every command (the default subject counts: heart_030 exists)
NET = "--network_def#channels 8"
TRAIN = f"{DATA} {NET} --max_epochs 1 --val_draws 1"
# (pattern of a README command, what is appended to it; None: not run here, with the reason)
RULES: list[tuple[str, str | None]] = [
    (r"^python -m pip install ", None),  # the install of .ci/run (checked below)
    (r"^python -m pytest -q tests$", None),  # this suite
    (r"^monailabel start_server ", None),  # a server: tests/test_monailabel.py in the extra's CI step
    (r"^[A-Z]+=\S+$", ""),  # shell variables
    (r"^monai-tfm quickstart ", f"{TRAIN} --eval_draws 2"),
    (r"^python -m monai\.bundle run training .*--resume true", f"{DATA} {NET} --max_epochs 2 --val_draws 1"),
    (r"^python -m monai\.bundle run training .*--compile true", f"{TRAIN} --output_dir runs/switches"),
    (r"^python -m monai\.bundle run (training|evaluating) ", f"{TRAIN} --eval_draws 2"),
    (r"^python -m monai\.bundle run --config_file \"\$\(monai-tfm configs \$B --run inference\)\"", f"{DATA} {NET}"),
    (r"^python -m monai\.bundle (verify_metadata|ckpt_export|verify_net_in_out) ", ""),
    (r"^torchrun ", f"--backend gloo {TRAIN}"),
    (r"^monai-tfm synthetic ", DATA),
    (r"^monai-tfm prepare series ", ""),
    (r"^monai-tfm train --bundle bundles/series_forecasting ", NET),
    (r"^monai-tfm evaluate ", NET),
    (r"^monai-tfm train ", f"{DATA} {NET}"),
    (r"^monai-tfm forecast ", NET),
    (r"^monai-tfm pack ", ""),
]
NET_COMMANDS = (r"ckpt_export", r"verify_net_in_out")  # bundle commands that build the network: the tiny width


def _commands(block: str) -> list[str]:
    """The commands of a bash block: continuation lines joined, ``&&`` chains split."""
    logical = re.sub(r"\\\n\s*", "", block)
    lines = [re.sub(r"(^|\s)#.*$", "", line) for line in logical.splitlines()]  # shell comments (a word from #)
    return [c.strip() for line in lines if line.strip() for c in line.split(" && ")]


def _readme_blocks() -> list[list[str]]:
    text = README.read_text()
    blocks = [_commands(b) for b in re.findall(r"```bash\n(.*?)```", text, re.S)]
    # the one command the README gives inline (sharing a model), as printed there
    pack = re.search(r"`(monai-tfm pack [^`]+)`", text.replace("\n", " "))
    assert pack is not None, "the README no longer shows `monai-tfm pack ...`"
    return [*blocks, [pack.group(1)]]


def _tiny(command: str) -> str | None:
    for pattern, extra in RULES:
        if re.search(pattern, command):
            if extra is None:
                return None
            if any(n in command for n in NET_COMMANDS):
                extra = NET
            return f"{command} {extra}".rstrip()
    raise AssertionError(f"README command without a rule in tests/test_readme.py: {command}")


def test_readme_install_and_test_commands_are_the_ci_step():
    ci = (REPO / ".ci" / "run").read_text()
    tests_block = next(b for b in _readme_blocks() if "python -m pytest -q tests" in b)
    assert " && ".join(tests_block) in ci  # the README's test command, verbatim, in CI
    quick = next(b for b in _readme_blocks() if any(c.startswith("monai-tfm quickstart") for c in b))
    assert quick[:2] == ["python -m pip install torch==2.13.0", "python -m pip install -e ."]


@pytest.mark.slow
def test_every_readme_command_runs(tmp_path):
    """Run the README's commands in order, as bash runs them (shell variables carry over, as in one session)."""
    work = tmp_path / "work"
    work.mkdir()
    shutil.copytree(REPO / "bundles", work / "bundles", ignore=shutil.ignore_patterns("data", "runs", "__pycache__"))
    env = {**os.environ, "MONAI_TFM_BUNDLES": str(work / "bundles"), "OMP_NUM_THREADS": "1"}
    bindir = str(Path(sys.executable).parent)  # monai-tfm and torchrun of this environment
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    before = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True).stdout
    ran: list[str] = []
    variables: list[str] = []  # the README reads as one shell session: a variable set in one block is used later
    for command in (c for block in _readme_blocks() for c in (_tiny(c) for c in block) if c is not None):
        if re.match(r"^[A-Z]+=", command):
            variables.append(command)
            continue
        # one shell per command, with the variables so far: a failure names its command
        t0 = time.perf_counter()
        proc = subprocess.run(
            ["bash", "-c", "set -euo pipefail\n" + "\n".join([*variables, command])],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        output = proc.stdout + proc.stderr
        errors = "\n".join(line for line in output.splitlines() if " ERROR " in line)
        assert proc.returncode == 0, f"README command failed: {command}\n{errors}\n{output[-3000:]}"
        ran.append(command)
        print(f"{time.perf_counter() - t0:6.1f} s  {command[:100]}")  # noqa: T201  (shown with pytest -s)
    assert any(c.startswith("monai-tfm quickstart") for c in ran)
    assert any(c.startswith("monai-tfm forecast") for c in ran)
    assert (work / "runs" / "forecast_demo" / "heart_030_t07.nii.gz").is_file()
    assert (work / "runs" / "forecast_demo" / "heart_030_t07_preview.png").is_file()
    assert (work / "synthetic_forecasting.zip").is_file()
    assert (work / "model.ts").is_file()
    after = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True).stdout
    assert after == before  # the checkout is untouched (the demo's preview goes to runs/, not docs/images/)
