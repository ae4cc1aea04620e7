"""detbench's evaluator: COCO metrics with pycocotools' numbers, Pascal VOC07 / VOC2010+ AP,
per-class AP and the precision/recall arrays for PR curves.

COCO metrics come from the pycocotools API: ``backend="pycocotools"`` runs pycocotools itself,
``backend="faster_coco_eval"`` (the default) runs faster-coco-eval's ``COCOeval_faster``: its C++
matching and accumulation, fed directly from the tables (see ``_faster_coco_eval``). Both give
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

import contextlib
import copy
import functools
import gc
import io
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from detectors.base import Detection, Target
from experiments.coco_format import (DetectionTable, GroundTruthTable, coco_ground_truth, coco_results,
                                     tables_from_tensors, xywh_to_xyxy)
from experiments.voc_ap import voc_average_precisions, voc_match

log = logging.getLogger(__name__)

BACKENDS = ("faster_coco_eval", "pycocotools")
COCO_METRICS = ("map", "map_50", "map_75", "map_small", "map_medium", "map_large",
                "mar_1", "mar_10", "mar_100", "mar_small", "mar_medium", "mar_large")
METRICS = COCO_METRICS + ("voc07_map", "voc_map")
PER_CLASS_COLUMNS = ("label", "class_name", "category_id", "num_gt", "ap", "ap_50", "voc07_ap", "voc_ap")
IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)  # T: COCOeval's params.iouThrs
RECALL_THRESHOLDS = np.linspace(0.0, 1.0, 101)  # R: COCOeval's params.recThrs
AREA_NAMES = ("all", "small", "medium", "large")  # A
MAX_DETECTIONS = (1, 10, 100)  # M


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
    if backend not in BACKENDS:
        raise ValueError(f"unknown eval backend '{backend}', choose one of {BACKENDS}")
    category_ids = [c for c, _ in categories]
    with _gc_paused():
        precision, recall, stats = _coco_evaluate(backend, gt, dt, categories)

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


@contextlib.contextmanager
def _gc_paused():
    """Pause Python's cyclic garbage collector: building a million small dicts and lists would
    otherwise trigger full collections over them again and again (none of them form cycles)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _coco_evaluate(backend: str, gt: GroundTruthTable, dt: DetectionTable,
                   categories: list[tuple[int, str]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """COCO bbox evaluation -> (precision [T, R, K, A, M], recall [T, K, A, M], stats [12]), K in
    category-id order, -1 where undefined (COCOeval's eval['precision'], eval['recall'], stats)."""
    category_ids = [c for c, _ in categories]
    if len(gt.image_ids) == 0:  # COCOeval cannot accumulate nothing; every number is undefined
        k = len(category_ids)
        shape = (len(IOU_THRESHOLDS), k, len(AREA_NAMES), len(MAX_DETECTIONS))
        return -np.ones(shape[:1] + (len(RECALL_THRESHOLDS),) + shape[1:]), -np.ones(shape), -np.ones(12)
    if backend == "pycocotools":
        return _pycocotools(coco_ground_truth(gt, categories), coco_results(dt, gt.image_ids))
    try:
        return _faster_coco_eval(gt, dt, category_ids)
    except (AttributeError, ImportError, TypeError) as error:  # its C++ internals changed
        log.warning("faster-coco-eval's internals differ (%s): using its standard path", error)
        return _faster_coco_eval_standard(coco_ground_truth(gt, categories), coco_results(dt, gt.image_ids))


def _pycocotools(coco_gt: dict, coco_dt: list[dict]):
    """The reference: pycocotools' COCO, loadRes and COCOeval, as its README shows. They annotate
    the dicts in place ('ignore', 'area', 'segmentation'...): pass fresh ones."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        cocogt = COCO()
        cocogt.dataset = coco_gt
        cocogt.createIndex()
        if coco_dt:
            cocodt = cocogt.loadRes(coco_dt)
        else:  # pycocotools' loadRes fails on an empty list; no detections is a valid result
            cocodt = COCO()
            cocodt.dataset = {"images": coco_gt["images"], "categories": coco_gt["categories"],
                              "annotations": []}
            cocodt.createIndex()
        evaluator = COCOeval(cocogt, cocodt, "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator.eval["precision"], evaluator.eval["recall"], np.asarray(evaluator.stats)


def _faster_coco_eval_standard(coco_gt: dict, coco_dt: list[dict]):
    """faster-coco-eval used as its README shows: COCO, loadRes, COCOeval_faster (fresh dicts)."""
    from faster_coco_eval import COCO, COCOeval_faster

    cocogt = COCO(coco_gt)
    evaluator = COCOeval_faster(cocogt, cocogt.loadRes(coco_dt), "bbox", print_function=_silent)
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    return evaluator.eval["precision"], evaluator.eval["recall"], np.asarray(evaluator.stats[:12])


def _silent(*args, **kwargs) -> None:
    pass


def coco_box_iou(dt_boxes: np.ndarray, gt_boxes: np.ndarray, gt_crowd: np.ndarray) -> np.ndarray:
    """Row-wise IoU of float64 [E, 4] x y w h pairs -> [E], the very arithmetic of COCO's bbIou
    (maskApi.c; faster-coco-eval's port): for a crowd region the union is the detection's area."""
    w = np.minimum(dt_boxes[:, 2] + dt_boxes[:, 0], gt_boxes[:, 2] + gt_boxes[:, 0]) \
        - np.maximum(dt_boxes[:, 0], gt_boxes[:, 0])
    h = np.minimum(dt_boxes[:, 3] + dt_boxes[:, 1], gt_boxes[:, 3] + gt_boxes[:, 1]) \
        - np.maximum(dt_boxes[:, 1], gt_boxes[:, 1])
    inter = w * h
    dt_area = dt_boxes[:, 2] * dt_boxes[:, 3]
    union = np.where(gt_crowd, dt_area, dt_area + gt_boxes[:, 2] * gt_boxes[:, 3] - inter)
    return np.divide(inter, union, out=np.zeros_like(inter), where=(w > 0) & (h > 0))


def _run_starts(keys: np.ndarray) -> np.ndarray:
    """Where each run of equal values starts in sorted ``keys`` [N] -> int64 [runs]."""
    return np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]]) if len(keys) else np.zeros(0, np.int64)


def _faster_coco_eval(gt: GroundTruthTable, dt: DetectionTable, category_ids: list[int]):
    """COCOeval_faster's C++ evaluation, fed from the tables.

    ``COCOeval_faster.evaluate`` spends most of its time in Python: indexing the COCO dicts and
    looping over every (image, category) pair to compute IoUs. Here the IoUs of all pairs come
    from one vectorised ``coco_box_iou``, laid out as ``computeIoU`` lays them out (each pair's
    best 100 detections by score, stable, against its objects in input order), and go with the
    annotations to the same C++ call, ``COCOevalEvaluateAccumulate``; summarize is COCOeval's.
    """
    import faster_coco_eval.faster_eval_api_cpp as cpp
    from faster_coco_eval import COCOeval_faster

    evaluator = COCOeval_faster(iouType="bbox", print_function=_silent)
    params = evaluator.params
    image_ids, cat_ids = np.sort(gt.image_ids), np.sort(np.asarray(category_ids, dtype=np.int64))
    params.imgIds, params.catIds = image_ids.tolist(), cat_ids.tolist()
    params.maxDets = sorted(params.maxDets)
    num_cats = len(cat_ids)
    image_slot = np.empty(len(image_ids), dtype=np.int64)  # position given -> position sorted
    image_slot[np.argsort(gt.image_ids, kind="stable")] = np.arange(len(image_ids))
    gt_keys = image_slot[gt.image_index] * num_cats + np.searchsorted(cat_ids, gt.category_ids)
    dt_keys = image_slot[dt.image_index] * num_cats + np.searchsorted(cat_ids, dt.category_ids)

    # Each pair's best maxDets detections, by score, ties in input order (COCOeval's stable sort).
    by_score = np.argsort(-dt.scores, kind="stable")
    order = by_score[np.argsort(dt_keys[by_score], kind="stable")]  # [K] by pair, then score
    keys = dt_keys[order]
    starts = _run_starts(keys)
    rank = np.arange(len(order)) - np.repeat(starts, np.diff(np.r_[starts, len(order)]))
    order = order[rank < params.maxDets[-1]]
    keys = dt_keys[order]

    gt_order = np.argsort(gt_keys, kind="stable")  # objects by pair, input order within
    first_gt = np.searchsorted(gt_keys[gt_order], keys, "left")  # [D]
    num_gt = np.searchsorted(gt_keys[gt_order], keys, "right") - first_gt  # [D]
    offsets = np.cumsum(num_gt) - num_gt  # [D] first IoU of each detection
    owner = np.repeat(np.arange(len(order)), num_gt)  # [E] IoU -> detection
    candidate = gt_order[first_gt[owner] + np.arange(len(owner)) - offsets[owner]]  # [E] object rows
    iou = coco_box_iou(dt.boxes[order[owner]], gt.boxes[candidate], gt.iscrowd[candidate])  # [E]

    ious = [[[] for _ in range(num_cats)] for _ in range(len(image_ids))]  # [I][K] -> [D_p, G_p]
    starts = _run_starts(keys)
    lengths = np.diff(np.r_[starts, len(order)])
    for start, length in zip(starts.tolist(), lengths.tolist()):
        cols = int(num_gt[start])
        if cols:
            key, first = int(keys[start]), int(offsets[start])
            block = iou[first:first + length * cols].reshape(length, cols)  # [D_p, G_p]
            ious[key // num_cats][key % num_cats] = block.tolist()

    gt_dataset, dt_dataset = cpp.Dataset(), cpp.Dataset()
    for n, (image_id, cat_id, area, crowd) in enumerate(zip(
            gt.image_ids[gt.image_index].tolist(), gt.category_ids.tolist(), gt.area.tolist(),
            gt.iscrowd.tolist())):
        gt_dataset.append_ref(image_id, cat_id,
                              {"id": n + 1, "area": area, "iscrowd": crowd, "ignore": crowd})
    dt_area = (dt.boxes[:, 2] * dt.boxes[:, 3])[order]  # loadRes's area: w * h
    for n, image_id, cat_id, score, area in zip(
            (order + 1).tolist(), gt.image_ids[dt.image_index[order]].tolist(),
            dt.category_ids[order].tolist(), dt.scores[order].tolist(), dt_area.tolist()):
        dt_dataset.append_ref(image_id, cat_id, {"id": n, "score": score, "area": area})

    evaluator._paramsEval = copy.deepcopy(params)
    evaluator.eval = cpp.COCOevalEvaluateAccumulate(
        evaluator._paramsEval, ious, gt_dataset, dt_dataset, params.imgIds, params.catIds, True)
    evaluator.summarize()
    return evaluator.eval["precision"], evaluator.eval["recall"], np.asarray(evaluator.stats[:12])


def _mean_defined(values: np.ndarray) -> float:
    """Mean over entries > -1, as pycocotools' summarize; NaN when none is defined."""
    defined = values[values > -1]
    return float(np.mean(defined)) if defined.size else math.nan


def _nanmean(values: np.ndarray) -> float:
    defined = values[~np.isnan(values)]
    return float(np.mean(defined)) if defined.size else math.nan


def save_evaluation(result: EvaluationResult, folder: Path) -> None:
    """Write detections.json, ground_truth.json, per_class.csv and pr_curves.npz into ``folder``
    (the run-folder files in README's table)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "detections.json", "w") as f:
        json.dump(result.coco_dt, f)
    with open(folder / "ground_truth.json", "w") as f:
        json.dump(result.coco_gt, f)
    result.per_class.to_csv(folder / "per_class.csv", index=False)
    np.savez_compressed(
        folder / "pr_curves.npz", precision=result.precision, recall=result.recall,
        iou_thresholds=IOU_THRESHOLDS, recall_thresholds=RECALL_THRESHOLDS,
        class_names=np.array(result.per_class["class_name"].tolist(), dtype=str),
        category_ids=result.per_class["category_id"].to_numpy(),
        area_names=np.array(AREA_NAMES), max_detections=np.array(MAX_DETECTIONS))


def gather_to_rank0(items: list) -> list | None:
    """Concatenate every rank's ``items`` on rank 0 (rank order; tensors moved to the CPU first).

    Returns the whole list on rank 0 and None elsewhere; ``items`` itself when torch.distributed
    is not initialised. A DistributedSampler pads ranks with repeated images: drop repeated
    image ids before ``evaluate``, which refuses them. With NCCL, set each rank's CUDA device.
    """
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return list(items)
    rank, world_size = torch.distributed.get_rank(), torch.distributed.get_world_size()
    gathered = [None] * world_size if rank == 0 else None
    torch.distributed.gather_object(_to_cpu(list(items)), gathered, dst=0)
    if rank != 0:
        return None
    return [item for part in gathered for item in part]


def _to_cpu(value):
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_cpu(v) for v in value)
    return value
