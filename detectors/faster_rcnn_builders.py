"""Faster R-CNN builders: what the configs' ``_target_`` names.

``faster_rcnn_vgg16`` is the paper's setting, ``faster_rcnn_resnet50_fpn`` torchvision's modern
one. Both take the settings every detbench detector shares (``score_thresh``, ``nms_thresh``,
``max_detections`` of the final detections; ``candidates_before_nms``: the proposals kept at
test, the boxes the second stage scores) and two nested groups, ``rpn`` (``RPNSettings``) and
``roi_heads`` (``RoIHeadSettings``), given as the dataclass or as a mapping of its fields
(what Hydra passes); fields left out keep the builder's defaults.

Weights start random. ``load_backbone_state`` takes torchvision's ImageNet classification
weights: VGG-16 (conv1_1 .. conv5_3, and fc6/fc7 from its classifier as the paper did, with
conv1-2 frozen: the paper fine-tunes from conv3_1) or ResNet-50 (the FPN body).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

import torchvision
from torch import Tensor, nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import FrozenBatchNorm2d, MultiScaleRoIAlign

from detectors.backbones import load_vgg16_trunk_state, vgg16_classifier, vgg16_trunk, vgg16_weights_enum
from detectors.base import IMAGENET_MEAN, IMAGENET_STD, scale_width
from detectors.faster_rcnn import FasterRCNN, SingleMapRoIPool
from detectors.faster_rcnn_threads import ThreadedRoIAlign, ThreadedRPN
from detectors.roi_heads import BackgroundFloorRoIHeads


@dataclass
class RPNSettings:
    """The region proposal network. Sizes in input pixels; top-n counts per feature map.

    anchor_sizes: sqrt(area) per anchor (one feature map) or one per FPN map.
    aspect_ratios: height / width.  pre_nms_top_n: (training, test) proposals before NMS.
    post_nms_top_n_train: proposals kept after NMS in training (test: ``candidates_before_nms``).
    nms_thresh, fg_iou_thresh, bg_iou_thresh, batch_size_per_image, positive_fraction: as
    torchvision's ``RegionProposalNetwork``.
    """

    anchor_sizes: tuple[float, ...] = (128, 256, 512)
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    pre_nms_top_n: tuple[int, int] = (12000, 6000)
    post_nms_top_n_train: int = 2000
    nms_thresh: float = 0.7
    fg_iou_thresh: float = 0.7
    bg_iou_thresh: float = 0.3
    batch_size_per_image: int = 256
    positive_fraction: float = 0.5


@dataclass
class RoIHeadSettings:
    """The second stage's training-time sampling (torchvision's ``RoIHeads``) and pooling.

    pooling: "pool" (Fast R-CNN's RoIPool) | "align" (RoIAlign); VGG-16 only (FPN: RoIAlign).
    bg_iou_low: background proposals have IoU in [bg_iou_low, bg_iou_thresh) (Fast R-CNN and
    py-faster-rcnn: 0.1; torchvision: 0, every proposal below bg_iou_thresh).
    """

    pooling: str = "pool"
    fg_iou_thresh: float = 0.5
    bg_iou_thresh: float = 0.5
    bg_iou_low: float = 0.0
    batch_size_per_image: int = 128
    positive_fraction: float = 0.25


def settings(kind: type, given, **defaults):
    """``kind`` (a settings dataclass) from ``given`` (None, an instance or a mapping of its
    fields) over ``defaults``; an unknown field is a ValueError naming it and the known ones."""
    if isinstance(given, kind):
        return given
    values = dict(given or {})
    known = {f.name for f in dataclasses.fields(kind)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{kind.__name__}: unknown settings {unknown}; known: {sorted(known)}")
    return kind(**{**defaults, **values})


def region_proposal_network(anchor_generator: AnchorGenerator, in_channels: int, rpn: RPNSettings,
                            candidates_before_nms: int) -> RegionProposalNetwork:
    """torchvision's RPN with a 3x3 conv + sibling 1x1 objectness / box-delta head (its
    per-image proposal filtering and NMS on worker threads: ``detectors.faster_rcnn_threads``)."""
    head = RPNHead(in_channels, anchor_generator.num_anchors_per_location()[0])
    return ThreadedRPN(
        anchor_generator, head, rpn.fg_iou_thresh, rpn.bg_iou_thresh, rpn.batch_size_per_image,
        rpn.positive_fraction,
        pre_nms_top_n={"training": int(rpn.pre_nms_top_n[0]), "testing": int(rpn.pre_nms_top_n[1])},
        post_nms_top_n={"training": int(rpn.post_nms_top_n_train), "testing": int(candidates_before_nms)},
        nms_thresh=rpn.nms_thresh)


def fast_rcnn_heads(box_roi_pool: nn.Module, in_features: int, representation_size: int, num_classes: int,
                    roi_heads: RoIHeadSettings, score_thresh: float, nms_thresh: float,
                    max_detections: int) -> RoIHeads:
    """torchvision's RoIHeads: pooled RoIs -> two fc layers (fc6, fc7) of
    ``representation_size`` -> class scores (num_classes + 1) and class-specific boxes; with
    ``roi_heads.bg_iou_low`` > 0, ``BackgroundFloorRoIHeads`` (background IoU in [low, bg))."""
    floor = {"bg_iou_low": roi_heads.bg_iou_low} if roi_heads.bg_iou_low > 0 else {}
    return (BackgroundFloorRoIHeads if floor else RoIHeads)(
        box_roi_pool, TwoMLPHead(in_features, representation_size),
        FastRCNNPredictor(representation_size, num_classes + 1),
        roi_heads.fg_iou_thresh, roi_heads.bg_iou_thresh, roi_heads.batch_size_per_image,
        roi_heads.positive_fraction, bbox_reg_weights=None, score_thresh=score_thresh,
        nms_thresh=nms_thresh, detections_per_img=max_detections, **floor)


def vgg16_roi_pool(pooling: str) -> nn.Module:
    """7x7 RoI pooling on VGG-16's conv5_3 (stride 16): "pool" (RoIPool) or "align" (RoIAlign)."""
    if pooling == "pool":
        return SingleMapRoIPool("0", output_size=7, spatial_scale=1.0 / 16)
    if pooling == "align":
        return ThreadedRoIAlign(["0"], output_size=7, sampling_ratio=2)   # MultiScaleRoIAlign, threaded backward
    raise ValueError(f"roi_heads.pooling must be 'pool' or 'align', got {pooling!r}")


class VGG16Weights:
    """Mixin of the detectors on a ``vgg16_trunk`` (``backbone``) with fc6/fc7 in
    ``roi_heads.box_head``: takes torchvision's VGG-16 ImageNet weights. Needs ``batch_norm``
    and ``frozen_blocks`` attributes: VGG blocks (conv1_x, conv2_x, ...) kept frozen once
    ImageNet weights are loaded (the papers: 2, fine-tuning from conv3_1). A randomly
    initialised trunk is never frozen."""

    def fc_layers(self) -> TwoMLPHead:
        """The fc6/fc7 pair that takes VGG-16's classifier weights."""
        return self.roi_heads.box_head

    def backbone_weights_enum(self) -> type:
        return vgg16_weights_enum(self.batch_norm)

    def load_backbone_state(self, state: dict[str, Tensor], source: str) -> None:
        load_vgg16_trunk_state(self.backbone, state, source, self.batch_norm)
        notes = []
        classifier = vgg16_classifier(state)
        box_head = self.fc_layers()
        if classifier is not None and box_head.fc6.weight.shape == classifier["fc6.weight"].shape:
            box_head.fc6.load_state_dict({"weight": classifier["fc6.weight"], "bias": classifier["fc6.bias"]})
            box_head.fc7.load_state_dict({"weight": classifier["fc7.weight"], "bias": classifier["fc7.bias"]})
            notes.append("fc6/fc7 from its classifier")
        else:
            notes.append("fc6/fc7 random: no classifier of this size in these weights")
        if self.frozen_blocks:
            frozen = freeze_vgg_blocks(self.backbone, self.frozen_blocks)
            notes.append(f"{frozen} frozen")
        self.weights_source = f"{source} ({'; '.join(notes)})"


class VGG16FasterRCNN(VGG16Weights, FasterRCNN):
    """``FasterRCNN`` on a ``vgg16_trunk``, taking torchvision's VGG-16 ImageNet weights
    (``VGG16Weights``)."""

    def __init__(self, *args, batch_norm: bool = False, frozen_blocks: int = 2, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.batch_norm = batch_norm
        self.frozen_blocks = frozen_blocks


def freeze_vgg_blocks(trunk: nn.Sequential, blocks: int) -> str:
    """Stop the gradients of the first ``blocks`` VGG blocks of ``trunk`` (every layer before its
    ``blocks``-th max pool; BatchNorm statistics, if any, still update in training mode);
    returns the frozen range, e.g. "conv1_1..conv2_2"."""
    pools = [i for i, layer in enumerate(trunk) if isinstance(layer, nn.MaxPool2d)]
    if not 1 <= blocks <= len(pools):
        raise ValueError(f"frozen_blocks must be in 1..{len(pools)}, got {blocks}")
    for layer in trunk[: pools[blocks - 1]]:
        for parameter in layer.parameters():
            parameter.requires_grad_(False)
    last = {1: "conv1_2", 2: "conv2_2", 3: "conv3_3", 4: "conv4_3", 5: "conv5_3"}[blocks]
    return f"conv1_1..{last}"


class ResNet50FPNFasterRCNN(FasterRCNN):
    """``FasterRCNN`` on torchvision's ResNet-50-FPN, taking ResNet-50 ImageNet weights into
    the FPN's body (the FPN layers stay random, as torchvision's own recipe)."""

    def backbone_weights_enum(self) -> type:
        return torchvision.models.ResNet50_Weights

    def load_backbone_state(self, state: dict[str, Tensor], source: str) -> None:
        body = self.backbone.body
        wanted = body.state_dict()
        state = {k: v for k, v in state.items() if k in wanted}
        missing = sorted(set(wanted) - set(state))
        if missing:
            raise ValueError(f"{source}: not a ResNet-50 state_dict: lacks {missing[:5]} ...")
        body.load_state_dict(state, strict=True)
        self.weights_source = f"{source} (ResNet-50 body; FPN random)"


def faster_rcnn_vgg16(num_classes: int, width: float = 1.0, batch_norm: bool = False,
                      min_size: int = 600, max_size: int = 1000, input_size: tuple[int, int] = (600, 1000),
                      rpn: RPNSettings | Mapping | None = None, roi_heads: RoIHeadSettings | Mapping | None = None,
                      score_thresh: float = 0.05, nms_thresh: float = 0.3, max_detections: int = 100,
                      candidates_before_nms: int = 300, frozen_blocks: int = 2) -> VGG16FasterRCNN:
    """The paper's setting: VGG-16 conv5_3 features (stride 16, ``scale_width(512, width)``
    channels); 9 anchors per location (3 sizes x 3 aspect ratios h/w); RPN NMS 0.7 keeping 2000
    proposals in training and ``candidates_before_nms`` (300) at test; 7x7 RoI pooling; fc6/fc7
    of ``scale_width(4096, width)``; shorter side resized to ``min_size`` (longer at most
    ``max_size``); test NMS 0.3 as py-faster-rcnn. ``batch_norm`` adds BatchNorm after every
    convolution (needed to train from scratch in minutes).

    Left out: the paper ignores cross-boundary anchors in training; torchvision's RPN keeps them.
    """
    rpn = settings(RPNSettings, rpn)
    roi_heads = settings(RoIHeadSettings, roi_heads)
    trunk = vgg16_trunk(width=width, batch_norm=batch_norm)
    channels = trunk.out_channels
    anchors = AnchorGenerator(sizes=(tuple(float(s) for s in rpn.anchor_sizes),),
                              aspect_ratios=(tuple(float(r) for r in rpn.aspect_ratios),))
    proposals = region_proposal_network(anchors, channels, rpn, candidates_before_nms)
    heads = fast_rcnn_heads(vgg16_roi_pool(roi_heads.pooling), channels * 7 * 7, scale_width(4096, width),
                            num_classes, roi_heads, score_thresh, nms_thresh, max_detections)
    # Padding to a multiple of 16 gives conv5_3 ceil(H/16) x ceil(W/16), as Caffe's rounding-up
    # pools did in the paper: 38 x 63 x 9 = 21546 anchors for 600 x 1000.
    transform = GeneralizedRCNNTransform(min_size, max_size, IMAGENET_MEAN, IMAGENET_STD, size_divisible=16)
    return VGG16FasterRCNN(num_classes, trunk, proposals, heads, transform, tuple(input_size),
                           batch_norm=batch_norm, frozen_blocks=frozen_blocks)


def faster_rcnn_resnet50_fpn(num_classes: int, min_size: int = 800, max_size: int = 1333,
                             input_size: tuple[int, int] = (800, 1333), trainable_layers: int = 5,
                             frozen_batch_norm: bool = False, rpn: RPNSettings | Mapping | None = None,
                             roi_heads: RoIHeadSettings | Mapping | None = None, score_thresh: float = 0.05,
                             nms_thresh: float = 0.5, max_detections: int = 100,
                             candidates_before_nms: int = 1000) -> ResNet50FPNFasterRCNN:
    """torchvision's ``fasterrcnn_resnet50_fpn`` setting: ResNet-50 + FPN (256 channels, maps
    '0'..'3' at strides 4..32 and 'pool' at 64), one anchor size per map x 3 ratios, RoIAlign
    7x7 on maps '0'..'3', two fc layers of 1024. Defaults equal torchvision's random-weights
    build (plain BatchNorm, all 5 stages trainable); ``frozen_batch_norm`` / ``trainable_layers``
    give its pretrained-backbone form."""
    rpn = settings(RPNSettings, rpn, anchor_sizes=(32, 64, 128, 256, 512), pre_nms_top_n=(2000, 1000))
    roi_heads = settings(RoIHeadSettings, roi_heads, pooling="align", batch_size_per_image=512)
    if roi_heads.pooling != "align":
        raise ValueError("roi_heads.pooling: the FPN model pools with RoIAlign only ('align')")
    norm_layer = FrozenBatchNorm2d if frozen_batch_norm else nn.BatchNorm2d
    backbone = resnet_fpn_backbone(backbone_name="resnet50", weights=None, norm_layer=norm_layer,
                                   trainable_layers=trainable_layers)
    sizes = rpn.anchor_sizes
    anchors = AnchorGenerator(sizes=tuple((float(s),) for s in sizes),
                              aspect_ratios=(tuple(float(r) for r in rpn.aspect_ratios),) * len(sizes))
    proposals = region_proposal_network(anchors, backbone.out_channels, rpn, candidates_before_nms)
    pool = MultiScaleRoIAlign(["0", "1", "2", "3"], output_size=7, sampling_ratio=2)
    heads = fast_rcnn_heads(pool, backbone.out_channels * 7 * 7, 1024, num_classes, roi_heads,
                            score_thresh, nms_thresh, max_detections)
    transform = GeneralizedRCNNTransform(min_size, max_size, IMAGENET_MEAN, IMAGENET_STD)
    return ResNet50FPNFasterRCNN(num_classes, backbone, proposals, heads, transform, tuple(input_size))


__all__ = ["RPNSettings", "RoIHeadSettings", "VGG16Weights", "fast_rcnn_heads", "faster_rcnn_resnet50_fpn",
           "faster_rcnn_vgg16", "freeze_vgg_blocks", "settings", "vgg16_roi_pool"]
