"""The shared body of every file-backed dataset (VOC, COCO, YOLO txt).

A format's loader parses its annotation files ONCE, in its constructor, into one
:class:`ImageRecord` per image (boxes already checked by the box policy, so every drop is
counted exactly once, in the main process). ``__getitem__`` then only decodes the image file,
builds the Target from the record and applies ``transforms``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from detectors.base import Target, validate_target
from experiments.data.base import DetectionDataset
from experiments.data.box_policy import apply_box_policy, check_policy
from experiments.data.images import ImageFileError, load_image

MISSING_IMAGE_POLICIES = ("error", "skip")


@dataclass
class ImageRecord:
    """One image's parsed annotation.

    path: the image file.  image_id: unique int within the dataset.
    size: (H, W) the boxes were checked against (from the annotation, or the file header).
    boxes float32 [N, 4] x1 y1 x2 y2 pixels; labels int64 [N] in 1..C; area float32 [N] pixels²;
    iscrowd int64 [N]; difficult bool [N] or None when the format has no such flag.
    """

    path: Path
    image_id: int
    size: tuple[int, int]
    boxes: np.ndarray
    labels: np.ndarray
    area: np.ndarray
    iscrowd: np.ndarray
    difficult: np.ndarray | None = None


class AnnotatedImages(DetectionDataset):
    """Base of the file-backed datasets. Subclasses parse their format in ``__init__`` and call
    :meth:`add_image` once per image.

    Args (shared by every subclass):
        box_policy: "clip" | "drop" | "error", see ``experiments.data.box_policy``.
        missing_images: "error" (default: FileNotFoundError naming the file, at construction)
            or "skip" (the image is left out and counted as ``image_missing``).
        transforms: called as ``transforms(image, target) -> (image, target)``.
    """

    def __init__(self, box_policy: str = "clip", missing_images: str = "error",
                 transforms=None) -> None:
        super().__init__()
        self.box_policy = check_policy(box_policy)
        if missing_images not in MISSING_IMAGE_POLICIES:
            raise ValueError(f"missing_images must be one of {MISSING_IMAGE_POLICIES}, "
                             f"got {missing_images!r}")
        self.missing_images = missing_images
        self.transforms = transforms
        self.records: list[ImageRecord] = []

    def add_image(self, path: Path, image_id: int, size: tuple[int, int], boxes,
                  labels, where: str, area=None, iscrowd=None, difficult=None) -> None:
        """Apply the box policy to ``boxes`` [N, 4] x1 y1 x2 y2 pixels and store the record.

        area: None = box area (after clipping); else the format's own area (COCO segments).
        """
        if not path.is_file():
            if self.missing_images == "error":
                raise FileNotFoundError(f"{where}: image file {path} does not exist")
            self.skips.add("image_missing", where, f"image file {path} does not exist")
            return
        n = len(labels)
        boxes, keep = apply_box_policy(np.asarray(boxes, dtype=np.float64).reshape(n, 4), size,
                                       self.box_policy, self.skips, where)
        boxes = boxes[keep].astype(np.float32)
        box_area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        area = box_area if area is None else np.asarray(area, dtype=np.float32).reshape(n)[keep]
        if not np.isfinite(area).all() or (area < 0).any():
            bad = ~np.isfinite(area) | (area < 0)
            area = np.where(bad, box_area, area).astype(np.float32)
            self.skips.add("clipped_area", where, f"{int(bad.sum())} invalid area value(s) "
                           "replaced by the box area")
        iscrowd = np.zeros(n, np.int64) if iscrowd is None else np.asarray(iscrowd, np.int64)
        self.records.append(ImageRecord(
            path=path, image_id=image_id, size=size, boxes=boxes,
            labels=np.asarray(labels, dtype=np.int64).reshape(n)[keep],
            area=area.astype(np.float32), iscrowd=iscrowd.reshape(n)[keep],
            difficult=None if difficult is None else np.asarray(difficult, bool).reshape(n)[keep]))

    def __len__(self) -> int:
        return len(self.records)

    def get_target(self, index: int) -> Target:
        """The Target of image ``index`` without decoding the image (what stats use)."""
        r = self.records[index]
        target = Target(boxes=torch.from_numpy(r.boxes.copy()),
                        labels=torch.from_numpy(r.labels.copy()), image_id=int(r.image_id),
                        area=torch.from_numpy(r.area.copy()),
                        iscrowd=torch.from_numpy(r.iscrowd.copy()))
        if r.difficult is not None:
            target["difficult"] = torch.from_numpy(r.difficult.copy())
        return target

    def __getitem__(self, index: int) -> tuple[Tensor, Target]:
        r = self.records[index]
        image = load_image(r.path)  # [3, H, W] in [0, 1]
        if tuple(image.shape[-2:]) != tuple(r.size):
            raise ImageFileError(
                f"image file {r.path} is {image.shape[-1]}x{image.shape[-2]} (WxH) but its "
                f"annotation says {r.size[1]}x{r.size[0]}")
        target = self.get_target(index)
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        validate_target(target, tuple(image.shape[-2:]), self.num_classes, where=str(r.path))
        return image, target
