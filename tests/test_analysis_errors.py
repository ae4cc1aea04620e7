"""The TIDE-style error breakdown on hand-made cases (counts and AP gains computed by hand in
the comments), and its AP50 against pycocotools' on random detections."""
from __future__ import annotations

import contextlib
import copy
import io
import json
import math

import numpy as np
import pytest

from analysis.errors import average_precision_50, breakdown, classify, run_errors, top_detection_shares


def _gt(boxes_and_classes, image_id=1, crowd=()):
    anns = [{"id": i + 1, "image_id": image_id, "category_id": c, "bbox": b,
             "area": b[2] * b[3], "iscrowd": int(i in crowd)}
            for i, (b, c) in enumerate(boxes_and_classes)]
    return {"images": [{"id": image_id, "width": 200, "height": 200}], "annotations": anns,
            "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}


def _dt(bbox, category, score, image_id=1):
    return {"image_id": image_id, "category_id": category, "bbox": bbox, "score": score}


# One image, 10 x 10 boxes (all small). Ground truth: A, C, D of class 1; B of class 2.
A, B, C, D = [0, 0, 10, 10], [20, 0, 10, 10], [40, 0, 10, 10], [60, 0, 10, 10]
GROUND_TRUTH = _gt([(A, 1), (B, 2), (C, 1), (D, 1)])
DETECTIONS = [
    _dt([100, 100, 10, 10], 1, 0.95),   # bkg: touches nothing
    _dt(A, 1, 0.90),                    # tp: A
    _dt(A, 1, 0.80),                    # dupe: A already taken
    _dt(B, 1, 0.70),                    # cls: on B (class 2), IoU 1
    _dt([40, 0, 10, 4], 1, 0.60),       # loc: IoU 40/100 = 0.4 with C
    _dt([40, 0, 10, 3], 2, 0.50),       # both: class 2, IoU 0.3 with C (class 1)
]                                       # D: missed (nothing points at it)


def test_every_kind_is_counted_once():
    _, dt = classify(GROUND_TRUTH, DETECTIONS)
    assert list(dt["kind"]) == ["bkg", "tp", "dupe", "cls", "loc", "both"]
    row = breakdown(GROUND_TRUTH, DETECTIONS).loc["all"]
    assert [row[k] for k in ("tp", "cls", "loc", "both", "dupe", "bkg", "missed")] == \
        [1, 1, 1, 1, 1, 1, 1]
    assert (row["num_gt"], row["num_dt"]) == (4, 6)


def test_ap50_and_the_ap_each_fix_adds():
    # Class 1 (3 GT) ranks bkg .95, tp .9, dupe .8, cls .7, loc .6: precision envelope 0.5 up
    # to recall 1/3 (34 of the 101 recall points), then 0 -> 17/101. Class 2 (1 GT): only the
    # "both" detection, a false positive -> 0. AP50 = (17/101 + 0) / 2.
    row = breakdown(GROUND_TRUTH, DETECTIONS).loc["all"]
    base = 17 / 101 / 2 * 100
    assert row["ap50"] == pytest.approx(base)
    # cls fixed: the .7 detection becomes class 2's true positive on B -> class 2 AP 1.
    assert row["dap_cls"] == pytest.approx(50.0)
    # loc fixed: the .6 detection takes C: envelope 0.5 to recall 1/3, then 2/5 = 0.4 on the
    # 33 points up to 2/3 -> (17 + 13.2) / 101 for class 1.
    assert row["dap_loc"] == pytest.approx((30.2 - 17) / 101 / 2 * 100)
    # bkg removed: class 1 starts with its true positive -> 34/101.
    assert row["dap_bkg"] == pytest.approx((34 - 17) / 101 / 2 * 100)
    # dupe and both removed: ranked below everything that counts -> nothing changes.
    assert row["dap_dupe"] == pytest.approx(0.0) and row["dap_both"] == pytest.approx(0.0)
    # missed D out of the count: class 1 has 2 GT, recall 1/2 at precision 0.5 -> 25.5/101.
    assert row["dap_missed"] == pytest.approx((25.5 - 17) / 101 / 2 * 100)


def test_top_detection_shares_follow_hoiem():
    # Class 1: 3 GT -> its top 3 (bkg .95, tp .9, dupe .8); class 2: 1 GT -> "both" .5.
    shares = top_detection_shares(GROUND_TRUTH, DETECTIONS)
    assert shares.to_dict() == pytest.approx({"top_correct": 25.0, "top_loc": 25.0,
                                              "top_other": 25.0, "top_bkg": 25.0})


def test_size_buckets_add_up_and_follow_the_ground_truth():
    large, medium_det = [0, 0, 100, 100], [150, 150, 50, 50]     # 10000 px², 2500 px²
    ground_truth = _gt([(large, 1), ([120, 0, 10, 10], 2)])
    detections = [_dt([0, 0, 100, 60], 1, 0.9),    # tp on the large one (IoU 0.6)
                  _dt([0, 0, 100, 55], 1, 0.8),    # dupe (IoU .55): a medium box, counted large
                  _dt(medium_det, 2, 0.7)]         # bkg, in its own bucket: medium
    table = breakdown(ground_truth, detections)
    assert table.loc["large", ["tp", "dupe", "num_gt"]].tolist() == [1, 1, 1]
    assert table.loc["medium", ["bkg", "num_gt"]].tolist() == [1, 0]
    assert table.loc["small", ["missed", "num_gt", "num_dt"]].tolist() == [1, 1, 0]
    counts = ["tp", "cls", "loc", "both", "dupe", "bkg", "missed", "num_gt"]
    assert (table.loc[["small", "medium", "large"], counts].sum() == table.loc["all", counts]).all()


def test_crowd_regions_are_ignored_not_errors():
    ground_truth = _gt([([0, 0, 100, 100], 1), ([150, 150, 20, 20], 1)], crowd=(0,))
    detections = [_dt([10, 10, 30, 30], 1, 0.9), _dt([150, 150, 20, 20], 1, 0.8)]
    _, dt = classify(ground_truth, detections)
    assert list(dt["kind"]) == ["ignored", "tp"]
    row = breakdown(ground_truth, detections).loc["all"]
    assert row["ap50"] == pytest.approx(100.0) and row["num_gt"] == 1 and row["bkg"] == 0


def test_no_detections_means_every_object_missed_and_ap_zero():
    row = breakdown(GROUND_TRUTH, []).loc["all"]
    assert row["missed"] == 4 and row["ap50"] == 0.0
    # Every object missed: taken out of the count, no class has ground truth -> AP undefined.
    assert math.isnan(row["dap_missed"]) and math.isnan(average_precision_50([], [], [], {1: 0}))


def test_ap50_equals_pycocotools(tmp_path):
    pycocotools = pytest.importorskip("pycocotools.cocoeval")
    from pycocotools.coco import COCO

    rng = np.random.default_rng(0)
    anns, dets = [], []
    for image_id in range(1, 31):
        for _ in range(rng.integers(0, 5)):
            w, h = rng.uniform(4, 120, 2)
            x, y = rng.uniform(0, 200 - w), rng.uniform(0, 200 - h)
            c = int(rng.integers(1, 3))
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": c,
                         "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0})
            for _ in range(rng.integers(0, 3)):       # noisy copies, sometimes the wrong class
                jitter = rng.normal(0, 0.2, 4) * [w, h, w / 2, h / 2]
                box = np.abs(np.array([x, y, w, h]) + jitter).tolist()
                dets.append(_dt(box, c if rng.random() < 0.8 else 3 - c, float(rng.random()),
                                image_id))
        dets.append(_dt([*rng.uniform(0, 150, 2), 30, 30], int(rng.integers(1, 3)),
                        float(rng.random()), image_id))
    images = [{"id": i, "width": 200, "height": 200} for i in range(1, 31)]
    ground_truth = _gt([]) | {"annotations": anns, "images": images}
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(ground_truth)
        coco_gt.createIndex()
        evaluator = pycocotools.COCOeval(coco_gt, coco_gt.loadRes(copy.deepcopy(dets)), "bbox")
        evaluator.evaluate(), evaluator.accumulate(), evaluator.summarize()
    (tmp_path / "ground_truth.json").write_text(json.dumps(ground_truth))
    (tmp_path / "detections.json").write_text(json.dumps(dets))
    table, _ = run_errors(tmp_path)
    assert table.at["all", "ap50"] == pytest.approx(evaluator.stats[1] * 100, abs=1e-9)
    assert table.at["all", "tp"] + table.at["all", "missed"] <= len(anns)


def test_run_errors_names_the_missing_file(tmp_path):
    (tmp_path / "ground_truth.json").write_text(json.dumps(GROUND_TRUTH))
    with pytest.raises(FileNotFoundError, match="detections.json"):
        run_errors(tmp_path)
