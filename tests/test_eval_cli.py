"""save_evaluation's run-folder files, and detbench-eval re-scoring them (or any COCO files)."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from experiments.evaluation import METRICS, PER_CLASS_COLUMNS, evaluate, save_evaluation
from experiments.evaluation.eval_cli import main

ROOT = Path(__file__).resolve().parents[1]


def small_run(backend: str = "faster_coco_eval"):
    """Three images, two classes (category ids 5 and 2), a difficult and a crowd object."""
    targets = [
        {"boxes": torch.tensor([[10.0, 10, 50, 60], [100, 100, 180, 150]]), "labels": torch.tensor([1, 2]),
         "image_id": 4, "area": torch.tensor([2000.0, 4000.0]), "iscrowd": torch.tensor([0, 0]),
         "difficult": torch.tensor([False, True])},
        {"boxes": torch.tensor([[0.0, 0, 200, 200]]), "labels": torch.tensor([1]), "image_id": 9,
         "area": torch.tensor([40000.0]), "iscrowd": torch.tensor([1])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64), "image_id": 11,
         "area": torch.zeros(0), "iscrowd": torch.zeros(0, dtype=torch.int64)},
    ]
    detections = [
        {"boxes": torch.tensor([[12.0, 11, 50, 58], [101, 99, 178, 152], [5, 5, 20, 20]]),
         "scores": torch.tensor([0.9, 0.8, 0.3]), "labels": torch.tensor([1, 2, 2])},
        {"boxes": torch.tensor([[10.0, 10, 60, 60]]), "scores": torch.tensor([0.7]), "labels": torch.tensor([1])},
        {"boxes": torch.tensor([[1.0, 1, 9, 9]]), "scores": torch.tensor([0.6]), "labels": torch.tensor([2])},
    ]
    sizes = [(240, 320), (240, 320), (200, 300)]
    return evaluate(detections, targets, ["person", "bike"], sizes, {1: 5, 2: 2}, backend=backend)


def same_metrics(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        (math.isnan(a[k]) and math.isnan(b[k])) or a[k] == b[k] for k in a)


def test_save_evaluation_writes_the_run_folder_files(tmp_path):
    result = small_run()
    save_evaluation(result, tmp_path)
    results = json.loads((tmp_path / "detections.json").read_text())
    assert results[0] == {"image_id": 4, "category_id": 5, "bbox": [12.0, 11.0, 38.0, 47.0],
                          "score": pytest.approx(0.9)}
    assert {r["category_id"] for r in results} == {5, 2}
    gt = json.loads((tmp_path / "ground_truth.json").read_text())
    assert [im["id"] for im in gt["images"]] == [4, 9, 11] and gt["images"][2]["height"] == 200
    assert [a["id"] for a in gt["annotations"]] == [1, 2, 3]  # never 0: pycocotools' "unmatched"
    assert gt["annotations"][1]["difficult"] == 1 and gt["annotations"][2]["iscrowd"] == 1
    table = pd.read_csv(tmp_path / "per_class.csv")
    assert list(table.columns) == list(PER_CLASS_COLUMNS)
    assert table.class_name.tolist() == ["person", "bike"] and table.category_id.tolist() == [5, 2]
    assert table.num_gt.tolist() == [1, 1]  # the crowd region is not an object to find
    curves = np.load(tmp_path / "pr_curves.npz")
    assert curves["precision"].shape == (10, 101, 2, 4, 3) and curves["recall"].shape == (10, 2, 4, 3)
    assert curves["class_names"].tolist() == ["person", "bike"] and curves["area_names"][0] == "all"
    np.testing.assert_allclose(curves["iou_thresholds"], np.arange(0.5, 0.951, 0.05))
    assert len(curves["recall_thresholds"]) == 101


@pytest.mark.parametrize("backend", ["faster_coco_eval", "pycocotools"])
def test_detbench_eval_rescores_a_run_folder_exactly(tmp_path, capsys, backend):
    """Bit for bit with the same backend (the backends differ by ~1e-16: pycocotools divides
    by tp + fp + eps, faster-coco-eval by tp + fp)."""
    result = small_run(backend)
    save_evaluation(result, tmp_path)
    out = tmp_path / "again" / "metrics.json"
    code = main(["--gt", str(tmp_path / "ground_truth.json"), "--dt", str(tmp_path / "detections.json"),
                 "--backend", backend, "--out", str(out), "--per-class", str(tmp_path / "again.csv")])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert list(printed) == list(METRICS)
    assert same_metrics(printed, result.metrics) and same_metrics(json.loads(out.read_text()), result.metrics)
    # the VOC metric read the difficult flag back: bike's only object is difficult -> no AP
    table = pd.read_csv(tmp_path / "again.csv")
    assert math.isnan(table.set_index("class_name").loc["bike", "voc_ap"])
    assert 0 < result.metrics["map"] < 1


@pytest.mark.parametrize("edit, message", [
    (lambda gt, dt: dt[1].update(image_id=999), r"results\[1\]: image_id 999 is not in the ground truth"),
    (lambda gt, dt: dt[0].update(category_id=77), r"results\[0\]: category_id 77 is not a ground-truth category"),
    (lambda gt, dt: dt[2].update(score=2.0), r"results\[2\] has score 2.0 outside \[0, 1\]"),
    (lambda gt, dt: dt[3].update(bbox=[1, 2, -3, 4]), r"results\[3\]: bbox is inverted"),
    (lambda gt, dt: dt[3].update(bbox=[1, 2, float("nan"), 4]), r"results\[3\]: bbox has NaN"),
    (lambda gt, dt: dt[0].pop("score"), r"results\[0\]: missing 'score'"),
    (lambda gt, dt: gt["annotations"][0].update(image_id=5),
     r"annotations\[0\]: image_id 5 is not in the ground truth"),
    (lambda gt, dt: gt.pop("categories"), r"ground truth: missing 'categories'"),
])
def test_detbench_eval_names_the_bad_entry(tmp_path, capsys, edit, message):
    save_evaluation(small_run(), tmp_path)
    gt = json.loads((tmp_path / "ground_truth.json").read_text())
    dt = json.loads((tmp_path / "detections.json").read_text())
    edit(gt, dt)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dt.json").write_text(json.dumps(dt))
    assert main(["--gt", str(tmp_path / "gt.json"), "--dt", str(tmp_path / "dt.json")]) == 2
    assert pytest.importorskip("re").search(message, capsys.readouterr().err)


def test_detbench_eval_empty_results_and_missing_file(tmp_path, capsys):
    save_evaluation(small_run(), tmp_path)
    (tmp_path / "empty.json").write_text("[]")
    assert main(["--gt", str(tmp_path / "ground_truth.json"), "--dt", str(tmp_path / "empty.json")]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["map"] == 0.0 and metrics["voc07_map"] == 0.0
    assert main(["--gt", str(tmp_path / "nope.json"), "--dt", str(tmp_path / "empty.json")]) == 2
    assert "cannot read the ground-truth file" in capsys.readouterr().err


def test_detbench_eval_runs_as_a_program(tmp_path):
    save_evaluation(small_run(), tmp_path)
    done = subprocess.run([sys.executable, "-m", "experiments.evaluation.eval_cli",
                           "--gt", str(tmp_path / "ground_truth.json"),
                           "--dt", str(tmp_path / "detections.json"), "--backend", "pycocotools"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert set(json.loads(done.stdout)) == set(METRICS)
