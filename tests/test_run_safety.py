"""Runs that never lose results (issue 21): pre-flight, interrupts, resume and rerun rules,
root-cause errors. In-process through ``run(cfg, folder)``; the CLI cases are in
tests/test_run_signals.py."""
from __future__ import annotations

import json
import os
import signal

import pytest
import torch

from experiments.run import run
from tests.conftest import TINY_RUN

TRAIN = ["detector=yolov1_cpu", *TINY_RUN, "stages=[train]"]
TRAIN_EVAL = ["detector=yolov1_cpu", *TINY_RUN, "stages=[train,eval]"]


def _finished(compose_config, folder, overrides=TRAIN_EVAL):
    metrics = run(compose_config(overrides), folder)
    assert metrics["status"] == "ok", metrics.get("error")
    return (folder / "metrics.json").read_bytes()


# -- resume and rerun ------------------------------------------------------------------------
def test_resume_of_a_finished_run_says_so_and_changes_nothing(compose_config, tmp_path):
    before = _finished(compose_config, tmp_path)
    log_before = (tmp_path / "train_log.csv").read_bytes()
    (tmp_path / "checkpoints/last.pt").write_bytes(b"corrupt")
    metrics = run(compose_config([*TRAIN_EVAL, "resume=true"]), tmp_path)
    assert metrics["status"] == "finished" and "nothing was changed" in metrics["error"]
    assert (tmp_path / "metrics.json").read_bytes() == before
    assert (tmp_path / "train_log.csv").read_bytes() == log_before
    assert not (tmp_path / "resume_error.txt").exists() and not (tmp_path / "error.txt").exists()


def test_a_failed_resume_never_overwrites_a_finished_run(compose_config, tmp_path):
    before = _finished(compose_config, tmp_path)
    (tmp_path / "checkpoints/last.pt").write_bytes(b"corrupt")
    metrics = run(compose_config([*TRAIN_EVAL, "train.epochs=2", "resume=true"]), tmp_path)
    assert metrics["status"] == "failed" and "corrupt" in metrics["error"]
    assert (tmp_path / "metrics.json").read_bytes() == before, "the finished results are kept"
    assert "corrupt" in (tmp_path / "resume_error.txt").read_text()
    assert not (tmp_path / "error.txt").exists()


def test_resume_that_only_adds_a_stage_keeps_the_final_loss(compose_config, tmp_path):
    first = json.loads(_finished(compose_config, tmp_path, TRAIN))
    metrics = run(compose_config([*TRAIN_EVAL, "resume=true"]), tmp_path)
    assert metrics["status"] == "ok", metrics.get("error")
    assert metrics["final_loss"] == pytest.approx(first["final_loss"]) and "map" in metrics
    assert metrics["train_iterations"] == first["train_iterations"] == 2


def test_rerun_into_a_previous_run_is_refused_and_overwrite_clears_it(compose_config, tmp_path):
    (tmp_path / ".hydra").mkdir()   # Hydra's own files never count as a previous run
    assert run(compose_config(TRAIN), tmp_path)["status"] == "ok"
    (tmp_path / "error.txt").write_text("a stale error of an earlier attempt")
    log_before = (tmp_path / "train_log.csv").read_bytes()
    refused = run(compose_config(TRAIN), tmp_path)
    assert refused["status"] == "refused"
    assert "resume=true" in refused["error"] and "overwrite=true" in refused["error"]
    assert (tmp_path / "train_log.csv").read_bytes() == log_before
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "ok"
    again = run(compose_config([*TRAIN, "overwrite=true"]), tmp_path)
    assert again["status"] == "ok", again.get("error")
    rows = (tmp_path / "train_log.csv").read_text().strip().splitlines()
    assert [r.split(",")[0] for r in rows] == ["iteration", "1", "2"], "no rows of the old run"
    assert not (tmp_path / "error.txt").exists() and (tmp_path / ".hydra").is_dir()


# -- pre-flight -----------------------------------------------------------------------------
@pytest.mark.parametrize("override, message", [
    ("detector.model.width=-1", "detector.model.width=-1: must be a number > 0"),
    ("detector.model.width=0", "detector.model.width=0"),
    ("train.optimizer.lr=0", "train.optimizer.lr=0"),
    ("train.epochs=0", "train.epochs=0"),
    ("stages=[]", "stages: empty"),
    ("stages=[train,evaluate]", "stages: unknown ['evaluate']"),
])
def test_bad_settings_fail_before_anything_is_built(compose_config, tmp_path, override, message):
    metrics = run(compose_config([*TRAIN, override]), tmp_path)
    assert metrics["status"] == "failed" and message in metrics["error"], metrics["error"]
    assert "params" not in metrics and not (tmp_path / "train_log.csv").exists()


def test_batch_size_one_with_batch_norm_is_refused_or_frozen(compose_config, tmp_path):
    refused = run(compose_config([*TRAIN, "train.batch_size=1"]), tmp_path / "a")
    assert refused["status"] == "failed" and "train.freeze_batch_norm=true" in refused["error"]
    assert not (tmp_path / "a/train_log.csv").exists()
    frozen = run(compose_config([*TRAIN, "train.batch_size=1", "train.freeze_batch_norm=true"]),
                 tmp_path / "b")
    assert frozen["status"] == "ok", frozen.get("error")
    assert frozen["train_iterations"] == 4
    state = torch.load(tmp_path / "b/checkpoints/last.pt", weights_only=True)["model"]
    means = [v for k, v in state.items() if k.endswith("running_mean")]
    assert means and all(torch.equal(m, torch.zeros_like(m)) for m in means), "stats never updated"


def test_unwritable_checkpoint_folder_fails_before_training(compose_config, tmp_path):
    (tmp_path / "checkpoints").write_text("a file where the folder should be")
    metrics = run(compose_config(TRAIN), tmp_path / "")
    assert metrics["status"] == "failed" and "checkpoints is not writable" in metrics["error"]
    assert not (tmp_path / "train_log.csv").exists()


def _yolo_set(root, corrupt_val: int | None):
    from experiments.data.synthetic import SyntheticShapes
    from experiments.data.writers import write_yolo_txt

    for split, n in (("train", 4), ("val", 3)):
        data = SyntheticShapes(num_images=n, image_size=64, seed=0, split=split)
        write_yolo_txt(root, [data[i] for i in range(n)], data.class_names, split=split)
    if corrupt_val is not None:
        path = sorted((root / "images" / "val").iterdir())[corrupt_val]
        path.write_bytes(path.read_bytes()[:120])   # the header survives, the pixels do not
        return path


def test_corrupt_validation_image_fails_before_training(compose_config, tmp_path):
    bad = _yolo_set(tmp_path / "data", corrupt_val=1)
    overrides = ["detector=yolov1_cpu", "device=cpu", "dataset=yolo_txt",
                 f"dataset.root={tmp_path / 'data'}", "train.epochs=1", "train.batch_size=2",
                 "stages=[train,eval]", "train.augmentation=none"]
    metrics = run(compose_config(overrides), tmp_path / "run")
    assert metrics["status"] == "failed" and str(bad) in metrics["error"], metrics["error"]
    assert "before training" in metrics["error"]
    assert not (tmp_path / "run/train_log.csv").exists()


# -- interrupts (a real signal to this process) ------------------------------------------------
SIGNAL_RUN = ["detector=yolov1_cpu", *TINY_RUN, "dataset.train.num_images=12", "train.epochs=2",
              "stages=[train]", "deterministic=true", "train.shuffle=true"]


def _signal_at(monkeypatch, iteration: int, signum: int):
    from experiments.training import trainer as train_module

    original = train_module.Trainer.step

    def step(self, images, targets):
        losses = original(self, images, targets)
        if self.iteration + 1 == iteration:
            os.kill(os.getpid(), signum)
        return losses

    monkeypatch.setattr(train_module.Trainer, "step", step)
    return lambda: monkeypatch.setattr(train_module.Trainer, "step", original)


def test_sigterm_mid_epoch_checkpoints_and_resumes_bit_exact(compose_config, tmp_path, monkeypatch):
    straight = run(compose_config(SIGNAL_RUN), tmp_path / "straight")
    assert straight["status"] == "ok" and straight["train_iterations"] == 12
    undo = _signal_at(monkeypatch, 4, signal.SIGTERM)
    cut = run(compose_config(SIGNAL_RUN), tmp_path / "cut")
    undo()
    assert cut["status"] == "interrupted" and cut["exit_code"] == 143
    assert cut["interrupted_iteration"] == 4 and cut["interrupt_signal"] == "SIGTERM"
    on_disk = json.loads((tmp_path / "cut/metrics.json").read_text())
    assert on_disk["status"] == "interrupted" and "resume=true" in on_disk["resume_command"]
    assert torch.load(tmp_path / "cut/checkpoints/last.pt", weights_only=True)["iteration"] == 4
    resumed = run(compose_config([*SIGNAL_RUN, "resume=true"]), tmp_path / "cut")
    assert resumed["status"] == "ok", resumed.get("error")
    a = torch.load(tmp_path / "straight/checkpoints/last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "cut/checkpoints/last.pt", weights_only=True)["model"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    assert resumed["final_loss"] == straight["final_loss"]


def test_ctrl_c_before_training_says_to_start_over(compose_config, tmp_path, monkeypatch, sigint_raises):
    from experiments import run as run_module

    original = run_module.build_train_set

    def build_then_ctrl_c(*args):
        os.kill(os.getpid(), signal.SIGINT)   # outside the training loop: stops at once
        return original(*args)

    monkeypatch.setattr(run_module, "build_train_set", build_then_ctrl_c)
    cut = run(compose_config(TRAIN), tmp_path)
    assert cut["status"] == "interrupted" and cut["exit_code"] == 130
    assert cut["interrupted_iteration"] is None and "overwrite=true" in cut["resume_command"]
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "interrupted"


def test_submitit_preemption_takes_the_same_path_then_hands_over(compose_config, tmp_path,
                                                                 monkeypatch):
    calls = []
    previous = signal.signal(signal.SIGUSR2, lambda signum, frame: calls.append(signum))
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    monkeypatch.setenv("SUBMITIT_PREEMPT_SIGNAL", "USR2")
    try:
        undo = _signal_at(monkeypatch, 3, signal.SIGUSR2)
        cut = run(compose_config(SIGNAL_RUN), tmp_path)
        undo()
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert cut["status"] == "interrupted" and cut["interrupted_iteration"] == 3
    assert calls == [signal.SIGUSR2], "submitit's handler (checkpoint + requeue) ran once, after"
    assert torch.load(tmp_path / "checkpoints/last.pt", weights_only=True)["iteration"] == 3


def test_requeued_submitit_job_resumes():
    from hydra_plugins.detbench_launchers.resuming_submitit import ResumingSlurmLauncher

    launcher = object.__new__(ResumingSlurmLauncher)
    delayed = launcher.checkpoint(["detector=ssd300", "overwrite=true", "seed=1"], "key", 3, "id", {})
    assert delayed.function is launcher
    assert delayed.args[0] == ["detector=ssd300", "seed=1", "resume=true"] and delayed.args[2] == 3


# -- errors --------------------------------------------------------------------------------
def test_error_is_the_root_cause_through_hydra_instantiation(compose_config, tmp_path):
    metrics = run(compose_config([*TRAIN, "detector.model.width=not_a_width"]), tmp_path)
    assert metrics["status"] == "failed"
    assert metrics["error"].startswith("TypeError: "), metrics["error"]
    assert "InstantiationException" in metrics["error"] and "detectors.yolo.YOLO" in metrics["error"]
    assert "\n" not in metrics["error"]


def test_report_summary_of_an_old_wrapped_error_keeps_the_cause():
    from analysis.runs import error_summary

    old = "Error in call to target 'detectors.yolo.YOLO':\nTypeError(\"bad width\")\nfull_key: detector.model"
    assert "TypeError" in error_summary(old) and "detectors.yolo.YOLO" in error_summary(old)
