"""Sweeps and launchers through the real `detbench` command: a failing job, submitit, DDP."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

from tests.conftest import TINY_RUN

ROOT = Path(__file__).resolve().parents[1]


def detbench(*args: str, launcher: list[str] | None = None, timeout: int = 600):
    command = [*(launcher or [sys.executable, "-m"]), "experiments.run", *args]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    return done


def job_metrics(sweep_dir: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sweep_dir.glob("*/metrics.json")}


def test_sweep_with_a_failing_job_still_reports_the_others(tmp_path):
    done = detbench("-m", "detector=yolov1_cpu", *TINY_RUN, "stages=[train,eval]",
                    "detector.model.width=0.0625,not_a_width,-1", f"hydra.sweep.dir={tmp_path}")
    assert done.returncode == 1, done.stderr[-3000:]   # issue 28: a failed job fails the sweep
    assert "2 of 3 job(s)" in done.stderr and f"resume={tmp_path}" in done.stderr
    jobs = job_metrics(tmp_path)
    assert sorted(m["status"] for m in jobs.values()) == ["failed", "failed", "ok"], jobs
    wrong_type, negative = (next(m for m in jobs.values() if f"width={w}" in " ".join(m["overrides"]))
                            for w in ("not_a_width", "-1"))
    assert "detector.model.width=not_a_width: must be a number > 0" in wrong_type["error"]   # pre-flight
    assert negative["status"] == "failed" and "params" not in negative, "failed in pre-flight"
    assert "detector.model.width=-1: must be a number > 0" in negative["error"]
    report = (tmp_path / "report" / "report.md").read_text()
    assert "failed" in report and "yolov1_cpu" in report
    assert "report:" in done.stdout


def test_submitit_local_launcher_runs_a_two_job_sweep(tmp_path):
    done = detbench("-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10",
                    "detector=yolov1_cpu", *TINY_RUN, "stages=[train,eval]", "seed=0,1",
                    f"hydra.sweep.dir={tmp_path}")
    assert done.returncode == 0, done.stderr[-3000:]
    jobs = job_metrics(tmp_path)
    assert len(jobs) == 2 and all(m["status"] == "ok" for m in jobs.values()), jobs
    assert sorted(m["seed"] for m in jobs.values()) == [0, 1]


DDP_RUN = ["detector=yolov1_cpu", "detector.model.dropout=0.0", "detector.model.batch_norm=false",
           *TINY_RUN, "dataset.train.num_images=8", "train.epochs=1", "train.shuffle=false",
           "train.grad_clip=0", "stages=[train,eval]", "deterministic=true",
           # SGD: Adam's g / sqrt(v) turns float round-off in near-zero gradients into full steps
           "train.optimizer._target_=torch.optim.SGD", "train.optimizer.lr=0.01"]


def test_two_process_ddp_matches_one_process_with_the_combined_batch(tmp_path):
    single = detbench(*DDP_RUN, "train.batch_size=4", f"hydra.run.dir={tmp_path / 'single'}")
    assert single.returncode == 0, single.stderr[-3000:]
    ddp = detbench(*DDP_RUN, "train.batch_size=2", f"hydra.run.dir={tmp_path / 'ddp'}",
                   launcher=[sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                             "--master_port=29533", "-m"])
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    one = torch.load(tmp_path / "single/checkpoints/last.pt", weights_only=True)
    two = torch.load(tmp_path / "ddp/checkpoints/last.pt", weights_only=True)
    assert one["iteration"] == two["iteration"] == 2
    for key in one["model"]:
        torch.testing.assert_close(one["model"][key], two["model"][key], rtol=0, atol=1e-5, msg=key)
    metrics = json.loads((tmp_path / "ddp/metrics.json").read_text())
    assert metrics["status"] == "ok" and "map_50" in metrics, metrics
    evaluated = json.loads((tmp_path / "ddp/ground_truth.json").read_text())
    assert len(evaluated["images"]) == 4, "rank 0 scored every validation image exactly once"
