"""Per-class NMS that stops once enough boxes are kept: SSD's post-processing on a fused top-k.

SSD keeps, per image, the best ``max_detections`` boxes (over all classes) that survive
per-class greedy NMS among each class's best ``candidates_before_nms`` boxes above the score
threshold. Greedy NMS decides a box's fate from the higher-scoring boxes of its own class only,
so running it on the candidates in descending score order, across classes, and stopping at
``max_detections`` kept gives exactly the full result's top ``max_detections``. Done in rounds:

1. one top-``m`` over every (box, class) score of each image, the prefix of candidates;
   a class's rank inside that prefix is its rank overall, so ``candidates_before_nms`` is
   applied by counting (no per-class top-k over every box);
2. NMS over the prefix, classes kept apart by a coordinate offset per class (float64, exact for
   float32 boxes plus integer offsets, so IoUs are those of the original boxes): on CPU one call
   per image (torchvision's CPU kernel compares every pair of boxes it is given, so one call over
   all images would cost B times more), on a GPU one call for every image and class;
3. an image is finished when it kept ``max_detections`` boxes or its prefix holds every candidate
   above the threshold; else, on a GPU, ``m`` doubles. ``m`` starts at ``2 * max_detections``:
   random weights keep about 3 in 4 candidates, so one round does; trained weights have few above
   0.01. On CPU an image that one round does not finish goes class by class (each class's best
   ``candidates_before_nms``, NMS per class): there trained weights pile many candidates onto few
   objects, NMS keeps few, and growing the prefix re-ran the NMS over ever more boxes of every class
   at once (3-4x slower than class by class with 5 classes, ``benchmarks/ssd_postprocess_speed.py``).

Ties between exactly equal scores may be ordered differently from a class-by-class NMS.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import nms


def _class_rank(classes: Tensor, num_classes: int) -> Tensor:
    """classes [B, m] in descending score order -> each entry's rank [B, m] within its class."""
    one_hot = F.one_hot(classes, num_classes)                                    # [B, m, C]
    return (one_hot.cumsum(dim=1) * one_hot).sum(dim=2) - 1


def topk_per_class_nms(scores: Tensor, boxes_of: Callable[[Tensor, Tensor], Tensor], score_thresh: float,
                       nms_thresh: float, max_detections: int, candidates_before_nms: int | None,
                       extent: float) -> list[tuple[Tensor, Tensor, Tensor]]:
    """scores: [B, A, C] class scores (background excluded) of A boxes; ``boxes_of(image [N],
    box [N])`` -> [N, 4] xyxy in [0, extent]. Candidates: scores above ``score_thresh`` among
    each class's best ``candidates_before_nms`` (None: all).

    Returns per image (box indices [K] into A, classes [K] in 0..C-1, scores [K]) by descending
    score, K <= max_detections."""
    b, a, c = scores.shape
    flat = scores.reshape(b, a * c)                                              # entry p: box p // C, class p % C
    per_class = a if candidates_before_nms is None else min(int(candidates_before_nms), a)
    empty = [(flat.new_zeros(0, dtype=torch.long), flat.new_zeros(0, dtype=torch.long), flat.new_zeros(0))] * b
    if b == 0 or max_detections <= 0:
        return empty
    m = min(a * c, 2 * max_detections)
    while True:
        prefix_scores, prefix = flat.topk(m, dim=1)                              # [B, m], sorted
        box, cls = prefix.div(c, rounding_mode="floor"), prefix.remainder(c)
        valid = prefix_scores > score_thresh
        if m > per_class:
            valid &= _class_rank(cls, c) < per_class
        counts = valid.sum(dim=1)                                                # [B]
        image = torch.arange(b, device=flat.device)[:, None].expand(b, m)[valid]
        box, cls, kept_scores = box[valid], cls[valid], prefix_scores[valid]      # [N]
        candidates = boxes_of(image, box).double() + (cls.double() * (extent + 1))[:, None]
        if not flat.is_cuda:
            return _finish_on_cpu(scores, boxes_of, box, cls, kept_scores, counts, candidates, m, per_class,
                                  prefix_scores[:, -1], score_thresh, nms_thresh, max_detections)
        keep = nms(candidates + (image.double() * c * (extent + 1))[:, None], kept_scores.double(), nms_thresh)
        keep = keep[torch.sort(image[keep], stable=True).indices]                # by image, score order kept
        kept_per_image = torch.bincount(image[keep], minlength=b)
        covered = (prefix_scores[:, -1] <= score_thresh) | (counts == c * per_class)
        if m == a * c or bool(((kept_per_image >= max_detections) | covered.cpu()).all()):
            break
        m = min(a * c, 2 * m)
    return [(box[k][:max_detections], cls[k][:max_detections], kept_scores[k][:max_detections])
            for k in keep.split(kept_per_image.tolist())]


def _finish_on_cpu(scores, boxes_of, box, cls, kept_scores, counts, candidates, m, per_class, last,
                   score_thresh, nms_thresh, max_detections) -> list[tuple[Tensor, Tensor, Tensor]]:
    """CPU, after the first round: per image, NMS over its prefix (one call; torchvision's CPU
    kernel compares every pair it is given, so one call over all images would cost B times
    more); an image neither full nor covered (``last`` [B]: its prefix's lowest score) goes
    ``class_by_class``."""
    b, a, c = scores.shape
    starts = [0, *counts.cumsum(0).tolist()]
    result = []
    for i, (s, e) in enumerate(zip(starts[:-1], starts[1:])):
        keep = s + nms(candidates[s:e], kept_scores[s:e].double(), nms_thresh)[:max_detections]
        covered = m == a * c or bool(last[i] <= score_thresh) or int(counts[i]) == c * per_class
        if len(keep) >= max_detections or covered:
            result.append((box[keep], cls[keep], kept_scores[keep]))
        else:
            result.append(class_by_class(scores[i], lambda j, image=i: boxes_of(torch.full_like(j, image), j),
                                         score_thresh, nms_thresh, max_detections, per_class))
    return result


def class_by_class(scores: Tensor, boxes_of: Callable[[Tensor], Tensor], score_thresh: float, nms_thresh: float,
                   max_detections: int, per_class: int) -> tuple[Tensor, Tensor, Tensor]:
    """One image's scores [A, C]: each class's best ``per_class`` boxes above ``score_thresh``,
    greedy NMS class by class, the best ``max_detections`` over all classes. ``boxes_of(box [N])``
    -> [N, 4]. Returns (box indices [K], classes [K], scores [K]) by descending score."""
    top, index = scores.topk(min(per_class, scores.shape[0]), dim=0)             # [k, C] sorted
    parts = []
    for k in range(scores.shape[1]):
        valid = top[:, k] > score_thresh
        box, box_scores = index[valid, k], top[valid, k]
        if len(box):
            keep = nms(boxes_of(box), box_scores, nms_thresh)
            parts.append((box[keep], torch.full_like(keep, k), box_scores[keep]))
    if not parts:
        return scores.new_zeros(0, dtype=torch.long), scores.new_zeros(0, dtype=torch.long), scores.new_zeros(0)
    box, cls, kept_scores = (torch.cat(t) for t in zip(*parts))
    order = kept_scores.argsort(descending=True, stable=True)[:max_detections]
    return box[order], cls[order], kept_scores[order]
