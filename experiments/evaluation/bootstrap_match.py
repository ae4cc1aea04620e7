"""Match once, for the image bootstrap: every detection's outcome as pycocotools' COCOeval and the
VOC devkit decide it, stored per image so that any multiset of images can be re-accumulated
(``bootstrap_accumulate``) without matching again.

COCO (``match_coco``) follows ``COCOeval.evaluateImg`` with maxDets 100 for every (image, class,
area range, IoU threshold):

* per (image, class) only the 100 best detections by score count (stable sort: ties in input
  order), as ``computeIoU`` and ``evaluateImg`` cut them;
* an object is ignored in area range a when it is a crowd region or its ``area`` lies outside
  [lo, hi] (inclusive bounds, COCO's ``areaRng``);
* detections are taken in score order; each takes, among the objects it may still take (not yet
  taken, or crowd) with IoU >= the threshold, the non-ignored one of highest IoU (ties: the last
  in input order), and only when there is none the ignored one of highest IoU (ties: the last);
  this is evaluateImg's loop over objects sorted non-ignored first, with its ``break``;
* a detection matched to an ignored object is ignored; an unmatched detection is ignored when
  its area (w * h) lies outside the range.

The steps of that greedy loop are vectorised as ``voc_ap.voc_match`` does: step r decides the
r-th best detection of every (image, class) pair at once, for all 4 area ranges and 10 IoU
thresholds together. VOC (``match_voc``) reuses ``voc_ap.voc_match`` itself.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from experiments.data.size_buckets import AREA_RANGES as SIZE_RANGES
from experiments.evaluation.coco_backends import IOU_THRESHOLDS, coco_box_iou
from experiments.evaluation.tables import DetectionTable, GroundTruthTable, xywh_to_xyxy
from experiments.evaluation.voc_ap import IGNORED, TRUE_POSITIVE, voc_match

AREA_RANGES = np.array(list(SIZE_RANGES.values()))  # [A, 2]: COCO's areaRng
MAX_DETS = 100


@dataclass
class CocoMatches:
    """COCO outcomes of the detections that count (the best 100 per image and class).

    D rows, sorted by (class, score descending, image, input order): the order in which
    COCOeval.accumulate sees them for a dataset whose images come in ``image_ids`` order.

    image_ids:     int64 [I], sorted: the image order of accumulation (image slot = position).
    category_ids:  int64 [K], sorted.
    class_start:   int64 [K + 1], rows of class k are class_start[k]:class_start[k + 1].
    image:         int64 [D], image slot of each detection.
    rank:          int64 [D], 0-based rank by score within its (image, class) (for maxDets 1, 10).
    in_range:      bool [A, D], the detection's area w * h inside area range a.
    matched:       bool [A, T, D], matched to an object (ignored or not) at IoU threshold t.
    true_positive: bool [A, T, D], matched to a non-ignored object.
    num_objects:   int64 [I, K, A], non-ignored objects per image, class and area range.
    """

    image_ids: np.ndarray
    category_ids: np.ndarray
    class_start: np.ndarray
    image: np.ndarray
    rank: np.ndarray
    in_range: np.ndarray
    matched: np.ndarray
    true_positive: np.ndarray
    num_objects: np.ndarray


@dataclass
class VocMatches:
    """VOC outcomes of every detection, D rows sorted by (class, score descending, image, input order).

    image_ids, category_ids, class_start: as in ``CocoMatches``.
    image:         int64 [D], image slot.
    true_positive: bool [D]; counted: bool [D], not IGNORED (a true or false positive).
    num_objects:   int64 [I, K], positives (objects neither difficult nor crowd) per image and class.
    """

    image_ids: np.ndarray
    category_ids: np.ndarray
    class_start: np.ndarray
    image: np.ndarray
    true_positive: np.ndarray
    counted: np.ndarray
    num_objects: np.ndarray


def _slots(gt: GroundTruthTable, category_ids) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sorted image ids [I], image slot of each position given [I], sorted category ids [K])."""
    image_ids = np.sort(gt.image_ids)
    slot = np.empty(len(image_ids), dtype=np.int64)
    slot[np.argsort(gt.image_ids, kind="stable")] = np.arange(len(image_ids))
    return image_ids, slot, np.sort(np.asarray(category_ids, dtype=np.int64))


def _group_rank(keys: np.ndarray) -> np.ndarray:
    """For ``keys`` [N] sorted: the position of each entry within its run of equal keys."""
    if len(keys) == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    return np.arange(len(keys)) - np.repeat(starts, np.diff(np.r_[starts, len(keys)]))


def _accumulation_order(category: np.ndarray, scores: np.ndarray, image: np.ndarray,
                        row: np.ndarray) -> np.ndarray:
    """Rows sorted by class, then score descending, then image slot, then input row."""
    return np.lexsort((row, image, -scores, category))


def match_coco(gt: GroundTruthTable, dt: DetectionTable, category_ids) -> CocoMatches:
    """COCOeval.evaluateImg's matching for every (image, class, area range, IoU threshold)."""
    image_ids, slot, cat_ids = _slots(gt, category_ids)
    num_images, num_cats, num_areas, num_thr = len(image_ids), len(cat_ids), len(AREA_RANGES), len(IOU_THRESHOLDS)
    gt_cat, dt_cat = np.searchsorted(cat_ids, gt.category_ids), np.searchsorted(cat_ids, dt.category_ids)
    gt_keys = slot[gt.image_index] * num_cats + gt_cat
    dt_keys = slot[dt.image_index] * num_cats + dt_cat

    # The best 100 per pair, by score, ties in input order.
    by_score = np.argsort(-dt.scores, kind="stable")
    order = by_score[np.argsort(dt_keys[by_score], kind="stable")]
    rank = _group_rank(dt_keys[order])
    order, rank = order[rank < MAX_DETS], rank[rank < MAX_DETS]
    keys = dt_keys[order]

    lo, hi = AREA_RANGES[:, :1], AREA_RANGES[:, 1:]
    gt_ignored = gt.iscrowd[None] | (gt.area[None] < lo) | (gt.area[None] > hi)  # [A, N]
    dt_area = dt.boxes[order, 2] * dt.boxes[order, 3]
    in_range = ~((dt_area[None] < lo) | (dt_area[None] > hi))  # [A, D]
    thresholds = np.minimum(IOU_THRESHOLDS, 1 - 1e-10)[None, :, None]  # [1, T, 1]

    gt_order = np.argsort(gt_keys, kind="stable")  # objects by pair, input order within
    sorted_gt_keys = gt_keys[gt_order]
    first_gt = np.searchsorted(sorted_gt_keys, keys, "left")
    num_gt = np.searchsorted(sorted_gt_keys, keys, "right") - first_gt
    taken = np.zeros((num_areas, num_thr, len(gt_keys)), dtype=bool)
    matched = np.zeros((num_areas, num_thr, len(order)), dtype=bool)
    true_positive = np.zeros_like(matched)
    by_rank = np.argsort(rank, kind="stable")
    bounds = np.searchsorted(rank[by_rank], np.arange(MAX_DETS + 1))
    for r in range(MAX_DETS):
        step = by_rank[bounds[r]:bounds[r + 1]]
        step = step[num_gt[step] > 0]
        if len(step) == 0:
            continue
        counts = num_gt[step]
        offsets = np.cumsum(counts) - counts
        owner = np.repeat(np.arange(len(step)), counts)  # [E] candidate -> detection of the step
        candidate = gt_order[first_gt[step][owner] + np.arange(counts.sum()) - offsets[owner]]  # [E]
        iou = coco_box_iou(dt.boxes[order[step]][owner], gt.boxes[candidate], gt.iscrowd[candidate])
        may_take = (iou[None, None] >= thresholds) & (~taken[:, :, candidate] | gt.iscrowd[candidate])
        ignored = gt_ignored[:, None, candidate]  # [A, 1, E]
        flat = np.arange(len(iou))
        found, choice = [], []
        for section in (may_take & ~ignored, may_take & ignored):  # non-ignored first, as evaluateImg
            value = np.where(section, iou, -1.0)
            best = np.maximum.reduceat(value, offsets, axis=-1)  # [A, T, S]
            last = np.maximum.reduceat(np.where(section & (value == best[..., owner]), flat, -1), offsets, axis=-1)
            found.append(best >= 0)
            choice.append(last)
        hit = found[0] | found[1]
        chosen = np.where(found[0], choice[0], choice[1])  # [A, T, S] candidate index
        a, t, s = np.nonzero(hit)
        taken[a, t, candidate[chosen[a, t, s]]] = True
        matched[:, :, step] = hit
        true_positive[:, :, step] = found[0]

    num_objects = np.zeros((num_images * num_cats, num_areas), dtype=np.int64)
    for a in range(num_areas):
        num_objects[:, a] = np.bincount(gt_keys[~gt_ignored[a]], minlength=num_images * num_cats)

    final = _accumulation_order(dt_cat[order], dt.scores[order], slot[dt.image_index[order]], order)
    return CocoMatches(
        image_ids=image_ids, category_ids=cat_ids,
        class_start=np.searchsorted(dt_cat[order][final], np.arange(num_cats + 1)),
        image=slot[dt.image_index[order]][final], rank=rank[final], in_range=in_range[:, final],
        matched=matched[:, :, final], true_positive=true_positive[:, :, final],
        num_objects=num_objects.reshape(num_images, num_cats, num_areas))


def match_voc(gt: GroundTruthTable, dt: DetectionTable, category_ids) -> VocMatches:
    """The devkit's matching (``voc_ap.voc_match``, difficult and crowd objects ignored), once."""
    image_ids, slot, cat_ids = _slots(gt, category_ids)
    num_images, num_cats = len(image_ids), len(cat_ids)
    gt_cat, dt_cat = np.searchsorted(cat_ids, gt.category_ids), np.searchsorted(cat_ids, dt.category_ids)
    dt_slot = slot[dt.image_index]
    order = np.lexsort((np.arange(len(dt_slot)), dt_slot))  # by image id, stable: as metrics does
    ignored = gt.difficult | gt.iscrowd
    outcome = np.empty(len(order), dtype=np.int8)
    outcome[order] = voc_match(slot[gt.image_index] * num_cats + gt_cat, xywh_to_xyxy(gt.boxes), ignored,
                               (dt_slot * num_cats + dt_cat)[order], xywh_to_xyxy(dt.boxes[order]),
                               dt.scores[order])
    final = _accumulation_order(dt_cat, dt.scores, dt_slot, np.arange(len(dt_slot)))
    keys = (slot[gt.image_index] * num_cats + gt_cat)[~ignored]
    return VocMatches(
        image_ids=image_ids, category_ids=cat_ids,
        class_start=np.searchsorted(dt_cat[final], np.arange(num_cats + 1)), image=dt_slot[final],
        true_positive=outcome[final] == TRUE_POSITIVE, counted=outcome[final] != IGNORED,
        num_objects=np.bincount(keys, minlength=num_images * num_cats).reshape(num_images, num_cats))
