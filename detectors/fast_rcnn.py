"""Fast R-CNN (Girshick, ICCV 2015): one CNN pass per image, RoI pooling of external proposals.

::

    images --proposal source--> proposals [P_i, 4] per image (original pixels; selective search)
    images --transform--> [B, 3, H, W] --VGG-16 conv5_3--> features [B, C, H/16, W/16]
        --RoI pooling 7x7 of the proposals (input pixels) + fc6/fc7 + predictor-->
        class scores [sum P, C+1], class boxes [sum P, 4(C+1)]
        --decode, per-class NMS 0.3, map back--> Detection (original pixels)

It is Faster R-CNN's second stage without the RPN: the RoI head is the same code
(``faster_rcnn_builders.fast_rcnn_heads``: torchvision's ``RoIHeads`` with the paper's
background floor, ``roi_heads.BackgroundFloorRoIHeads``), so the two differ only in where
proposals come from. Training samples 64 RoIs per image (2 images per batch in the paper),
25% foreground at IoU >= 0.5, background at IoU in [0.1, 0.5); torchvision also appends each
ground-truth box to the proposals, as py-faster-rcnn does. Loss: softmax cross-entropy +
smooth-L1 on the class-specific box deltas, weight 1.

Proposals: a *proposal source* passed as ``proposals`` (``detectors.region_proposals``), called
with the images as given; the first ``proposals_train`` / ``candidates_before_nms`` (test) of
each image are used. An image without proposals is still scored (no detections); in training
it gets one whole-image box so that its sampled RoIs (background) keep the loss defined.

Stages for the speed protocol: ``propose`` (the source, ``fresh=True`` to bypass its cache),
``preprocess(images, proposals=...)``, ``network``, ``postprocess``. Export
(``experiments.speed.export``): the conv trunk and the fc head as two graphs
(``export_parts``), RoI pooling between them in PyTorch (``network_from_parts``).
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping

import torch
from torch import Tensor, nn
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from detectors.backbones import vgg16_trunk
from detectors.base import IMAGENET_MEAN, IMAGENET_STD, Batch, Detection, Detector, Target, scale_width
from detectors.faster_rcnn_builders import RoIHeadSettings, VGG16Weights, fast_rcnn_heads, settings, vgg16_roi_pool
from detectors.region_proposals import ProposalSource, take_proposals


class FastRCNN(VGG16Weights, Detector):
    """Fast R-CNN under detbench's contract.

    Args:
        num_classes: foreground classes (labels 1..num_classes).
        backbone: [B, 3, H, W] -> [B, C, H/16, W/16] (a ``vgg16_trunk``).
        roi_heads: torchvision ``RoIHeads`` (pooling, fc6/fc7, predictor, sampling, NMS).
        transform: ``GeneralizedRCNNTransform`` (normalise, resize, pad, stack).
        input_size: (H, W) of a typical network input, fed by the speed protocol.
        proposals: the proposal source (None: every forward raises, naming what to pass).
        proposals_train: proposals per image given to the sampler in training (paper: 2000).
        candidates_before_nms: proposals per image scored at test (paper: 2000).
    """

    external_proposals = True   # the speed protocol times ``propose`` as its own stage
    fixed_input_size = False    # shorter side resized, aspect kept

    def __init__(self, num_classes: int, backbone: nn.Module, roi_heads: RoIHeads,
                 transform: GeneralizedRCNNTransform, input_size: tuple[int, int],
                 proposals: ProposalSource | None = None, proposals_train: int = 2000,
                 candidates_before_nms: int = 2000, batch_norm: bool = False, frozen_blocks: int = 2) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.backbone, self.roi_heads, self.transform = backbone, roi_heads, transform
        self.proposal_source = proposals
        self.proposals_train, self.proposals_test = int(proposals_train), int(candidates_before_nms)
        self.batch_norm, self.frozen_blocks = batch_norm, frozen_blocks

    # ---- stages -------------------------------------------------------------------------------
    def propose(self, images: list[Tensor], fresh: bool = False) -> list[Tensor]:
        """Per image float32 [P_i, 4] x1y1x2y2 in its own pixels, P_i <= this mode's count."""
        limit = self.proposals_train if self.training else self.proposals_test
        return take_proposals(self.proposal_source, images, limit, fresh)

    def preprocess(self, images: list[Tensor], targets: list[Target] | None = None,
                   proposals: list[Tensor] | None = None) -> Batch:
        """Transform images (and targets); proposals (computed here if not given) rescaled to
        input pixels in ``extras["proposals"]``."""
        if proposals is None:
            proposals = self.propose(images)
        original = [(int(im.shape[-2]), int(im.shape[-1])) for im in images]
        image_list, resized = self.transform(images, targets)
        inputs = [(int(h), int(w)) for h, w in image_list.image_sizes]
        scaled = []
        for boxes, (oh, ow), (ih, iw) in zip(proposals, original, inputs):
            boxes = boxes.to(image_list.tensors.device) * boxes.new_tensor([iw / ow, ih / oh, iw / ow, ih / oh])
            if self.training and len(boxes) == 0:     # keeps the sampled set, and the loss, non-empty
                boxes = boxes.new_tensor([[0.0, 0.0, iw, ih]])
            scaled.append(boxes)
        return Batch(images=image_list.tensors, original_sizes=original, input_sizes=inputs,
                     targets=resized, extras={"proposals": scaled})

    def network(self, batch: Batch) -> dict:
        """Training: {"losses": {loss_classifier, loss_box_reg}}. Eval: {"class_logits"
        [sum P, C+1], "box_regression" [sum P, 4(C+1)], "proposals" list of [P_i, 4]}."""
        if not self.training:
            return self.network_from_parts(batch)
        features = OrderedDict([("0", self.backbone(batch.images))])
        _, losses = self.roi_heads(features, batch.extras["proposals"], batch.input_sizes, batch.targets)
        return {"losses": losses}

    # ---- the network as two exportable parts (experiments.speed.export) ---------------------------
    #: graph -> (method, its input's name, the name of that input's axis 0), as FasterRCNN's
    export_parts = {"features": ("backbone_outputs", "images", "batch"),
                    "box_head": ("box_head_outputs", "pooled", "rois")}

    def backbone_outputs(self, images: Tensor) -> tuple[Tensor]:
        """The first exportable part, the conv trunk: images [B, 3, H, W] (preprocessed) ->
        (conv5_3 features [B, C, H/16, W/16],)."""
        return (self.backbone(images),)

    def box_head_outputs(self, pooled: Tensor) -> tuple[Tensor, Tensor]:
        """The second exportable part: pooled RoIs [P, C, 7, 7] -> class logits [P, C+1] and
        class-specific box deltas [P, 4(C+1)] (fc6, fc7, predictor)."""
        return self.roi_heads.box_predictor(self.roi_heads.box_head(pooled))

    def network_from_parts(self, batch: Batch, features=None, box_head=None) -> dict:
        """The eval ``network`` with its two exportable parts given as callables (default: this
        module's ``backbone_outputs`` and ``box_head_outputs``; an exported graph in a runtime).
        Between them, in PyTorch: RoI pooling of ``batch.extras["proposals"]`` (input pixels).
        No proposal at all: the box head runs in PyTorch on the empty [0, C, 7, 7]."""
        maps = (features or self.backbone_outputs)(batch.images)
        proposals = batch.extras["proposals"]
        pooled = self.roi_heads.box_roi_pool(OrderedDict([("0", maps[0])]), proposals,
                                             batch.input_sizes)                   # [sum P, C, 7, 7]
        second = box_head if box_head is not None and len(pooled) else self.box_head_outputs
        class_logits, box_regression = second(pooled)
        return {"class_logits": class_logits, "box_regression": box_regression, "proposals": proposals}

    def postprocess(self, outputs: dict, batch: Batch) -> list[Detection]:
        if outputs["class_logits"].shape[0] == 0:      # no image had a proposal: nothing to decode
            return [Detection(boxes=torch.zeros(0, 4), scores=torch.zeros(0),
                              labels=torch.zeros(0, dtype=torch.int64)) for _ in batch.original_sizes]
        boxes, scores, labels = self.roi_heads.postprocess_detections(
            outputs["class_logits"], outputs["box_regression"], outputs["proposals"], batch.input_sizes)
        detections = [{"boxes": b, "scores": s, "labels": c} for b, s, c in zip(boxes, scores, labels)]
        detections = self.transform.postprocess(detections, batch.input_sizes, batch.original_sizes)
        return [Detection(boxes=d["boxes"].float(), scores=d["scores"].float(), labels=d["labels"].long())
                for d in detections]

    def loss(self, outputs: dict, batch: Batch) -> dict[str, Tensor]:
        return outputs["losses"]

    # ---- counts and settings --------------------------------------------------------------------
    def num_candidates(self, image_size: tuple[int, int]) -> int:
        """Proposals scored per image at test, at most (fewer where the source gives fewer)."""
        return self.proposals_test

    def candidates_scored(self, outputs: dict, batch: Batch) -> list[int]:
        return [int(p.shape[0]) for p in outputs["proposals"]]

    def set_normalization(self, mean: tuple[float, float, float], std: tuple[float, float, float]) -> None:
        self.transform.image_mean = [float(v) for v in mean]
        self.transform.image_std = [float(v) for v in std]


def fast_rcnn_vgg16(num_classes: int, width: float = 1.0, batch_norm: bool = False, min_size: int = 600,
                    max_size: int = 1000, input_size: tuple[int, int] = (600, 1000),
                    roi_heads: RoIHeadSettings | Mapping | None = None, score_thresh: float = 0.05,
                    nms_thresh: float = 0.3, max_detections: int = 100, candidates_before_nms: int = 2000,
                    proposals_train: int = 2000, frozen_blocks: int = 2,
                    proposals: ProposalSource | None = None) -> FastRCNN:
    """The paper's setting: VGG-16 conv5_3 (stride 16, ``scale_width(512, width)`` channels),
    RoI max pooling 7x7 at 1/16, fc6/fc7 of ``scale_width(4096, width)``, 64 RoIs per image at
    25% foreground (IoU >= 0.5) and background IoU [0.1, 0.5), shorter side ``min_size`` (600),
    longer at most ``max_size`` (1000), 2000 proposals at test, NMS 0.3; conv1-conv2 frozen
    with ImageNet weights."""
    roi_heads = settings(RoIHeadSettings, roi_heads, batch_size_per_image=64, bg_iou_low=0.1)
    trunk = vgg16_trunk(width=width, batch_norm=batch_norm)
    heads = fast_rcnn_heads(vgg16_roi_pool(roi_heads.pooling), trunk.out_channels * 7 * 7,
                            scale_width(4096, width), num_classes, roi_heads, score_thresh, nms_thresh,
                            max_detections)
    transform = GeneralizedRCNNTransform(min_size, max_size, IMAGENET_MEAN, IMAGENET_STD, size_divisible=16)
    return FastRCNN(num_classes, trunk, heads, transform, tuple(input_size), proposals, proposals_train,
                    candidates_before_nms, batch_norm, frozen_blocks)
