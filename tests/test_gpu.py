"""The CUDA paths (`pytest -m gpu`; skipped without a CUDA device): NMS on the GPU, bf16
autocast, a training step, and DDP over NCCL with SyncBatchNorm when two GPUs are visible."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from detectors.ssd import SSD
from experiments.run import run
from experiments.speed.benchmark import benchmark
from tests.conftest import TINY_RUN

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
CUDA_RUN = [o for o in TINY_RUN if not o.startswith("device=")] + ["device=cuda"]


def _ssd():
    torch.manual_seed(0)
    return SSD(num_classes=3, width=0.125, batch_norm=True).eval()


def test_ssd_nms_on_cuda_gives_the_cpu_detections():
    model = _ssd()
    torch.manual_seed(1)
    images = [torch.rand(3, 300, 300) for _ in range(2)]
    with torch.inference_mode():
        on_cpu = model(images)
        on_gpu = model.cuda()([im.cuda() for im in images])
    for a, b in zip(on_cpu, on_gpu):
        assert b["boxes"].is_cuda
        n = min(len(a["scores"]), len(b["scores"]), 50)
        torch.testing.assert_close(a["scores"][:n], b["scores"][:n].cpu(), atol=1e-3, rtol=1e-3)
        torch.testing.assert_close(a["boxes"][:n], b["boxes"][:n].cpu(), atol=0.05, rtol=1e-3)


def test_bf16_autocast_on_cuda_hands_fp32_to_postprocess():
    metrics = benchmark(_ssd(), batch_sizes=(1, 2), warmup=1, iterations=2, device="cuda",
                        dtype="bf16")
    assert metrics["bench_dtype"] == "bf16" and metrics["bench_device_type"] == "cuda"
    assert metrics["candidates_scored_b1"] == 8732 and metrics["peak_memory_kind"]


@pytest.mark.parametrize("detector", ["ssd300_cpu", "yolov1_cpu", "faster_rcnn_vgg16_cpu"])
def test_training_step_and_eval_on_cuda(compose_config, tmp_path, detector):
    metrics = run(compose_config([f"detector={detector}", *CUDA_RUN, "train.precision=fp16"]), tmp_path)
    assert metrics["status"] == "ok", metrics.get("error")
    assert metrics["train_iterations"] == metrics["train_iterations_planned"] == 2
    assert torch.cuda.get_device_name(0) in metrics["device"]


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_ddp_over_nccl_with_sync_batch_norm_and_validation(tmp_path):
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
               "--master_port=29547", "-m", "experiments.run", "detector=yolov1_cpu", *CUDA_RUN,
               "dataset.train.num_images=8", "train.epochs=2", "train.val_every=1",
               "train.sync_batch_norm=true", "stages=[train,eval]", f"hydra.run.dir={tmp_path}"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["status"] == "ok" and metrics["batch_norm"] == "synchronised"
    assert len((tmp_path / "val_log.csv").read_text().strip().splitlines()) == 1 + 2
