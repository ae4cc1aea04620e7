"""Box maths: offsets with variances (encode / decode) and SSD's matching (per box and per object).

Formats: ``xyxy`` = x1, y1, x2, y2; ``cxcywh`` = centre x, centre y, width, height. Units are
whatever the caller uses (pixels, or fractions of the image for default boxes) as long as both
arguments of a function share them. Conversions and IoU are torchvision's.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor
from torchvision.ops import box_convert, box_iou

#: exp() of a size offset is capped at 1000/16, as in torchvision's BoxCoder, so that an
#: untrained network cannot overflow float32; real offsets never come near it.
MAX_LOG_SCALE = math.log(1000.0 / 16)


def encode(boxes: Tensor, priors: Tensor, variances: tuple[float, float] = (0.1, 0.2)) -> Tensor:
    """Offsets of ``boxes`` relative to ``priors`` (the regression targets of SSD / Faster R-CNN).

    boxes:  [..., 4] xyxy.  priors: [..., 4] cxcywh (same units).  Returns [..., 4]:
    ((cx - pcx) / pw / v0, (cy - pcy) / ph / v0, log(w / pw) / v1, log(h / ph) / v1).
    Variances 0.1 / 0.2 equal torchvision's BoxCoder weights 10, 10, 5, 5.
    """
    boxes = box_convert(boxes, "xyxy", "cxcywh")
    centre = (boxes[..., :2] - priors[..., :2]) / priors[..., 2:] / variances[0]  # [..., 2]
    size = torch.log(boxes[..., 2:] / priors[..., 2:]) / variances[1]            # [..., 2]
    return torch.cat([centre, size], dim=-1)


def decode(offsets: Tensor, priors: Tensor, variances: tuple[float, float] = (0.1, 0.2)) -> Tensor:
    """Inverse of ``encode``: offsets [..., 4] and priors [..., 4] cxcywh -> boxes [..., 4] xyxy."""
    centre = priors[..., :2] + offsets[..., :2] * variances[0] * priors[..., 2:]               # [..., 2]
    size = priors[..., 2:] * torch.exp((offsets[..., 2:] * variances[1]).clamp(max=MAX_LOG_SCALE))
    return torch.cat([centre - 0.5 * size, centre + 0.5 * size], dim=-1)


class PriorMatch(NamedTuple):
    """What SSD's matching gives, per default box and per ground truth.

    matched: int64 [A], the ground truth each default box learns from, -1 for background.
    iou: float [A], the IoU with that ground truth, 0 for background.
    forced: bool [A], the box was paired with a ground truth by the bipartite step (rule 1 of
        ``match_priors``): its best box, or its best still free one.
    gt_best_iou: float [G], each ground truth's best IoU over all default boxes.
    """

    matched: Tensor
    iou: Tensor
    forced: Tensor
    gt_best_iou: Tensor


def match(gt_boxes: Tensor, priors: Tensor, iou_threshold: float = 0.5) -> tuple[Tensor, Tensor]:
    """``match_priors``' (matched [A], iou [A])."""
    result = match_priors(gt_boxes, priors, iou_threshold)
    return result.matched, result.iou


def match_priors(gt_boxes: Tensor, priors: Tensor, iou_threshold: float = 0.5) -> PriorMatch:
    """SSD's matching strategy (MultiBox / the SSD Caffe code's ``MatchBBox``, "bipartite" then
    "per_prediction"): which ground truth each default box learns from.

    gt_boxes: [G, 4] xyxy.  priors: [A, 4] xyxy (same units).  Returns a ``PriorMatch``.

    1. Bipartite: repeatedly the (ground truth, default box) pair of highest IoU among the
       ground truths and boxes not yet paired is matched, whatever the IoU, so that every object
       gets its own best default box even when two objects share their best one (the weaker
       then takes its best remaining box). An object overlapping no box at all (IoU 0) gets none.
    2. Every other default box takes the ground truth it overlaps best if that IoU is at least
       ``iou_threshold`` (torchvision's SSDMatcher also uses >=).
    """
    num_priors = priors.shape[0]
    if gt_boxes.numel() == 0:
        return PriorMatch(torch.full((num_priors,), -1, dtype=torch.int64, device=priors.device),
                          priors.new_zeros(num_priors),
                          torch.zeros(num_priors, dtype=torch.bool, device=priors.device), priors.new_zeros(0))
    iou = box_iou(gt_boxes, priors)                          # [G, A]
    best_iou, best_gt = iou.max(dim=0)                       # [A], [A]
    matched = torch.where(best_iou >= iou_threshold, best_gt, torch.full_like(best_gt, -1))
    matched_iou = torch.where(matched >= 0, best_iou, torch.zeros_like(best_iou))

    gt_best_iou = iou.max(dim=1).values                      # [G]
    forced = torch.zeros(num_priors, dtype=torch.bool, device=priors.device)   # [A]
    free = iou.clone()                                       # [G, A], -1 once paired
    for _ in range(iou.shape[0]):
        value, flat = free.flatten().max(dim=0)
        if value <= 0:
            break
        g, a = flat // num_priors, flat % num_priors
        matched[a], matched_iou[a], forced[a] = g, iou[g, a], True
        free[g, :] = -1.0
        free[:, a] = -1.0
    return PriorMatch(matched, matched_iou, forced, gt_best_iou)


def intersection_over_first(first: Tensor, second: Tensor) -> Tensor:
    """[N, 4] and [M, 4] xyxy -> [N, M]: the share of each ``first`` box's area inside each
    ``second`` box (COCO's and Detectron's crowd measure, intersection over area)."""
    lt = torch.maximum(first[:, None, :2], second[None, :, :2])
    rb = torch.minimum(first[:, None, 2:], second[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=-1)                                # [N, M]
    area = ((first[:, 2] - first[:, 0]) * (first[:, 3] - first[:, 1])).clamp(min=1e-12)
    return inter / area[:, None]
