"""Issue 28, Ctrl-C during the sweep's report: one clear line (no traceback), no partial
``<sweep>/report/`` (it is built in a hidden folder and renamed into place), exit 130.

The child runs the sweep-end callback on a sweep folder with a report section that writes a plot
and then waits; the test sends SIGINT while it waits. The child gets the default SIGINT handler
first (``default_sigint``): from a background job it would inherit SIGINT ignored."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import default_sigint

ROOT = Path(__file__).resolve().parents[1]
CHILD = """
import sys, time
from pathlib import Path
from omegaconf import OmegaConf
from analysis import report
from experiments.job.callbacks import ReportOnMultirunEnd

sweep = Path(sys.argv[1])

def slow_section(ctx):
    ctx.plot_dir.mkdir(parents=True, exist_ok=True)
    (ctx.plot_dir / "half_written.png").write_bytes(b"not yet a plot")
    (sweep / "waiting").write_text("x")
    time.sleep(120)

report.SECTIONS.append(slow_section)
ReportOnMultirunEnd().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}, "sweep_stages": []}))
"""


def _report_interrupted(sweep: Path) -> subprocess.CompletedProcess:
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(sweep)], cwd=ROOT, text=True,
                             env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, preexec_fn=default_sigint)
    deadline = time.monotonic() + 90
    while not (sweep / "waiting").exists():
        if child.poll() is not None or time.monotonic() > deadline:
            child.kill()
            out, err = child.communicate()
            pytest.fail(f"the report never reached its slow section: {err[-3000:]}")
        time.sleep(0.05)
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=60)
    return subprocess.CompletedProcess(child.args, child.returncode, out, err)


def test_ctrl_c_during_the_sweep_report_exits_130_with_one_line_and_no_partial_report(tmp_path):
    done = _report_interrupted(tmp_path)
    assert done.returncode == 130, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and "KeyboardInterrupt" not in done.stderr, done.stderr[-3000:]
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "interrupted while building the report" in lines[0], done.stderr
    assert f"detbench-report {tmp_path}" in lines[0]
    assert not (tmp_path / "report").exists(), "a partial report was left"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".report")] == []


def test_an_interrupted_rebuild_keeps_the_old_report_whole(tmp_path):
    old = tmp_path / "report"
    old.mkdir()
    (old / "report.md").write_text("the old report")
    done = _report_interrupted(tmp_path)
    assert done.returncode == 130, done.stderr[-3000:]
    assert sorted(p.name for p in old.iterdir()) == ["report.md"]
    assert (old / "report.md").read_text() == "the old report"
