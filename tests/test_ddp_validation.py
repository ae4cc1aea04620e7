"""Validation during training under torchrun: every rank takes part in predict's collective
gather (only rank 0 calling it hung), with BatchNorm in the model; SyncBatchNorm's settings."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from experiments.training.trainer import batch_norm_mode
from tests.conftest import TINY_RUN

ROOT = Path(__file__).resolve().parents[1]
DDP_VAL_RUN = ["detector=yolov1_cpu", *TINY_RUN, "detector.model.batch_norm=true",
               "dataset.train.num_images=8", "dataset.val.num_images=6", "train.epochs=2",
               "train.batch_size=2", "train.val_every=1", "train.val_images=5", "stages=[train,eval]"]


def test_two_ranks_validate_every_epoch_with_batch_norm(tmp_path):
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
               "--master_port=29541", "-m", "experiments.run", *DDP_VAL_RUN,
               f"hydra.run.dir={tmp_path}"]
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired as error:
        pytest.fail(f"2-rank training with val_every=1 hung: {error}")
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["status"] == "ok", metrics.get("error")
    assert metrics["batch_norm"] == "per rank"          # CPU: torch's SyncBatchNorm needs CUDA
    assert metrics["train_iterations"] == metrics["train_iterations_planned"] == 4   # 2 x 8/(2x2)
    with open(tmp_path / "val_log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2], "one validation row per epoch, rank 0 only"
    assert all(0 <= float(r["map_50"]) <= 1 for r in rows)


def _bn_model():
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))


def test_batch_norm_mode_per_setting():
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    assert batch_norm_mode(nn.Conv2d(3, 4, 3), True, cpu, "auto") == "none"
    assert batch_norm_mode(_bn_model(), False, cpu, True) == "single process"
    assert batch_norm_mode(_bn_model(), True, cuda, "auto") == "synchronised"
    assert batch_norm_mode(_bn_model(), True, cuda, False) == "per rank"
    assert batch_norm_mode(_bn_model(), True, cpu, "auto") == "per rank"
    with pytest.raises(ValueError, match="needs CUDA"):
        batch_norm_mode(_bn_model(), True, cpu, True)
    with pytest.raises(ValueError, match="sync_batch_norm"):
        batch_norm_mode(_bn_model(), True, cpu, "yes")
