"""External region proposals: how R-CNN and Fast R-CNN receive the boxes they classify.

Detectors read no files, so the proposals of an image reach them through a *proposal source*
given to the constructor: any callable ``source(images, fresh=False) -> list[Tensor]`` taking
the contract's images (float [3, H, W] in [0, 1], any sizes) and returning, per image, float32
[P, 4] x1 y1 x2 y2 boxes in that image's pixels, best first (P may be 0). ``fresh=True`` asks
for proposals computed now rather than read from a cache: what the speed protocol times.
``experiments.studies.proposals.SelectiveSearchProposals`` is the paper's source (OpenCV's
selective search, cached on disk); ``FixedProposals`` here serves boxes given in advance
(tests, or proposals precomputed elsewhere) and ``SlidingWindows`` a torch-only grid.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torchvision.ops import box_area, clip_boxes_to_image, remove_small_boxes

#: source(images, fresh=False) -> per image float32 [P, 4] x1y1x2y2 in its pixels, best first.
ProposalSource = Callable[..., list[Tensor]]


def take_proposals(source: ProposalSource | None, images: list[Tensor], limit: int,
                   fresh: bool = False) -> list[Tensor]:
    """The first ``limit`` usable proposals of each image (clipped to it, boxes under 1 px
    dropped): list of float32 [P_i, 4] in the pixels of the images as given, P_i <= limit."""
    if source is None:
        raise ValueError("this detector classifies external proposals and was built without a proposal "
                         "source: pass proposals= (experiments.studies.proposals.SelectiveSearchProposals, "
                         "or detectors.region_proposals.FixedProposals)")
    boxes = source(images, fresh=fresh)
    if len(boxes) != len(images):
        raise ValueError(f"proposal source gave {len(boxes)} box sets for {len(images)} images")
    out = []
    for image, b in zip(images, boxes):
        b = torch.as_tensor(b, dtype=torch.float32, device=image.device).reshape(-1, 4)
        b = clip_boxes_to_image(b, tuple(image.shape[-2:]))
        out.append(b[remove_small_boxes(b, 1.0)][:limit])
    return out


class FixedProposals:
    """Serves ``boxes[image_id]``-style fixed proposals: ``boxes`` is a list (one [P, 4] per
    call position, repeated for every call) or a function image -> [P, 4]."""

    def __init__(self, boxes: list[Tensor] | Callable[[Tensor], Tensor]) -> None:
        self.boxes = boxes

    def __call__(self, images: list[Tensor], fresh: bool = False) -> list[Tensor]:
        if callable(self.boxes):
            return [self.boxes(image) for image in images]
        return [self.boxes[i % len(self.boxes)] for i in range(len(images))]


class SlidingWindows:
    """A torch-only, data-free proposal source: square and 2:1 / 1:2 windows of ``sizes``
    (pixels) at a stride of half their side, largest first. Not the papers' (they used
    selective search); for builds without OpenCV and for tests."""

    def __init__(self, sizes: tuple[int, ...] = (32, 64, 128), ratios: tuple[float, ...] = (0.5, 1.0, 2.0)) -> None:
        self.sizes, self.ratios = tuple(sizes), tuple(ratios)

    def __call__(self, images: list[Tensor], fresh: bool = False) -> list[Tensor]:
        return [self.windows(int(im.shape[-2]), int(im.shape[-1])) for im in images]

    def windows(self, height: int, width: int) -> Tensor:
        boxes = []
        for size in sorted(self.sizes, reverse=True):
            for ratio in self.ratios:                      # ratio = height / width
                h, w = size * ratio ** 0.5, size / ratio ** 0.5
                ys = torch.arange(0, max(height - h, 0) + 1, max(h / 2, 1))
                xs = torch.arange(0, max(width - w, 0) + 1, max(w / 2, 1))
                y, x = torch.meshgrid(ys, xs, indexing="ij")
                boxes.append(torch.stack([x, y, x + w, y + h], -1).reshape(-1, 4))
        boxes = torch.cat(boxes) if boxes else torch.zeros(0, 4)
        return boxes[box_area(boxes) > 0].float()
