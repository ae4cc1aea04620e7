"""SSD: Single Shot MultiBox Detector (Liu et al., ECCV 2016), as a detbench ``Detector``.

    images --resize to input_size, normalise--> source maps (ssd_features) --3x3 convs-->
    per default box: C + 1 class logits and 4 offsets --softmax, decode, per-class NMS--> detections

SSD300 (VGG-16): 6 maps 38/19/10/5/3/1, 4/6/6/6/4/4 boxes per location -> 8732 default boxes.
SSD512 (VGG-16): 7 maps 64/32/16/8/4/2/1, 4/6/6/6/6/4/4 -> 24564.
SSD-MobileNetV1 at 300: 6 maps 19/10/5/3/2/1, 6 boxes everywhere -> 3000.
Every choice (scales, aspect ratios, steps, thresholds, mining ratio, post-processing) is a
constructor argument, so a config can change it.
"""
from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import box_convert

from detectors.assignment import ObjectAssignment
from detectors.base import IMAGENET_MEAN, IMAGENET_STD, Batch, Detection, Detector, Target
from detectors.boxes import decode
from detectors.ssd_default_boxes import boxes_per_location, default_boxes, resolve_scales
from detectors.ssd_features import EXTRA_LAYERS, MobileNetSourceMaps, VGGSourceMaps, xavier_init
from detectors.ssd_loss import MultiBoxLoss
from detectors.topk_nms import topk_per_class_nms

log = logging.getLogger(__name__)
SOURCE_MAPS = {"vgg16": VGGSourceMaps, "mobilenet_v1": MobileNetSourceMaps}


def check_geometry(input_size: tuple[int, int], map_sizes: list[tuple[int, int]], steps, backbone: str) -> None:
    """A clear error when ``input_size`` (H, W) breaks SSD's geometry: a source map of 0 cells
    (the extra layers shrink below 1x1), or ``steps`` that put default-box centres outside the
    image: a map of w cells at step s starts its last cell at (w - 1) s pixels, which must lie
    inside the image (Caffe's SSD300 itself centres its 10x10 map's last boxes at 304 px of 300:
    a little overhang is the paper's geometry)."""
    empty = [k for k, (h, w) in enumerate(map_sizes) if h < 1 or w < 1]
    if empty:
        raise ValueError(f"SSD ({backbone}) input {input_size[0]}x{input_size[1]}: source map {empty[0] + 1} of "
                         f"{len(map_sizes)} would be {map_sizes[empty[0]][0]}x{map_sizes[empty[0]][1]} (maps "
                         f"{map_sizes}); every map needs at least 1x1 cell: give a larger input_size or other "
                         f"extra_layers")
    if steps is None:
        return
    for k, ((h, w), step) in enumerate(zip(map_sizes, steps)):
        if (w - 1) * step > input_size[1] or (h - 1) * step > input_size[0]:
            raise ValueError(f"SSD input {input_size[0]}x{input_size[1]}: map {k + 1} has {h}x{w} cells at step "
                             f"{step:g} px, so its last cell starts at {(max(h, w) - 1) * step:.0f} px, outside the "
                             f"image: steps {list(steps)} fit another input size; scale them with "
                             f"the input or give steps=null (each map tiles the image)")


class SSDHead(nn.Module):
    """One 3x3 convolution per source map for the class logits and one for the offsets.

    Map k with n_k boxes per location gives [B, n_k (C + 1), h, w] and [B, n_k 4, h, w], read as
    [B, h w n_k, C + 1] and [B, h w n_k, 4] (location-major, as ``default_boxes`` orders them).
    """

    def __init__(self, in_channels: list[int], boxes_per_location: list[int], num_outputs: int):
        super().__init__()
        self.num_outputs = num_outputs
        self.classification = nn.ModuleList(nn.Conv2d(c, n * num_outputs, 3, padding=1)
                                            for c, n in zip(in_channels, boxes_per_location))
        self.regression = nn.ModuleList(nn.Conv2d(c, n * 4, 3, padding=1)
                                        for c, n in zip(in_channels, boxes_per_location))
        xavier_init(self)

    def forward(self, maps: list[Tensor]) -> tuple[Tensor, Tensor]:
        loc, conf = [], []
        for x, to_loc, to_conf in zip(maps, self.regression, self.classification):
            b = x.shape[0]
            loc.append(to_loc(x).permute(0, 2, 3, 1).reshape(b, -1, 4))                   # [B, h w n, 4]
            conf.append(to_conf(x).permute(0, 2, 3, 1).reshape(b, -1, self.num_outputs))  # [B, h w n, C+1]
        return torch.cat(loc, dim=1), torch.cat(conf, dim=1)                              # [B, A, 4], [B, A, C+1]


class SSD(Detector):
    """SSD over VGG-16 or MobileNetV1.

    num_classes: foreground classes (labels 1..C; the network has C + 1 outputs, 0 background).
    backbone: "vgg16" | "mobilenet_v1".  input_size: (H, W) every image is resized to.
    width: channel multiplier of every layer.  batch_norm: BatchNorm after every convolution
        (not in the paper; what training from scratch needs).
    Weights start random; ``load_backbone_state`` takes torchvision's VGG-16 ImageNet weights
    (full width) or a MobileNetV1 state_dict, and ``weights_source`` records which.
    extra_layers: rows [mid, out, kernel, stride, padding] or a name of ``EXTRA_LAYERS``.
    scales: a name of ``SCALE_PRESETS`` or s_1..s_{m+1}; or None and s_min, s_max, first_scale
        for the paper's formula.  aspect_ratios: per map.  steps: per map, input pixels.
        clip: clamp default boxes' sizes to the image.
    variances: offset encoding (centre, size).  iou_threshold: matching.  neg_pos_ratio: hard
        negative mining.  loc_weight: alpha.
    score_thresh, nms_thresh, max_detections: inference (keep_top_k 200 in Caffe);
        candidates_before_nms: the best boxes per class kept before NMS (Caffe's and
        torchvision's top_k: 400; None keeps all).
    image_mean / image_std: per channel, applied to [0, 1] images before resizing; None:
        ImageNet's (what torchvision's IMAGENET1K_V1 weights expect).
    channels_last: run the convolutions in NHWC memory format (faster with oneDNN on CPUs;
        the same results up to float rounding).
    """

    def __init__(self, num_classes: int, backbone: str = "vgg16", input_size: tuple[int, int] = (300, 300),
                 width: float = 1.0, batch_norm: bool = False, extra_layers: str | list[list[int]] = "ssd300",
                 scales: str | list[float] | None = "voc300", s_min: float | None = None,
                 s_max: float | None = None, first_scale: float | None = None,
                 aspect_ratios: list[list[float]] = ((2,), (2, 3), (2, 3), (2, 3), (2,), (2,)),
                 steps: list[float] | None = (8, 16, 32, 64, 100, 300), clip: bool = True,
                 variances: tuple[float, float] = (0.1, 0.2), iou_threshold: float = 0.5,
                 neg_pos_ratio: float = 3.0, loc_weight: float = 1.0, score_thresh: float = 0.01,
                 nms_thresh: float = 0.45, max_detections: int = 200, candidates_before_nms: int | None = 400,
                 image_mean: tuple[float, float, float] | None = None,
                 image_std: tuple[float, float, float] | None = None, channels_last: bool = True):
        super().__init__()
        if backbone not in SOURCE_MAPS:
            raise ValueError(f"unknown SSD backbone '{backbone}'; choose from {sorted(SOURCE_MAPS)}")
        if isinstance(extra_layers, str):
            if extra_layers not in EXTRA_LAYERS:
                raise ValueError(f"unknown extra_layers preset '{extra_layers}'; choose from {sorted(EXTRA_LAYERS)}")
            extra_layers = EXTRA_LAYERS[extra_layers]
        self.num_classes = num_classes
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.features = SOURCE_MAPS[backbone](width, batch_norm, [list(r) for r in extra_layers])
        map_sizes = self.features.map_sizes(self.input_size)
        check_geometry(self.input_size, map_sizes, steps, backbone)
        self.aspect_ratios = [list(r) for r in aspect_ratios]
        if len(self.aspect_ratios) != len(map_sizes):
            raise ValueError(f"{backbone} at {self.input_size} has {len(map_sizes)} source maps {map_sizes}, "
                             f"but {len(self.aspect_ratios)} aspect-ratio lists were given")
        self.scales = resolve_scales(scales, len(map_sizes), s_min, s_max, first_scale)
        self.steps = [float(s) for s in steps] if steps is not None else None
        self.clip = clip
        self.head = SSDHead(self.features.out_channels, boxes_per_location(self.aspect_ratios), num_classes + 1)
        priors = default_boxes(map_sizes, self.input_size, self.scales, self.aspect_ratios, self.steps, clip)
        self.register_buffer("priors", priors, persistent=False)                          # [A, 4] cxcywh
        self.register_buffer("priors_xyxy", box_convert(priors, "cxcywh", "xyxy"), persistent=False)
        image_mean, image_std = image_mean or IMAGENET_MEAN, image_std or IMAGENET_STD
        self.register_buffer("image_mean", torch.tensor([float(v) for v in image_mean]).view(3, 1, 1), persistent=False)
        self.register_buffer("image_std", torch.tensor([float(v) for v in image_std]).view(3, 1, 1), persistent=False)
        self.variances = (float(variances[0]), float(variances[1]))
        self.multibox_loss = MultiBoxLoss(iou_threshold, neg_pos_ratio, loc_weight, self.variances)
        self.score_thresh, self.nms_thresh, self.max_detections = score_thresh, nms_thresh, max_detections
        self.candidates_before_nms = candidates_before_nms
        self.channels_last = channels_last
        if channels_last:
            self.to(memory_format=torch.channels_last)

    ignores_crowd_in_loss = True    # MultiBoxLoss.assign: default boxes inside crowd regions are ignored

    def num_candidates(self, image_size: tuple[int, int] | None = None) -> int:
        """Default boxes scored per image; every image is resized to ``input_size`` first."""
        return self.priors.shape[0]

    def backbone_weights_enum(self) -> type | None:
        return self.features.weights_enum()

    def load_backbone_state(self, state: dict[str, Tensor], source: str) -> None:
        self.weights_source = self.features.load_base_state(state, source)
        log.info("SSD base network weights: %s", self.weights_source)

    def set_normalization(self, mean: tuple[float, float, float], std: tuple[float, float, float]) -> None:
        self.image_mean.copy_(torch.tensor([float(v) for v in mean]).view(3, 1, 1))
        self.image_std.copy_(torch.tensor([float(v) for v in std]).view(3, 1, 1))

    def preprocess(self, images: list[Tensor], targets: list[Target] | None = None) -> Batch:
        """Normalise, resize to ``input_size`` (bilinear), stack; targets rescaled likewise.

        Each box is scaled once, to fractions of its image (``extras["gt_fractions"]``, what
        matching uses); ``targets`` hold the same boxes in input pixels (the contract)."""
        original_sizes = [(int(im.shape[-2]), int(im.shape[-1])) for im in images]
        mean, std = self.image_mean.to(images[0].dtype), self.image_std.to(images[0].dtype)
        if len(set(original_sizes)) == 1:
            x = (torch.stack(images) - mean) / std                                  # [B, 3, h, w]
            if original_sizes[0] != self.input_size:
                x = F.interpolate(x, size=self.input_size, mode="bilinear", align_corners=False)
        else:
            x = torch.cat([F.interpolate(((im - mean) / std)[None], size=self.input_size, mode="bilinear",
                                         align_corners=False) for im in images])
        scaled, extras = None, {}
        if targets is not None:
            fractions = [t["boxes"] / t["boxes"].new_tensor([w, h, w, h])
                         for t, (h, w) in zip(targets, original_sizes)]              # [N, 4] xyxy in [0, 1]
            to_input = torch.tensor([self.input_size[1], self.input_size[0]] * 2, dtype=torch.float32)
            scaled = [{**t, "boxes": f * to_input.to(f.device)} for t, f in zip(targets, fractions)]
            extras["gt_fractions"] = fractions
        return Batch(images=x, original_sizes=original_sizes,
                     input_sizes=[self.input_size] * len(images), targets=scaled, extras=extras)

    def network(self, batch: Batch) -> tuple[Tensor, Tensor]:
        """Returns (offsets [B, A, 4], class logits [B, A, C + 1])."""
        x = batch.images.contiguous(memory_format=torch.channels_last) if self.channels_last else batch.images
        return self.head(self.features(x))

    def loss_targets(self, batch: Batch) -> tuple[list[Tensor], list[Tensor]]:
        """The ground truth the loss learns: per image boxes [G, 4] xyxy in fractions of the
        input (``extras["gt_fractions"]`` of ``preprocess``) and labels [G]."""
        gt_boxes = [f.to(self.priors.device) for f in batch.extras["gt_fractions"]]
        return gt_boxes, [t["labels"].to(self.priors.device) for t in batch.targets]

    def loss(self, outputs: tuple[Tensor, Tensor], batch: Batch) -> dict[str, Tensor]:
        loc, conf = outputs
        gt_boxes, gt_labels = self.loss_targets(batch)
        gt_crowd = [t["iscrowd"].to(loc.device) for t in batch.targets]
        class_targets, offset_targets = self.multibox_loss.assign(self.priors, self.priors_xyxy, gt_boxes,
                                                                  gt_labels, gt_crowd)
        return self.multibox_loss(loc, conf, class_targets, offset_targets)

    @torch.no_grad()
    def assign_objects(self, batch: Batch) -> list[dict[str, ObjectAssignment]]:
        """Per image, {"default_boxes": what the loss's matching gives each ground truth}
        (``MultiBoxLoss.match``, the code ``loss`` runs); batch from ``preprocess(.., targets)``."""
        return [{"default_boxes": self.multibox_loss.per_object(self.multibox_loss.match(boxes, self.priors_xyxy),
                                                                len(boxes))}
                for boxes in self.loss_targets(batch)[0]]

    @torch.no_grad()
    def postprocess(self, outputs: tuple[Tensor, Tensor], batch: Batch) -> list[Detection]:
        """Softmax; per class the best ``candidates_before_nms`` boxes above ``score_thresh``;
        per-class NMS at ``nms_thresh``; the best ``max_detections``; boxes in original pixels.

        Written for speed (``detectors.topk_nms``): one top-k over every (box, class) score per
        image, NMS over only as many of the best candidates as it takes to keep ``max_detections``, and
        only those boxes decoded; the same detections as NMS class by class over every box.
        """
        loc, conf = outputs
        h, w = self.input_size
        scores = F.softmax(conf, dim=-1)[..., 1:]                                 # [B, A, C]
        limit = loc.new_tensor([w, h, w, h])

        def boxes_of(image: Tensor, box: Tensor) -> Tensor:                       # [N] -> [N, 4] input pixels
            decoded = decode(loc[image, box], self.priors[box], self.variances) * limit
            return torch.minimum(decoded.clamp(min=0), limit)

        kept = topk_per_class_nms(scores, boxes_of, self.score_thresh, self.nms_thresh, self.max_detections,
                                  self.candidates_before_nms, float(max(h, w)))
        detections = []
        for i, ((oh, ow), (box, label, kept_scores)) in enumerate(zip(batch.original_sizes, kept)):
            to_original = loc.new_tensor([ow / w, oh / h, ow / w, oh / h])
            image = torch.full_like(box, i)
            detections.append(Detection(boxes=boxes_of(image, box) * to_original, scores=kept_scores,
                                        labels=label + 1))
        return detections
