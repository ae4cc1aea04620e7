"""Issue 28, sweeps a user can steer: a failed job makes the sweep exit non-zero (the report still
written), ``detbench resume=SWEEP_DIR`` is the sweep's own command resumed in place, compare's lr
drops are fractions of train.iterations, and settings pre-flight catches what trained wrong."""
from __future__ import annotations

import json

import pytest
import torch
from omegaconf import OmegaConf

from experiments.job.callbacks import ReportOnMultirunEnd
from experiments.job.preflight import PreflightError, check_settings
from experiments.job.sweep import sweep_resume_argv


def _job(folder, status: str, error=None):
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "config.yaml").write_text("seed: 0\ndetector: {name: yolov1_cpu}\n")
    (folder / "metrics.json").write_text(json.dumps({"status": status, "error": error, "seed": 0,
                                                     "detector": "yolov1_cpu", "dataset": "synthetic"}))


def test_a_sweep_with_a_failed_job_exits_non_zero_after_writing_its_report(tmp_path, capsys):
    _job(tmp_path / "0-yolov1_cpu-seed0", "ok")
    _job(tmp_path / "1-yolov1_cpu-seed1", "failed", "RuntimeError: out of memory")
    (tmp_path / ".submitit" / "1234").mkdir(parents=True)   # a launcher's own folder: not a job
    (tmp_path / "bench_reuse").mkdir()   # compare's shared speed timings: not a job either
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}, "sweep_stages": []})
    with pytest.raises(SystemExit) as stop:
        ReportOnMultirunEnd().on_multirun_end(config)
    assert stop.value.code == 1
    printed = capsys.readouterr()
    assert "1 of 2 job(s)" in printed.err and "out of memory" in printed.err and f"resume={tmp_path}" in printed.err
    assert (tmp_path / "report").is_dir()
    # the sweep's last line names report.html by its absolute path, after the failure message
    assert printed.out.strip().splitlines()[-1] == f"report: {(tmp_path / 'report' / 'report.html').resolve()}"


def test_resume_of_a_sweep_dir_is_the_sweeps_own_command_in_place(tmp_path):
    OmegaConf.save(OmegaConf.create({"hydra": {"overrides": {
        "hydra": ["hydra.mode=MULTIRUN", "hydra/launcher=basic"],
        "task": ["experiment=compare", "detector=ssd300_cpu,yolov1_cpu", "overwrite=false"]}}}),
        tmp_path / "multirun.yaml")
    argv = sweep_resume_argv([f"resume={tmp_path}", "device=cpu"])
    assert argv == ["hydra/launcher=basic", "experiment=compare", "detector=ssd300_cpu,yolov1_cpu",
                    "device=cpu", f"hydra.sweep.dir={tmp_path.resolve()}", "resume=true", "--multirun"]
    assert sweep_resume_argv(["resume=true", "seed=1"]) == ["resume=true", "seed=1"]


def test_compares_lr_drop_follows_the_training_budget(compose_config):
    """compare's drop sits at 80% of whatever budget is asked (issue 30's train.budget is the one
    home of the training length): 30 iterations drop at 24, never at a fixed iteration 120."""
    from hydra.utils import instantiate

    cfg = compose_config(["experiment=compare", "detector=yolov1_cpu", "train.budget.value=30"])
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    scheduler = instantiate(cfg.train.scheduler).build(optimizer, 30)
    rates = []
    for _ in range(30):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates[23] == pytest.approx(rates[0]) and rates[24] == pytest.approx(0.1 * rates[0])   # drop at 80% of 30


@pytest.mark.parametrize("overrides, message", [
    (["train.iterations=30", "+train.scheduler={_target_: torch.optim.lr_scheduler.MultiStepLR, "
      "_partial_: true, milestones: [120], gamma: 0.1}"], r"milestones=\[120\]: past the end of train.iterations=30"),
    (["detector.model.width=abc"], r"detector.model.width=abc: must be a number > 0"),
])
def test_settings_that_would_train_wrong_are_refused_in_preflight(compose_config, overrides, message):
    with pytest.raises(PreflightError, match=message):
        check_settings(compose_config(["detector=yolov1_cpu", *overrides]))


@pytest.mark.slow
def test_detbench_resume_sweep_dir_finishes_what_is_unfinished_in_place(tmp_path):
    import shutil
    import subprocess
    import sys

    from tests.conftest import TINY_RUN

    sweep = tmp_path / "sweep"
    python = [sys.executable, "-m", "experiments.run"]
    first = subprocess.run([*python, "-m", "detector=yolov1_cpu", *TINY_RUN, "stages=[train]", "seed=0,1",
                            f"hydra.sweep.dir={sweep}"], capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    done, lost = sorted(p for p in sweep.iterdir() if p.name[0].isdigit())
    kept = (done / "metrics.json").read_bytes()
    (lost / "metrics.json").unlink()
    shutil.rmtree(lost / "checkpoints")
    (lost / "train_log.csv").unlink()          # a job that never got going
    again = subprocess.run([*python, f"resume={sweep}"], capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (done / "metrics.json").read_bytes() == kept, "a finished job is left as it was"
    assert json.loads((lost / "metrics.json").read_text())["status"] == "ok"
    assert sorted(p.name for p in sweep.iterdir() if p.name[0].isdigit()) == [done.name, lost.name]
