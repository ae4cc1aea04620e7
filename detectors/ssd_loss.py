"""SSD's MultiBox loss: L = (L_conf + alpha L_loc) / N, N = matched default boxes in the batch.

L_loc: Smooth L1 between predicted and target offsets (``boxes.encode`` with variances) over
the matched boxes. L_conf: softmax cross-entropy over the matched boxes and the hardest
negatives, at most ``neg_pos_ratio`` per positive in each image, ranked by their loss
(hard negative mining). An image without objects has no positives and so no negatives: it
adds nothing, and N = max(1, matched) keeps the loss finite when the whole batch is empty.

Crowd regions are never learned: matching uses the other objects only, and a default box left
as background that lies mostly inside a crowd box (intersection over the default box's area >=
``crowd_ioa``, 0.7 as Detectron's ``CROWD_FILTER_THRESH``) is ignored: class target -1, neither
positive nor a candidate negative.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detectors.assignment import ObjectAssignment, count_per_object, status_from_counts
from detectors.boxes import PriorMatch, encode, intersection_over_first, match_priors


class MultiBoxLoss(nn.Module):
    def __init__(self, iou_threshold: float = 0.5, neg_pos_ratio: float = 3.0, loc_weight: float = 1.0,
                 variances: tuple[float, float] = (0.1, 0.2), crowd_ioa: float = 0.7):
        super().__init__()
        self.crowd_ioa = crowd_ioa
        self.iou_threshold = iou_threshold
        self.neg_pos_ratio = neg_pos_ratio
        self.loc_weight = loc_weight
        self.variances = tuple(variances)

    def match(self, gt_boxes: Tensor, priors_xyxy: Tensor) -> PriorMatch:
        """SSD's matching (``boxes.match_priors``) at this loss's IoU threshold: what ``assign``
        learns from and what ``per_object`` reports. gt_boxes [G, 4], priors_xyxy [A, 4], xyxy."""
        return match_priors(gt_boxes, priors_xyxy, self.iou_threshold)

    def per_object(self, prior_match: PriorMatch, num_objects: int) -> ObjectAssignment:
        """What ``match`` gave each of the G ground truths: positives (default boxes matched),
        the best default box's IoU, and the status (``detectors.assignment``)."""
        matched, iou = prior_match.matched, prior_match.iou
        positive = matched >= 0
        positives = count_per_object(matched[positive], num_objects)
        regular = count_per_object(matched[positive & (iou >= self.iou_threshold)], num_objects)
        return ObjectAssignment(positives, prior_match.gt_best_iou.float(),
                                status_from_counts(positives, regular, prior_match.gt_best_iou,
                                                   self.iou_threshold, best_candidate_rule=True),
                                self.iou_threshold)

    def assign(self, priors: Tensor, priors_xyxy: Tensor, gt_boxes: list[Tensor],
               gt_labels: list[Tensor], gt_crowd: list[Tensor] | None = None) -> tuple[Tensor, Tensor]:
        """Targets per default box. priors: [A, 4] cxcywh, priors_xyxy [A, 4], gt_boxes [G_i, 4]
        xyxy, all in the same units; gt_crowd: optional [G_i] flags (nonzero: crowd region).
        Returns (class targets [B, A] int64, 0 = background, -1 = ignored (inside a crowd
        region); offset targets [B, A, 4], meaningful where the class target is > 0)."""
        classes, offsets = [], []
        for i, (boxes, labels) in enumerate(zip(gt_boxes, gt_labels)):
            crowd = (gt_crowd[i] != 0) if gt_crowd is not None else torch.zeros_like(labels, dtype=torch.bool)
            boxes, labels, crowd_boxes = boxes[~crowd], labels[~crowd], boxes[crowd]
            matched = self.match(boxes, priors_xyxy).matched                  # [A]
            if boxes.numel() == 0:
                target, offset = torch.zeros_like(matched), priors.new_zeros(priors.shape)
            else:
                safe = matched.clamp(min=0)
                target = torch.where(matched >= 0, labels[safe], torch.zeros_like(matched))
                offset = encode(boxes[safe], priors, self.variances)         # [A, 4]
            if crowd_boxes.numel():
                inside = intersection_over_first(priors_xyxy, crowd_boxes).amax(dim=1)   # [A]
                target = torch.where((target == 0) & (inside >= self.crowd_ioa),
                                     torch.full_like(target, -1), target)
            classes.append(target)
            offsets.append(offset)
        return torch.stack(classes), torch.stack(offsets)

    def forward(self, loc: Tensor, conf: Tensor, class_targets: Tensor, offset_targets: Tensor) -> dict[str, Tensor]:
        """loc: [B, A, 4] predicted offsets; conf: [B, A, C + 1] logits (0 = background);
        class_targets [B, A]; offset_targets [B, A, 4] (from ``assign``).
        Returns {'loss_conf': L_conf / N, 'loss_loc': alpha L_loc / N}."""
        positive = class_targets > 0                                          # [B, A]
        background = class_targets == 0                                       # -1: ignored
        num_pos = positive.sum(dim=1)                                         # [B]
        n = num_pos.sum().clamp(min=1).to(loc.dtype)

        loc_loss = F.smooth_l1_loss(loc[positive], offset_targets[positive], reduction="sum")

        ce = F.cross_entropy(conf.flatten(0, 1), class_targets.flatten().clamp(min=0), reduction="none")
        ce = ce.view_as(class_targets)                                        # [B, A]
        num_neg = torch.minimum(num_pos * self.neg_pos_ratio,
                                background.sum(dim=1)).to(torch.int64)        # [B]
        # hard negative mining: the sum of each image's num_neg largest background losses
        negative_ce = ce.masked_fill(~background, float("-inf"))
        ranked = negative_ce.sort(dim=1, descending=True).values             # [B, A]
        rank = torch.arange(ranked.shape[1], device=ranked.device)
        hardest = rank.unsqueeze(0) < num_neg.unsqueeze(1)                    # [B, A]
        conf_loss = ce[positive].sum() + torch.where(hardest, ranked, torch.zeros_like(ranked)).sum()
        return {"loss_conf": conf_loss / n, "loss_loc": self.loc_weight * loc_loss / n}
