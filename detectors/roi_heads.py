"""The Fast R-CNN head's training-time RoI labelling with the paper's background floor.

torchvision's ``RoIHeads`` labels a proposal foreground at IoU >= ``fg_iou_thresh`` with its
best ground truth and background below ``bg_iou_thresh``, down to IoU 0. Fast R-CNN (and
py-faster-rcnn) take background only from [``bg_iou_low``, ``bg_iou_thresh``) = [0.1, 0.5):
"the lower threshold of 0.1 appears to act as a heuristic for hard example mining". A proposal
below the floor is neither foreground nor background (label -1, which the sampler skips).
An image without ground truth has no IoU to measure: all its proposals stay background.
"""
from __future__ import annotations

from torch import Tensor
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.ops import box_iou


class BackgroundFloorRoIHeads(RoIHeads):
    """``RoIHeads`` whose background proposals have IoU in [``bg_iou_low``, ``bg_iou_thresh``).

    Same constructor as ``RoIHeads`` plus ``bg_iou_low`` (keyword); same state_dict keys.
    """

    def __init__(self, *args, bg_iou_low: float = 0.1, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.bg_iou_low = float(bg_iou_low)

    def assign_targets_to_proposals(self, proposals: list[Tensor], gt_boxes: list[Tensor],
                                    gt_labels: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """Per image: matched ground truth [P] and label [P] (class, 0 background, -1 ignored)."""
        matched, labels = super().assign_targets_to_proposals(proposals, gt_boxes, gt_labels)
        for boxes, gt, label in zip(proposals, gt_boxes, labels):
            if gt.numel() and boxes.numel():
                best = box_iou(gt, boxes).max(dim=0).values          # [P]
                label[(label == 0) & (best < self.bg_iou_low)] = -1
        return matched, labels

    def extra_repr(self) -> str:
        return f"bg_iou_low={self.bg_iou_low}"
