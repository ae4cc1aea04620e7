"""Scoring one split: COCO metrics with pycocotools' numbers, Pascal VOC07 / VOC2010+ AP,
per-class AP and the precision/recall arrays for PR curves.

COCO metrics come from the pycocotools API: ``backend="pycocotools"`` runs pycocotools itself,
``backend="faster_coco_eval"`` (the default) runs faster-coco-eval's ``COCOeval_faster``: its C++
matching and accumulation, fed directly from the tables (see ``coco_backends``). Both give
pycocotools' numbers (the tests hold them to 1e-12 of pycocotools on perturbed sets and on real
COCO data).

Conventions, decided here once:
* A value pycocotools reports as -1 (no ground truth in that class or size bucket) is NaN in
  ``metrics`` and ``per_class``, so no mean or table ever averages a -1.
* Crowd objects (``iscrowd``) are pycocotools' ignore regions in COCO metrics, and are ignored
  (like difficult objects) by the VOC metric.
* Difficult objects (``Target['difficult']``) are ignored by the VOC metric only. COCO metrics
  count them as ordinary objects: COCO's protocol has no such flag (pycocotools overwrites any
  'ignore' field with iscrowd), and making them crowd regions would change their IoU rule. The
  flag is kept in ``ground_truth.json`` as an extra annotation field.
"""
from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from detectors.base import Detection, Target
from experiments.evaluation.coco_backends import (
    AREA_NAMES,
    BACKENDS,
    IOU_THRESHOLDS,
    MAX_DETECTIONS,
    RECALL_THRESHOLDS,
    coco_evaluate,
)
from experiments.evaluation.tables import (
    DetectionTable,
    GroundTruthTable,
    coco_ground_truth,
    coco_results,
    tables_from_tensors,
    xywh_to_xyxy,
)
from experiments.evaluation.voc_ap import voc_average_precisions, voc_match

log = logging.getLogger(__name__)

__all__ = ["AREA_NAMES", "BACKENDS", "COCO_METRICS", "IOU_THRESHOLDS", "MAX_DETECTIONS", "METRICS",
           "PER_CLASS_COLUMNS", "RECALL_THRESHOLDS", "EvaluationResult", "evaluate", "score_tables"]

COCO_METRICS = ("map", "map_50", "map_75", "map_small", "map_medium", "map_large",
                "mar_1", "mar_10", "mar_100", "mar_small", "mar_medium", "mar_large")
METRICS = COCO_METRICS + ("voc07_map", "voc_map")
PER_CLASS_COLUMNS = ("label", "class_name", "category_id", "num_gt", "ap", "ap_50", "voc07_ap", "voc_ap")


@dataclass
class EvaluationResult:
    """What ``evaluate`` returns.

    metrics:   flat dict, the names in ``METRICS``; NaN where undefined.
    per_class: one row per class in label order, columns ``PER_CLASS_COLUMNS``; num_gt counts
               the non-crowd objects (difficult included); AP columns NaN without objects.
    precision: float64 [T=10, R=101, K, A=4, M=3], COCOeval's eval['precision'] with K in label
               order (the rows of per_class); -1 where undefined.
    recall:    float64 [T, K, A, M], COCOeval's eval['recall'], same order; -1 where undefined.
    ground_truth, detections, categories: what was scored, as tables; categories are
               (category id, name) in label order.
    coco_gt:   (property) the ground truth as a COCO dict (images, annotations, categories).
    coco_dt:   (property) the detections in COCO results form (image_id, category_id,
               bbox x y w h, score). Both are built on first use: scoring does not need them.
    """

    metrics: dict[str, float]
    per_class: pd.DataFrame
    precision: np.ndarray
    recall: np.ndarray
    ground_truth: GroundTruthTable
    detections: DetectionTable
    categories: list[tuple[int, str]]

    @functools.cached_property
    def coco_gt(self) -> dict:
        return coco_ground_truth(self.ground_truth, self.categories)

    @functools.cached_property
    def coco_dt(self) -> list[dict]:
        return coco_results(self.detections, self.ground_truth.image_ids)


def evaluate(detections: list[Detection], targets: list[Target], class_names: list[str],
             image_sizes: list[tuple[int, int]], label_to_category_id: dict[int, int] | None = None,
             backend: str = "faster_coco_eval") -> EvaluationResult:
    """Score one split. detections[i], targets[i] and image_sizes[i] ((H, W) pixels) are one image.

    class_names[l - 1] names label l; label_to_category_id maps labels 1..C to COCO category
    ids (identity when None). Raises ValueError naming the entry on bad input.
    """
    labels = list(range(1, len(class_names) + 1))
    if label_to_category_id is None:
        label_to_category_id = {label: label for label in labels}
    if sorted(label_to_category_id) != labels:
        raise ValueError(f"label_to_category_id must map exactly the labels 1..{len(class_names)}, "
                         f"got {sorted(label_to_category_id)}")
    if len(set(label_to_category_id.values())) != len(labels):
        raise ValueError(f"label_to_category_id maps two labels to one category: {label_to_category_id}")
    gt, dt = tables_from_tensors(detections, targets, image_sizes, label_to_category_id)
    categories = [(label_to_category_id[label], class_names[label - 1]) for label in labels]
    return score_tables(gt, dt, categories, backend)


def score_tables(gt: GroundTruthTable, dt: DetectionTable, categories: list[tuple[int, str]],
                 backend: str = "faster_coco_eval") -> EvaluationResult:
    """Score checked tables; categories are (category id, name) in label order (label = index + 1)."""
    category_ids = [c for c, _ in categories]
    precision, recall, stats = coco_evaluate(backend, gt, dt, categories)

    # COCOeval orders K by category id; put it in label order.
    to_label_order = np.argsort(np.argsort(category_ids))
    precision, recall = precision[:, :, to_label_order], recall[:, to_label_order]

    voc07_ap, voc_ap = _voc_average_precisions(gt, dt, category_ids)
    per_class = pd.DataFrame({
        "label": np.arange(1, len(categories) + 1),
        "class_name": [name for _, name in categories],
        "category_id": category_ids,
        "num_gt": [int(np.count_nonzero((gt.category_ids == c) & ~gt.iscrowd)) for c in category_ids],
        "ap": [_mean_defined(precision[:, :, k, 0, -1]) for k in range(len(categories))],
        "ap_50": [_mean_defined(precision[0, :, k, 0, -1]) for k in range(len(categories))],
        "voc07_ap": voc07_ap,
        "voc_ap": voc_ap,
    }, columns=list(PER_CLASS_COLUMNS))
    metrics = {name: (float(value) if value > -1 else math.nan) for name, value in zip(COCO_METRICS, stats)}
    metrics["voc07_map"] = _nanmean(voc07_ap)
    metrics["voc_map"] = _nanmean(voc_ap)
    return EvaluationResult(metrics, per_class, precision, recall, gt, dt, categories)


def _voc_average_precisions(gt: GroundTruthTable, dt: DetectionTable,
                            category_ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """VOC07 and VOC2010+ AP per class [C], difficult and crowd objects ignored.

    Score ties are broken as COCOeval breaks them: by image id, then by the order within the
    image; so the numbers do not depend on the order the images came in (DDP gathering).
    """
    image_rank = np.argsort(np.argsort(gt.image_ids, kind="stable"), kind="stable")
    order = np.argsort(image_rank[dt.image_index], kind="stable")  # [K] by image id, stable
    num_categories = int(np.max(category_ids, initial=0)) + 1
    gt_keys = gt.image_index * num_categories + gt.category_ids
    dt_keys = (dt.image_index * num_categories + dt.category_ids)[order]
    ignored = gt.difficult | gt.iscrowd
    scores, categories = dt.scores[order], dt.category_ids[order]
    outcome = voc_match(gt_keys, xywh_to_xyxy(gt.boxes), ignored,
                        dt_keys, xywh_to_xyxy(dt.boxes[order]), scores)
    voc07_ap, voc_ap, _ = voc_average_precisions(gt.category_ids, ignored, categories, scores,
                                                 outcome, category_ids)
    return voc07_ap, voc_ap


def _mean_defined(values: np.ndarray) -> float:
    """Mean over entries > -1, as pycocotools' summarize; NaN when none is defined."""
    defined = values[values > -1]
    return float(np.mean(defined)) if defined.size else math.nan


def _nanmean(values: np.ndarray) -> float:
    defined = values[~np.isnan(values)]
    return float(np.mean(defined)) if defined.size else math.nan


