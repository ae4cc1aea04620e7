"""What a detector was asked to score and keep, read from the built model (not the config), so
that sweeps over input size and box budgets can be plotted whatever a config calls its knobs.

``detector_facts(model)`` -> metrics.json's ``family`` (SSD, YOLO, FasterRCNN, TorchvisionSingleShot, ...), ``input_h``,
``input_w``, and where the detector has them ``max_detections`` (kept per image after NMS),
``candidates_before_nms`` (SSD, YOLO: the best boxes per class that enter NMS) and
``proposals`` (Faster R-CNN: the RPN's test-time post-NMS top-n, the boxes its second stage
scores, what its ``candidates_before_nms`` argument sets).
"""
from __future__ import annotations


def _first(obj, *names):
    for name in names:
        value = getattr(obj, name, None)
        if value is not None:
            return value
    return None


def family_of(model) -> str:
    """The detector family: the class just below ``Detector`` (VGG16FasterRCNN -> FasterRCNN)."""
    from detectors.base import Detector

    mro = type(model).__mro__
    below = next((mro[:i] for i, c in enumerate(mro) if c is Detector and i > 0), None)
    if not below:
        return type(model).__name__
    # the last Detector subclass before Detector: mixins (VGG16Weights) are not families
    return [c for c in below if issubclass(c, Detector)][-1].__name__


def detector_facts(model) -> dict:
    facts = {"family": family_of(model)}
    size = getattr(model, "input_size", None)
    if size is not None:
        facts["input_h"], facts["input_w"] = int(size[0]), int(size[1])
    heads = getattr(model, "roi_heads", None)
    detections = _first(model, "max_detections") or (heads and heads.detections_per_img)
    if detections is not None:
        facts["max_detections"] = int(detections)
    candidates = _first(model, "candidates_before_nms")
    if candidates is not None:
        facts["candidates_before_nms"] = int(candidates)
    rpn = getattr(model, "rpn", None)
    if rpn is not None:
        facts["proposals"] = int(rpn._post_nms_top_n["testing"])
    return facts
