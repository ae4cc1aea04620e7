"""SSD's zoom-out ("expansion"), minimum-IoU crop and resize, fused so that no canvas is built.

Done one after the other (torchvision's ``RandomZoomOut``, ``RandomIoUCrop``, ``Resize``), the
zoom-out builds a canvas up to 4x the image's side (16x its pixels), the crop copies a window
of it and the resize shrinks that back to the network's input: 2-3 ms per 300x300 image on
one CPU thread. The window, though, only ever shows (part of) the original image on a
mean-colour background. ``ExpandCropResize`` draws the same random parameters (zoom-out with
probability p, ratio uniform in ``side_range``, uniform offset; then ``draw_iou_crop`` on the
virtual canvas), works out which part of the original image the window shows and where it
lands in the output, and resizes only that part onto an output-sized canvas of the fill
colour.

The part's edges in the output are rounded to whole pixels (at most half an output pixel
from the exact edges), and the boxes are mapped by the very scale and offset the image part
was resized and pasted with, so boxes and pixels stay exactly aligned. As in
``RandomIoUCrop``, boxes whose centre is outside the window are zeroed for
``SanitizeBoundingBoxes`` to remove.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from experiments.data.iou_crop import draw_iou_crop

# The paper's sampler options (torchvision's RandomIoUCrop defaults): 0.0 is "randomly sample a
# patch" (no IoU constraint; as in torchvision, a patch holding at least one object's centre),
# 0.1 ... 0.9 the minimum IoUs, 1.0 "use the entire original input image".
SSD_IOU_OPTIONS = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0)


def _axis_span(size: int, offset: int, start: int, length: int, out: int
               ) -> tuple[tuple[int, int], tuple[int, int]]:
    """One axis of the placement: the image spans [offset, offset + size) on the canvas and
    the window [start, start + length) maps onto [0, out). Returns ((s0, s1), (d0, d1)): the
    image pixels [s0, s1) the window shows and the output pixels [d0, d1) they land on."""
    vis0, vis1 = max(start, offset), min(start + length, offset + size)
    if vis1 <= vis0:
        raise ValueError(f"the crop window [{start}, {start + length}) misses the image "
                         f"[{offset}, {offset + size}) on the canvas")
    scale = out / length
    d0, d1 = round((vis0 - start) * scale), round((vis1 - start) * scale)
    if d1 == d0:  # a sliver: keep at least one output pixel
        d0, d1 = (d0, d0 + 1) if d0 < out else (d0 - 1, d0)
    return (vis0 - offset, vis1 - offset), (d0, d1)


def place_window(image_size: tuple[int, int], offset: tuple[int, int],
                 window: tuple[int, int, int, int], output_size: tuple[int, int]) -> dict:
    """Where a crop window of the zoomed-out canvas puts the original image in the output.

    image_size: (H, W) of the original image; offset: (top, left) of the image on the canvas;
    window: (top, left, height, width) on the canvas, in pixels; output_size: (H_out, W_out).
    Returns dict(src=(y0, y1, x0, x1) in the image, dst=(y0, y1, x0, x1) in the output).
    """
    (sy, dy) = _axis_span(image_size[0], offset[0], window[0], window[2], output_size[0])
    (sx, dx) = _axis_span(image_size[1], offset[1], window[1], window[3], output_size[1])
    return dict(src=(*sy, *sx), dst=(*dy, *dx))


def map_boxes(boxes: Tensor, src: Sequence[int], dst: Sequence[int]) -> Tensor:
    """float [N, 4] x1 y1 x2 y2 in the original image -> the output, by the scale and offset
    that resize image pixels src=(y0, y1, x0, x1) onto output pixels dst (pixel edges)."""
    sy0, sy1, sx0, sx1 = src
    dy0, dy1, dx0, dx1 = dst
    kx, ky = (dx1 - dx0) / (sx1 - sx0), (dy1 - dy0) / (sy1 - sy0)
    scale = boxes.new_tensor([kx, ky, kx, ky])
    shift = boxes.new_tensor([dx0 - sx0 * kx, dy0 - sy0 * ky, dx0 - sx0 * kx, dy0 - sy0 * ky])
    return boxes * scale + shift


class ExpandCropResize(v2.Transform):
    """Zoom-out (probability p, side ratio in side_range, canvas filled with fill), minimum-IoU
    crop (options, as ``RandomIoUCrop``) and resize to output_size (H, W), in one step.

    Inputs: one image (``tv_tensors.Image`` or a plain float/uint8 [C, H, W] tensor; fill is
    given for [0, 1] floats and scaled to 255 for uint8), ``BoundingBoxes``; other tensors
    (labels, areas) pass through. Output: images of output_size, boxes in its pixels.
    """

    def __init__(self, output_size: int | tuple[int, int], fill: Sequence[float],
                 side_range: tuple[float, float] = (1.0, 4.0), p: float = 0.5,
                 options: Sequence[float] = SSD_IOU_OPTIONS, min_scale: float = 0.3,
                 max_scale: float = 1.0, min_aspect_ratio: float = 0.5,
                 max_aspect_ratio: float = 2.0, trials: int = 40) -> None:
        super().__init__()
        self.output_size = ((output_size, output_size) if isinstance(output_size, int)
                            else tuple(output_size))
        if not 1.0 <= side_range[0] <= side_range[1]:
            raise ValueError(f"side_range must be 1 <= min <= max, got {side_range}")
        self.fill = tuple(float(f) for f in fill)
        self.side_range, self.p, self.options = tuple(side_range), p, tuple(options)
        self.min_scale, self.max_scale = min_scale, max_scale
        self.min_aspect_ratio, self.max_aspect_ratio = min_aspect_ratio, max_aspect_ratio
        self.trials = trials

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        boxes = next((x for x in flat_inputs if isinstance(x, tv_tensors.BoundingBoxes)), None)
        if boxes is None:
            raise TypeError("ExpandCropResize needs the sample's BoundingBoxes")
        h, w = boxes.canvas_size
        canvas_h, canvas_w, top, left = h, w, 0, 0
        if torch.rand(1) < self.p:
            lo, hi = self.side_range
            ratio = lo + float(torch.rand(1)) * (hi - lo)
            canvas_w, canvas_h = int(w * ratio), int(h * ratio)
            u = torch.rand(2)
            left, top = int((canvas_w - w) * u[0]), int((canvas_h - h) * u[1])
        xyxy = F.convert_bounding_box_format(boxes.as_subclass(Tensor), boxes.format,
                                             tv_tensors.BoundingBoxFormat.XYXY)  # [N, 4]
        on_canvas = xyxy + xyxy.new_tensor([left, top, left, top])
        crop = draw_iou_crop(on_canvas, (canvas_h, canvas_w), self.options, self.min_scale,
                             self.max_scale, self.min_aspect_ratio, self.max_aspect_ratio,
                             self.trials)
        window = ((crop["top"], crop["left"], crop["height"], crop["width"]) if crop
                  else (0, 0, canvas_h, canvas_w))
        params = place_window((h, w), (top, left), window, self.output_size)
        params["keep"] = crop.get("is_within_crop_area")  # None: every box
        return params

    _get_params = make_params  # the name in torchvision < 0.21

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if isinstance(inpt, tv_tensors.BoundingBoxes):
            xyxy = F.convert_bounding_box_format(inpt.as_subclass(Tensor), inpt.format,
                                                 tv_tensors.BoundingBoxFormat.XYXY)
            out = map_boxes(xyxy, params["src"], params["dst"])
            if params["keep"] is not None:
                out[~params["keep"]] = 0  # degenerate: SanitizeBoundingBoxes removes them
            out = F.convert_bounding_box_format(out, tv_tensors.BoundingBoxFormat.XYXY,
                                                inpt.format)
            return tv_tensors.wrap(out, like=inpt, canvas_size=self.output_size)
        if isinstance(inpt, tv_tensors.Image) or type(inpt) is Tensor:
            out = self._paste(inpt.as_subclass(Tensor), params["src"], params["dst"])
            return tv_tensors.wrap(out, like=inpt) if isinstance(inpt, tv_tensors.Image) else out
        if isinstance(inpt, tv_tensors.TVTensor):
            raise TypeError(f"ExpandCropResize does not handle {type(inpt).__name__}")
        return inpt

    def _paste(self, image: Tensor, src: Sequence[int], dst: Sequence[int]) -> Tensor:
        """[C, H, W] -> [C, H_out, W_out]: the fill colour, with image[src] resized onto dst."""
        sy0, sy1, sx0, sx1 = src
        dy0, dy1, dx0, dx1 = dst
        fill = torch.tensor(self.fill, dtype=torch.float32)
        if not image.is_floating_point():
            fill = (fill * 255).round()
        if fill.numel() != image.shape[-3]:
            raise ValueError(f"fill has {fill.numel()} values for {image.shape[-3]} channels")
        out = fill.to(image.dtype)[:, None, None].expand(-1, *self.output_size).clone()
        part = image[..., sy0:sy1, sx0:sx1]
        if part.shape[-2:] != (dy1 - dy0, dx1 - dx0):
            lo, hi = (float(v) for v in part.aminmax())
            part = F.resize(part, [dy1 - dy0, dx1 - dx0], antialias=True)
            if part.is_floating_point():  # weights >= 0 summing to 1, up to float rounding
                part = part.clamp_(lo, hi)
        out[..., dy0:dy1, dx0:dx1] = part
        return out
