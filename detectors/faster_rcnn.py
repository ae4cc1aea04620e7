"""Faster R-CNN (Ren et al., 2015) composed from torchvision's detection parts.

Two stages share one backbone's features::

    images --transform--> [B, 3, H, W] --backbone--> features
        --RPN (anchors, objectness, NMS 0.7)--> proposals [P, 4] per image
        --RoI pooling 7x7 + fc6/fc7 + predictor--> class scores [P, C+1], class boxes [P, 4(C+1)]
        --decode, per-class NMS, map back--> Detection (original pixels)

torchvision's ``AnchorGenerator``, ``RegionProposalNetwork``, ``RPNHead``, ``RoIHeads``,
``MultiScaleRoIAlign`` / ``roi_pool`` and ``GeneralizedRCNNTransform`` do the work; this file
wires them under detbench's contract. The state_dict keys (``transform``, ``backbone``, ``rpn``,
``roi_heads``) are torchvision's ``FasterRCNN``'s, so its weights load as they are.

Builders (what the configs call) live in ``faster_rcnn_builders``: ``faster_rcnn_vgg16`` (the
paper's setting) and ``faster_rcnn_resnet50_fpn`` (torchvision's modern setting).
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import Tensor, nn
from torch.func import functional_call
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import RegionProposalNetwork, concat_box_prediction_layers
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import box_iou, clip_boxes_to_image, roi_pool

from detectors.assignment import ObjectAssignment, count_per_object, status_from_counts
from detectors.base import Batch, Detection, Detector, Target


class SingleMapRoIPool(nn.Module):
    """RoI max pooling (Fast R-CNN's, not RoIAlign) on one feature map, with the call signature
    ``RoIHeads`` expects of its ``box_roi_pool``.

    forward(features {name: [B, C, h, w]}, proposals list of [P_i, 4] x1y1x2y2 input pixels,
    image_shapes) -> [sum P_i, C, output_size, output_size].
    ``spatial_scale`` = 1 / the feature map's stride (1/16 for VGG-16's conv5_3).
    """

    def __init__(self, feature_name: str = "0", output_size: int = 7,
                 spatial_scale: float = 1.0 / 16) -> None:
        super().__init__()
        self.feature_name = feature_name
        self.output_size = output_size
        self.spatial_scale = spatial_scale

    def forward(self, features: dict[str, Tensor], proposals: list[Tensor],
                image_shapes: list[tuple[int, int]]) -> Tensor:
        # torchvision's roi_pool has no bf16 CPU kernel and no CPU autocast rule: pool in fp32
        # (a no-op in fp32 training; under autocast the next layer casts back).
        return roi_pool(features[self.feature_name].float(), proposals,
                        (self.output_size, self.output_size), self.spatial_scale)

    def extra_repr(self) -> str:
        return (f"feature_name={self.feature_name!r}, output_size={self.output_size}, "
                f"spatial_scale={self.spatial_scale}")


class FasterRCNN(Detector):
    """Faster R-CNN under detbench's contract.

    Args:
        num_classes: foreground classes (labels 1..num_classes); the box predictor must have
            num_classes + 1 outputs (index 0 is background).
        backbone: [B, 3, H, W] -> a Tensor or an OrderedDict of feature maps [B, C, h, w];
            needs ``out_channels``.
        rpn: torchvision ``RegionProposalNetwork`` (anchor generator, head, matcher, NMS).
        roi_heads: torchvision ``RoIHeads`` (RoI pooling, box head, predictor, sampling, NMS).
        transform: torchvision ``GeneralizedRCNNTransform`` (normalise, resize shorter side to
            ``min_size`` / longer side to at most ``max_size``, pad, stack).
        input_size: (H, W) of a typical network input, fed by the speed protocol.

    Eval split (for the speed protocol): ``preprocess`` = transform; ``network`` = backbone,
    RPN (its proposal NMS included: it is part of the network's computation) and the RoI head
    up to class scores and box deltas; ``postprocess`` = decode, score threshold, per-class
    NMS, top-k, map back to original pixels. ``features``, ``propose`` and ``classify_regions``
    expose the three network stages for timing.
    """

    def __init__(self, num_classes: int, backbone: nn.Module, rpn: RegionProposalNetwork,
                 roi_heads: RoIHeads, transform: GeneralizedRCNNTransform,
                 input_size: tuple[int, int]) -> None:
        super().__init__()
        predictor_classes = roi_heads.box_predictor.cls_score.out_features
        if predictor_classes != num_classes + 1:
            raise ValueError(f"box predictor has {predictor_classes} outputs, expected "
                             f"num_classes + 1 = {num_classes + 1} (background is index 0)")
        self.num_classes = num_classes
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.transform = transform
        self.backbone = backbone
        self.rpn = rpn
        self.roi_heads = roi_heads
        #: what the weights came from ("random", "file:<path>", "torchvision:<name>").
        self.weights_source = "random"
        self.fixed_input_size = transform.fixed_size is not None   # None: aspect ratio kept

    # ---- the three stages of the contract -------------------------------------------------
    def preprocess(self, images: list[Tensor], targets: list[Target] | None = None) -> Batch:
        """Normalise, resize (boxes too), pad to a common size and stack -> Batch."""
        original_sizes = [(int(im.shape[-2]), int(im.shape[-1])) for im in images]
        image_list, resized_targets = self.transform(images, targets)
        return Batch(images=image_list.tensors, original_sizes=original_sizes,
                     input_sizes=[(int(h), int(w)) for h, w in image_list.image_sizes],
                     targets=resized_targets)

    def network(self, batch: Batch) -> dict:
        """Training: {"losses": {loss_objectness, loss_rpn_box_reg, loss_classifier,
        loss_box_reg}}. Eval: {"class_logits": [sum P, C+1], "box_regression": [sum P, 4(C+1)],
        "proposals": list of [P_i, 4] (input pixels)}."""
        features = self.features(batch.images)
        proposals, rpn_losses = self.propose(batch, features)
        if self.training:
            _, head_losses = self.roi_heads(features, proposals, batch.input_sizes, batch.targets)
            return {"losses": {**rpn_losses, **head_losses}}
        class_logits, box_regression = self.classify_regions(features, proposals, batch.input_sizes)
        return {"class_logits": class_logits, "box_regression": box_regression,
                "proposals": proposals}

    def postprocess(self, outputs: dict, batch: Batch) -> list[Detection]:
        boxes, scores, labels = self.roi_heads.postprocess_detections(
            outputs["class_logits"], outputs["box_regression"], outputs["proposals"],
            batch.input_sizes)
        detections = [{"boxes": b, "scores": s, "labels": c} for b, s, c in zip(boxes, scores, labels)]
        detections = self.transform.postprocess(detections, batch.input_sizes, batch.original_sizes)
        return [Detection(boxes=d["boxes"].float(), scores=d["scores"].float(),
                          labels=d["labels"].long()) for d in detections]

    def loss(self, outputs: dict, batch: Batch) -> dict[str, Tensor]:
        return outputs["losses"]

    # ---- the network's stages, for timing ---------------------------------------------------
    def features(self, images: Tensor) -> OrderedDict[str, Tensor]:
        """[B, 3, H, W] normalised -> OrderedDict of feature maps [B, C, h, w]."""
        features = self.backbone(images)
        if isinstance(features, Tensor):
            features = OrderedDict([("0", features)])
        return features

    def propose(self, batch: Batch, features: OrderedDict[str, Tensor]
                ) -> tuple[list[Tensor], dict[str, Tensor]]:
        """RPN: proposals, list of [P_i, 4] x1y1x2y2 input pixels (P_i <= the post-NMS top-n of
        the current mode), and its losses in training ({} in eval)."""
        image_list = ImageList(batch.images, batch.input_sizes)
        return self.rpn(image_list, features, batch.targets if self.training else None)

    def classify_regions(self, features: OrderedDict[str, Tensor], proposals: list[Tensor],
                         input_sizes: list[tuple[int, int]]) -> tuple[Tensor, Tensor]:
        """RoI pooling, box head (fc6/fc7), predictor -> class logits [sum P, C+1] and
        class-specific box deltas [sum P, 4(C+1)]."""
        heads = self.roi_heads
        pooled = heads.box_roi_pool(features, proposals, input_sizes)  # [sum P, C, 7, 7]
        return heads.box_predictor(heads.box_head(pooled))

    # ---- the network as two exportable parts (experiments.speed.export) ---------------------------
    #: graph -> (method, its input's name, the name of that input's axis 0); the method's tensors
    #: are what an exported graph of that name computes (``network_from_parts`` takes its keywords)
    export_parts = {"features": ("rpn_head_outputs", "images", "batch"),
                    "box_head": ("box_head_outputs", "pooled", "rois")}

    def rpn_head_outputs(self, images: Tensor) -> tuple[Tensor, ...]:
        """The first exportable part, backbone and the RPN's convolutions: images [B, 3, H, W]
        (preprocessed) -> (feature maps [B, C, h, w] per level ..., objectness [B, A, h, w] per
        level ..., box deltas [B, 4A, h, w] per level ...): L maps give 3 L tensors."""
        maps = list(self.features(images).values())
        objectness, deltas = self.rpn.head(maps)
        return (*maps, *objectness, *deltas)

    def box_head_outputs(self, pooled: Tensor) -> tuple[Tensor, Tensor]:
        """The second exportable part: pooled RoIs [P, C, 7, 7] -> class logits [P, C+1] and
        class-specific box deltas [P, 4(C+1)] (fc6, fc7, predictor)."""
        return self.roi_heads.box_predictor(self.roi_heads.box_head(pooled))

    @torch.no_grad()
    def network_from_parts(self, batch: Batch, features=None, box_head=None) -> dict:
        """The eval ``network`` with its two exportable parts given as callables (default: this
        module's ``rpn_head_outputs`` and ``box_head_outputs``; an exported graph in a runtime).
        What runs here, in PyTorch, between them: anchors, proposal decoding, the RPN's per-level
        top-n, clipping, small-box filter and NMS, and RoI pooling. Same dict as ``network``."""
        outputs = list((features or self.rpn_head_outputs)(batch.images))
        levels = len(outputs) // 3
        maps, objectness, deltas = outputs[:levels], outputs[levels:2 * levels], outputs[2 * levels:]
        image_list = ImageList(batch.images, batch.input_sizes)
        anchors = self.rpn.anchor_generator(image_list, maps)                     # per image [sum A h w, 4]
        per_level = [o[0].numel() for o in objectness]                             # A h w per level
        scores, deltas = concat_box_prediction_layers(objectness, deltas)
        proposals = self.rpn.box_coder.decode(deltas, anchors).view(len(anchors), -1, 4)
        proposals, _ = self.rpn.filter_proposals(proposals, scores, batch.input_sizes, per_level)
        named = OrderedDict(zip(self.feature_names(batch.images), maps))
        pooled = self.roi_heads.box_roi_pool(named, proposals, batch.input_sizes)     # [sum P, C, 7, 7]
        class_logits, box_regression = (box_head or self.box_head_outputs)(pooled)
        return {"class_logits": class_logits, "box_regression": box_regression, "proposals": proposals}

    def feature_names(self, images: Tensor) -> list[str]:
        """The backbone's feature-map names in order ("0" for one map), from one meta-device pass."""
        if "_feature_names" not in self.__dict__:
            self.__dict__["_feature_names"] = list(meta_features(self.backbone, images[:1]))
        return self.__dict__["_feature_names"]

    # ---- weights ------------------------------------------------------------------------------
    def set_normalization(self, mean: tuple[float, float, float], std: tuple[float, float, float]) -> None:
        self.transform.image_mean = [float(v) for v in mean]
        self.transform.image_std = [float(v) for v in std]

    # ---- target assignment, per object ----------------------------------------------------------
    @torch.no_grad()
    def assign_objects(self, batch: Batch) -> list[dict[str, ObjectAssignment]]:
        """Per image (batch from ``preprocess(images, targets)``, boxes in input pixels):

        - "rpn_anchors": torchvision's ``RegionProposalNetwork.assign_targets_to_anchors``
          (its ``Matcher``: fg >= 0.7, bg < 0.3, ``allow_low_quality_matches``: each object's
          best anchors are foreground whatever their IoU) on this image's anchors;
        - "roi_anchors_as_proposals": ``RoIHeads.assign_targets_to_proposals`` (fg >= 0.5) with
          the anchors, clipped to the image, as the proposals: what an untrained RPN proposes
          (its deltas start near 0) before NMS and top-n. In training torchvision also appends
          every ground-truth box to the proposals, so each object has one positive RoI (itself)
          whatever this stage says: it tells which objects rely on that alone.

        Fixed-size RPN / RoI sampling (256 anchors, 128 or 512 RoIs per image) is random per
        iteration and not modelled: positives are those the sampler draws from."""
        image_list = ImageList(batch.images, batch.input_sizes)
        size = tuple(batch.images.shape[1:])
        cache = self.__dict__.setdefault("_map_sizes_by_input", {})   # one meta-device pass per input size
        if size not in cache:
            cache[size] = feature_map_sizes_of_input(self.backbone, batch.images)
        shapes = cache[size]
        maps = [batch.images.new_empty(1, 1, h, w) for h, w in shapes]
        anchors = self.rpn.anchor_generator(image_list, maps)                  # per image [A, 4]
        targets = [{"boxes": t["boxes"].to(a.device, a.dtype), "labels": t["labels"].to(a.device)}
                   for t, a in zip(batch.targets, anchors)]
        fg_labels, matched_boxes = self.rpn.assign_targets_to_anchors(anchors, targets)
        matcher = self.rpn.proposal_matcher
        proposals = [clip_boxes_to_image(a, size) for a, size in zip(anchors, batch.input_sizes)]
        roi_index, roi_labels = self.roi_heads.assign_targets_to_proposals(
            proposals, [t["boxes"] for t in targets], [t["labels"] for t in targets])
        roi_threshold = self.roi_heads.proposal_matcher.high_threshold
        result = []
        for i, target in enumerate(targets):
            gt, g = target["boxes"], len(target["boxes"])
            best_iou = (self.rpn.box_similarity(gt, anchors[i]).max(dim=1).values if g
                        else gt.new_zeros(0))                                  # [G]
            fg = fg_labels[i] == 1
            # the object of each fg anchor: the first ground truth with its matched box
            owner = (matched_boxes[i][fg][:, None, :] == gt[None]).all(-1).float().argmax(1)
            rpn_positives = count_per_object(owner, g)
            rpn_regular = count_per_object(owner[best_iou_of(self.rpn, gt, anchors[i], fg, owner)
                                                 >= matcher.high_threshold], g)
            rpn = ObjectAssignment(rpn_positives, best_iou.float(), status_from_counts(
                rpn_positives, rpn_regular, best_iou, matcher.high_threshold,
                matcher.allow_low_quality_matches), matcher.high_threshold)
            roi_positives = count_per_object(roi_index[i][roi_labels[i] > 0], g)
            roi_best = (box_iou(gt, proposals[i]).max(dim=1).values if g else gt.new_zeros(0))
            roi = ObjectAssignment(roi_positives, roi_best.float(), status_from_counts(
                roi_positives, roi_positives, roi_best, roi_threshold,
                self.roi_heads.proposal_matcher.allow_low_quality_matches), roi_threshold)
            result.append({"rpn_anchors": rpn, "roi_anchors_as_proposals": roi})
        return result

    # ---- counts -------------------------------------------------------------------------------
    def num_candidates(self, image_size: tuple[int, int]) -> int:
        """At most this many proposals per image at test (the RPN's post-NMS top-n: 300 in the
        paper's setting, fewer if the image has fewer anchors): an upper bound. The RPN's NMS and
        small-box filter may keep fewer; ``candidates_scored`` counts those actually scored."""
        return min(self.rpn._post_nms_top_n["testing"], self.num_anchors(image_size))

    def candidates_scored(self, outputs: dict, batch: Batch) -> list[int]:
        """Proposals the second stage scored, per image (the measured count)."""
        return [int(p.shape[0]) for p in outputs["proposals"]]

    def num_anchors(self, image_size: tuple[int, int]) -> int:
        """RPN anchors for one image of ``image_size`` (H, W) as given (before the transform's
        resize): sum over feature maps of h * w * anchors per location. About 20k for a
        600x1000 image in the paper's VGG-16 setting (38 * 63 * 9 = 21546)."""
        sizes = feature_map_sizes(self.transform, self.backbone, image_size)
        per_location = self.rpn.anchor_generator.num_anchors_per_location()
        return sum(h * w * a for (h, w), a in zip(sizes, per_location))


def best_iou_of(rpn: RegionProposalNetwork, gt: Tensor, anchors: Tensor, fg: Tensor, owner: Tensor) -> Tensor:
    """IoU [F] of each foreground anchor with the object it was given (``owner`` [F])."""
    if not len(owner):
        return anchors.new_zeros(0)
    return rpn.box_similarity(gt, anchors[fg]).gather(0, owner[None]).squeeze(0)


def meta_features(backbone: nn.Module, images: Tensor) -> OrderedDict[str, Tensor]:
    """The feature maps ``backbone`` gives for the network input ``images`` [B, 3, H, W] (already
    transformed), as meta-device tensors: names and shapes, no arithmetic."""
    modes = [(m, m.training) for m in backbone.modules()]
    backbone.eval()
    try:
        tensors = {**dict(backbone.named_parameters()), **dict(backbone.named_buffers())}
        with torch.no_grad():
            features = functional_call(backbone, {k: t.to("meta") for k, t in tensors.items()},
                                       (torch.empty(images.shape[1:], device="meta")[None],))
    finally:
        for module, training in modes:
            module.training = training
    return features if isinstance(features, dict) else OrderedDict([("0", features)])


def feature_map_sizes_of_input(backbone: nn.Module, images: Tensor) -> list[tuple[int, int]]:
    """(h, w) of every feature map ``backbone`` gives for the network input ``images``
    [B, 3, H, W] (already transformed); on the meta device: shapes, no arithmetic."""
    return [(int(f.shape[-2]), int(f.shape[-1])) for f in meta_features(backbone, images).values()]


def feature_map_sizes(transform: GeneralizedRCNNTransform, backbone: nn.Module,
                      image_size: tuple[int, int]) -> list[tuple[int, int]]:
    """(h, w) of every feature map ``backbone`` gives for one image of ``image_size`` (H, W)
    after ``transform`` (resize and pad); computed on the meta device: shapes, no arithmetic."""
    modes = [(m, m.training) for m in (*transform.modules(), *backbone.modules())]
    transform.eval()
    backbone.eval()  # BatchNorm refuses a batch of one 1x1 map in training mode
    try:
        image_list, _ = transform([torch.zeros(3, *image_size, device="meta")])
        tensors = {**dict(backbone.named_parameters()), **dict(backbone.named_buffers())}
        meta_tensors = {name: t.to("meta") for name, t in tensors.items()}
        with torch.no_grad():  # functional_call swaps in the meta tensors for this call only
            features = functional_call(backbone, meta_tensors, (image_list.tensors,))
    finally:
        for module, training in modes:  # each submodule's own mode, as it was
            module.training = training
    maps = features.values() if isinstance(features, dict) else [features]
    return [(int(f.shape[-2]), int(f.shape[-1])) for f in maps]
