"""SSD's photometric distortion with a hue step that costs one 3x3 matrix per image.

torchvision's ``adjust_hue`` converts every pixel to HSV and back: 3.5-4.6 ms per 300x300
image on one CPU thread (two measurements), more than the synthetic image costs to generate.
Here the hue shift is a rotation of the chroma plane of YIQ (the NTSC luma/chroma space;
NVIDIA DALI's ``Hue`` operator works the same way): ``RGB -> YIQ``, rotate (I, Q) by
``2π · hue_factor``, back to RGB. The three steps fold into one 3x3 matrix, so the whole step
is one small matmul (about 0.1 ms). It keeps luma exactly, turns hues in the same direction
as HSV's hue shift, and for SSD's small factors (|hue_factor| <= 0.05, i.e. <= 18°) differs
from it only slightly. Brightness, contrast, saturation and the channel permutation are
torchvision's.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import v2

# Rows: Y, I, Q as combinations of R, G, B (the FCC NTSC coefficients).
RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114],
                           [0.596, -0.274, -0.322],
                           [0.211, -0.523, 0.312]], dtype=torch.float64)
YIQ_TO_RGB = torch.linalg.inv(RGB_TO_YIQ)


def hue_rotation_matrix(hue_factor: float) -> Tensor:
    """float32 [3, 3] M with ``rgb_out = M @ rgb``: the YIQ chroma rotation by
    ``2π · hue_factor`` radians (hue_factor in [-0.5, 0.5], as torchvision's ``adjust_hue``)."""
    if not -0.5 <= hue_factor <= 0.5:
        raise ValueError(f"hue_factor {hue_factor} is not in [-0.5, 0.5]")
    # HSV's hue runs R -> G -> B; in the (I, Q) plane that is the clockwise direction.
    angle = -2.0 * math.pi * hue_factor
    c, s = math.cos(angle), math.sin(angle)
    rotation = torch.tensor([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]], dtype=torch.float64)
    return (YIQ_TO_RGB @ rotation @ RGB_TO_YIQ).to(torch.float32)


def adjust_hue_yiq(image: Tensor, hue_factor: float) -> Tensor:
    """float [..., 3, H, W] RGB in [0, 1] -> the same shape with the hue turned by
    ``hue_factor`` of a full turn, clipped to [0, 1]. Grey pixels are unchanged."""
    if image.shape[-3] != 3:
        raise ValueError(f"adjust_hue_yiq needs 3 RGB channels, got shape {tuple(image.shape)}")
    if not image.is_floating_point():
        raise TypeError(f"adjust_hue_yiq needs a float image in [0, 1], got {image.dtype}")
    matrix = hue_rotation_matrix(hue_factor).to(image.device, image.dtype)  # [3, 3]
    flat = image.reshape(*image.shape[:-2], -1)  # [..., 3, H*W]
    return (matrix @ flat).clamp_(0.0, 1.0).reshape(image.shape)


class PhotometricDistort(v2.RandomPhotometricDistort):
    """torchvision's ``RandomPhotometricDistort`` (SSD's order: brightness, contrast before or
    after saturation and hue, then a channel permutation, each with probability p) with the
    hue step done by ``adjust_hue_yiq``. Images only; boxes and labels pass through."""

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        hue_factor = params["hue_factor"]
        is_image = isinstance(inpt, tv_tensors.Image) or type(inpt) is Tensor
        if hue_factor is None or not is_image:
            return super().transform(inpt, params)
        # torchvision's steps up to saturation, then our hue, then the rest without a hue step.
        contrast_before = params["contrast_before"]
        out = super().transform(inpt, dict(
            params, hue_factor=None, channel_permutation=None,
            contrast_factor=params["contrast_factor"] if contrast_before else None))
        out = tv_tensors.wrap(adjust_hue_yiq(out.as_subclass(Tensor), hue_factor), like=inpt) \
            if isinstance(inpt, tv_tensors.Image) else adjust_hue_yiq(out, hue_factor)
        return super().transform(out, dict(
            params, brightness_factor=None, saturation_factor=None, hue_factor=None,
            contrast_factor=None if contrast_before else params["contrast_factor"]))
