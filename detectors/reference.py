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
``weights_path`` loads a local state_dict of the torchvision model (as torchvision publishes
them), or of the adapter itself (keys prefixed ``model.``). Reduced input sizes
(``min_size``/``max_size``) keep the CPU cost down; SSD300 and SSDlite320 have fixed sizes.
"""
from __future__ import annotations

from pathlib import Path

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


def load_weights_file(model: nn.Module, weights_path: str | None) -> str:
    """Load a local state_dict (torchvision's keys, or an adapter's ``model.``-prefixed keys)
    into ``model``; return "random" or "file:<path>". Raises ValueError naming the file."""
    if not weights_path:
        return "random"
    path = Path(weights_path)
    if not path.is_file():
        raise ValueError(f"{path}: weights file not found")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state_dict (dict of tensors), got {type(state).__name__}")
    if state and all(k.startswith("model.") for k in state):
        state = {k[len("model."):]: v for k, v in state.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise ValueError(f"{path}: does not fit {type(model).__name__} (check num_classes: "
                         f"torchvision counts background, so num_classes + 1): {error}") from None
    return f"file:{path}"


def _prefixed(losses: dict[str, Tensor]) -> dict[str, Tensor]:
    return {(k if k.startswith("loss_") else f"loss_{k}"): v for k, v in losses.items()}


class TorchvisionSingleShot(Detector):
    """Adapter for torchvision's one-stage detectors: ``SSD`` (SSD300, SSDlite), ``RetinaNet``
    and ``FCOS``. ``model`` is the torchvision model, built with num_classes + 1 outputs.

    network(batch) -> eval: {"head_outputs": {"cls_logits": [B, N, C+1], "bbox_regression":
    [B, N, 4] (+ FCOS "bbox_ctrness" [B, N, 1])}, "anchors": list of [N, 4] input pixels,
    "locations_per_level": h*w per feature map}; training: {"losses": {loss_*}}.
    """

    def __init__(self, model: nn.Module, num_classes: int, input_size: tuple[int, int],
                 weights_path: str | None = None) -> None:
        super().__init__()
        if not isinstance(model, (SSD, RetinaNet, FCOS)):
            raise TypeError(f"expected a torchvision SSD, RetinaNet or FCOS, got {type(model).__name__}")
        self.model = model
        self.num_classes = num_classes
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.weights_source = load_weights_file(model, weights_path)
        self.fixed_input_size = model.transform.fixed_size is not None   # SSD: yes; RetinaNet, FCOS: no

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


def _two_stage(model: tvd.faster_rcnn.FasterRCNN, num_classes: int, input_size, weights_path) -> FasterRCNN:
    """detbench's FasterRCNN around the torchvision model's own parts (same state_dict keys)."""
    source = load_weights_file(model, weights_path)
    detector = FasterRCNN(num_classes, model.backbone, model.rpn, model.roi_heads,
                          model.transform, tuple(input_size))
    detector.weights_source = source
    return detector


# ---- builders: what conf/detector/tv_*.yaml name ---------------------------------------------
def tv_ssd300(num_classes: int, input_size: tuple[int, int] = (300, 300),
              weights_path: str | None = None, options: dict | None = None) -> TorchvisionSingleShot:
    """torchvision ``ssd300_vgg16`` (random weights, all VGG layers trainable, fixed 300x300).
    ``options``: further keyword arguments of torchvision's ``SSD`` (score_thresh, ...)."""
    model = tvd.ssd300_vgg16(weights=None, weights_backbone=None, num_classes=num_classes + 1,
                             **dict(options or {}))
    return TorchvisionSingleShot(model, num_classes, input_size, weights_path)


def tv_ssdlite320(num_classes: int, input_size: tuple[int, int] = (320, 320),
                  weights_path: str | None = None, options: dict | None = None) -> TorchvisionSingleShot:
    """torchvision ``ssdlite320_mobilenet_v3_large`` (random weights; with no pretrained
    backbone torchvision uses MobileNetV3's reduced tail; fixed 320x320)."""
    model = tvd.ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None,
                                              num_classes=num_classes + 1, **dict(options or {}))
    return TorchvisionSingleShot(model, num_classes, input_size, weights_path)


def tv_retinanet_r50_fpn(num_classes: int, min_size: int = 800, max_size: int = 1333,
                         input_size: tuple[int, int] = (800, 1333), weights_path: str | None = None,
                         options: dict | None = None) -> TorchvisionSingleShot:
    """torchvision ``retinanet_resnet50_fpn`` (random weights, plain BatchNorm, all trainable)."""
    model = tvd.retinanet_resnet50_fpn(weights=None, weights_backbone=None, num_classes=num_classes + 1,
                                       min_size=min_size, max_size=max_size, **dict(options or {}))
    return TorchvisionSingleShot(model, num_classes, input_size, weights_path)


def tv_fcos_r50_fpn(num_classes: int, min_size: int = 800, max_size: int = 1333,
                    input_size: tuple[int, int] = (800, 1333), weights_path: str | None = None,
                    options: dict | None = None) -> TorchvisionSingleShot:
    """torchvision ``fcos_resnet50_fpn`` (random weights, plain BatchNorm, all trainable)."""
    model = tvd.fcos_resnet50_fpn(weights=None, weights_backbone=None, num_classes=num_classes + 1,
                                  min_size=min_size, max_size=max_size, **dict(options or {}))
    return TorchvisionSingleShot(model, num_classes, input_size, weights_path)


def tv_frcnn_r50_fpn(num_classes: int, min_size: int = 800, max_size: int = 1333,
                     input_size: tuple[int, int] = (800, 1333), weights_path: str | None = None,
                     options: dict | None = None) -> FasterRCNN:
    """torchvision ``fasterrcnn_resnet50_fpn`` (random weights, plain BatchNorm, all trainable)
    wrapped as detbench's ``FasterRCNN`` (1000 proposals at test)."""
    model = tvd.fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None,
                                        num_classes=num_classes + 1, min_size=min_size,
                                        max_size=max_size, **dict(options or {}))
    return _two_stage(model, num_classes, input_size, weights_path)


def tv_frcnn_mbv3_fpn(num_classes: int, min_size: int = 800, max_size: int = 1333,
                      input_size: tuple[int, int] = (800, 1333), weights_path: str | None = None,
                      options: dict | None = None) -> FasterRCNN:
    """torchvision ``fasterrcnn_mobilenet_v3_large_fpn`` (random weights) as ``FasterRCNN``."""
    model = tvd.fasterrcnn_mobilenet_v3_large_fpn(weights=None, weights_backbone=None,
                                                  num_classes=num_classes + 1, min_size=min_size,
                                                  max_size=max_size, **dict(options or {}))
    return _two_stage(model, num_classes, input_size, weights_path)
