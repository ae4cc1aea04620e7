"""Pascal VOC AP: hand-computed cases (difficult objects, duplicates, IoU exactly 0.5, a taken
best match) and the vectorised matching against a literal, loop-by-loop reading of the devkit."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from experiments.evaluation import evaluate
from experiments.evaluation.voc_ap import (
    FALSE_POSITIVE,
    IGNORED,
    TRUE_POSITIVE,
    voc07_average_precision,
    voc_area_average_precision,
    voc_average_precisions,
    voc_match,
)


def target(image_id, boxes, labels, difficult=None, iscrowd=None):
    boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    n = len(boxes)
    out = {"boxes": boxes, "labels": torch.tensor(labels, dtype=torch.int64), "image_id": image_id,
           "area": (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]),
           "iscrowd": torch.tensor(iscrowd or [0] * n, dtype=torch.int64)}
    out["difficult"] = torch.tensor(difficult or [False] * n)
    return out


def detection(boxes, scores, labels):
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "scores": torch.tensor(scores, dtype=torch.float32), "labels": torch.tensor(labels)}


def test_difficult_duplicate_and_iou_exactly_half():
    """Image 1: objects a and (difficult) b; image 2: object c. In score order:
    0.9 on a: TP; 0.8 on a again: FP (duplicate); 0.75 on c: TP; 0.7 on b: ignored (difficult);
    0.6 nowhere: FP; 0.5 on c with IoU exactly 0.5: FP (VOC needs IoU > 0.5).
    recall .5 .5 1 1 1, precision 1 1/2 2/3 1/2 2/5 (2 positives: a and c) ->
    VOC2010+: .5 * 1 + .5 * 2/3 = 5/6; VOC07: (6 * 1 + 5 * 2/3) / 11 = 28/33."""
    targets = [target(1, [[0, 0, 10, 10], [20, 0, 30, 10]], [1, 1], difficult=[False, True]),
               target(2, [[0, 0, 10, 10]], [1])]
    detections = [detection([[0, 0, 10, 10], [0, 0, 10, 10], [20, 0, 30, 10], [50, 50, 60, 60]],
                            [0.9, 0.8, 0.7, 0.6], [1, 1, 1, 1]),
                  detection([[1, 0, 11, 10], [0, 0, 10, 5]], [0.75, 0.5], [1, 1])]
    result = evaluate(detections, targets, ["thing"], [(100, 100)] * 2)
    row = result.per_class.iloc[0]
    assert row.voc_ap == pytest.approx(5 / 6, abs=1e-12)
    assert row.voc07_ap == pytest.approx(28 / 33, abs=1e-12)
    assert result.metrics["voc_map"] == pytest.approx(5 / 6, abs=1e-12)
    assert row.num_gt == 3  # COCO counts the difficult object as an ordinary one


def test_best_match_already_taken_is_a_false_positive():
    """Devkit rule: a detection goes to its highest-IoU object; if that one is taken it is a
    false positive even when another free object overlaps it by more than 0.5.
    Objects a = [0,0,10,10], b = [2,0,12,10]. 0.9 on a: TP. 0.8 on [0.5,0,10.5,10]: IoU .905
    with a (taken), .739 with b -> FP. recall .5 .5, precision 1 .5: VOC2010+ 0.5, VOC07 6/11."""
    targets = [target(1, [[0, 0, 10, 10], [2, 0, 12, 10]], [1, 1])]
    detections = [detection([[0, 0, 10, 10], [0.5, 0, 10.5, 10]], [0.9, 0.8], [1, 1])]
    row = evaluate(detections, targets, ["thing"], [(100, 100)]).per_class.iloc[0]
    assert row.voc_ap == pytest.approx(0.5, abs=1e-12)
    assert row.voc07_ap == pytest.approx(6 / 11, abs=1e-12)


def test_crowd_regions_are_ignored_and_classes_average_only_with_objects():
    """Class 1: a crowd region (IoU 0.64 with the 0.9 box: ignored, like a difficult object; VOC
    has no crowd rule for the IoU) and object a (hit by 0.5): AP 1.
    Class 2: one object, one false positive above the true one: recall 0 1, precision 0 1/2:
    VOC2010+ 1/2, VOC07 (11 * 1/2) / 11 = 1/2. Class 3: no objects: NaN, left out of the mean."""
    targets = [target(1, [[0, 0, 50, 50], [60, 60, 70, 70], [0, 60, 10, 70]], [1, 1, 2], iscrowd=[1, 0, 0])]
    detections = [detection([[0, 0, 40, 40], [60, 60, 70, 70], [80, 80, 90, 90], [0, 60, 10, 70], [5, 5, 9, 9]],
                            [0.9, 0.5, 0.8, 0.7, 0.3], [1, 1, 2, 2, 3])]
    result = evaluate(detections, targets, ["a", "b", "c"], [(100, 100)])
    table = result.per_class.set_index("class_name")
    assert table.loc["a", "voc_ap"] == 1.0 and table.loc["a", "voc07_ap"] == 1.0
    assert table.loc["b", "voc_ap"] == pytest.approx(0.5) and table.loc["b", "voc07_ap"] == pytest.approx(0.5)
    assert np.isnan(table.loc["c", "voc_ap"]) and np.isnan(table.loc["c", "voc07_ap"])
    assert result.metrics["voc_map"] == pytest.approx(0.75) and result.metrics["voc07_map"] == pytest.approx(0.75)


def test_average_precision_formulas():
    recall = np.array([0.2, 0.4, 0.4, 0.8])
    precision = np.array([1.0, 0.5, 0.4, 0.5])
    # envelope 1, .5, .5, .5: area .2 * 1 + .2 * .5 + .4 * .5 = 0.5
    assert voc_area_average_precision(recall, precision) == pytest.approx(0.5)
    # r = 0, .1, .2 -> 1; r = .3 ... .8 -> .5; r = .9, 1 -> 0: (3 + 6 * .5) / 11
    assert voc07_average_precision(recall, precision) == pytest.approx(6 / 11)
    assert voc_area_average_precision(np.zeros(0), np.zeros(0)) == 0.0
    assert voc07_average_precision(np.zeros(0), np.zeros(0)) == 0.0


def devkit_average_precisions(gt, dt, num_classes):
    """VOCevaldet.m read literally: per class, detections in decreasing score order (stable),
    each against every object of its image and class; continuous IoU (no +1)."""
    ap07, ap = [], []
    for c in range(num_classes):
        objects = {}
        for image, box, label, ignored in gt:
            if label == c:
                objects.setdefault(image, []).append([np.array(box), ignored, False])
        npos = sum(not o[1] for objs in objects.values() for o in objs)
        mine = [d for d in dt if d[2] == c]
        order = sorted(range(len(mine)), key=lambda i: -mine[i][3])
        tp, fp = [], []
        for i in order:
            image, box, _, _ = mine[i]
            best, jmax = -np.inf, None
            for j, (g, _, _) in enumerate(objects.get(image, [])):
                iw = min(box[2], g[2]) - max(box[0], g[0])
                ih = min(box[3], g[3]) - max(box[1], g[1])
                if iw > 0 and ih > 0:
                    ov = iw * ih / ((box[2] - box[0]) * (box[3] - box[1]) + (g[2] - g[0]) * (g[3] - g[1]) - iw * ih)
                    if ov > best:
                        best, jmax = ov, j
            if best > 0.5:
                obj = objects[image][jmax]
                if obj[1]:
                    continue  # difficult: neither
                tp.append(0 if obj[2] else 1)
                fp.append(1 if obj[2] else 0)
                obj[2] = True
            else:
                tp.append(0)
                fp.append(1)
        if npos == 0:
            ap07.append(np.nan)
            ap.append(np.nan)
            continue
        tp, fp = np.cumsum(tp), np.cumsum(fp)
        rec, prec = tp / npos, tp / np.maximum(tp + fp, 1)
        ap07.append(voc07_average_precision(rec, prec))
        ap.append(voc_area_average_precision(rec, prec))
    return np.array(ap07), np.array(ap)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_vectorised_matching_equals_the_devkit_loop(seed):
    rng = np.random.default_rng(seed)
    num_images, num_classes = 15, 3
    gt, dt = [], []
    for image in range(num_images):
        for _ in range(rng.integers(0, 6)):
            xy = rng.integers(0, 80, 2)
            box = [*xy, *(xy + rng.integers(4, 30, 2))]
            gt.append((image, box, int(rng.integers(0, num_classes)), bool(rng.random() < 0.15)))
            for _ in range(rng.integers(0, 3)):  # hits, duplicates
                jitter = rng.integers(-3, 4, 4)
                dt.append((image, list(np.array(box) + jitter), gt[-1][2] if rng.random() < 0.8 else 0,
                           rng.integers(0, 8) / 8))  # coarse scores: ties
        for _ in range(rng.integers(0, 3)):  # background
            xy = rng.integers(0, 80, 2)
            dt.append((image, [*xy, *(xy + rng.integers(4, 30, 2))], int(rng.integers(0, num_classes)),
                       rng.integers(0, 8) / 8))
    dt = [d for d in dt if d[1][2] > d[1][0] and d[1][3] > d[1][1]]
    expected07, expected = devkit_average_precisions(gt, dt, num_classes)

    gt_image, gt_boxes, gt_label, gt_ignored = (np.array([g[k] for g in gt]) for k in range(4))
    dt_image, dt_boxes, dt_label, dt_scores = (np.array([d[k] for d in dt]) for k in range(4))
    outcome = voc_match(gt_image * num_classes + gt_label, gt_boxes.astype(float), gt_ignored.astype(bool),
                        dt_image * num_classes + dt_label, dt_boxes.astype(float), dt_scores.astype(float))
    assert set(np.unique(outcome)) <= {TRUE_POSITIVE, FALSE_POSITIVE, IGNORED}
    assert (outcome == IGNORED).any() and (outcome == TRUE_POSITIVE).any()
    ap07, ap, npos = voc_average_precisions(gt_label, gt_ignored.astype(bool), dt_label,
                                            dt_scores.astype(float), outcome, list(range(num_classes)))
    np.testing.assert_allclose(ap07, expected07, atol=1e-12)
    np.testing.assert_allclose(ap, expected, atol=1e-12)
