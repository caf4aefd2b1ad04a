"""A DataLoader worker dies with the stage process that started it: ``kill -9`` of ``diffusion-link run``
kills its step (PR_SET_PDEATHSIG) and used to leave the step's loader worker behind for good (issue 18)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")

# a stage stand-in: one worker, busy in an item (as a decoding worker is) when its process is killed
STAGE = """
import os, sys, time
from torch.utils.data import Dataset
from diffusion_link.data.loaders import evaluation_loader

class Busy(Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        with open(sys.argv[1] + ".tmp", "w") as f:
            f.write(str(os.getpid()))
        os.replace(sys.argv[1] + ".tmp", sys.argv[1])
        time.sleep(120)
        return i

for batch in evaluation_loader(None, Busy(), batch_size=1, num_workers=1):
    pass
"""


def _alive(pid: int) -> bool:
    try:
        return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False


def test_a_loader_worker_dies_with_its_stage_process(tmp_path):
    marker = tmp_path / "worker.pid"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    stage = subprocess.Popen([sys.executable, "-c", STAGE, str(marker)], env=env)
    worker = None
    try:
        deadline = time.monotonic() + 120
        while not marker.is_file():
            assert stage.poll() is None, f"the stand-in stage exited ({stage.returncode}) before its worker started"
            assert time.monotonic() < deadline, "the stand-in stage's worker did not start in 120 s"
            time.sleep(0.2)
        worker = int(marker.read_text())
        assert worker != stage.pid and _alive(worker)
        stage.send_signal(signal.SIGKILL)
        stage.wait()
        deadline = time.monotonic() + 10
        while _alive(worker) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _alive(worker), f"loader worker {worker} outlived its killed stage process {stage.pid}"
    finally:
        if stage.poll() is None:
            stage.kill()
        if worker is not None and _alive(worker):
            os.kill(worker, signal.SIGKILL)
