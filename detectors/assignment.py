"""Per ground-truth object: what a detector's training-time target assignment gives it.

Every detector that has an assignment rule implements ``Detector.assign_objects(batch)``,
which runs the SAME code its loss runs (SSD: ``MultiBoxLoss.match``; YOLO v1:
``yolo_grid.assign_objects_to_cells``; Faster R-CNN: torchvision's RPN
``assign_targets_to_anchors`` and RoIHeads' ``assign_targets_to_proposals``) and returns one
``ObjectAssignment`` per image and per stage. ``experiments.studies.coverage`` turns them into the
recall ceiling of training, by object size and class.

Status of an object (``STATUSES``, an int64 code per object):

- ``matched``: at least one positive by the regular rule (SSD: a default box at IoU >= the
  threshold; RPN: an anchor at IoU >= fg 0.7; RoI head: a proposal at IoU >= 0.5; YOLO v1:
  the object won the cell holding its centre);
- ``best_candidate_only``: positives only from the best-candidate rule (SSD's forced best
  default box; torchvision's ``allow_low_quality_matches``): no candidate reaches the threshold;
- ``lost_below_threshold``: no positive, and no candidate reaches the threshold (a stage
  without a best-candidate rule: the RoI head);
- ``lost_collision``: no positive because another object took what this one needed (YOLO v1:
  two centres in one cell, the larger object wins; SSD / RPN: its best candidate went to an
  object that overlaps it more).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

STATUSES = ("matched", "best_candidate_only", "lost_below_threshold", "lost_collision")
MATCHED, BEST_CANDIDATE_ONLY, LOST_BELOW_THRESHOLD, LOST_COLLISION = range(len(STATUSES))


@dataclass
class ObjectAssignment:
    """One image, one stage; G objects in the order of the target given.

    positives: int64 [G], candidates (default boxes, anchors, proposals, predictors) that
        learn the object as foreground.
    best_iou: float32 [G], IoU of the object's best candidate box; NaN where the detector has
        no candidate boxes to compare (YOLO v1 predicts its boxes, it has no priors).
    status: int64 [G], index into ``STATUSES``.
    threshold: the foreground IoU threshold of this stage (NaN for YOLO v1's cell rule).
    """

    positives: Tensor
    best_iou: Tensor
    status: Tensor
    threshold: float

    def __post_init__(self) -> None:
        g = self.positives.shape[0]
        if self.best_iou.shape != (g,) or self.status.shape != (g,):
            raise ValueError(f"ObjectAssignment: positives {list(self.positives.shape)}, best_iou "
                             f"{list(self.best_iou.shape)} and status {list(self.status.shape)} must all be [G]")


def status_from_counts(positives: Tensor, regular_positives: Tensor, best_iou: Tensor, threshold: float,
                       best_candidate_rule: bool) -> Tensor:
    """Status codes [G] from per-object counts [G]: ``regular_positives`` are the positives at
    IoU >= ``threshold``; an object without positives whose best candidate reaches the
    threshold, or that a best-candidate rule should have kept, lost it to another object."""
    status = torch.full_like(positives, LOST_BELOW_THRESHOLD)
    taken = (best_iou >= threshold) | best_candidate_rule
    status = torch.where((positives == 0) & taken, torch.full_like(status, LOST_COLLISION), status)
    status = torch.where(positives > 0, torch.full_like(status, BEST_CANDIDATE_ONLY), status)
    return torch.where(regular_positives > 0, torch.full_like(status, MATCHED), status)


def count_per_object(object_index: Tensor, num_objects: int) -> Tensor:
    """int64 [G]: how often each of ``num_objects`` appears in ``object_index`` [K] (>= 0)."""
    return torch.bincount(object_index.long(), minlength=num_objects)[:num_objects]
