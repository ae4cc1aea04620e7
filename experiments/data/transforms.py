"""Training augmentation policies, built from torchvision ``transforms.v2`` (box-aware).

``build_policy(name)`` returns a callable ``(image float[3, H, W] in [0, 1], Target) ->
(image, Target)`` for a dataset's ``transforms`` argument, or None for ``"none"``:

- ``none``: no augmentation.
- ``ssd`` (Liu et al. 2016, sec. 2.2 "Data augmentation"): photometric distortion
  (brightness, contrast, saturation, hue, channel order; the hue step is a YIQ rotation, see
  ``photometric.py``), zoom-out "expansion" onto a canvas up to 4x the image filled with the
  mean colour (p = 0.5), the random crop (min IoU drawn from {0.1, 0.3, 0.5, 0.7, 0.9}, a
  random patch, or no crop; boxes whose centre leaves the crop are dropped), horizontal flip
  (p = 0.5).
- ``flip`` (Faster R-CNN, Ren et al. 2015, sec. 3.1.3 / py-faster-rcnn): horizontal flip
  (p = 0.5) only, and never a resize here: the detector's own transform rescales keeping the
  aspect ratio (shorter side 600, longer at most 1000).
  With an ``output_size`` the zoom-out, crop and resize are fused (``expand_crop.py``).
- ``yolo`` (Redmon et al. 2016, sec. 2.2): random scaling and translation of up to 20% of the
  image size, exposure (brightness) and saturation scaled by up to 1.5x either way, horizontal
  flip (p = 0.5). torchvision's saturation blends with the grey image rather than scaling HSV's
  S channel; brightness scaling equals scaling HSV's V (then clipped).

Every policy ends with ``ClampBoundingBoxes`` + ``SanitizeBoundingBoxes`` (boxes under 1 px
wide or high are removed together with their label, area, iscrowd and difficult flag), so every
box stays valid (x2 > x1, y2 > y1) and inside the output image. ``area`` is rescaled by each
box's change of box area (exact for box areas; proportional for COCO segment areas). The
resize to the network's input belongs to the detector; ``output_size`` optionally resizes here
(training does, to the detector's input size: fixed-size images are cheaper to pass between
DataLoader processes, and the ``ssd`` policy then never builds its zoom-out canvas).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import v2

from detectors.base import Target
from experiments.data.expand_crop import SSD_IOU_OPTIONS, ExpandCropResize
from experiments.data.iou_crop import BatchedIoUCrop
from experiments.data.photometric import PhotometricDistort

POLICIES = ("none", "ssd", "yolo", "flip")
# The fill colour of zoom-out canvases and affine borders: ImageNet's mean RGB in [0, 1].
MEAN_RGB = (0.485, 0.456, 0.406)
_PER_BOX_KEYS = ("labels", "area", "iscrowd", "box_area", "difficult")


def per_box_tensors(sample: dict) -> tuple[Tensor, ...]:
    """SanitizeBoundingBoxes' ``labels_getter``: every per-box tensor that must be filtered
    along with the boxes (a module-level function so DataLoader workers can pickle it)."""
    return tuple(sample[k] for k in _PER_BOX_KEYS if k in sample)


def box_area(boxes: Tensor) -> Tensor:
    """[N, 4] x1 y1 x2 y2 -> [N] area in pixels²."""
    return (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)


class DetectionAugmentation:
    """Runs a ``transforms.v2`` pipeline on ``(image float[3, H, W], Target)`` pairs.

    steps: box-aware v2 transforms; ClampBoundingBoxes and SanitizeBoundingBoxes are appended.
    """

    def __init__(self, steps: Sequence[v2.Transform], name: str = "custom") -> None:
        self.name = name
        self.pipeline = v2.Compose([*steps, v2.ClampBoundingBoxes(),
                                    v2.SanitizeBoundingBoxes(min_size=1.0,
                                                             labels_getter=per_box_tensors)])

    def __repr__(self) -> str:
        return f"DetectionAugmentation(name={self.name!r}, pipeline={self.pipeline})"

    def __call__(self, image: Tensor, target: Target) -> tuple[Tensor, Target]:
        h, w = image.shape[-2:]
        boxes = target["boxes"]  # [N, 4] x1 y1 x2 y2
        sample = {"image": tv_tensors.Image(image),
                  "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(h, w)),
                  "labels": target["labels"], "area": target["area"],
                  "iscrowd": target["iscrowd"], "box_area": box_area(boxes)}
        if "difficult" in target:
            sample["difficult"] = target["difficult"]
        out = self.pipeline(sample)
        new_boxes = out["boxes"].as_subclass(Tensor).to(torch.float32)  # [M, 4]
        old_box_area = out["box_area"]  # [M]
        scale = torch.where(old_box_area > 0, box_area(new_boxes) / old_box_area.clamp(min=1e-12),
                            torch.ones_like(old_box_area))
        new_target = Target(boxes=new_boxes, labels=out["labels"], image_id=target["image_id"],
                            area=(out["area"] * scale).to(torch.float32), iscrowd=out["iscrowd"])
        if "difficult" in out:
            new_target["difficult"] = out["difficult"]
        return out["image"].as_subclass(Tensor), new_target


def ssd_steps(output_size: tuple[int, int] | None = None, max_zoom_out: float = 4.0,
              fill: Sequence[float] = MEAN_RGB) -> list[v2.Transform]:
    """SSD's steps. With an output_size (H, W), zoom-out, crop and resize are one fused
    ``ExpandCropResize`` that never builds the zoom-out canvas; without, they are torchvision's
    ``RandomZoomOut`` and the ``BatchedIoUCrop``, and the image keeps the crop's size."""
    # The flip comes before zoom-out and crop, not after as in the paper: the same distribution
    # (zoom-out offsets and crop positions are uniform, so mirror-symmetric), but it flips the
    # original image instead of an up to 4x canvas.
    steps = [PhotometricDistort(p=0.5), v2.RandomHorizontalFlip(p=0.5)]
    if output_size is not None:
        return steps + [ExpandCropResize(output_size, fill=fill, side_range=(1.0, max_zoom_out),
                                         p=0.5, options=SSD_IOU_OPTIONS)]
    return steps + [v2.RandomZoomOut(fill=list(fill), side_range=(1.0, max_zoom_out), p=0.5),
                    BatchedIoUCrop(sampler_options=list(SSD_IOU_OPTIONS))]


def yolo_steps(jitter: float = 0.2, exposure: float = 1.5, saturation: float = 1.5,
               fill: Sequence[float] = MEAN_RGB) -> list[v2.Transform]:
    return [v2.RandomAffine(degrees=0.0, translate=(jitter, jitter),
                            scale=(1.0 - jitter, 1.0 + jitter), fill=list(fill)),
            v2.ColorJitter(brightness=(1 / exposure, exposure),
                           saturation=(1 / saturation, saturation)),
            v2.RandomHorizontalFlip(p=0.5)]


def build_policy(name: str, output_size: int | tuple[int, int] | None = None
                 ) -> DetectionAugmentation | None:
    """The augmentation policy ``name`` (one of POLICIES); None for "none".

    output_size: optional (H, W) or side the augmented image is resized to at the end (ignored
    by ``flip``, whose detectors resize keeping the aspect ratio).
    """
    if name is None or name == "none":
        return None
    if name not in POLICIES:
        raise ValueError(f"unknown augmentation policy {name!r}; choose one of {POLICIES}")
    size = None
    if output_size is not None:
        size = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
    if name == "flip":
        return DetectionAugmentation([v2.RandomHorizontalFlip(p=0.5)], name=name)
    if name == "ssd":
        return DetectionAugmentation(ssd_steps(size), name=name)  # resizes when size is given
    steps = yolo_steps()
    if size is not None:
        steps.append(v2.Resize(size, antialias=True))
    return DetectionAugmentation(steps, name=name)
