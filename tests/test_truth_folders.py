"""Issue 28, run-folder rows: one owner per folder (a lock), a refused or no-op command changes
no file in it, and a resume never trains on old settings while recording new ones."""
from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from experiments.job.folder import RunFolder
from experiments.job.lock import LOCK, FolderLocked, RunLock
from experiments.run import run
from tests.conftest import TINY_RUN

TRAIN = ["detector=yolov1_cpu", *TINY_RUN, "stages=[train]"]


def _snapshot(folder: Path) -> dict:
    """Every file under ``folder``: (bytes, mtime in ns)."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_live_lock_refuses_a_stale_one_is_replaced_and_break_lock_takes_over(tmp_path):
    owner = {"pid": os.getppid(), "host": socket.gethostname(), "started": "2024-01-01T00:00:00+00:00"}
    (tmp_path / LOCK).write_text(json.dumps(owner))
    with pytest.raises(FolderLocked, match=rf"pid {os.getppid()} on .*{LOCK}.*break_lock=true"):
        RunLock(tmp_path).acquire()
    (tmp_path / LOCK).write_text(json.dumps({**owner, "host": "elsewhere"}))   # pid unknowable there
    with pytest.raises(FolderLocked, match="on elsewhere"):
        RunLock(tmp_path).acquire()
    taken = RunLock(tmp_path, break_lock=True)
    taken.acquire()
    assert json.loads((tmp_path / LOCK).read_text())["pid"] == os.getpid()
    taken.release()
    assert not (tmp_path / LOCK).exists()
    (tmp_path / LOCK).write_text(json.dumps({**owner, "pid": _dead_pid()}))   # stale: same host, gone
    stale = RunLock(tmp_path)
    stale.acquire()
    assert stale.held
    stale.release()


def test_a_second_run_into_a_locked_folder_is_refused_and_writes_nothing(compose_config, tmp_path):
    owner = {"pid": os.getppid(), "host": socket.gethostname(), "started": "now"}
    (tmp_path / LOCK).write_text(json.dumps(owner))
    before = _snapshot(tmp_path)
    metrics = run(compose_config(TRAIN), tmp_path)
    assert metrics["status"] == "refused" and "break_lock=true" in metrics["error"]
    assert _snapshot(tmp_path) == before


def test_resume_with_a_result_changing_setting_is_refused_naming_it(compose_config, tmp_path):
    assert run(compose_config(TRAIN), tmp_path)["status"] == "ok"
    assert not (tmp_path / LOCK).exists(), "the owner releases its lock"
    before = _snapshot(tmp_path)
    changed = [*TRAIN, "resume=true", "train.epochs=2", "train.optimizer.lr=0.5", "seed=3"]
    metrics = run(compose_config(changed), tmp_path)
    assert metrics["status"] == "refused"
    assert "train.optimizer.lr: 0.002 -> 0.5" in metrics["error"] and "seed: 0 -> 3" in metrics["error"]
    assert "train.epochs" not in metrics["error"] and "resume_changes=allow" in metrics["error"]
    assert _snapshot(tmp_path) == before, "a refused command changes no file (saved config included)"
    allowed = run(compose_config([*changed, "resume_changes=allow"]), tmp_path)
    assert allowed["status"] == "ok", allowed.get("error")
    assert allowed["resume_changes"] == ["seed: 0 -> 3", "train.optimizer.lr: 0.002 -> 0.5"]
    assert json.loads((tmp_path / "metrics.json").read_text())["resume_changes"] == allowed["resume_changes"]


def test_a_refusal_takes_its_lines_back_out_of_the_hydra_log(tmp_path):
    hydra_log = tmp_path / "run.log"
    hydra_log.write_text("the first run's log\n")
    os.utime(hydra_log, ns=(10**18, 10**18))
    handler = logging.FileHandler(hydra_log)
    logging.getLogger().addHandler(handler)
    folder = RunFolder(tmp_path, False, False, hydra_log)
    logging.getLogger("detbench").error("refused: a line a refused command would leave")
    folder.leave_untouched()
    assert handler not in logging.getLogger().handlers
    assert hydra_log.read_text() == "the first run's log\n" and hydra_log.stat().st_mtime_ns == 10**18


@pytest.mark.slow
def test_a_refused_cli_rerun_keeps_the_saved_config_and_log(tmp_path):
    """Through Hydra: the saved config predict reads is the first run's, byte for byte."""
    out = tmp_path / "run"
    command = [sys.executable, "-m", "experiments.run", *TRAIN, f"hydra.run.dir={out}"]
    first = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    before = _snapshot(out)
    assert ".hydra/config.yaml" in before and "run.log" in before
    again = subprocess.run([*command, "detector.model.score_thresh=0.9"], capture_output=True, text=True,
                           timeout=300)
    assert again.returncode != 0 and "holds a previous run" in again.stderr
    assert _snapshot(out) == before


@pytest.mark.slow
def test_a_read_only_run_folder_is_named_by_preflight_not_a_logging_traceback():
    """Hydra's own job logging on (the log file cannot be created): one line, exit 1."""
    import shutil
    import tempfile

    from tests.test_run_signals import _as_nobody

    shared = Path(tempfile.mkdtemp(prefix="detbench_ro_"))
    try:
        shared.chmod(0o755)
        out = shared / "run"
        out.mkdir(mode=0o755)            # root's: read-only for the child
        done = _as_nobody(*TRAIN, f"hydra.run.dir={out}")
        assert done.returncode == 1, done.stderr[-3000:]
        assert f"{out} is not writable" in done.stderr and "Traceback" not in done.stderr, done.stderr[-3000:]
        assert "cannot write the log file" in done.stderr and list(out.iterdir()) == []
    finally:
        shutil.rmtree(shared, ignore_errors=True)
