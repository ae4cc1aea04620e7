"""`detbench experiment=compare` end to end on a cut-down budget (`pytest -m slow`): three
detectors train to their planned iterations, are evaluated and benchmarked, and the sweep's
report lists their provenance and the paper-vs-detbench table."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: experiment=compare cut down: 32 training images, 4 iterations of batch 8 (train.budget, the one
#: home of the training length), 8 validation and 8 test images
TINY_COMPARE = [sys.executable, "-m", "experiments.run", "experiment=compare", "dataset.train.num_images=32",
                "dataset.val.num_images=8", "dataset.test.num_images=8", "dataset.image_size=128",
                "train.budget.value=4", "train.batch_size=8", "train.val_images=8", "eval.batch_size=4"]


@pytest.mark.slow
def test_compare_sweep_end_to_end(tmp_path):
    command = [*TINY_COMPARE, "bench.batch_sizes=[1]", "bench.iterations=1", "bench.warmup=0",
               f"hydra.sweep.dir={tmp_path}"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stderr[-3000:]
    jobs = {p.parent.name: json.loads(p.read_text()) for p in tmp_path.glob("*/metrics.json")}
    assert sorted(m["detector"] for m in jobs.values()) == ["faster_rcnn_vgg16_cpu", "ssd300_cpu", "yolov1_cpu"]
    for metrics in jobs.values():
        assert metrics["status"] == "ok", metrics.get("error")
        assert metrics["train_iterations"] == metrics["train_iterations_planned"] == 4
        assert 0 <= metrics["map_50"] <= 1 and metrics["fps_b1"] > 0
        assert metrics["weights_source"] == "random" and metrics["candidates_scored_b1"] > 0
    report = (tmp_path / "report" / "report.md").read_text()
    assert "## Appendix: Provenance" in report and "4 / 4" in report
    # the appendix shows paper settings only for the report's own detectors: the *_cpu variants have none
    assert "Paper setting vs detbench" not in report


@pytest.mark.slow
def test_a_tiny_compare_twice_gives_identical_ap_floats(tmp_path):
    """The same command, the same commit: every detector's AP floats agree to the last bit
    (the refactors of the runner must not move a number)."""
    results = []
    for name in ("first", "second"):
        command = [*TINY_COMPARE, "eval.bootstrap=0", "stages=[train,eval]", f"hydra.sweep.dir={tmp_path / name}"]
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=1500)
        assert done.returncode == 0, done.stderr[-3000:]
        metrics = [json.loads(p.read_text()) for p in sorted((tmp_path / name).glob("*/metrics.json"))]
        assert len(metrics) == 3 and all(m["status"] == "ok" for m in metrics)
        results.append({m["detector"]: (m["map"], m["map_50"], m["final_loss"]) for m in metrics})
    assert results[0] == results[1]
