"""R-CNN's second training phase: cache region features, fit per-class SVMs and box regressors.

``fit_region_classifiers(model, batches)`` runs the fine-tuned CNN once over the training
images (``batches``: an iterable of (images, targets) as the contract's training forward takes
them) and keeps, in half precision (the paper's feature cache, ~200 GB at VOC scale):

- fc7 of every ground-truth box (the SVM positives of its class) and of up to
  ``negatives_per_image`` proposals per image (the first ones, best-ranked), with each
  proposal's best IoU per class [P, N] (a negative of class c when below 0.3);
- pool5 of the proposals at IoU >= 0.6 with an object, with the deltas to it (``BOX_CODER``)
  and its class: the box-regression set.

Features are scaled to a mean norm of 20 (R-CNN's ``feat_norm_mean``); the scales become the
model's ``feature_scale``. Then per class: ``hard_negative_svm`` (C 1e-3, bias multiplier 10,
positive weight 2) and ``ridge_regression`` (lambda 1000). A class without positive regions is
skipped and reported (``rcnn_svm_skipped``); so is a class without regression samples.
"""
from __future__ import annotations

import torch
from torchvision.ops import box_iou

from detectors.rcnn import BOX_CODER, warp_regions
from detectors.rcnn_svm import hard_negative_svm, ridge_regression


@torch.no_grad()
def collect_features(model, batches, negatives_per_image: int = 200, regression_iou: float = 0.6) -> dict:
    """The feature cache (half precision): {"positives" [G, D], "positive_labels" [G],
    "negatives" [M, D], "negative_iou" [M, N], "pool5" [K, P5], "deltas" [K, 4], "regression_labels" [K]}."""
    parts = {k: [] for k in ("positives", "positive_labels", "negatives", "negative_iou", "pool5", "deltas",
                             "regression_labels")}
    model.eval()
    for images, targets in batches:
        targets = model.training_targets(list(targets))
        proposals = model.propose(list(images))
        for image, boxes, target in zip(images, proposals, targets):
            gt, labels = target["boxes"].to(boxes), target["labels"].to(boxes.device)
            negatives = boxes[:negatives_per_image]
            regions = warp_regions(model.normalise(image), torch.cat([gt, boxes]), model.warp_size, model.context)
            pool5, fc7 = model.region_features(regions)        # each region once: negatives are boxes[:m]
            g, m = len(gt), len(negatives)
            parts["positives"].append(fc7[:g].half())
            parts["positive_labels"].append(labels)
            per_class = torch.zeros(m, model.num_classes, device=boxes.device)
            if g and m:
                iou = box_iou(negatives, gt)                                    # [M, G]
                per_class.scatter_reduce_(1, (labels - 1)[None].expand(m, -1), iou, "amax")
            parts["negatives"].append(fc7[g:g + m].half())
            parts["negative_iou"].append(per_class.half())
            if g and len(boxes):
                best, owner = box_iou(boxes, gt).max(1)
                near = best >= regression_iou
                parts["pool5"].append(pool5[g:][near].half())
                parts["deltas"].append(BOX_CODER.encode_single(gt[owner[near]], boxes[near]))
                parts["regression_labels"].append(labels[owner[near]])
    return {k: torch.cat(v).cpu() if v else torch.zeros(0) for k, v in parts.items()}


def mean_norm_scale(features: torch.Tensor, target: float = 20.0) -> float:
    """The factor that brings the features' mean L2 norm to ``target`` (1 when there are none)."""
    if features.numel() == 0:
        return 1.0
    norm = features.float().norm(dim=1).mean()
    return float(target / norm) if norm > 0 else 1.0


def fit_region_classifiers(model, batches, negatives_per_image: int = 200, c: float = 1e-3,
                           bias_multiplier: float = 10.0, positive_weight: float = 2.0,
                           negative_iou: float = 0.3, regression_iou: float = 0.6,
                           ridge_lambda: float = 1000.0) -> dict:
    """Fit ``model``'s SVMs and regressors in place; returns the named numbers of the fit."""
    cache = collect_features(model, batches, negatives_per_image, regression_iou)
    fc7_scale = mean_norm_scale(torch.cat([cache["positives"].reshape(-1, model.svm_weight.shape[1]),
                                           cache["negatives"].reshape(-1, model.svm_weight.shape[1])]))
    pool5_scale = mean_norm_scale(cache["pool5"])
    device = model.svm_weight.device
    model.feature_scale.copy_(torch.tensor([fc7_scale, pool5_scale], device=device))
    skipped, regress_skipped, used = [], [], 0
    for cls in range(1, model.num_classes + 1):
        i = cls - 1
        positives = cache["positives"][cache["positive_labels"] == cls].float() * fc7_scale
        negatives = cache["negatives"][cache["negative_iou"][:, i].float() < negative_iou].float() * fc7_scale \
            if len(cache["negatives"]) else positives.new_zeros(0, positives.shape[1])
        if len(positives) == 0 or len(negatives) == 0:
            skipped.append(cls)
            model.svm_ready[i] = False
        else:
            weight, bias, info = hard_negative_svm(positives, negatives, c=c, bias_multiplier=bias_multiplier,
                                                   positive_weight=positive_weight)
            model.svm_weight[i], model.svm_bias[i], model.svm_ready[i] = weight.to(device), bias, True
            used += info["negatives_used"]
        chosen = cache["regression_labels"] == cls if len(cache["pool5"]) else torch.zeros(0, dtype=torch.bool)
        if int(chosen.sum()) == 0:
            regress_skipped.append(cls)
            model.regressor_ready[i] = False
            continue
        weight = ridge_regression(cache["pool5"][chosen].float() * pool5_scale, cache["deltas"][chosen], ridge_lambda)
        model.regressor[i], model.regressor_ready[i] = weight.to(device), True
    cache_mb = sum(v.numel() * v.element_size() for v in cache.values()) / 2 ** 20
    return {"rcnn_svm_classes": model.num_classes - len(skipped),
            "rcnn_svm_skipped": ",".join(map(str, skipped)),
            "rcnn_regressor_skipped": ",".join(map(str, regress_skipped)),
            "rcnn_svm_positives": int(len(cache["positives"])),
            "rcnn_svm_negatives": int(len(cache["negatives"])), "rcnn_svm_hard_negatives_used": used,
            "rcnn_regression_samples": int(len(cache["pool5"])), "rcnn_feature_cache_mb": round(cache_mb, 2)}
