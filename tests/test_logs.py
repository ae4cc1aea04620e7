"""What a job and a sweep say (issue 29, "Logs and help"): each fact once per job, AP in % like the
report, progress lines while training when no bar is drawn, the sweep's last line naming
report.html by its absolute path, and help texts that start with what the tool does."""
from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from experiments.run import run
from experiments.training import trainer
from tests.conftest import TINY_RUN

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def job_log(compose_config, tmp_path, monkeypatch):
    """The log lines (messages, no time stamps) of one tiny training job, progress forced each iteration."""
    monkeypatch.setattr(trainer, "PROGRESS_S", 0.0)
    handler = logging.FileHandler(tmp_path / "run.log")
    handler.setFormatter(logging.Formatter("%(name)s - %(message)s"))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        cfg = compose_config(["detector=yolov1_cpu", *TINY_RUN, "dataset.train.num_images=8", "train.val_every=2",
                              "stages=[train,eval]", "eval.bootstrap=0"])
        metrics = run(cfg, tmp_path / "job")
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        handler.close()
    assert metrics["status"] == "ok", metrics.get("error")
    return (tmp_path / "run.log").read_text().splitlines(), metrics


def test_a_jobs_log_says_each_fact_once_and_ap_in_percent(job_log):
    lines, metrics = job_log
    repeated = {line: n for line, n in Counter(lines).items() if n > 1}
    assert not repeated, repeated
    final = [line for line in lines if "in % like the report" in line]
    assert len(final) == 1 and f"AP {100 * metrics['map']:.1f}%" in final[0]
    for line in lines:   # any AP printed is a percentage, never a fraction like "AP 0.123"
        for value in re.findall(r"\bAP(?:50)? (-?[0-9.]+)", line):
            assert re.search(rf"\bAP(?:50)? {re.escape(value)}%", line), line
    validations = [line for line in lines if "validation at iteration" in line]
    assert validations and all(re.search(r"epoch \d+ of \d+\): AP [0-9.]+%, AP50 [0-9.]+%", v) for v in validations)


def test_progress_lines_while_training_without_a_bar(job_log):
    lines, metrics = job_log
    progress = [line for line in lines if re.search(r"training: iteration \d+ of \d+ \(epoch", line)]
    assert len(progress) == metrics["train_iterations"], "PROGRESS_S=0: one line per iteration"
    assert trainer.PROGRESS_S < 30, "lines at most PROGRESS_S plus one iteration apart: under 30 s"


def _help(*command: str) -> str:
    env = {**os.environ, "FORCE_COLOR": "1", "TERM": "xterm-256color"}
    done = subprocess.run([sys.executable, *command, "--help"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_detbench_help_starts_with_what_it_does_and_the_main_commands():
    text = _help("-m", "experiments.run")
    assert text.startswith("detbench: trains, scores and times SSD, YOLO v1 and Faster R-CNN")
    commands = text.index("Main commands:")
    for command in ("detbench experiment=compare", "detbench-report RUNS_DIR", "detbench-predict"):
        assert commands < text.index(command) < text.index("== Configuration groups ==")


def test_detbench_report_help_is_plain_text():
    text = _help("-m", "analysis.report")
    assert "\x1b[" not in text and text.startswith("usage: detbench-report")
    assert "report.html" in text


def test_the_help_header_lives_in_the_config_once():
    header = OmegaConf.load(ROOT / "conf" / "config.yaml").hydra.help.header
    assert header.count("Main commands:") == 1
