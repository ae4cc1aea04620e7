"""Detections drawn on frames, and frames of several detectors put side by side.

Images here are uint8 [3, H, W] RGB (what ``torchvision.utils.draw_bounding_boxes`` draws on);
boxes are x1 y1 x2 y2 in the frame's pixels. Each class has a fixed colour (by label), so the
same class looks the same in every panel and every frame.
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor
from torchvision.utils import draw_bounding_boxes

from detectors.base import Detection

# Matplotlib's tab10 then the light half of tab20: distinct, and readable on photos.
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94",
           "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5"]


def to_uint8(image: Tensor) -> Tensor:
    """float [3, H, W] in [0, 1] -> uint8 [3, H, W] (rounded), on the CPU."""
    return image.detach().cpu().clamp(0, 1).mul(255).round().to(torch.uint8)


def draw_detections(image: Tensor, detection: Detection, class_names: list[str]) -> Tensor:
    """uint8 [3, H, W] with each box drawn and labelled "<class> <score>"; a new tensor."""
    boxes = detection["boxes"]
    if len(boxes) == 0:
        return image.clone()
    labels = detection["labels"].tolist()
    texts = [f"{class_names[label - 1]} {score:.2f}" for label, score in zip(labels, detection["scores"].tolist())]
    colours = [PALETTE[(label - 1) % len(PALETTE)] for label in labels]
    line = max(1, round(min(image.shape[-2:]) / 240))
    return draw_bounding_boxes(image, boxes.to(torch.float32), labels=texts, colors=colours, width=line)


def caption(image: Tensor, text: str) -> Tensor:
    """uint8 [3, H, W] with ``text`` in white on a black strip at the top left (a panel's name)."""
    pil = Image.fromarray(image.permute(1, 2, 0).numpy())
    draw = ImageDraw.Draw(pil)
    left, top, right, bottom = draw.textbbox((3, 2), text)
    draw.rectangle((0, 0, right + 3, bottom + 2), fill=(0, 0, 0))
    draw.text((3, 2), text, fill=(255, 255, 255))
    return torch.from_numpy(np.asarray(pil).copy()).permute(2, 0, 1)


def side_by_side(panels: list[Tensor]) -> Tensor:
    """uint8 [3, H, N*W]: ``panels`` (each uint8 [3, H, W], equal sizes) left to right."""
    return panels[0] if len(panels) == 1 else torch.cat(panels, dim=2)
