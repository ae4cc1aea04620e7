"""R-CNN (Girshick et al., CVPR 2014): every proposal warped through the CNN on its own.

::

    images --proposal source--> proposals [P_i, 4] per image (original pixels; selective search)
        --dilate by the context, warp each to S x S (warp_regions)--> regions [sum P, 3, S, S]
        --VGG-16 conv1_1..pool5 (in batches of ``region_batch``)--> pool5 [sum P, C * (S/32)^2]
        --fc6, fc7--> fc7 [sum P, D]
        --per-class linear SVMs on fc7 (or the fine-tuned softmax before they are fitted)--> scores [sum P, N]
        --per-class ridge box regression on pool5, per-class NMS 0.3--> Detection (original pixels)

Training has two phases. (1) Fine-tuning, the contract's training forward: the CNN as an
(N+1)-way classifier on warped regions, ``fg_per_batch`` (32) regions at IoU >= 0.5 with a
ground truth (labelled with its class) and ``bg_per_batch`` (96) others per batch, drawn
uniformly from all proposals of the batch's images plus their ground-truth boxes; loss
``loss_classifier`` (cross-entropy). (2) ``fit_after_training(batches)``
(``detectors.rcnn_fit``): fc7 / pool5 features of the training regions cached in half precision,
then one linear SVM per class (``detectors.rcnn_svm``: positives the ground-truth boxes,
negatives the proposals at IoU < 0.3 with every object of the class, hard-negative mining) and
one ridge box regressor per class on pool5 features of proposals at IoU >= 0.6. Both are buffers
(saved in the state_dict); a class without positive regions keeps no SVM (no detections of it)
and is reported.

Warp (``warp_regions``): each box is dilated so that, once warped to S x S, it fills the central
(S - 2 * context) square and ``context`` pixels of its surroundings show around it (the paper:
16 at 227 / 224); samples beyond the image are the mean (0 after normalisation), as R-CNN pads.
Images are not resized: boxes stay in the pixels of the image as given.

Proposals: a proposal source passed as ``proposals`` (``detectors.region_proposals``).

Export (``experiments.speed.export``): the CNN on warped regions (``region_head_outputs``: pool5,
fc7, logits) as one graph with a dynamic region axis (``export_parts``); ``network_from_parts``
feeds it ``region_batch`` regions at a time, everything else stays in PyTorch.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection._utils import BoxCoder
from torchvision.models.detection.faster_rcnn import TwoMLPHead
from torchvision.ops import batched_nms, box_iou, clip_boxes_to_image, remove_small_boxes, roi_align

from detectors.backbones import vgg16_trunk
from detectors.base import IMAGENET_MEAN, IMAGENET_STD, Batch, Detection, Detector, scale_width
from detectors.faster_rcnn_builders import VGG16Weights
from detectors.region_proposals import ProposalSource, take_proposals

#: R-CNN's box-regression targets: (dx, dy) / proposal size, log of the size ratios, unweighted.
BOX_CODER = BoxCoder(weights=(1.0, 1.0, 1.0, 1.0))


def context_boxes(boxes: Tensor, warp_size: int, context: int) -> Tensor:
    """[R, 4] x1y1x2y2 -> [R, 4]: each box grown about its centre by S / (S - 2 * context), so
    that warped to S x S it covers the central (S - 2 * context) pixels."""
    grow = warp_size / (warp_size - 2 * context)
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    half = (boxes[:, 2:] - boxes[:, :2]) / 2 * grow
    return torch.cat([centre - half, centre + half], 1)


def warp_regions(image: Tensor, boxes: Tensor, warp_size: int, context: int) -> Tensor:
    """image float [3, H, W] (normalised: 0 is the mean), boxes [R, 4] x1y1x2y2 pixels ->
    regions [R, 3, S, S]: each box with ``context`` pixels around it, scaled anisotropically
    (bilinear, as many samples per output pixel as the box has pixels per output pixel)."""
    if len(boxes) == 0:
        return image.new_zeros(0, 3, warp_size, warp_size)
    grown = context_boxes(boxes.to(image.dtype), warp_size, context)
    return roi_align(image[None], [grown], (warp_size, warp_size), spatial_scale=1.0, sampling_ratio=0,
                     aligned=True)


class RCNN(VGG16Weights, Detector):
    """R-CNN under detbench's contract.

    Args:
        num_classes: foreground classes (labels 1..num_classes).
        backbone: [R, 3, S, S] -> pool5 [R, C, S/32, S/32] (``vgg16_trunk`` + pool5).
        box_head: fc6/fc7 (``TwoMLPHead``): pool5 flattened [R, C * (S/32)^2] -> fc7 [R, D].
        classifier: [R, D] -> [R, num_classes + 1], the fine-tuning softmax (index 0 background).
        proposals: the proposal source. warp_size: S (paper: 224 for VGG-16). context: pixels.
        proposals_train / candidates_before_nms: proposals per image in training / at test.
        fg_per_batch, bg_per_batch: regions per fine-tuning batch (32 / 96); fg_iou_thresh: 0.5.
        region_batch: regions per network pass at test (the network time sums over them).
        score_thresh, nms_thresh (0.3), max_detections: the final detections.
        input_size: (H, W) of a typical image, which the speed protocol feeds (R-CNN warps its
            regions from the image as given: VOC's are about 375 x 500).
    """

    external_proposals = True
    fixed_input_size = False

    def __init__(self, num_classes: int, backbone: nn.Module, box_head: TwoMLPHead, classifier: nn.Linear,
                 proposals: ProposalSource | None = None, warp_size: int = 224, context: int = 16,
                 proposals_train: int = 2000, candidates_before_nms: int = 2000, fg_per_batch: int = 32,
                 bg_per_batch: int = 96, fg_iou_thresh: float = 0.5, region_batch: int = 256,
                 score_thresh: float = 0.05, nms_thresh: float = 0.3, max_detections: int = 100,
                 batch_norm: bool = False, frozen_blocks: int = 2,
                 input_size: tuple[int, int] = (375, 500)) -> None:
        super().__init__()
        if classifier.out_features != num_classes + 1:
            raise ValueError(f"classifier has {classifier.out_features} outputs, expected {num_classes + 1}")
        self.num_classes = num_classes
        self.backbone, self.box_head, self.classifier = backbone, box_head, classifier
        self.proposal_source = proposals
        self.warp_size, self.context = int(warp_size), int(context)
        self.input_size = (int(input_size[0]), int(input_size[1]))   # images are not resized: a typical one
        self.proposals_train, self.proposals_test = int(proposals_train), int(candidates_before_nms)
        self.fg_per_batch, self.bg_per_batch, self.fg_iou_thresh = fg_per_batch, bg_per_batch, fg_iou_thresh
        self.region_batch = int(region_batch)
        self.score_thresh, self.nms_thresh, self.max_detections = score_thresh, nms_thresh, max_detections
        self.batch_norm, self.frozen_blocks = batch_norm, frozen_blocks
        self.image_mean, self.image_std = list(IMAGENET_MEAN), list(IMAGENET_STD)
        features, pool5 = box_head.fc6.out_features, box_head.fc6.in_features
        # the second training phase's results (detectors.rcnn_fit), kept in the state_dict
        self.register_buffer("svm_weight", torch.zeros(num_classes, features))
        self.register_buffer("svm_bias", torch.zeros(num_classes))
        self.register_buffer("svm_ready", torch.zeros(num_classes, dtype=torch.bool))
        self.register_buffer("regressor", torch.zeros(num_classes, pool5 + 1, 4))
        self.register_buffer("regressor_ready", torch.zeros(num_classes, dtype=torch.bool))
        self.register_buffer("feature_scale", torch.ones(2))   # fc7, pool5: to a mean norm of 20

    def fc_layers(self) -> TwoMLPHead:
        return self.box_head

    @property
    def scoring(self) -> str:
        """"svm" once ``fit_after_training`` fitted any SVM, else "softmax" (the fine-tuned CNN's)."""
        return "svm" if bool(self.svm_ready.any()) else "softmax"

    # ---- stages -------------------------------------------------------------------------------
    def propose(self, images: list[Tensor], fresh: bool = False) -> list[Tensor]:
        limit = self.proposals_train if self.training else self.proposals_test
        return take_proposals(self.proposal_source, images, limit, fresh)

    def normalise(self, image: Tensor) -> Tensor:
        mean, std = image.new_tensor(self.image_mean)[:, None, None], image.new_tensor(self.image_std)[:, None, None]
        return (image - mean) / std

    def preprocess(self, images: list[Tensor], targets=None, proposals: list[Tensor] | None = None) -> Batch:
        """Warp regions: in training the sampled fine-tuning regions (``extras["labels"]`` [R]),
        at test every proposal (``extras["proposals"]``, per image [P_i, 4] original pixels)."""
        if proposals is None:
            proposals = self.propose(images)
        sizes = [(int(im.shape[-2]), int(im.shape[-1])) for im in images]
        normalised = [self.normalise(im) for im in images]
        if self.training:
            regions, labels = self.sample_regions(normalised, proposals, targets)
            return Batch(images=regions, original_sizes=sizes, input_sizes=sizes, targets=targets,
                         extras={"labels": labels})
        regions = [warp_regions(im, p, self.warp_size, self.context) for im, p in zip(normalised, proposals)]
        return Batch(images=torch.cat(regions), original_sizes=sizes, input_sizes=sizes,
                     extras={"proposals": proposals})

    def sample_regions(self, images: list[Tensor], proposals: list[Tensor], targets) -> tuple[Tensor, Tensor]:
        """Fine-tuning regions of a batch: up to ``fg_per_batch`` at IoU >= 0.5 (their object's
        class) and ``bg_per_batch`` + the missing foreground (background, 0), uniformly from all
        images' proposals and ground-truth boxes -> (regions [R, 3, S, S], labels [R])."""
        candidates = []                                 # (image index, box, label)
        for i, (boxes, target) in enumerate(zip(proposals, targets)):
            gt, gt_labels = target["boxes"].to(boxes), target["labels"].to(boxes.device)
            boxes = torch.cat([boxes, gt])
            labels = torch.zeros(len(boxes), dtype=torch.int64, device=boxes.device)
            if len(gt):
                best, owner = box_iou(boxes, gt).max(1)
                labels = torch.where(best >= self.fg_iou_thresh, gt_labels[owner], labels)
            candidates.append((torch.full_like(labels, i), boxes, labels))
        index, boxes, labels = (torch.cat(parts) for parts in zip(*candidates))
        fg, bg = (labels > 0).nonzero()[:, 0], (labels == 0).nonzero()[:, 0]
        fg = fg[torch.randperm(len(fg), device=fg.device)[: self.fg_per_batch]]
        bg = bg[torch.randperm(len(bg), device=bg.device)[: self.fg_per_batch + self.bg_per_batch - len(fg)]]
        chosen = torch.cat([fg, bg])
        regions = torch.cat([warp_regions(images[i], boxes[chosen[index[chosen] == i]], self.warp_size, self.context)
                             for i in range(len(images))])
        order = torch.cat([chosen[index[chosen] == i] for i in range(len(images))])
        return regions, labels[order]

    def region_features(self, regions: Tensor) -> tuple[Tensor, Tensor]:
        """regions [R, 3, S, S] -> (pool5 [R, C * (S/32)^2], fc7 [R, D]), ``region_batch`` at a time."""
        pool5, fc7 = [], []
        for chunk in regions.split(self.region_batch) if len(regions) else [regions]:
            p = self.backbone(chunk).flatten(1)
            pool5.append(p)
            fc7.append(self.box_head(p))
        return torch.cat(pool5), torch.cat(fc7)

    def network(self, batch: Batch) -> dict:
        """Training: {"logits" [R, N+1]}. Eval: {"logits", "fc7", "pool5", "proposals"}."""
        if not self.training:
            return self.network_from_parts(batch)
        return {"logits": self.classifier(self.region_features(batch.images)[1])}

    # ---- the network as one exportable part (experiments.speed.export) ----------------------------
    #: graph -> (method, its input's name, the name of that input's axis 0), as FasterRCNN's
    export_parts = {"region_cnn": ("region_head_outputs", "regions", "regions")}

    def region_head_outputs(self, regions: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The exportable part, the CNN on warped regions: regions [R, 3, S, S] (normalised) ->
        pool5 [R, C * (S/32)^2], fc7 [R, D], fine-tuning logits [R, N+1]."""
        pool5 = self.backbone(regions).flatten(1)
        fc7 = self.box_head(pool5)
        return pool5, fc7, self.classifier(fc7)

    def network_from_parts(self, batch: Batch, region_cnn=None) -> dict:
        """The eval ``network`` with its CNN given as a callable (default ``region_head_outputs``;
        an exported graph in a runtime), fed ``region_batch`` regions at a time; no region at
        all: PyTorch on the empty [0, 3, S, S]. Proposals, warping (``preprocess``), SVM scoring,
        box regression and NMS (``postprocess``) stay in PyTorch. Same dict as ``network``."""
        regions = batch.images
        part = region_cnn if region_cnn is not None and len(regions) else self.region_head_outputs
        chunks = [part(chunk) for chunk in (regions.split(self.region_batch) if len(regions) else [regions])]
        pool5, fc7, logits = (torch.cat(list(parts)) for parts in zip(*chunks))
        return {"logits": logits, "fc7": fc7, "pool5": pool5, "proposals": batch.extras["proposals"]}

    def loss(self, outputs: dict, batch: Batch) -> dict[str, Tensor]:
        return {"loss_classifier": F.cross_entropy(outputs["logits"], batch.extras["labels"])}

    def class_scores(self, outputs: dict) -> Tensor:
        """[R, N] in [0, 1]: sigmoid of the SVM scores (classes without an SVM: 0, never kept),
        or the fine-tuned softmax before any SVM is fitted."""
        if self.scoring == "softmax":
            return outputs["logits"].softmax(-1)[:, 1:]
        raw = outputs["fc7"] * self.feature_scale[0] @ self.svm_weight.T + self.svm_bias     # [R, N]
        return torch.where(self.svm_ready, raw.sigmoid(), torch.zeros_like(raw))

    def class_boxes(self, outputs: dict, proposals: Tensor) -> Tensor:
        """[R, N, 4]: each proposal moved by each class's ridge regressor (where fitted)."""
        boxes = proposals[:, None, :].expand(-1, self.num_classes, -1)
        if not bool(self.regressor_ready.any()) or not len(proposals):
            return boxes
        pool5 = torch.cat([outputs["pool5"] * self.feature_scale[1], outputs["pool5"].new_ones(len(proposals), 1)], 1)
        deltas = torch.einsum("rd,ndk->rnk", pool5, self.regressor)                     # [R, N, 4]
        moved = BOX_CODER.decode_single(deltas.reshape(len(proposals), -1),
                                        proposals).reshape(len(proposals), self.num_classes, 4)
        return torch.where(self.regressor_ready[None, :, None], moved, boxes)

    def postprocess(self, outputs: dict, batch: Batch) -> list[Detection]:
        """Per-class score threshold and NMS (``nms_thresh``), top ``max_detections`` per image."""
        scores_all, detections, start = self.class_scores(outputs), [], 0
        for proposals, size in zip(outputs["proposals"], batch.original_sizes):
            count = len(proposals)
            part = {k: v[start:start + count] for k, v in outputs.items() if k != "proposals"}
            scores, start = scores_all[start:start + count], start + count
            boxes = clip_boxes_to_image(self.class_boxes(part, proposals), size).reshape(-1, 4)
            labels = torch.arange(1, self.num_classes + 1, device=boxes.device).repeat(count)
            scores = scores.reshape(-1)
            keep = (scores > self.score_thresh).nonzero()[:, 0]
            keep = keep[remove_small_boxes(boxes[keep], 1e-2)]
            keep = keep[batched_nms(boxes[keep], scores[keep], labels[keep], self.nms_thresh)][: self.max_detections]
            detections.append(Detection(boxes=boxes[keep].float(), scores=scores[keep].float(), labels=labels[keep]))
        return detections

    # ---- the second training phase, counts, settings --------------------------------------------
    def fit_after_training(self, batches, **settings) -> dict:
        """Fit the per-class SVMs and box regressors on the training images (``detectors.rcnn_fit``)."""
        from detectors.rcnn_fit import fit_region_classifiers

        return fit_region_classifiers(self, batches, **settings)

    def num_candidates(self, image_size: tuple[int, int]) -> int:
        return self.proposals_test

    def candidates_scored(self, outputs: dict, batch: Batch) -> list[int]:
        return [int(p.shape[0]) for p in outputs["proposals"]]

    def set_normalization(self, mean, std) -> None:
        self.image_mean, self.image_std = [float(v) for v in mean], [float(v) for v in std]


def rcnn_vgg16(num_classes: int, width: float = 1.0, batch_norm: bool = False, warp_size: int = 224,
               context: int = 16, proposals_train: int = 2000, candidates_before_nms: int = 2000,
               fg_per_batch: int = 32, bg_per_batch: int = 96, region_batch: int = 256,
               score_thresh: float = 0.05, nms_thresh: float = 0.3, max_detections: int = 100,
               frozen_blocks: int = 2, input_size: tuple[int, int] = (375, 500),
               proposals: ProposalSource | None = None) -> RCNN:
    """R-CNN with VGG-16: conv1_1..pool5 (stride 32), fc6/fc7 of ``scale_width(4096, width)``,
    regions warped to ``warp_size`` with ``context`` pixels; the paper's 224 / 16 keeps pool5 at
    7x7, so torchvision's fc6/fc7 ImageNet weights fit at width 1."""
    if warp_size % 32 or warp_size <= 2 * context:
        raise ValueError(f"warp_size must be a multiple of 32 above 2 * context, got {warp_size} / {context}")
    trunk = vgg16_trunk(width=width, batch_norm=batch_norm)
    channels = trunk.out_channels
    backbone = nn.Sequential(*trunk, nn.MaxPool2d(2, 2))                 # + pool5; same layer indices
    representation = scale_width(4096, width)
    box_head = TwoMLPHead(channels * (warp_size // 32) ** 2, representation)
    return RCNN(num_classes, backbone, box_head, nn.Linear(representation, num_classes + 1), proposals,
                warp_size, context, proposals_train, candidates_before_nms, fg_per_batch, bg_per_batch, 0.5,
                region_batch, score_thresh, nms_thresh, max_detections, batch_norm, frozen_blocks,
                tuple(input_size))
