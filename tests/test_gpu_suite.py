"""benchmarks/gpu_suite.sh in its CPU dry-run mode, so that the script is run before a GPU is lent."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_suite.sh"


def dry_run(out: Path, skip: str) -> str:
    env = {**os.environ, "GPU_SUITE_OUT": str(out), "GPU_SUITE_SKIP": skip, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(["bash", str(SCRIPT), "--dry-run"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    return (out / "suite.log").read_text()


def torch_cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def test_script_parses():
    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True).returncode == 0


def test_dry_run_speed_table_and_largest_batch(tmp_path):
    log = dry_run(tmp_path, skip="speed_table_compiled compare")
    for step in ("speed_table", "ssd300_largest_batch"):
        assert f"step {step}: exit 0" in log, log
    assert "step compare: skipped" in log and "step ddp: skipped" in log
    tensorrt = [line for line in log.splitlines() if "step tensorrt:" in line]
    assert len(tensorrt) == 1 and "step tensorrt: skipped (dry run on the CPU; TensorRT check: " in tensorrt[0], log
    assert ("no CUDA device visible" in tensorrt[0]) != torch_cuda_available(), tensorrt[0]
    assert not (tmp_path / "speed_table_cuda_runtimes.md").exists()
    table = (tmp_path / "speed_table_cpu.md").read_text()
    for detector in ("ssd300", "yolov1"):
        for mode in ("fp32", "bf16"):
            assert sum(line.startswith(f"| {detector} ") and f"| {mode} " in line for line in table.splitlines()) == 2
    assert "Reduced models" in table and "partial" not in table
    largest = json.loads((tmp_path / "ssd300_largest_batch.json").read_text())
    assert largest["batch"] == 4 and largest["fps_b4"] > 0 and largest["num_candidates"] == 8732


@pytest.mark.slow
def test_full_dry_run_with_compile_and_compare(tmp_path):
    log = dry_run(tmp_path, skip="")
    for step in ("speed_table", "speed_table_compiled", "ssd300_largest_batch", "compare"):
        assert f"step {step}: exit 0" in log, log
    assert "| bf16-compile " in (tmp_path / "speed_table_cpu_compiled.md").read_text()
    assert "ssd300_cpu: status ok" in (tmp_path / "compare.txt").read_text()
