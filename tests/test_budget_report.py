"""The "Ranking against budget" section on a fabricated budget sweep whose ranking crosses."""
from __future__ import annotations

import json

import numpy as np
import pytest

from analysis import budget
from analysis.report import build_report
from analysis.runs import load_runs

BUDGETS = [40, 75, 150, 300]
# AP per budget: SSD learns fast and plateaus; Faster R-CNN starts slow and overtakes it at 150;
# YOLO stays below both. At 75 SSD and Faster R-CNN are within noise of each other.
AP = {"ssd300_cpu": [0.20, 0.28, 0.30, 0.31], "faster_rcnn_vgg16_cpu": [0.05, 0.279, 0.40, 0.45],
      "yolov1_cpu": [0.02, 0.04, 0.06, 0.17]}
FAMILY = {"ssd300_cpu": "SSD", "faster_rcnn_vgg16_cpu": "FasterRCNN", "yolov1_cpu": "YOLO"}
FLOPS = {"ssd300_cpu": 52e9, "faster_rcnn_vgg16_cpu": 57e9, "yolov1_cpu": 34e9}


def _write_run(folder, detector: str, iterations: int, ap: float, image_noise: np.ndarray) -> None:
    """metrics.json and bootstrap.npz of one run: the replicates share the images' noise, so two
    detectors on the same replicate differ by their AP gap plus a little of their own noise."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(abs(hash((detector, iterations))) % 2**32)
    reps = ap + image_noise + rng.normal(0, 0.002, len(image_noise))
    small = 0.5 * reps
    metrics = {"status": "ok", "detector": detector, "dataset": "synthetic", "seed": 0, "family": FAMILY[detector],
               "map": ap, "map_ci_low": float(np.quantile(reps, 0.025)), "map_ci_high": float(np.quantile(reps, 0.975)),
               "map_small": ap / 2, "map_50": ap * 1.5, "train_budget_kind": "iterations",
               "train_budget_value": iterations, "train_budget": f"{iterations} iterations",
               "train_iterations": iterations, "train_iterations_planned": iterations,
               "train_flops": FLOPS[detector] * iterations, "train_time_s": 0.8 * iterations,
               "train_images_seen": 16 * iterations, "device": "cpu (fabricated)",
               "still_improving": detector == "faster_rcnn_vgg16_cpu"}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    image_ids = np.sort(np.random.default_rng(7).integers(0, 100, (len(reps), 100)), axis=1)
    keys = np.unique(image_ids)   # the images by file name + content hash: how runs are paired
    np.savez(folder / "bootstrap.npz", image_ids=image_ids, category_ids=np.array([1, 2, 3]), map=reps,
             key_ids=keys, image_keys=np.array([f"{i:06d}.png#{i:016x}" for i in keys]),
             point_map=ap, map_small=small, point_map_small=ap / 2, map_50=reps * 1.5, point_map_50=ap * 1.5)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("budget_sweep")
    image_noise = np.random.default_rng(0).normal(0, 0.03, 400)   # shared by every run: the same images
    for n, iterations in enumerate(BUDGETS):
        for detector, aps in AP.items():
            _write_run(root / f"{n}-{detector}-{iterations}", detector, iterations, aps[n], image_noise)
    failed = root / "12-yolov1_cpu-600"
    failed.mkdir()
    (failed / "metrics.json").write_text(json.dumps({
        "status": "failed", "detector": "yolov1_cpu", "dataset": "synthetic", "seed": 0, "error": "boom",
        "overrides": "detector=yolov1_cpu train.budget.value=300"}))
    return root


def test_the_flip_point_is_the_smallest_budget_from_which_the_order_stays(sweep):
    summary = budget.pair_summary(budget.pair_verdicts(load_runs(sweep))).set_index(["a", "b"])
    frcnn_ssd = summary.loc[("faster_rcnn_vgg16_cpu", "ssd300_cpu")]
    assert frcnn_ssd["stable_from"] == 150 and frcnn_ssd["stable_side"] == 1      # Faster R-CNN above from 150
    assert frcnn_ssd["a_above"] == 2 and frcnn_ssd["b_above"] == 1 and frcnn_ssd["flips"] == 1
    ssd_yolo = summary.loc[("ssd300_cpu", "yolov1_cpu")]
    assert ssd_yolo["stable_from"] == 40 and ssd_yolo["a_above"] == 4 and not ssd_yolo["flips"]


def test_stable_from_needs_the_largest_budget_significant():
    assert budget.stable_from([1, 2, 3, 4], [1, -1, 1, 1]) == (3, 1)
    assert budget.stable_from([1, 2, 3, 4], [1, 1, 1, 0]) == (None, 0)
    assert budget.stable_from([1, 2, 3, 4], [-1, -1, -1, -1]) == (1, -1)


def test_the_report_ranks_each_budget_and_counts_the_claims(sweep):
    build_report(sweep, print_tables=False)
    tables = sweep / "report" / "tables"
    ranking = (tables / "budget_ranking.md").read_text()
    assert "ssd300_cpu 28.00" in ranking and "within noise" in ranking            # 75: the crossing, unresolved
    assert "yolov1_cpu (failed)" in ranking.splitlines()[-3]                    # the failed run marked at 300
    claims = (tables / "budget_claims.md").read_text()
    assert "faster_rcnn_vgg16_cpu more accurate than ssd300_cpu | 2 of 4 budgets | from 150 iterations on" in claims
    assert "ssd300_cpu more accurate than faster_rcnn_vgg16_cpu | 1 of 4 budgets | not at the largest budget" \
        in claims
    assert (sweep / "report" / "plots" / "budget_synthetic_iterations.png").is_file()
    provenance = (tables / "provenance.md").read_text()
    assert "300 iterations" in provenance and "yes" in provenance                # budget and still improving
    page = (sweep / "report" / "report.md").read_text()   # fabricated runs lack other sections' files
    assert "section 'budget'" not in page and "ranking against budget' not drawn" not in page
