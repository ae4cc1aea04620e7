"""Detections and ground truth drawn on frames, and frames of several detectors put side by side.

Images here are uint8 [3, H, W] RGB; boxes are x1 y1 x2 y2 in the frame's pixels. Each class has
a fixed colour (by label), so the same class looks the same in every panel and every frame;
detections are solid boxes labelled "<class> <score>" above their top edge, ground truth is
dashed green (``TRUTH``) labelled "GT <class>" below its bottom edge, with a legend in the
bottom-right corner. Labels are at least ``MIN_FONT_PX`` high at the saved resolution and grow
with the image (``font_px``): readable on a 300 px image and on a 1080p frame alike.
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from detectors.base import Detection

# Matplotlib's tab10 then the light half of tab20: distinct, and readable on photos.
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94",
           "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5"]
TRUTH = (0, 230, 0)   # ground truth: bright green, dashed (no class colour is this bright)
MIN_FONT_PX = 14


def to_uint8(image: Tensor) -> Tensor:
    """float [3, H, W] in [0, 1] -> uint8 [3, H, W] (rounded), on the CPU."""
    return image.detach().cpu().clamp(0, 1).mul(255).round().to(torch.uint8)


def font_px(height: int, width: int) -> int:
    """Label font size in pixels: 1/25 of the shorter side, at least ``MIN_FONT_PX``."""
    return max(MIN_FONT_PX, round(min(height, width) / 25))


def line_px(height: int, width: int) -> int:
    """Box line width in pixels: 1/200 of the shorter side, at least 2."""
    return max(2, round(min(height, width) / 200))


def _pil(image: Tensor) -> Image.Image:
    return Image.fromarray(image.permute(1, 2, 0).contiguous().numpy())


def _tensor(pil: Image.Image) -> Tensor:
    return torch.from_numpy(np.asarray(pil).copy()).permute(2, 0, 1)


def _rgb(colour) -> tuple[int, int, int]:
    if isinstance(colour, str):
        return tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5))
    return tuple(colour)


def _dashed_line(draw: ImageDraw.ImageDraw, start, end, colour, width: int) -> None:
    (x0, y0), (x1, y1) = start, end
    length = max(abs(x1 - x0), abs(y1 - y0))
    dash = 3 * width + 3
    for s in np.arange(0, length, 2 * dash):
        a, b = s / length if length else 0, min(s + dash, length) / length if length else 1
        draw.line([(x0 + a * (x1 - x0), y0 + a * (y1 - y0)), (x0 + b * (x1 - x0), y0 + b * (y1 - y0))],
                  fill=colour, width=width)


def _label(draw: ImageDraw.ImageDraw, font, xy, text: str, colour, below: bool, size: tuple[int, int]) -> None:
    """``text`` on a strip of ``colour`` whose top-left (or, ``below``, bottom-left) is at ``xy``,
    moved inside the image when it would leave it."""
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    w, h = right - left + 4, bottom - top + 4
    x = min(max(0, xy[0]), max(0, size[1] - w))
    y = xy[1] if below else xy[1] - h
    y = min(max(0, y), max(0, size[0] - h))
    r, g, b = colour
    ink = (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 140 else (255, 255, 255)
    draw.rectangle((x, y, x + w, y + h), fill=colour)
    draw.text((x + 2 - left, y + 2 - top), text, fill=ink, font=font)


def draw_boxes(image: Tensor, boxes: Tensor, texts: list[str], colours: list, dashed: bool = False) -> Tensor:
    """uint8 [3, H, W] with ``boxes`` [N, 4] drawn (solid, label above; or dashed, label below); a new tensor."""
    height, width = image.shape[-2:]
    pil = _pil(image)
    draw = ImageDraw.Draw(pil)
    font = ImageFont.load_default(size=font_px(height, width))
    line = line_px(height, width)
    for (x1, y1, x2, y2), text, colour in zip(boxes.tolist(), texts, colours):
        colour = _rgb(colour)
        if dashed:
            for start, end in (((x1, y1), (x2, y1)), ((x2, y1), (x2, y2)), ((x2, y2), (x1, y2)), ((x1, y2), (x1, y1))):
                _dashed_line(draw, start, end, colour, line)
        else:
            draw.rectangle((x1, y1, x2, y2), outline=colour, width=line)
        if text:
            _label(draw, font, (x1, y2 if dashed else y1), text, colour, dashed, (height, width))
    return _tensor(pil)


def draw_detections(image: Tensor, detection: Detection, class_names: list[str]) -> Tensor:
    """uint8 [3, H, W] with each box drawn in its class's colour and labelled "<class> <score>"; a new tensor."""
    labels = detection["labels"].tolist()
    if not labels:
        return image.clone()
    texts = [f"{class_names[label - 1]} {score:.2f}" for label, score in zip(labels, detection["scores"].tolist())]
    colours = [PALETTE[(label - 1) % len(PALETTE)] for label in labels]
    return draw_boxes(image, detection["boxes"].to(torch.float32), texts, colours)


def draw_truth(image: Tensor, boxes: Tensor, names: list[str]) -> Tensor:
    """uint8 [3, H, W] with the ground truth ``boxes`` [N, 4] dashed green, labelled "GT <class>",
    and a legend ("- - ground truth") in the bottom-right corner; a new tensor."""
    drawn = draw_boxes(image, boxes, [f"GT {n}" for n in names], [TRUTH] * len(names), dashed=True)
    height, width = image.shape[-2:]
    pil = _pil(drawn)
    draw = ImageDraw.Draw(pil)
    font = ImageFont.load_default(size=font_px(height, width))
    text = "ground truth"
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    sample, pad = 2 * font_px(height, width), 4
    w, h = sample + (right - left) + 3 * pad, bottom - top + 2 * pad
    x, y = max(0, width - w), max(0, height - h)
    draw.rectangle((x, y, width, height), fill=(0, 0, 0))
    _dashed_line(draw, (x + pad, y + h / 2), (x + pad + sample, y + h / 2), TRUTH, line_px(height, width))
    draw.text((x + 2 * pad + sample - left, y + pad - top), text, fill=(255, 255, 255), font=font)
    return _tensor(pil)


def caption(image: Tensor, text: str) -> Tensor:
    """uint8 [3, H, W] with ``text`` in white on a black strip at the top left (a panel's name)."""
    pil = _pil(image)
    draw = ImageDraw.Draw(pil)
    font = ImageFont.load_default(size=font_px(*image.shape[-2:]))
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    draw.rectangle((0, 0, right - left + 6, bottom - top + 6), fill=(0, 0, 0))
    draw.text((3 - left, 3 - top), text, fill=(255, 255, 255), font=font)
    return _tensor(pil)


def side_by_side(panels: list[Tensor]) -> Tensor:
    """uint8 [3, H, N*W]: ``panels`` (each uint8 [3, H, W], equal sizes) left to right."""
    return panels[0] if len(panels) == 1 else torch.cat(panels, dim=2)
