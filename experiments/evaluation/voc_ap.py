"""Pascal VOC average precision, from the VOC devkit's definition (VOCevaldet.m, VOCap.m).

* A detection matches the ground truth object of its image and class with the largest IoU; it
  is a true positive when that IoU is > 0.5 (strictly) and the object is not yet taken, a false
  positive when the object is taken (a duplicate) or the IoU is <= 0.5, and it is ignored
  (neither) when the object is "difficult". Detections are taken in decreasing score order,
  ties in input order (the devkit's stable sort; ``evaluation`` orders the input by image id).
* Difficult objects (and here crowd regions too) never count in the number of positives.
* VOC2007 AP: 11-point interpolation, mean over recall r in {0, 0.1, ..., 1} of the highest
  precision at recall >= r. VOC2010+ AP: the area under the precision envelope (precision made
  monotone from the right, summed over the recall steps).

One departure from the devkit, on purpose: IoU is computed on continuous coordinates
(w = x2 - x1), as COCO does and as detbench's boxes are, not with the devkit's "+1" for integer
pixel indices. A class with no positives has no AP (NaN), so it never enters a mean.
"""
from __future__ import annotations

import numpy as np

TRUE_POSITIVE, FALSE_POSITIVE, IGNORED = 1, 0, -1


def voc_iou(dt_boxes: np.ndarray, gt_boxes: np.ndarray) -> np.ndarray:
    """Row-wise IoU of float64 [E, 4] x1 y1 x2 y2 pairs -> [E] (0 where they do not overlap)."""
    iw = np.minimum(dt_boxes[:, 2], gt_boxes[:, 2]) - np.maximum(dt_boxes[:, 0], gt_boxes[:, 0])
    ih = np.minimum(dt_boxes[:, 3], gt_boxes[:, 3]) - np.maximum(dt_boxes[:, 1], gt_boxes[:, 1])
    overlap = (iw > 0) & (ih > 0)
    inter = np.where(overlap, iw * ih, 0.0)
    dt_area = (dt_boxes[:, 2] - dt_boxes[:, 0]) * (dt_boxes[:, 3] - dt_boxes[:, 1])
    gt_area = (gt_boxes[:, 2] - gt_boxes[:, 0]) * (gt_boxes[:, 3] - gt_boxes[:, 1])
    union = np.where(overlap, dt_area + gt_area - inter, 1.0)
    return inter / union


def voc_match(gt_keys: np.ndarray, gt_boxes: np.ndarray, gt_ignored: np.ndarray,
              dt_keys: np.ndarray, dt_boxes: np.ndarray, dt_scores: np.ndarray,
              iou_threshold: float = 0.5) -> np.ndarray:
    """The devkit's greedy matching, for every (image, class) group at once.

    gt_keys [N] / dt_keys [K]: int64 group of each box (one value per image and class).
    gt_boxes [N, 4] / dt_boxes [K, 4]: float64 x1 y1 x2 y2. gt_ignored [N]: difficult or crowd.
    dt_scores [K]. Returns int8 [K]: TRUE_POSITIVE, FALSE_POSITIVE or IGNORED per detection.

    Step r decides the r-th best detection of every group together: within a group the
    decisions stay sequential, as in the devkit, while the groups are independent.
    """
    num_dt = len(dt_scores)
    outcome = np.full(num_dt, FALSE_POSITIVE, dtype=np.int8)
    if num_dt == 0 or len(gt_keys) == 0:
        return outcome
    by_score = np.argsort(-dt_scores, kind="stable")
    order = by_score[np.argsort(dt_keys[by_score], kind="stable")]  # [K] by group, then score
    keys = dt_keys[order]
    group_start = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    rank = np.arange(num_dt) - np.repeat(group_start, np.diff(np.r_[group_start, num_dt]))

    gt_order = np.argsort(gt_keys, kind="stable")
    gt_sorted_keys = gt_keys[gt_order]
    gt_boxes, gt_ignored = gt_boxes[gt_order], gt_ignored[gt_order]
    first_gt = np.searchsorted(gt_sorted_keys, keys, "left")  # [K] this group's first object
    num_gt = np.searchsorted(gt_sorted_keys, keys, "right") - first_gt  # [K]
    taken = np.zeros(len(gt_keys), dtype=bool)

    by_rank = np.argsort(rank, kind="stable")
    rank_bounds = np.searchsorted(rank[by_rank], np.arange(rank.max() + 2))
    for r in range(rank.max() + 1):
        step = by_rank[rank_bounds[r]:rank_bounds[r + 1]]  # positions in `order`, one per group
        step = step[num_gt[step] > 0]  # a group without objects: false positives
        if len(step) == 0:
            continue
        counts = num_gt[step]
        offsets = np.cumsum(counts) - counts  # [S] where each detection's candidates start
        owner = np.repeat(np.arange(len(step)), counts)  # [E] candidate -> detection
        candidate = first_gt[step][owner] + np.arange(counts.sum()) - offsets[owner]  # [E]
        iou = voc_iou(dt_boxes[order[step]][owner], gt_boxes[candidate])  # [E]
        best_iou = np.maximum.reduceat(iou, offsets)  # [S]
        flat = np.arange(len(iou))
        first_best = np.minimum.reduceat(np.where(iou == best_iou[owner], flat, len(iou)), offsets)
        best = candidate[first_best]  # [S] the devkit's jmax (first maximum)
        hit = best_iou > iou_threshold
        ignored = hit & gt_ignored[best]
        true_positive = hit & ~ignored & ~taken[best]
        taken[best[true_positive]] = True
        outcome[order[step]] = np.where(ignored, IGNORED,
                                        np.where(true_positive, TRUE_POSITIVE, FALSE_POSITIVE))
    return outcome


def voc07_average_precision(recall: np.ndarray, precision: np.ndarray) -> float:
    """11-point interpolated AP (VOC2007): recall, precision float64 [D] in score order."""
    best = [precision[recall >= t].max() if (recall >= t).any() else 0.0
            for t in np.arange(0.0, 1.1, 0.1)]  # the devkit's 0:0.1:1
    return float(np.sum(best) / 11.0)  # the devkit adds p / 11 eleven times: equal up to rounding


def voc_area_average_precision(recall: np.ndarray, precision: np.ndarray) -> float:
    """Area under the precision envelope (VOC2010+): recall, precision float64 [D] in score order."""
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]  # envelope: best precision at >= this recall
    step = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[step + 1] - mrec[step]) * mpre[step + 1]))


def voc_average_precisions(gt_category: np.ndarray, gt_ignored: np.ndarray,
                           dt_category: np.ndarray, dt_scores: np.ndarray, outcome: np.ndarray,
                           category_ids: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class VOC07 and VOC2010+ AP from matched detections.

    gt_category [N], gt_ignored [N]; dt_category [K], dt_scores [K], outcome [K] from
    ``voc_match``. Returns (voc07_ap [C], voc_ap [C], num_positives [C]) in the order of
    ``category_ids``; AP is NaN for a class without positives.
    """
    by_score = np.argsort(-dt_scores, kind="stable")
    by_score = by_score[outcome[by_score] != IGNORED]
    grouped = by_score[np.argsort(dt_category[by_score], kind="stable")]  # by class, then score
    grouped_category = dt_category[grouped]
    ap07 = np.full(len(category_ids), np.nan)
    ap = np.full(len(category_ids), np.nan)
    num_positives = np.zeros(len(category_ids), dtype=np.int64)
    for c, category in enumerate(category_ids):
        num_positives[c] = np.count_nonzero((gt_category == category) & ~gt_ignored)
        if num_positives[c] == 0:
            continue
        lo, hi = np.searchsorted(grouped_category, [category, category + 1])
        tp = np.cumsum(outcome[grouped[lo:hi]] == TRUE_POSITIVE)  # [D]
        fp = np.arange(1, hi - lo + 1) - tp  # [D]
        recall = tp / num_positives[c]
        precision = tp / (tp + fp)
        ap07[c] = voc07_average_precision(recall, precision)
        ap[c] = voc_area_average_precision(recall, precision)
    return ap07, ap, num_positives
