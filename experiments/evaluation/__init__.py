"""detbench's evaluator, one idea per module:

* ``metrics``: scoring a split (``evaluate`` from tensors, ``score_tables`` from tables):
  COCO AP/AR, VOC07 / VOC2010+ mAP, per-class AP, the precision/recall arrays;
* ``tables``: flat numpy tables of boxes and their conversions to and from tensors and COCO JSON;
* ``coco_backends``: pycocotools and faster-coco-eval behind one call;
* ``voc_ap``: Pascal VOC's matching and 11-point / area AP;
* ``files``: the run-folder files the evaluator writes;
* ``cli``: ``detbench-eval``.
"""
from experiments.evaluation.files import save_evaluation
from experiments.evaluation.metrics import (
                                            AREA_NAMES,
                                            BACKENDS,
                                            COCO_METRICS,
                                            IOU_THRESHOLDS,
                                            MAX_DETECTIONS,
                                            METRICS,
                                            PER_CLASS_COLUMNS,
                                            RECALL_THRESHOLDS,
                                            EvaluationResult,
                                            evaluate,
                                            score_tables,
)

__all__ = ["AREA_NAMES", "BACKENDS", "COCO_METRICS", "IOU_THRESHOLDS", "MAX_DETECTIONS", "METRICS",
           "PER_CLASS_COLUMNS", "RECALL_THRESHOLDS", "EvaluationResult", "evaluate", "save_evaluation",
           "score_tables"]
