"""COCO bbox evaluation backends: pycocotools itself, faster-coco-eval as its README shows, and
faster-coco-eval's C++ matching and accumulation fed directly from the tables (the default).

All three return COCOeval's ``eval['precision']`` [T, R, K, A, M], ``eval['recall']`` [T, K, A, M]
and ``stats`` [12], K in category-id order, -1 where undefined; the tests hold them to 1e-12 of
pycocotools. ``coco_box_iou`` is COCO's bbIou, vectorised.
"""
from __future__ import annotations

import contextlib
import copy
import gc
import io
import logging

import numpy as np

from experiments.evaluation.tables import DetectionTable, GroundTruthTable, coco_ground_truth, coco_results

log = logging.getLogger(__name__)

BACKENDS = ("faster_coco_eval", "pycocotools")
IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)  # T: COCOeval's params.iouThrs
RECALL_THRESHOLDS = np.linspace(0.0, 1.0, 101)  # R: COCOeval's params.recThrs
AREA_NAMES = ("all", "small", "medium", "large")  # A
MAX_DETECTIONS = (1, 10, 100)  # M


def coco_evaluate(backend: str, gt: GroundTruthTable, dt: DetectionTable,
                  categories: list[tuple[int, str]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """COCO bbox evaluation by ``backend`` (one of ``BACKENDS``) -> (precision, recall, stats),
    with Python's cyclic garbage collector paused meanwhile."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown eval backend '{backend}', choose one of {BACKENDS}")
    with _gc_paused():
        return _coco_evaluate(backend, gt, dt, categories)


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
