"""torchvision's own detectors under detbench's contract: reference rows for any comparison.

Each adapter splits a torchvision model the way ``Detector`` does::

    preprocess  = the model's ``transform`` (normalise, resize, pad, stack; targets resized too)
    network     = backbone + heads (+ anchors; in training, the model's own loss)
    postprocess = the model's ``postprocess_detections`` (decode, NMS, top-k) + its
                  ``transform.postprocess`` (back to the original image's pixels)

so the outputs equal the torchvision model's own ``forward`` (the tests check this).

Classes: torchvision counts background as a class, so every model is built with
``num_classes + 1`` outputs and detbench's labels 1..num_classes are used as they are. The
sigmoid models (RetinaNet, FCOS) never train output 0, and detections with label 0 are dropped.
Loss keys get a ``loss_`` prefix where torchvision's lack one (``classification`` ->
``loss_classification``).

Weights: random by default (``weights=None, weights_backbone=None``: nothing is downloaded);
``experiments.build`` hands a whole-detector state_dict (torchvision's published keys, or the
adapter's own, ``model.``-prefixed) to ``load_detector_state``. Reduced input sizes
(``min_size``/``max_size``) keep the CPU cost down; SSD300 and SSDlite320 have fixed sizes.
"""
from __future__ import annotations

import torch
import torchvision.models.detection as tvd
from torch import Tensor, nn
from torchvision.models.detection.fcos import FCOS
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.retinanet import RetinaNet
from torchvision.models.detection.ssd import SSD
from torchvision.ops import box_iou

from detectors.base import Batch, Detection, Detector, Target
from detectors.faster_rcnn import FasterRCNN, feature_map_sizes


def _prefixed(losses: dict[str, Tensor]) -> dict[str, Tensor]:
    return {(k if k.startswith("loss_") else f"loss_{k}"): v for k, v in losses.items()}


class TorchvisionSingleShot(Detector):
    """Adapter for torchvision's one-stage detectors: ``SSD`` (SSD300, SSDlite), ``RetinaNet``
    and ``FCOS``. ``model`` is the torchvision model, built with num_classes + 1 outputs.

    network(batch) -> eval: {"head_outputs": {"cls_logits": [B, N, C+1], "bbox_regression":
    [B, N, 4] (+ FCOS "bbox_ctrness" [B, N, 1])}, "anchors": list of [N, 4] input pixels,
    "locations_per_level": h*w per feature map}; training: {"losses": {loss_*}}.
    """

    def __init__(self, model: nn.Module, num_classes: int, input_size: tuple[int, int]) -> None:
        super().__init__()
        if not isinstance(model, (SSD, RetinaNet, FCOS)):
            raise TypeError(f"expected a torchvision SSD, RetinaNet or FCOS, got {type(model).__name__}")
        self.model = model
        self.num_classes = num_classes
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.fixed_input_size = model.transform.fixed_size is not None   # SSD: yes; RetinaNet, FCOS: no

    def load_detector_state(self, state: dict[str, Tensor], source: str) -> None:
        """torchvision's published keys, or this adapter's (``model.``-prefixed)."""
        if state and not all(k.startswith("model.") for k in state):
            state = {f"model.{k}": v for k, v in state.items()}
        try:
            self.load_state_dict(state, strict=True)
        except RuntimeError as error:
            raise ValueError(f"{source}: does not fit {type(self.model).__name__} (check num_classes: "
                             f"torchvision counts background, so num_classes + 1): {error}") from None
        self.weights_source = source

    def preprocess(self, images: list[Tensor], targets: list[Target] | None = None) -> Batch:
        original_sizes = [(int(im.shape[-2]), int(im.shape[-1])) for im in images]
        image_list, resized_targets = self.model.transform(images, targets)
        return Batch(images=image_list.tensors, original_sizes=original_sizes,
                     input_sizes=[(int(h), int(w)) for h, w in image_list.image_sizes],
                     targets=resized_targets)

    def network(self, batch: Batch) -> dict:
        model = self.model
        features = model.backbone(batch.images)
        features = list(features.values()) if isinstance(features, dict) else [features]
        head_outputs = model.head(features)
        anchors = model.anchor_generator(ImageList(batch.images, batch.input_sizes), features)
        locations_per_level = [f.shape[-2] * f.shape[-1] for f in features]
        if self.training:
            return {"losses": _prefixed(self._model_losses(batch.targets, head_outputs, anchors,
                                                           locations_per_level))}
        return {"head_outputs": head_outputs, "anchors": anchors,
                "locations_per_level": locations_per_level}

    def _model_losses(self, targets, head_outputs, anchors, locations_per_level):
        model = self.model
        if isinstance(model, FCOS):
            return model.compute_loss(targets, head_outputs, anchors, locations_per_level)
        if isinstance(model, RetinaNet):
            return model.compute_loss(targets, head_outputs, anchors)
        matched_idxs = []  # SSD matches default boxes in its forward; the same here
        for anchors_i, target in zip(anchors, targets):
            if target["boxes"].numel() == 0:
                matched_idxs.append(torch.full((anchors_i.shape[0],), -1, dtype=torch.int64,
                                               device=anchors_i.device))
            else:
                iou = box_iou(target["boxes"], anchors_i)  # [G, N]
                matched_idxs.append(model.proposal_matcher(iou))
        return model.compute_loss(targets, head_outputs, anchors, matched_idxs)

    def postprocess(self, outputs: dict, batch: Batch) -> list[Detection]:
        model, head_outputs, anchors = self.model, outputs["head_outputs"], outputs["anchors"]
        if isinstance(model, SSD):
            detections = model.postprocess_detections(head_outputs, anchors, batch.input_sizes)
        else:  # RetinaNet and FCOS decode level by level
            per_level = outputs["locations_per_level"]
            if isinstance(model, RetinaNet):
                anchors_per_location = head_outputs["cls_logits"].shape[1] // sum(per_level)
                per_level = [n * anchors_per_location for n in per_level]
            split_outputs = {k: list(v.split(per_level, dim=1)) for k, v in head_outputs.items()}
            split_anchors = [list(a.split(per_level)) for a in anchors]
            detections = model.postprocess_detections(split_outputs, split_anchors, batch.input_sizes)
        detections = model.transform.postprocess(detections, batch.input_sizes, batch.original_sizes)
        results = []
        for d in detections:
            keep = d["labels"] > 0  # sigmoid models' never-trained output 0
            results.append(Detection(boxes=d["boxes"][keep].float(), scores=d["scores"][keep].float(),
                                     labels=d["labels"][keep].long()))
        return results

    def loss(self, outputs: dict, batch: Batch) -> dict[str, Tensor]:
        return outputs["losses"]

    def num_candidates(self, image_size: tuple[int, int]) -> int:
        """Boxes scored per image: default boxes / anchors / locations over all feature maps
        (SSD300 8732, SSDlite320 3234) for an image of ``image_size`` (H, W) as given."""
        sizes = feature_map_sizes(self.model.transform, self.model.backbone, image_size)
        per_location = self.model.anchor_generator.num_anchors_per_location()
        if len(per_location) == 1 and len(sizes) > 1:  # FCOS: one location per map cell
            per_location = per_location * len(sizes)
        return sum(h * w * a for (h, w), a in zip(sizes, per_location))


# ---- the one builder: what conf/detector/tv_*.yaml name ---------------------------------------
#: architecture -> (torchvision builder, one- or two-stage, whether min_size/max_size apply).
ARCHITECTURES = {
    "ssd300": (tvd.ssd300_vgg16, "one", False),                      # fixed 300x300
    "ssdlite320": (tvd.ssdlite320_mobilenet_v3_large, "one", False),  # fixed 320x320
    "retinanet_r50_fpn": (tvd.retinanet_resnet50_fpn, "one", True),
    "fcos_r50_fpn": (tvd.fcos_resnet50_fpn, "one", True),
    "frcnn_r50_fpn": (tvd.fasterrcnn_resnet50_fpn, "two", True),
    "frcnn_mbv3_fpn": (tvd.fasterrcnn_mobilenet_v3_large_fpn, "two", True),
}
#: detbench's shared setting -> the torchvision keyword, for one- and two-stage models.
SHARED_NAMES = {
    "one": {"score_thresh": "score_thresh", "nms_thresh": "nms_thresh",
            "max_detections": "detections_per_img", "candidates_before_nms": "topk_candidates"},
    "two": {"score_thresh": "box_score_thresh", "nms_thresh": "box_nms_thresh",
            "max_detections": "box_detections_per_img", "candidates_before_nms": "rpn_post_nms_top_n_test"},
}


def torchvision_detector(architecture: str, num_classes: int, input_size: tuple[int, int] = (800, 1333),
                         min_size: int | None = None, max_size: int | None = None,
                         score_thresh: float | None = None, nms_thresh: float | None = None,
                         max_detections: int | None = None, candidates_before_nms: int | None = None,
                         options: dict | None = None) -> Detector:
    """torchvision's ``architecture`` (a key of ``ARCHITECTURES``) with random weights
    (``weights=None, weights_backbone=None``: nothing is downloaded) under detbench's contract.

    The shared settings map onto torchvision's own keywords (``SHARED_NAMES``; for two-stage
    models ``candidates_before_nms`` is the RPN's test proposals); None keeps torchvision's
    default. ``min_size``/``max_size`` resize (not for the fixed-size SSD300 / SSDlite320);
    ``options``: further keyword arguments of the torchvision builder.
    """
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown torchvision architecture '{architecture}'; choose from {sorted(ARCHITECTURES)}")
    build, stages, resizable = ARCHITECTURES[architecture]
    kwargs = dict(options or {})
    shared = {"score_thresh": score_thresh, "nms_thresh": nms_thresh, "max_detections": max_detections,
              "candidates_before_nms": candidates_before_nms}
    for name, value in shared.items():
        if value is not None:
            kwargs[SHARED_NAMES[stages][name]] = value
    if resizable:
        kwargs.update({k: v for k, v in (("min_size", min_size), ("max_size", max_size)) if v is not None})
    elif min_size is not None or max_size is not None:
        raise ValueError(f"torchvision's {architecture} has a fixed input size: min_size/max_size do not apply")
    model = build(weights=None, weights_backbone=None, num_classes=num_classes + 1, **kwargs)
    if stages == "two":
        return FasterRCNN(num_classes, model.backbone, model.rpn, model.roi_heads, model.transform,
                          tuple(input_size))
    return TorchvisionSingleShot(model, num_classes, input_size)
