"""YOLO v1 and Fast YOLO (Redmon et al., CVPR 2016, arXiv 1506.02640): one grid, 98 boxes.

The whole image goes once through a Darknet conv stack and two fully connected layers whose
second gives an S x S x (B*5 + C) tensor: for each of the S*S cells, B boxes with a confidence
each and one set of C class probabilities (layout in ``yolo_grid``)::

    image [N, 3, 448, 448] -> 24 convs (Fast YOLO: 9) -> [N, 1024, 7, 7]
        -> FC 4096, leaky ReLU 0.1, dropout 0.5 -> FC S*S*(B*5+C), linear -> [N, S, S, B*5+C]

Test time: class score = Pr(class | object) * confidence for each of the S*S*B boxes and each
class, a score threshold, per-class NMS, boxes back to the original image's pixels.

The FC head sees the whole feature map, so the grid S does not have to equal the feature map's
size: any ``input_size`` works (a 224x224 input gives 4x4 features, still a 7x7 grid). The head
is most of YOLO's parameters: 7*7*1024 -> 4096 is 205M weights at width 1; ``width`` scales the
conv channels and the 4096 alike (width 1/8: 6272 -> 512, 3.2M).

``head="conv"`` (not the paper's) swaps the two FC layers for the same two layers applied to
each cell as 1x1 convolutions, weights shared across cells: what YOLO v2 did ("we remove the
fully connected layers"). The grid is then the feature map, so the input must be 64*S
(448 for S = 7). Everything else (98 boxes, one class set per cell, the loss, the decoding)
is unchanged. Trained from scratch, the FC head has to learn, cell by cell, what the shared
1x1 head gets from the convolutions for free: on the synthetic shapes (width 1/8, BatchNorm,
448 input, no dropout, AdamW 2e-3, batch 16, the ``yolo`` augmentation) val AP50 after 300
iterations was 0.002 with the FC head and 0.22 with the conv head.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torchvision.transforms.v2.functional as TF
from torch import Tensor, nn
from torchvision.ops import batched_nms

from detectors import darknet
from detectors.base import Batch, Detection, Detector, Target, scale_width
from detectors.yolo_grid import decode_boxes
from detectors.yolo_loss import YOLOLoss


class YOLO(Detector):
    """YOLO v1 (``architecture="yolo"``, 24 conv layers) or Fast YOLO (``"fast_yolo"``, 9).

    num_classes:       foreground classes C (labels 1..C).
    grid_size:         S, cells per side (paper 7).
    boxes_per_cell:    B (paper 2); ``num_candidates`` = S*S*B.
    width:             channel multiplier for every conv and the hidden FC (paper 1.0).
    batch_norm:        BatchNorm after every conv (paper False; needed to train from scratch fast).
    input_size:        (H, W) or one int: images are resized (warped) to it (paper 448).
    hidden_features:   the first FC layer's size before ``width`` (paper 4096).
    dropout:           after the first FC layer (paper 0.5).
    lambda_coord, lambda_noobj, confidence_target: the loss (``yolo_loss``; paper 5, 0.5, "iou").
    score_thresh:      keep (box, class) pairs scoring above it (low for AP, e.g. 0.005; the
                       paper's demo draws at 0.2).
    nms_thresh:        IoU of per-class NMS.
    max_detections:    per image, after NMS.
    candidates_before_nms: per class, the best boxes kept before NMS (None: all S*S*B).
    head:              "fc" (the paper: FC hidden_features, then FC S*S*(B*5+C)) or "conv" (the
                       same two layers as 1x1 convs per cell; needs an input of 64*S).
    Weights start random; ``load_backbone_state`` takes a state_dict of ``self.backbone``
    (YOLO: the 20 conv layers the paper pretrains on ImageNet; Fast YOLO: its 9).
    """

    def __init__(self, num_classes: int, architecture: str = "yolo", grid_size: int = 7,
                 boxes_per_cell: int = 2, width: float = 1.0, batch_norm: bool = False,
                 input_size: int | Sequence[int] = 448, hidden_features: int = 4096,
                 dropout: float = 0.5, lambda_coord: float = 5.0, lambda_noobj: float = 0.5,
                 confidence_target: str = "iou", score_thresh: float = 0.005,
                 nms_thresh: float = 0.5, max_detections: int = 100,
                 candidates_before_nms: int | None = None, head: str = "fc") -> None:
        super().__init__()
        if architecture not in darknet.ARCHITECTURES:
            raise ValueError(f"architecture must be one of {sorted(darknet.ARCHITECTURES)}, "
                             f"got {architecture!r}")
        if num_classes < 1 or grid_size < 1 or boxes_per_cell < 1:
            raise ValueError("num_classes, grid_size and boxes_per_cell must be >= 1")
        self.num_classes = num_classes
        self.architecture = architecture
        self.grid_size = grid_size
        self.boxes_per_cell = boxes_per_cell
        size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
        self.input_size = (int(size[0]), int(size[1]))
        self.score_thresh = score_thresh
        self.nms_thresh = nms_thresh
        self.max_detections = max_detections
        self.candidates_before_nms = candidates_before_nms

        backbone_specs, detection_specs = darknet.ARCHITECTURES[architecture]
        self.backbone, channels = darknet.make_layers(backbone_specs, 3, width, batch_norm)
        self.detection_convs, channels = darknet.make_layers(detection_specs, channels, width,
                                                             batch_norm)
        feature_h, feature_w = darknet.output_size(backbone_specs + detection_specs,
                                                   self.input_size)
        hidden = scale_width(hidden_features, width)
        self.outputs_per_cell = boxes_per_cell * 5 + num_classes
        self.head_kind = head
        if head == "fc":
            self.head = nn.Sequential(
                nn.Flatten(),
                nn.Linear(channels * feature_h * feature_w, hidden),
                nn.LeakyReLU(0.1, inplace=True),
                nn.Dropout(dropout),
                nn.Linear(hidden, grid_size * grid_size * self.outputs_per_cell),  # linear
            )
        elif head == "conv":
            if (feature_h, feature_w) != (grid_size, grid_size):
                raise ValueError(f"head='conv' needs an S x S feature map: input {self.input_size}"
                                 f" gives {feature_h}x{feature_w}, S={grid_size} (use an input of"
                                 f" {64 * grid_size})")
            self.head = nn.Sequential(
                nn.Conv2d(channels, hidden, 1),
                nn.LeakyReLU(0.1, inplace=True),
                nn.Dropout(dropout),
                nn.Conv2d(hidden, self.outputs_per_cell, 1),  # linear
            )
        else:
            raise ValueError(f"head must be 'fc' or 'conv', got {head!r}")
        self.initialise_output_layer()
        self.criterion = YOLOLoss(grid_size, boxes_per_cell, num_classes, lambda_coord,
                                  lambda_noobj, confidence_target)
        self._backbone_description = f"the {architecture} backbone at width {width}, batch_norm {batch_norm}"

    def load_backbone_state(self, state: dict[str, Tensor], source: str) -> None:
        """Load a state_dict of ``self.backbone`` (darknet's pretrained conv layers) strictly."""
        prefix = "backbone." if state and all(k.startswith("backbone.") for k in state) else ""
        state = {k[len(prefix):]: v for k, v in state.items()}
        try:
            self.backbone.load_state_dict(state, strict=True)
        except RuntimeError as error:
            raise ValueError(f"{source}: not a state_dict of {self._backbone_description}: {error}") from None
        self.weights_source = source

    @torch.no_grad()
    def initialise_output_layer(self) -> None:
        """Start the last layer near a neutral prediction rather than at random outputs: small
        weights (std 0.01) and a bias of x = y = 0.5 (cell centre), sqrt_w = sqrt_h = 0.5 (a box
        a quarter of the image wide and high), confidence 0 and class probabilities 1/C. The
        paper does not say how its head starts; from scratch this saves the first hundred or
        so iterations that random outputs spend learning these means."""
        last = self.head[-1]
        nn.init.normal_(last.weight, std=0.01)
        per_cell = torch.tensor([0.5, 0.5, 0.5, 0.5, 0.0] * self.boxes_per_cell
                                + [1.0 / self.num_classes] * self.num_classes)
        cells = last.bias.numel() // per_cell.numel()  # S*S for the FC head, 1 for the conv head
        last.bias.copy_(per_cell.repeat(cells))

    def num_candidates(self, image_size: tuple[int, int]) -> int:
        """S*S*B whatever the image size (98 for the paper's S=7, B=2)."""
        return self.grid_size * self.grid_size * self.boxes_per_cell

    def preprocess(self, images: list[Tensor], targets: list[Target] | None = None) -> Batch:
        """Warp every image to ``input_size`` (no aspect ratio kept, as the paper) and stack;
        pixel values stay in [0, 1] (darknet feeds them so). Targets go to input pixels."""
        height, width = self.input_size
        original_sizes = [(int(im.shape[-2]), int(im.shape[-1])) for im in images]
        if len(set(original_sizes)) == 1:  # one resize call for the whole batch
            stacked = TF.resize(torch.stack(images), [height, width], antialias=True)
        else:
            stacked = torch.stack([TF.resize(im, [height, width], antialias=True)
                                   for im in images])
        scaled_targets = None
        if targets is not None:
            scaled_targets = []
            for target, (h, w) in zip(targets, original_sizes):
                scale = torch.tensor([width / w, height / h, width / w, height / h],
                                     device=target["boxes"].device)
                scaled_targets.append({**target, "boxes": target["boxes"] * scale})
        return Batch(images=stacked, original_sizes=original_sizes,
                     input_sizes=[self.input_size] * len(images), targets=scaled_targets)

    def network(self, batch: Batch) -> Tensor:
        """images [N, 3, H, W] -> raw outputs [N, S, S, B*5+C] (layout in ``yolo_grid``)."""
        features = self.detection_convs(self.backbone(batch.images))
        if self.head_kind == "conv":
            return self.head(features).permute(0, 2, 3, 1)  # [N, S, S, B*5+C]
        return self.head(features).view(-1, self.grid_size, self.grid_size,
                                        self.outputs_per_cell)

    def loss(self, outputs: Tensor, batch: Batch) -> dict[str, Tensor]:
        """The four parts of ``YOLOLoss``; crowd boxes are not learned."""
        height, width = self.input_size
        scale = torch.tensor([width, height, width, height], device=outputs.device)
        boxes, labels = [], []
        for target in batch.targets:
            keep = target["iscrowd"] == 0
            boxes.append(target["boxes"][keep].to(outputs.device).float() / scale)
            labels.append(target["labels"][keep].to(outputs.device))
        return self.criterion(outputs, boxes, labels)

    @torch.no_grad()
    def postprocess(self, outputs: Tensor, batch: Batch) -> list[Detection]:
        """Class score = clamp(Pr(class | object), 0, 1) * clamp(confidence, 0, 1) (the outputs
        are linear, so they are clamped to be probabilities), for every box and class; per class
        the best ``candidates_before_nms`` boxes (ties broken by ``topk``) scoring above
        ``score_thresh``; NMS per class; the best ``max_detections``; boxes to original pixels."""
        boxes, confidence, class_scores = decode_boxes(outputs.float(), self.boxes_per_cell)
        scores = class_scores.clamp(0, 1) * confidence.clamp(0, 1)[..., None]  # [N, S*S*B, C]
        k = self.candidates_before_nms
        if k is not None and k < scores.shape[1]:  # per class, only its best k boxes stay candidates
            best = scores.topk(k, dim=1).indices                                   # [N, k, C]
            chosen = torch.zeros_like(scores, dtype=torch.bool).scatter_(1, best, True)
            scores = scores.masked_fill(~chosen, -1.0)                             # never above a threshold >= 0
        detections = []
        for i, (h, w) in enumerate(batch.original_sizes):
            box_index, class_index = (scores[i] > self.score_thresh).nonzero(as_tuple=True)
            kept_scores = scores[i, box_index, class_index]
            scale = torch.tensor([w, h, w, h], dtype=boxes.dtype, device=boxes.device)
            kept_boxes = boxes[i, box_index] * scale
            kept_boxes[:, 0::2] = kept_boxes[:, 0::2].clamp(0, w)
            kept_boxes[:, 1::2] = kept_boxes[:, 1::2].clamp(0, h)
            nonempty = ((kept_boxes[:, 2] > kept_boxes[:, 0])
                        & (kept_boxes[:, 3] > kept_boxes[:, 1])).nonzero().squeeze(1)
            kept_boxes, kept_scores = kept_boxes[nonempty], kept_scores[nonempty]
            class_index = class_index[nonempty]
            keep = batched_nms(kept_boxes, kept_scores, class_index, self.nms_thresh)
            keep = keep[: self.max_detections]  # batched_nms sorts by score, high to low
            detections.append(Detection(boxes=kept_boxes[keep], scores=kept_scores[keep],
                                        labels=class_index[keep] + 1))
        return detections
