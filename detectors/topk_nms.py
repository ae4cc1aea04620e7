"""Per-class NMS that stops once enough boxes are kept: SSD's post-processing as one NMS call.

SSD keeps, per image, the best ``max_detections`` boxes (over all classes) that survive
per-class greedy NMS. Greedy NMS decides a box's fate from the higher-scoring boxes of its own
class only, so running it on the candidates in descending score order, across classes, and
stopping at ``max_detections`` kept gives exactly the full per-class result's top
``max_detections``. Done in rounds: a prefix of the best ``m`` candidates per image (all images
and classes in **one** ``torchvision.ops.nms`` call, each (image, class) group shifted by a
coordinate offset so groups never overlap); an image is finished when it kept
``max_detections`` boxes or the prefix holds every candidate above the score threshold; else
``m`` doubles. ``m`` starts at ``2 * max_detections``: random weights keep about 3 of 4
candidates, so one round suffices there; trained weights have few candidates above threshold.

The shifted boxes are float64 (exact for any float32 box plus the integer offsets), so IoUs are
those of the original boxes; ties between equal scores may be ordered differently from a
class-by-class NMS.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import nms


def topk_per_class_nms(boxes: Tensor, top_scores: Tensor, top_index: Tensor, score_thresh: float,
                       nms_thresh: float, max_detections: int, extent: float) -> list[tuple[Tensor, Tensor]]:
    """boxes: [B, A, 4] xyxy in [0, extent]; top_scores / top_index: [B, C, k] each class's best k
    scores (sorted, descending) and their box indices into A. Candidates are the entries with a
    score above ``score_thresh``.

    Returns per image (positions [K] into the flattened C k candidates, scores [K]), sorted by
    descending score, K <= max_detections; the class of position p is p // k."""
    b, c, k = top_scores.shape
    flat_scores = top_scores.reshape(b, c * k)                                   # [B, C k]
    flat_index = top_index.reshape(b, c * k)                                     # [B, C k] into A
    above = (flat_scores > score_thresh).sum(dim=1)                              # [B]
    most = int(above.max()) if b else 0
    if most == 0 or max_detections <= 0:
        empty = top_index.new_zeros(0)
        return [(empty, top_scores.new_zeros(0)) for _ in range(b)]
    m = min(most, 2 * max_detections)
    images = torch.arange(b, device=boxes.device)[:, None]                       # [B, 1]
    while True:
        prefix_scores, prefix_positions = flat_scores.topk(m, dim=1)             # [B, m], sorted
        valid = prefix_scores > score_thresh
        image = images.expand(b, m)[valid]                                       # [N]
        position = prefix_positions[valid]                                       # [N] into C k
        scores = prefix_scores[valid]                                            # [N]
        candidates = boxes[image, flat_index[image, position]].double()          # [N, 4]
        group = (image * c + position.div(k, rounding_mode="floor")).double()    # (image, class)
        keep = nms(candidates + (group * (extent + 1))[:, None], scores.double(), nms_thresh)  # [K], by score
        kept_per_image = torch.bincount(image[keep], minlength=b)                # [B]
        finished = (kept_per_image >= max_detections) | (above <= m)
        if m >= most or bool(finished.all()):
            break
        m = min(most, 2 * m)
    order = torch.sort(image[keep], stable=True).indices                         # by image, score order kept
    keep = keep[order]
    results = []
    for kept in keep.split(kept_per_image.tolist()):
        kept = kept[:max_detections]
        results.append((position[kept], scores[kept]))
    return results
