"""The command line under a real Ctrl-C and real permissions (issue 21): a child
``python -m experiments.run`` gets SIGINT mid-training; read-only folders are tested as an
unprivileged user (``setpriv``), since root's DAC override ignores chmod."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import TINY_RUN, default_sigint

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
TRAIN = ["detector=yolov1_cpu", *TINY_RUN, "stages=[train]", "train.epochs=10"]


def _wait_for_rows(log: Path, rows: int, child: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.is_file() and len(log.read_text().strip().splitlines()) > rows:
            return
        if child.poll() is not None:
            pytest.fail(f"the run ended before training ({child.returncode})")
        time.sleep(0.05)
    pytest.fail("no training rows appeared")


def test_ctrl_c_mid_training_checkpoints_exits_130_and_resumes(tmp_path):
    out = tmp_path / "run"
    stderr = tmp_path / "stderr.txt"
    with open(stderr, "w") as err:
        child = subprocess.Popen([sys.executable, "-m", "experiments.run", *TRAIN,
                                  f"hydra.run.dir={out}"], cwd=ROOT, env=ENV,
                                 stdout=subprocess.DEVNULL, stderr=err, preexec_fn=default_sigint)
        _wait_for_rows(out / "train_log.csv", 2, child)
        child.send_signal(signal.SIGINT)
        code = child.wait(timeout=120)
    text = stderr.read_text()
    assert code == 130, text[-3000:]
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "interrupted" and metrics["interrupt_signal"] == "SIGINT"
    stopped_at = metrics["interrupted_iteration"]
    assert 2 <= stopped_at < 20 and f"iteration {stopped_at}" in text
    assert metrics["resume_command"] in text, "the exact command is printed"

    resumed = subprocess.run(["bash", "-c", metrics["resume_command"]], env=ENV,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    final = json.loads((out / "metrics.json").read_text())
    assert final["status"] == "ok" and final["train_iterations"] == 20
    iterations = [int(r.split(",")[0]) for r in (out / "train_log.csv").read_text().splitlines()[1:]]
    assert iterations == list(range(1, 21)), "each iteration logged once, across the two runs"


def _unprivileged() -> list[str]:
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv"):
        return ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    if shutil.which("runuser"):
        return ["runuser", "-u", "nobody", "--"]
    pytest.skip("running as root and neither setpriv nor runuser exists to drop privileges")


def _as_nobody(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*_unprivileged(), sys.executable, "-m", "experiments.run", *args],
                          cwd=ROOT, env={**ENV, "HOME": tempfile.gettempdir()},
                          capture_output=True, text=True, timeout=300)


@pytest.fixture
def shared_tmp():
    """A folder an unprivileged user can enter (pytest's tmp_path is root's, mode 700)."""
    folder = Path(tempfile.mkdtemp(prefix="detbench_perm_"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_read_only_run_folder_fails_in_preflight_without_a_traceback(shared_tmp):
    out = shared_tmp / "run"
    out.mkdir(mode=0o755)            # root's: read-only for the child
    done = _as_nobody(*TRAIN, f"hydra.run.dir={out}", "hydra.output_subdir=null",
                      "hydra/job_logging=disabled")
    assert done.returncode == 1, done.stderr[-3000:]
    assert f"{out} is not writable" in done.stderr and "Traceback" not in done.stderr
    assert list(out.iterdir()) == []


def test_read_only_checkpoint_folder_fails_before_training(shared_tmp):
    out = shared_tmp / "run"
    out.mkdir()
    os.chown(out, 65534, 65534) if os.geteuid() == 0 else None
    (out / "checkpoints").mkdir(mode=0o555)
    done = _as_nobody(*TRAIN, f"hydra.run.dir={out}")
    assert done.returncode == 1, done.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "failed" and "checkpoints is not writable" in metrics["error"]
    assert not (out / "train_log.csv").exists() and "Traceback" not in done.stderr
