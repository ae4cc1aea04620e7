"""The embedded default dataset: coloured shapes on textured, noisy backgrounds.

No files are needed. Every image is generated from its own seed, derived from
(seed, split, index), so the same arguments always give the same images and the train, val
and test splits never share an image.

Objects are filled shapes (``CLASS_NAMES``) whose extent is exactly their box: boxes are
integer pixel edges ``x1, y1, x2, y2`` (the shape covers the pixels whose centres lie inside
it) and ``area`` is the box area in pixels². Object sizes are drawn so that COCO's three size
buckets are about equally full at 300x300: small (area < 32²), medium and large (> 96²).
Objects are painted one over another, and a new object is only accepted if it leaves every
earlier object at least ``min_visible`` of its pixels, so occlusion is partial.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from detectors.base import Target
from experiments.data.base import DetectionDataset

CLASS_NAMES = ["circle", "square", "triangle", "diamond", "cross"]
SPLITS = {"train": 0, "val": 1, "test": 2}
# Side lengths (pixels) of the square with the same area, per COCO size bucket.
SIDE_RANGES = {"small": (10.0, 31.0), "medium": (33.0, 94.0), "large": (98.0, 190.0)}


def shape_mask(label: int, height: int, width: int) -> Tensor:
    """Boolean [height, width] mask of shape ``label`` (1-based into CLASS_NAMES) filling a
    height x width box, evaluated at pixel centres, normalised so the box is [-1, 1]²."""
    ys = (torch.arange(height, dtype=torch.float32) + 0.5) / height * 2 - 1  # [h]
    xs = (torch.arange(width, dtype=torch.float32) + 0.5) / width * 2 - 1  # [w]
    y, x = ys[:, None], xs[None, :]  # [h, 1], [1, w]
    name = CLASS_NAMES[label - 1]
    if name == "circle":
        mask = x * x + y * y <= 1.0
    elif name == "square":
        mask = torch.ones(height, width, dtype=torch.bool)
    elif name == "triangle":  # apex at the top centre, base along the bottom edge
        mask = x.abs() <= (y + 1) / 2
    elif name == "diamond":
        mask = x.abs() + y.abs() <= 1.0
    elif name == "cross":
        mask = (x.abs() <= 0.34) | (y.abs() <= 0.34)
    else:
        raise ValueError(f"unknown shape label {label}")
    mask = mask.expand(height, width).clone()
    # Every shape contains its central column, and its central row (the triangle: its base);
    # setting them makes the pixel extent equal the box even where sampling at pixel centres
    # misses a thin apex or corner.
    mask[:, width // 2] = True
    mask[height - 1 if name == "triangle" else height // 2, :] = True
    return mask


def textured_background(size: tuple[int, int], generator: torch.Generator) -> Tensor:
    """float [3, H, W] in [0, 1]: a dull base colour, smooth blotches, stripes and noise.

    Cheap by design (about 0.3 ms at 300x300 on one core), so that data generation never
    starves CPU training. Blotches are a bilinear upsample (align_corners=False) of a 4x4 grid
    and stripes ``sin(a·y + b·x) = sin(a·y)·cos(b·x) + cos(a·y)·sin(b·x)``; both are sums of
    outer products of per-row and per-column vectors, so each channel of base + blotches +
    stripes is one rank-6 product ``rows [H, 6] @ core [6, 6] @ cols [6, W]`` (the bilinear
    weights of a row sum to 1, so adding the base colour to the grid adds it everywhere).
    The pixel noise is a random window of a fixed noise tile."""
    h, w = size
    base = 0.25 + 0.5 * torch.rand(3, 1, 1, generator=generator)
    base = base.mean(0, keepdim=True) * 0.6 + base * 0.4  # desaturate, [3, 1, 1]
    grid = (torch.rand(3, 4, 4, generator=generator) - 0.5) * 0.35 + base  # [3, 4, 4]
    angle = float(torch.rand(1, generator=generator)) * math.pi
    period = 6 + 20 * float(torch.rand(1, generator=generator))
    scale = 2 * math.pi / period
    phase_y = torch.arange(h, dtype=torch.float32) * (math.sin(angle) * scale)  # [H]
    phase_x = torch.arange(w, dtype=torch.float32) * (math.cos(angle) * scale)  # [W]
    rows = torch.cat([bilinear_weights(h, 4), phase_y.sin()[:, None], phase_y.cos()[:, None]], 1)
    cols = torch.cat([bilinear_weights(w, 4), phase_x.cos()[:, None], phase_x.sin()[:, None]], 1)
    core = torch.zeros(3, 6, 6)
    core[:, :4, :4] = grid
    core[:, 4, 4] = core[:, 5, 5] = 0.06  # stripe amplitude
    image = rows @ core @ cols.T  # [3, H, W]
    tile = _noise_tile(h, w)
    dy = int(torch.randint(0, tile.shape[1] - h + 1, (1,), generator=generator))
    dx = int(torch.randint(0, tile.shape[2] - w + 1, (1,), generator=generator))
    image += tile[:, dy:dy + h, dx:dx + w]
    return image.clamp_(0, 1)


_NOISE_TILES: dict[tuple[int, int], Tensor] = {}
_BILINEAR: dict[tuple[int, int], Tensor] = {}


def bilinear_weights(n_out: int, n_in: int) -> Tensor:
    """float [n_out, n_in] W with ``W @ v`` the 1-D linear upsample of v (align_corners=False,
    as ``F.interpolate``): output pixel i samples the input at (i + 0.5) · n_in / n_out - 0.5,
    clamped to the first and last input pixels."""
    key = (n_out, n_in)
    if key not in _BILINEAR:
        src = ((torch.arange(n_out, dtype=torch.float64) + 0.5) * (n_in / n_out) - 0.5).clamp(min=0)
        lo = src.floor().long().clamp(max=n_in - 1)  # [n_out]
        hi = (lo + 1).clamp(max=n_in - 1)
        frac = src - lo
        weights = torch.zeros(n_out, n_in, dtype=torch.float64)
        weights[torch.arange(n_out), lo] += 1 - frac
        weights[torch.arange(n_out), hi] += frac
        _BILINEAR[key] = weights.to(torch.float32)
    return _BILINEAR[key]


def _noise_tile(h: int, w: int) -> Tensor:
    """A fixed float [3, 2H, 2W] tile of N(0, 0.05²) noise (seed 0), made once per size."""
    key = (h, w)
    if key not in _NOISE_TILES:
        g = torch.Generator().manual_seed(0)
        _NOISE_TILES[key] = 0.05 * torch.randn(3, 2 * h, 2 * w, generator=g)
    return _NOISE_TILES[key]


class SyntheticShapes(DetectionDataset):
    """Coloured shapes of ``len(CLASS_NAMES)`` classes, ``min_objects..max_objects`` per image.

    Args:
        num_images: images in this split.
        image_size: side of the square images (pixels), or (H, W).
        seed: the dataset seed; the same seed gives the same images.
        split: "train", "val" or "test"; splits never share images.
        min_objects, max_objects: objects per image (fewer if no placement leaves enough of
            the others visible).
        min_visible: fraction of each object's pixels that must stay visible.
        transforms: called as ``transforms(image, target) -> (image, target)``.
    """

    def __init__(self, num_images: int, image_size: int | tuple[int, int] = 300, seed: int = 0,
                 split: str = "train", min_objects: int = 2, max_objects: int = 6,
                 min_visible: float = 0.6, transforms=None) -> None:
        super().__init__()
        if split not in SPLITS:
            raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
        if num_images < 0 or not 1 <= min_objects <= max_objects:
            raise ValueError("need num_images >= 0 and 1 <= min_objects <= max_objects")
        self.num_images = num_images
        self.image_size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        self.seed, self.split = seed, split
        self.min_objects, self.max_objects = min_objects, max_objects
        self.min_visible = min_visible
        self.transforms = transforms
        self.class_names = list(CLASS_NAMES)
        self.label_to_category_id = {i + 1: i + 1 for i in range(len(CLASS_NAMES))}

    def __len__(self) -> int:
        return self.num_images

    def image_seed(self, index: int) -> int:
        return (self.seed * len(SPLITS) + SPLITS[self.split]) * 1_000_003 + index

    def __getitem__(self, index: int) -> tuple[Tensor, Target]:
        if not 0 <= index < self.num_images:
            raise IndexError(index)
        image, target = self.generate(index)
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target

    def generate(self, index: int) -> tuple[Tensor, Target]:
        """The un-augmented image float [3, H, W] and its Target (boxes x1y1x2y2 pixels)."""
        g = torch.Generator().manual_seed(self.image_seed(index))
        h, w = self.image_size
        image = textured_background((h, w), g)
        owner = torch.zeros(h, w, dtype=torch.int64)  # [H, W] 0 = background, k = object k
        pixels: list[int] = []  # each accepted object's full pixel count
        visible = torch.zeros(self.max_objects + 1, dtype=torch.int64)  # [1 + K] pixels in view
        boxes, labels = [], []
        wanted = int(torch.randint(self.min_objects, self.max_objects + 1, (1,), generator=g))
        for _ in range(wanted * 4):  # bounded retries
            if len(boxes) == wanted:
                break
            label = int(torch.randint(1, len(CLASS_NAMES) + 1, (1,), generator=g))
            bw, bh = self._draw_size(g)
            bw, bh = min(bw, w), min(bh, h)
            x1 = int(torch.randint(0, w - bw + 1, (1,), generator=g))
            y1 = int(torch.randint(0, h - bh + 1, (1,), generator=g))
            mask = shape_mask(label, bh, bw)  # [bh, bw]
            region = owner[y1:y1 + bh, x1:x1 + bw]  # a view
            # pixels of each earlier object (and of the background, slot 0) under the mask;
            # slot 1 + K counts the pixels outside the mask
            under = torch.where(mask, region, len(visible)).flatten()
            lost = torch.bincount(under, minlength=len(visible) + 1)[:-1]  # [1 + K]
            if pixels:
                remaining = (visible - lost)[1:len(pixels) + 1].float() / torch.tensor(pixels)
                if (remaining < self.min_visible).any():
                    continue
            colour = self._draw_colour(g)  # [3, 1, 1]
            shade = 1 - 0.15 * torch.rand(1, bh, bw, generator=g)
            patch = image[:, y1:y1 + bh, x1:x1 + bw]
            patch.copy_(torch.where(mask, colour * shade, patch))
            region.masked_fill_(mask, len(pixels) + 1)
            visible -= lost
            pixels.append(int(mask.sum()))
            visible[len(pixels)] = pixels[-1]
            boxes.append([x1, y1, x1 + bw, y1 + bh])
            labels.append(label)
        boxes_t = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
        area = (boxes_t[:, 2] - boxes_t[:, 0]) * (boxes_t[:, 3] - boxes_t[:, 1])
        target = Target(boxes=boxes_t, labels=torch.tensor(labels, dtype=torch.int64),
                        image_id=index, area=area,
                        iscrowd=torch.zeros(len(labels), dtype=torch.int64))
        return image, target

    @staticmethod
    def _draw_size(g: torch.Generator) -> tuple[int, int]:
        """(width, height) in pixels: a size bucket, a side within it, an aspect ratio in
        [1/2, 2] that keeps the area inside the bucket. Large objects are drawn a little more
        often because they are the ones most often refused for occluding others."""
        bucket_weights = torch.tensor([0.3, 0.32, 0.38])  # small, medium, large
        bucket = ("small", "medium", "large")[int(torch.multinomial(bucket_weights, 1, generator=g))]
        lo, hi = SIDE_RANGES[bucket]
        side = lo + (hi - lo) * float(torch.rand(1, generator=g))
        ratio = 2 ** (float(torch.rand(1, generator=g)) * 2 - 1)  # w / h in [1/2, 2]
        bw, bh = side * math.sqrt(ratio), side / math.sqrt(ratio)
        return max(4, round(bw)), max(4, round(bh))

    @staticmethod
    def _draw_colour(g: torch.Generator) -> Tensor:
        """A saturated colour float [3, 1, 1]: one channel high, one low, one anywhere."""
        order = torch.randperm(3, generator=g)
        colour = torch.empty(3)
        colour[order[0]] = 0.75 + 0.25 * float(torch.rand(1, generator=g))
        colour[order[1]] = 0.15 * float(torch.rand(1, generator=g))
        colour[order[2]] = float(torch.rand(1, generator=g))
        return colour[:, None, None]
