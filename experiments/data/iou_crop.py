"""SSD's minimum-IoU random crop: the search for a crop window, drawn many candidates at once.

SSD (Liu et al. 2016, sec. 2.2) keeps the whole image, samples a patch whose IoU with some
object is at least a minimum drawn from {0.1, 0.3, 0.5, 0.7, 0.9}, or samples a random patch
(option 0.0: no IoU constraint, a patch holding an object's centre, as torchvision), with a side of
[0.3, 1] of the image's, an aspect ratio in [1/2, 2], and keeps the boxes whose centre lies
inside. torchvision's ``RandomIoUCrop`` searches one candidate at a time in a Python loop,
about 3 ms per image, because options such as 0.9 are rarely satisfiable for small objects
and burn all their trials. ``draw_iou_crop`` draws ``rounds`` options with ``trials``
candidates each as one tensor and takes the first success in draw order: the same
distribution as the sequential loop, since the draws are i.i.d.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.ops import box_iou
from torchvision.transforms import v2


def draw_iou_crop(boxes: Tensor, canvas_size: tuple[int, int], options: Sequence[float],
                  min_scale: float = 0.3, max_scale: float = 1.0, min_aspect_ratio: float = 0.5,
                  max_aspect_ratio: float = 2.0, trials: int = 40, rounds: int = 8) -> dict:
    """A crop window for an image of ``canvas_size`` (H, W) holding ``boxes``.

    boxes: float [N, 4] x1 y1 x2 y2 in pixels. options: minimum IoUs; a value >= 1 means "keep
    the whole image". Returns {} for "no crop" (also when there are no boxes, the only option
    that can succeed), else dict(top, left, height, width: int pixels; is_within_crop_area:
    bool [N], the boxes whose centre lies strictly inside the window).
    """
    if boxes.shape[0] == 0:
        return {}
    if len(options) == 0:
        raise ValueError("draw_iou_crop needs at least one option (a minimum IoU, or 1.0)")
    orig_h, orig_w = canvas_size
    choices = torch.tensor(list(options), dtype=torch.float32)  # [O]
    cx = 0.5 * (boxes[:, 0] + boxes[:, 2])  # [N]
    cy = 0.5 * (boxes[:, 1] + boxes[:, 3])
    while True:
        min_iou = choices[torch.randint(len(choices), (rounds,))]  # [R]
        scale = min_scale + (max_scale - min_scale) * torch.rand(rounds, trials, 2)
        new_w = (orig_w * scale[..., 0]).int()  # [R, T]
        new_h = (orig_h * scale[..., 1]).int()
        aspect = new_w / new_h.clamp(min=1)
        pos = torch.rand(rounds, trials, 2)
        left = ((orig_w - new_w) * pos[..., 0]).int()  # [R, T]
        top = ((orig_h - new_h) * pos[..., 1]).int()
        right, bottom = left + new_w, top + new_h
        ok = ((aspect >= min_aspect_ratio) & (aspect <= max_aspect_ratio)
              & (new_w > 0) & (new_h > 0))  # [R, T]
        within = ((left[..., None] < cx) & (cx < right[..., None])
                  & (top[..., None] < cy) & (cy < bottom[..., None]))  # [R, T, N]
        windows = torch.stack([left, top, right, bottom], dim=-1).to(boxes.dtype)  # [R, T, 4]
        iou = box_iou(windows.reshape(-1, 4), boxes).reshape(within.shape)  # [R, T, N]
        best = iou.masked_fill(~within, -1.0).amax(dim=-1)  # [R, T]
        ok &= within.any(dim=-1) & (best >= min_iou[:, None])
        done = (min_iou >= 1.0) | ok.any(dim=1)  # [R]
        if done.any():
            r = int(done.nonzero()[0])
            if min_iou[r] >= 1.0:
                return {}
            t = int(ok[r].nonzero()[0])
            return dict(top=int(top[r, t]), left=int(left[r, t]), height=int(new_h[r, t]),
                        width=int(new_w[r, t]), is_within_crop_area=within[r, t])


class BatchedIoUCrop(v2.RandomIoUCrop):
    """torchvision's ``RandomIoUCrop`` (the crop and its box handling are torchvision's) with
    the window drawn by ``draw_iou_crop``. An image without boxes is left uncropped."""

    def make_params(self, flat_inputs: list) -> dict:
        boxes = next(x for x in flat_inputs if isinstance(x, tv_tensors.BoundingBoxes))
        xyxy = v2.functional.convert_bounding_box_format(
            boxes.as_subclass(Tensor), boxes.format, tv_tensors.BoundingBoxFormat.XYXY)  # [N, 4]
        return draw_iou_crop(xyxy, boxes.canvas_size, self.options, self.min_scale,
                             self.max_scale, self.min_aspect_ratio, self.max_aspect_ratio,
                             self.trials)

    _get_params = make_params  # the name in torchvision < 0.21
