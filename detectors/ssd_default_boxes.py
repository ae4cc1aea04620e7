"""SSD's default boxes (Liu et al. 2016, section 2.2 "Choosing scales and aspect ratios").

Map k (of m) of size f_k tiles its cells with boxes centred at ((j + 0.5) / f_k, (i + 0.5) / f_k),
or, with a ``step`` in input pixels, at ((j + 0.5) * step / W, (i + 0.5) * step / H) as the
Caffe code and torchvision do. Per location, in this order:

    (s_k, s_k), (s'_k, s'_k) with s'_k = sqrt(s_k * s_{k+1}),
    then for each aspect ratio a of the map: (s_k sqrt(a), s_k / sqrt(a)), (s_k / sqrt(a), s_k sqrt(a))

so a map with ratios [2] has 4 boxes per location and one with [2, 3] has 6. Boxes are
cxcywh in fractions of the input (width over W, height over H); ``clip`` clamps widths and
heights to [0, 1] (as Caffe's and torchvision's generators do). Boxes are ordered map by map,
then row by row, column by column, then box by box within a location: the order of the heads'
outputs, and torchvision's ``DefaultBoxGenerator`` order.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

#: s_1 .. s_{m+1} of the paper's configurations (the last one only sizes s'_m). They follow the
#: Caffe code's rule: conv4_3 gets its own first scale, the other maps go from s_min by
#: floor(100 (s_max - s_min) / (m - 2)) percent steps; torchvision's ssd300_vgg16 uses "coco300".
SCALE_PRESETS: dict[str, list[float]] = {
    "voc300": [0.1, 0.2, 0.37, 0.54, 0.71, 0.88, 1.05],       # min sizes 30 60 111 162 213 264 px
    "coco300": [0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05],    # min sizes 21 45 99 153 207 261 px
    "voc512": [0.07, 0.15, 0.3, 0.45, 0.6, 0.75, 0.9, 1.05],
    "coco512": [0.04, 0.1, 0.26, 0.42, 0.58, 0.74, 0.9, 1.06],
    # SSD-MobileNetV1 (the common PyTorch configuration): min sizes 60 105 150 195 240 285 px at 300
    "mobilenet300": [0.2, 0.35, 0.5, 0.65, 0.8, 0.95, 1.1],
}


def default_box_scales(num_maps: int, s_min: float = 0.2, s_max: float = 0.9,
                       first_scale: float | None = None) -> list[float]:
    """The paper's s_k = s_min + (s_max - s_min)(k - 1)/(m - 1), k = 1..m, plus s_{m+1}.

    With ``first_scale`` (the paper's conv4_3 at 0.1) the first map gets it and the formula spans
    the other m - 1 maps. s_{m+1} continues the same step. Returns num_maps + 1 floats.
    """
    spanned = num_maps - 1 if first_scale is not None else num_maps
    if spanned < 2:
        raise ValueError(f"need at least 2 maps between s_min and s_max, got {spanned}")
    step = (s_max - s_min) / (spanned - 1)
    scales = [s_min + step * k for k in range(spanned + 1)]
    return ([first_scale] if first_scale is not None else []) + scales


def resolve_scales(scales: str | list[float] | None, num_maps: int, s_min: float | None = None,
                   s_max: float | None = None, first_scale: float | None = None) -> list[float]:
    """Scales from a preset name, an explicit list (num_maps + 1 values), or the paper's formula
    (``scales`` None, then ``s_min`` and ``s_max`` are needed)."""
    if isinstance(scales, str):
        if scales not in SCALE_PRESETS:
            raise ValueError(f"unknown default-box scale preset '{scales}'; choose from {sorted(SCALE_PRESETS)}")
        scales = SCALE_PRESETS[scales]
    elif scales is None:
        if s_min is None or s_max is None:
            raise ValueError("give default-box scales (a preset or a list) or s_min and s_max")
        scales = default_box_scales(num_maps, s_min, s_max, first_scale)
    scales = [float(s) for s in scales]
    if len(scales) != num_maps + 1:
        raise ValueError(f"{num_maps} maps need {num_maps + 1} scales (the last sizes s'_m), got {scales}")
    return scales


def boxes_per_location(aspect_ratios: list[list[float]]) -> list[int]:
    """2 square boxes + 2 per aspect ratio, for each map: [[2], [2, 3]] -> [4, 6]."""
    return [2 + 2 * len(ratios) for ratios in aspect_ratios]


def default_boxes(map_sizes: list[tuple[int, int]], image_size: tuple[int, int], scales: list[float],
                  aspect_ratios: list[list[float]], steps: list[float] | None = None,
                  clip: bool = True) -> Tensor:
    """All default boxes of an input of ``image_size`` (H, W): float32 [A, 4] cxcywh, fractions.

    map_sizes: (h, w) of each source map.  scales: s_1..s_{m+1}.  aspect_ratios: per map, the
    ratios besides 1 (each adds itself and its inverse).  steps: per map, the cell size in input
    pixels (None: the map tiles the image exactly, step = H / h).
    A = sum_k h_k w_k (2 + 2 |aspect_ratios_k|): 8732 for SSD300, 24564 for SSD512.
    """
    if not len(map_sizes) == len(aspect_ratios) == len(scales) - 1:
        raise ValueError(f"{len(map_sizes)} maps need as many aspect-ratio lists ({len(aspect_ratios)}) "
                         f"and one scale more ({len(scales)})")
    if steps is not None and len(steps) != len(map_sizes):
        raise ValueError(f"{len(map_sizes)} maps need as many steps, got {steps}")
    height, width = image_size
    per_map = []
    for k, (h, w) in enumerate(map_sizes):
        s_k, s_next = scales[k], scales[k + 1]
        sizes = [(s_k, s_k), (math.sqrt(s_k * s_next),) * 2]
        for ratio in aspect_ratios[k]:
            root = math.sqrt(ratio)
            sizes += [(s_k * root, s_k / root), (s_k / root, s_k * root)]
        sizes = torch.tensor(sizes, dtype=torch.float32)                      # [n, 2] (w, h)
        if clip:
            sizes = sizes.clamp(0.0, 1.0)
        cells_x = width / steps[k] if steps is not None else w                # cells across the image
        cells_y = height / steps[k] if steps is not None else h
        cx = ((torch.arange(w) + 0.5) / cells_x).to(torch.float32)          # [w]
        cy = ((torch.arange(h) + 0.5) / cells_y).to(torch.float32)          # [h]
        cy, cx = torch.meshgrid(cy, cx, indexing="ij")                        # [h, w] each
        centres = torch.stack([cx, cy], dim=-1).reshape(-1, 1, 2)             # [h w, 1, 2]
        boxes = torch.cat([centres.expand(-1, len(sizes), 2),
                           sizes.expand(h * w, -1, 2)], dim=-1)               # [h w, n, 4]
        per_map.append(boxes.reshape(-1, 4))
    return torch.cat(per_map)
