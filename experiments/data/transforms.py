"""Training augmentation policies, built from torchvision ``transforms.v2`` (box-aware).

``build_policy(name)`` returns a callable ``(image float[3, H, W] in [0, 1], Target) ->
(image, Target)`` for a dataset's ``transforms`` argument, or None for ``"none"``:

- ``none``: no augmentation.
- ``ssd`` (Liu et al. 2016, sec. 2.2 "Data augmentation"): photometric distortion
  (brightness, contrast, saturation, hue, channel order), zoom-out "expansion" onto a canvas
  up to 4x the image filled with the mean colour (p = 0.5), the minimum-IoU random crop
  (min IoU drawn from {0.1, 0.3, 0.5, 0.7, 0.9} or no crop; boxes whose centre leaves the crop
  are dropped), horizontal flip (p = 0.5).
- ``yolo`` (Redmon et al. 2016, sec. 2.2): random scaling and translation of up to 20% of the
  image size, exposure (brightness) and saturation scaled by up to 1.5x either way, horizontal
  flip (p = 0.5). torchvision's saturation blends with the grey image rather than scaling HSV's
  S channel; brightness scaling equals scaling HSV's V (then clipped).

Every policy ends with ``ClampBoundingBoxes`` + ``SanitizeBoundingBoxes`` (boxes under 1 px
wide or high are removed together with their label, area, iscrowd and difficult flag), so every
box stays valid (x2 > x1, y2 > y1) and inside the output image. ``area`` is rescaled by each
box's change of box area (exact for box areas; proportional for COCO segment areas). The
resize to the network's input belongs to the detector; ``output_size`` optionally resizes here
(e.g. to keep zoom-out canvases small in a DataLoader).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.ops import box_iou
from torchvision.transforms import v2

from detectors.base import Target

POLICIES = ("none", "ssd", "yolo")
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


class BatchedIoUCrop(v2.RandomIoUCrop):
    """torchvision's ``RandomIoUCrop`` (the crop and its box handling are torchvision's) with
    the search for a crop drawn ``trials`` candidates at a time instead of one by one.

    The first valid candidate of a batch of i.i.d. draws has the same distribution as the
    first valid one of the sequential loop; the loop cost ~3 ms per image in Python because
    options such as min IoU 0.9 are rarely satisfiable for small objects and burn all trials.
    An image without boxes is left uncropped (the only option that can succeed for it).
    """

    def make_params(self, flat_inputs: list) -> dict:
        boxes = next(x for x in flat_inputs if isinstance(x, tv_tensors.BoundingBoxes))
        orig_h, orig_w = boxes.canvas_size
        xyxy = v2.functional.convert_bounding_box_format(
            boxes.as_subclass(Tensor), boxes.format, tv_tensors.BoundingBoxFormat.XYXY)  # [N, 4]
        if xyxy.shape[0] == 0:
            return {}
        cx = 0.5 * (xyxy[:, 0] + xyxy[:, 2])  # [N]
        cy = 0.5 * (xyxy[:, 1] + xyxy[:, 3])
        while True:
            min_iou = self.options[int(torch.randint(len(self.options), (1,)))]
            if min_iou >= 1.0:  # the "leave as is" option
                return {}
            scale = self.min_scale + (self.max_scale - self.min_scale) * torch.rand(self.trials, 2)
            new_w = (orig_w * scale[:, 0]).int()  # [T]
            new_h = (orig_h * scale[:, 1]).int()
            aspect = new_w / new_h.clamp(min=1)
            pos = torch.rand(self.trials, 2)
            left = ((orig_w - new_w) * pos[:, 0]).int()  # [T]
            top = ((orig_h - new_h) * pos[:, 1]).int()
            right, bottom = left + new_w, top + new_h
            ok = ((aspect >= self.min_aspect_ratio) & (aspect <= self.max_aspect_ratio)
                  & (new_w > 0) & (new_h > 0))
            within = ((left[:, None] < cx) & (cx < right[:, None])
                      & (top[:, None] < cy) & (cy < bottom[:, None]))  # [T, N]
            crops = torch.stack([left, top, right, bottom], dim=1).to(xyxy.dtype)  # [T, 4]
            iou = box_iou(crops, xyxy).masked_fill(~within, -1.0)  # [T, N]
            ok &= within.any(dim=1) & (iou.max(dim=1).values >= min_iou)
            if ok.any():
                i = int(ok.nonzero()[0])
                return dict(top=int(top[i]), left=int(left[i]), height=int(new_h[i]),
                            width=int(new_w[i]), is_within_crop_area=within[i])

    _get_params = make_params  # the name in torchvision < 0.21


def ssd_steps(max_zoom_out: float = 4.0, fill: Sequence[float] = MEAN_RGB) -> list[v2.Transform]:
    # The flip comes before zoom-out and crop, not after as in the paper: the same distribution
    # (zoom-out offsets and crop positions are uniform, so mirror-symmetric), but it flips the
    # original image instead of an up to 4x canvas.
    return [v2.RandomPhotometricDistort(p=0.5),
            v2.RandomHorizontalFlip(p=0.5),
            v2.RandomZoomOut(fill=list(fill), side_range=(1.0, max_zoom_out), p=0.5),
            BatchedIoUCrop(sampler_options=[0.1, 0.3, 0.5, 0.7, 0.9, 1.0])]


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

    output_size: optional (H, W) or side the augmented image is resized to at the end.
    """
    if name is None or name == "none":
        return None
    if name == "ssd":
        steps = ssd_steps()
    elif name == "yolo":
        steps = yolo_steps()
    else:
        raise ValueError(f"unknown augmentation policy {name!r}; choose one of {POLICIES}")
    if output_size is not None:
        size = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
        steps.append(v2.Resize(size, antialias=True))
    return DetectionAugmentation(steps, name=name)
