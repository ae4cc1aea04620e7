"""The runner: run(cfg) end to end, resume, NaN stop, bad input."""
from __future__ import annotations

import json

import pytest
import torch

from experiments.run import run
from tests.conftest import TINY_RUN

COMPARE_DETECTORS = ["ssd300_cpu", "yolov1_cpu", "faster_rcnn_vgg16_cpu"]
EVAL_KEYS = ["map", "map_50", "map_75", "map_small", "map_medium", "map_large", "mar_1",
             "mar_10", "mar_100", "mar_small", "mar_medium", "mar_large", "voc07_map", "voc_map"]
RUN_FILES = ["metrics.json", "detections.json", "ground_truth.json", "per_class.csv",
             "pr_curves.npz", "bootstrap.npz", "train_log.csv", "checkpoints/last.pt", "samples"]


@pytest.mark.parametrize("detector", COMPARE_DETECTORS)
def test_run_writes_a_complete_run_folder(compose_config, tmp_path, detector):
    cfg = compose_config([f"detector={detector}", *TINY_RUN])
    metrics = run(cfg, tmp_path)
    assert metrics["status"] == "ok", metrics.get("error")
    for name in RUN_FILES:
        assert (tmp_path / name).exists(), name
    assert any((tmp_path / "tensorboard").iterdir())
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    for key in [*EVAL_KEYS, "detector", "dataset", "seed", "git_commit", "device", "params",
                "num_candidates", "train_time_s", "fps_b1", "latency_ms_p50_b1", "gmacs",
                "torch_version", "coverage", "coverage_small", "coverage_medium", "coverage_large",
                "family", "input_h", "max_detections"]:
        assert key in on_disk, key
    assert (tmp_path / "coverage.json").is_file() and 0 < on_disk["coverage"] <= 1
    assert on_disk["detector"] == detector and on_disk["dataset"] == "synthetic"
    assert 0 <= on_disk["map_50"] <= 1 and on_disk["fps_b1"] > 0
    # debiased (the default) moves the interval down by AP's own bias: it may lie below the point
    assert on_disk["map_50_ci_low"] <= min(on_disk["map_50"], on_disk["map_50_ci_high"])
    assert on_disk["bootstrap_replicates"] == 10000 and on_disk["interval_method"] == "debiased"
    assert on_disk["eval_split"] == "val" and on_disk["schema_version"] == 2   # synthetic: no test split
    expected_candidates = {"ssd300_cpu": 8732, "yolov1_cpu": 98, "faster_rcnn_vgg16_cpu": 300}
    assert on_disk["num_candidates"] == expected_candidates[detector]


def _weights(path):
    return torch.load(path, weights_only=True)["model"]


RESUME_RUN = ["detector=yolov1_cpu", "detector.model.dropout=0.0", *TINY_RUN,
              "dataset.train.num_images=8", "train.batch_size=4", "train.epochs=3",
              "stages=[train]", "deterministic=true", "train.augmentation=yolo"]


def test_interrupted_run_resumes_to_the_same_weights(compose_config, tmp_path, monkeypatch):
    straight = run(compose_config(RESUME_RUN), tmp_path / "straight")
    assert straight["status"] == "ok", straight.get("error")

    from experiments.training import trainer as train_module

    original_save, calls = train_module.Trainer.save, []

    def save_then_die(self):
        original_save(self)
        calls.append(self.epoch)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed after epoch 2's checkpoint")

    monkeypatch.setattr(train_module.Trainer, "save", save_then_die)
    cut = run(compose_config(RESUME_RUN), tmp_path / "cut")
    assert cut["status"] == "interrupted" and "resume=true" in cut["resume_command"]
    monkeypatch.setattr(train_module.Trainer, "save", original_save)
    assert _weights(tmp_path / "cut/checkpoints/last.pt") and calls == [1, 2]

    resumed = run(compose_config([*RESUME_RUN, "resume=true"]), tmp_path / "cut")
    assert resumed["status"] == "ok", resumed.get("error")
    assert resumed["train_iterations"] == straight["train_iterations"] == 6
    a, b = _weights(tmp_path / "straight/checkpoints/last.pt"), _weights(tmp_path / "cut/checkpoints/last.pt")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    log_rows = (tmp_path / "cut/train_log.csv").read_text().strip().splitlines()
    assert len(log_rows) == 1 + 6, "one header and one row per iteration, no duplicates"


def test_nan_loss_stops_cleanly_and_keeps_the_last_checkpoint(compose_config, tmp_path, monkeypatch):
    from detectors.yolo import YOLO as YOLOv1

    original_loss, seen = YOLOv1.loss, []

    def loss_turning_nan(self, outputs, batch):
        losses = original_loss(self, outputs, batch)
        seen.append(1)
        if len(seen) == 4:   # the first call is the training-cost probe (experiments.training.train_cost)
            losses = {k: v * float("nan") for k, v in losses.items()}
        return losses

    monkeypatch.setattr(YOLOv1, "loss", loss_turning_nan)
    cfg = compose_config(["detector=yolov1_cpu", *TINY_RUN, "train.epochs=3", "stages=[train]"])
    metrics = run(cfg, tmp_path)
    assert metrics["status"] == "failed"
    assert "NonFiniteLossError" in metrics["error"] and "iteration 3" in metrics["error"]
    state = torch.load(tmp_path / "checkpoints/last.pt", weights_only=True)
    assert state["iteration"] == 2 and state["epoch"] == 1
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "failed"


def test_resume_without_a_checkpoint_says_so(compose_config, tmp_path):
    metrics = run(compose_config(["detector=yolov1_cpu", *TINY_RUN, "resume=true"]), tmp_path)
    assert metrics["status"] == "failed"
    assert "no checkpoint to resume from" in metrics["error"] and "last.pt" in metrics["error"]


def test_corrupt_checkpoint_is_an_error_naming_the_file(compose_config, tmp_path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints/last.pt").write_bytes(b"not a checkpoint at all")
    metrics = run(compose_config(["detector=yolov1_cpu", *TINY_RUN, "resume=true"]), tmp_path)
    assert metrics["status"] == "failed"
    assert "corrupt" in metrics["error"] and str(tmp_path / "checkpoints/last.pt") in metrics["error"]


def test_wrong_type_fails_before_training(compose_config, tmp_path):
    metrics = run(compose_config(["detector=yolov1_cpu", *TINY_RUN, "train.epochs=ten"]), tmp_path)
    assert metrics["status"] == "failed" and "epochs" in metrics["error"]
    assert not (tmp_path / "train_log.csv").exists()


def test_unknown_detector_lists_the_available_ones(compose_config):
    from hydra.errors import MissingConfigException

    with pytest.raises(MissingConfigException) as info:
        compose_config(["detector=ssd9000"])
    message = str(info.value)
    assert "ssd9000" in message and "ssd300" in message and "yolov1" in message


def test_missing_dataset_root_names_the_path(compose_config, tmp_path):
    missing = tmp_path / "no_such_voc"
    cfg = compose_config(["detector=yolov1_cpu", "device=cpu", "dataset=voc",
                          f"dataset.root={missing}"])
    metrics = run(cfg, tmp_path / "out")
    assert metrics["status"] == "failed" and str(missing) in metrics["error"]
