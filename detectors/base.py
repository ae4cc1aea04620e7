"""The contract shared by every detector, dataset, the evaluator and the speed protocol.

Box format everywhere: absolute pixels, ``x1, y1, x2, y2`` (x2 > x1, y2 > y1), in the frame of
the image as it was given (a dataset's image, before any detector-side resizing).

A detector's eval-mode forward is split into three named stages so that the speed protocol
can time them the same way for every model::

    batch = detector.preprocess(images)          # resize, normalise, stack  -> Batch
    raw = detector.network(batch)                # the neural network        -> any
    detections = detector.postprocess(raw, batch)  # decode, NMS, map back   -> list[Detection]

In training, ``forward(images, targets)`` returns a dict of losses whose keys start with
``loss_``; the total loss is their sum. A detector whose network computes its own losses
(torchvision's RPN and RoI heads do) returns them from ``network`` and ``loss`` passes them on.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, NotRequired, TypedDict

import torch
from torch import Tensor, nn


class Target(TypedDict):
    """One image's ground truth, in the pixels of the image as given.

    boxes:     float32 [N, 4], x1 y1 x2 y2, absolute pixels, x2 > x1 and y2 > y1.
    labels:    int64 [N], contiguous class labels 1..num_classes (0 is background, never a label).
    image_id:  int, unique within a dataset.
    area:      float32 [N], pixels²: what COCO's size buckets use (segment area for COCO, box
               area elsewhere).
    iscrowd:   int64 [N], 1 for crowd regions: ignored by the evaluator, never learned.
    difficult: optional bool [N], Pascal VOC's flag: ignored by the VOC metric.
    """

    boxes: Tensor
    labels: Tensor
    image_id: int
    area: Tensor
    iscrowd: Tensor
    difficult: NotRequired[Tensor]


class Detection(TypedDict):
    """One image's output, in the pixels of the ORIGINAL image.

    boxes:  float32 [K, 4] x1 y1 x2 y2, absolute pixels.
    scores: float32 [K] in [0, 1], sorted high to low.
    labels: int64 [K] in 1..num_classes.
    """

    boxes: Tensor
    scores: Tensor
    labels: Tensor


@dataclass
class Batch:
    """What ``Detector.preprocess`` makes of a list of images.

    images:         float [B, 3, H, W], the network's input (resized, normalised, stacked).
    original_sizes: the (H, W) of each image as given, to map boxes back.
    input_sizes:    the (H, W) of each image after resizing, before padding (often all equal).
    targets:        in training, the targets rescaled to ``input_sizes`` pixels; else None.
    extras:         anything else a detector carries from pre- to post-processing.
    """

    images: Tensor
    original_sizes: list[tuple[int, int]]
    input_sizes: list[tuple[int, int]]
    targets: list[Target] | None = None
    extras: dict[str, Any] = field(default_factory=dict)


#: ImageNet's per-channel mean and std on [0, 1] images: what torchvision's IMAGENET1K_V1
#: classification weights expect, and every detector's input normalisation by default.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Detector(nn.Module):
    """Base class of every detector in detbench.

    Subclasses set ``num_classes`` (foreground classes, labels 1..num_classes) and
    ``input_size``, and implement
    ``preprocess``, ``network``, ``postprocess``, ``loss`` and ``num_candidates``.
    """

    num_classes: int
    #: (H, W) of the network's input for a typical image (SSD300 (300, 300), YOLO (448, 448),
    #: Faster R-CNN VGG-16 (600, 1000)); the speed protocol feeds images of this size.
    input_size: tuple[int, int]
    #: Whether objects flagged ``difficult`` are learned: SSD's Caffe code keeps them,
    #: py-faster-rcnn and darknet leave them out (set from the detector's YAML, ``learn_difficult``).
    learn_difficult: bool = True
    #: True when the loss itself makes candidates matched to crowd regions neither positive nor
    #: negative (SSD); otherwise ``training_targets`` drops crowd boxes, as torchvision's and
    #: Detectron2's training code do.
    ignores_crowd_in_loss: bool = False
    #: True when every image is resized to ``input_size`` (SSD, YOLO): training may then resize
    #: in the data loader. False when the detector rescales keeping the aspect ratio (Faster
    #: R-CNN's shorter side 600): training images must reach it unwarped.
    fixed_input_size: bool = True

    def training_targets(self, targets: list[Target]) -> list[Target]:
        """The targets a training step learns from: crowd boxes dropped (unless
        ``ignores_crowd_in_loss``), ``difficult`` objects dropped unless ``learn_difficult``."""
        out = []
        for target in targets:
            keep = torch.ones_like(target["labels"], dtype=torch.bool)
            if not self.ignores_crowd_in_loss:
                keep &= target["iscrowd"] == 0
            if not self.learn_difficult and "difficult" in target:
                keep &= ~target["difficult"].bool()
            if bool(keep.all()):
                out.append(target)
                continue
            out.append({k: (v[keep] if torch.is_tensor(v) and v.ndim >= 1 and v.shape[0] == keep.shape[0]
                            else v) for k, v in target.items()})
        return out

    def forward(self, images: list[Tensor], targets: list[Target] | None = None):
        """images: float [3, H, W] in [0, 1], any sizes.

        Training (``self.training`` and targets given): dict of losses, keys ``loss_*``,
        total = their sum. Eval: list[Detection], one per image, in original pixels.
        """
        if self.training:
            if targets is None:
                raise ValueError("a detector in training mode needs targets")
            batch = self.preprocess(images, self.training_targets(targets))
            return self.loss(self.network(batch), batch)
        batch = self.preprocess(images)
        return self.postprocess(self.network(batch), batch)

    def preprocess(self, images: list[Tensor], targets: list[Target] | None = None) -> Batch:
        raise NotImplementedError

    def network(self, batch: Batch) -> Any:
        raise NotImplementedError

    def postprocess(self, outputs: Any, batch: Batch) -> list[Detection]:
        raise NotImplementedError

    def loss(self, outputs: Any, batch: Batch) -> dict[str, Tensor]:
        raise NotImplementedError

    def assign_objects(self, batch: Batch) -> list[dict]:
        """The training-time target assignment, per ground-truth object: per image of ``batch``
        (from ``preprocess(images, targets)``), {stage name: ``detectors.assignment.ObjectAssignment``},
        the first stage the detector's headline. Runs the code the loss runs."""
        raise NotImplementedError(f"{type(self).__name__} exposes no training-time assignment rule: "
                                  "coverage not defined")

    def candidates_scored(self, outputs: Any, batch: Batch) -> list[int]:
        """Boxes this forward actually scored before NMS, per image (``outputs`` of ``network``
        in eval mode). A fixed count (SSD, YOLO) is ``num_candidates``; Faster R-CNN counts the
        proposals its RPN kept, which may be fewer than its ``num_candidates`` upper bound."""
        return [self.num_candidates(size) for size in batch.original_sizes]

    def num_candidates(self, image_size: tuple[int, int]) -> int:
        """Boxes scored per image before NMS for an input of ``image_size`` (H, W): SSD300
        8732, YOLO v1 98, Faster R-CNN the proposals kept at test (300)."""
        raise NotImplementedError

    # ---- weights: handed over as state_dicts (``experiments.build`` reads the files) -----------
    #: what the weights came from: "random", "torchvision:<enum>.<name>", "file:<path>" (+ notes).
    weights_source: str = "random"

    def backbone_weights_enum(self) -> type | None:
        """torchvision's weights enum whose names ``backbone_weights`` may give (e.g.
        ``VGG16_Weights``), or None when torchvision publishes none for this backbone."""
        return None

    def load_backbone_state(self, state: dict[str, Tensor], source: str) -> None:
        """Load an ImageNet-classifier state_dict (torchvision's keys) into the backbone in
        place and record ``source`` in ``weights_source``. Detectors without a separate
        backbone raise ValueError."""
        raise ValueError(f"{type(self).__name__} takes no separate backbone weights "
                         f"(got {source}); give whole-detector weights instead")

    def load_detector_state(self, state: dict[str, Tensor], source: str) -> None:
        """Load a whole-detector state_dict (this module's keys) strictly; ValueError naming
        ``source`` when it does not fit."""
        try:
            self.load_state_dict(state, strict=True)
        except RuntimeError as error:
            raise ValueError(f"{source}: does not fit {type(self).__name__} "
                             f"({self.num_classes} classes): {error}") from None
        self.weights_source = source

    def set_normalization(self, mean: tuple[float, float, float], std: tuple[float, float, float]) -> None:
        """Per-channel mean/std applied to [0, 1] images, as the backbone weights expect
        (set by ``experiments.build`` from torchvision's weights metadata)."""
        raise ValueError(f"{type(self).__name__} does not normalise its input")


def validate_target(target: Target, image_size: tuple[int, int] | None = None,
                    num_classes: int | None = None, where: str = "target") -> None:
    """Raise ValueError naming ``where`` and the problem if ``target`` breaks the contract.

    image_size: (H, W); when given, boxes must lie inside [0, W] x [0, H].
    num_classes: when given, labels must lie in 1..num_classes.
    """
    for key in ("boxes", "labels", "image_id", "area", "iscrowd"):
        if key not in target:
            raise ValueError(f"{where}: missing key '{key}'")
    boxes, labels = target["boxes"], target["labels"]
    n = boxes.shape[0] if boxes.ndim >= 1 else -1
    if boxes.ndim != 2 or boxes.shape[1] != 4 or boxes.dtype != torch.float32:
        raise ValueError(f"{where}: boxes must be float32 [N, 4], got {boxes.dtype} {list(boxes.shape)}")
    for key, dtype in (("labels", torch.int64), ("area", torch.float32), ("iscrowd", torch.int64)):
        t = target[key]
        if t.shape != (n,) or t.dtype != dtype:
            raise ValueError(f"{where}: {key} must be {dtype} [{n}], got {t.dtype} {list(t.shape)}")
    if "difficult" in target and target["difficult"].shape != (n,):
        raise ValueError(f"{where}: difficult must have shape [{n}]")
    if not isinstance(target["image_id"], int):
        raise ValueError(f"{where}: image_id must be an int, got {type(target['image_id']).__name__}")
    if n == 0:
        return
    if not torch.isfinite(boxes).all():
        raise ValueError(f"{where}: boxes hold NaN or infinite values")
    bad = (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
    if bad.any():
        i = int(bad.nonzero()[0])
        raise ValueError(f"{where}: box {i} {boxes[i].tolist()} has x2 <= x1 or y2 <= y1")
    if image_size is not None:
        h, w = image_size
        tol = 1e-3
        outside = ((boxes[:, 0] < -tol) | (boxes[:, 1] < -tol)
                   | (boxes[:, 2] > w + tol) | (boxes[:, 3] > h + tol))
        if outside.any():
            i = int(outside.nonzero()[0])
            raise ValueError(f"{where}: box {i} {boxes[i].tolist()} lies outside the {w}x{h} image")
    if (labels < 1).any() or (num_classes is not None and (labels > num_classes).any()):
        raise ValueError(f"{where}: labels must lie in 1..{num_classes or 'C'}, got {labels.tolist()}")
    area = target["area"]
    if not torch.isfinite(area).all() or (area < 0).any():
        raise ValueError(f"{where}: area must be finite and >= 0")


def empty_target(image_id: int) -> Target:
    """A Target with no objects."""
    return Target(boxes=torch.zeros((0, 4)), labels=torch.zeros((0,), dtype=torch.int64),
                  image_id=image_id, area=torch.zeros((0,)),
                  iscrowd=torch.zeros((0,), dtype=torch.int64))


def scale_width(channels: int, width: float, minimum: int = 8) -> int:
    """Channels after a width multiplier, rounded to a multiple of 8 and at least ``minimum``.

    Every backbone's ``width`` knob goes through this, so that reduced-width models keep the
    paper's geometry (maps and box counts) at a fraction of the compute.
    """
    return max(minimum, int(math.ceil(channels * width / 8) * 8))
