"""The shared body of every file-backed dataset (VOC, COCO, YOLO txt).

A format's loader parses its annotation files ONCE, in its constructor, into one
:class:`ImageRecord` per image (boxes already checked by the box policy, so every drop is
counted exactly once, in the main process). ``__getitem__`` then only decodes the image file,
builds the Target from the record and applies ``transforms``.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from detectors.base import Target, validate_target
from experiments.data.base import DetectionDataset
from experiments.data.box_policy import apply_box_policy, check_policy
from experiments.data.images import ImageFileError, exif_orientation, image_size, load_image

BAD_IMAGE_POLICIES = ("error", "skip", "repair")
log = logging.getLogger(__name__)


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
        bad_images: what a missing, zero-byte, truncated, undecodable or wrong-extension image
            file does (``experiments.data.scan`` finds them before training):
            "error" (default): an error naming the file, at construction (missing) or at the
            pre-flight scan / first decode; "skip": the image is left out and counted
            (``image_<reason>``); "repair": truncated files are decoded as far as Pillow can
            (``ImageFile.LOAD_TRUNCATED_IMAGES``), wrong extensions are read by their content,
            files that cannot be repaired (missing, empty, undecodable) are skipped.
            A decode that fails later, in training or evaluation, follows the same policy:
            under skip / repair the next image is served instead, the file is counted in
            ``skips`` and appended to ``decode_log`` (a file the runner sets, so counts from
            DataLoader workers reach metrics.json); the run goes on.
        missing_images: the older name of ``bad_images`` (used when given).
        transforms: called as ``transforms(image, target) -> (image, target)``.
    """

    def __init__(self, box_policy: str = "clip", bad_images: str = "error",
                 transforms=None, missing_images: str | None = None) -> None:
        super().__init__()
        self.box_policy = check_policy(box_policy)
        bad_images = missing_images if missing_images is not None else bad_images
        if bad_images not in BAD_IMAGE_POLICIES:
            raise ValueError(f"bad_images must be one of {BAD_IMAGE_POLICIES}, got {bad_images!r}")
        self.bad_images = bad_images
        self.transforms = transforms
        self.records: list[ImageRecord] = []
        self.decode_log: Path | None = None

    def header_size(self, path: Path, where: str) -> tuple[int, int] | None:
        """(H, W) from the image header; None (counted) when unreadable and the policy skips."""
        try:
            return image_size(path)
        except (ImageFileError, FileNotFoundError) as err:
            if self.bad_images == "error":
                raise ImageFileError(f"{where}: {err}") from err
            kind = "image_missing" if isinstance(err, FileNotFoundError) else "image_undecodable"
            self.skips.add(kind, where, str(err))
            return None

    def add_image(self, path: Path, image_id: int, size: tuple[int, int], boxes,
                  labels, where: str, area=None, iscrowd=None, difficult=None) -> None:
        """Apply the box policy to ``boxes`` [N, 4] x1 y1 x2 y2 pixels and store the record.

        area: None = box area (after clipping); else the format's own area (COCO segments).
        """
        if not path.is_file():
            if self.bad_images == "error":
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

    def drop_records(self, paths: set[Path], reason_of: dict[Path, str]) -> None:
        """Leave out the records of ``paths`` (bad files found by the pre-flight scan), counted
        as ``image_<reason>``."""
        kept = []
        for r in self.records:
            if r.path in paths:
                self.skips.add(f"image_{reason_of[r.path]}", str(r.path), "left out (bad_images)")
            else:
                kept.append(r)
        keep_ids = getattr(self, "image_ids", None)
        if keep_ids is not None and len(keep_ids) == len(self.records):
            self.image_ids = [i for i, r in zip(keep_ids, self.records) if r.path not in paths]
        self.records = kept
        info = getattr(self, "split_info", None)
        if isinstance(info, dict) and "ids" in info:  # split.json lists what is used
            info["ids"] = list(self.image_ids) if keep_ids is not None else [str(r.path) for r in kept]

    def _load(self, index: int) -> Tensor:
        r = self.records[index]
        image = load_image(r.path, repair=self.bad_images == "repair")  # [3, H, W] in [0, 1]
        if tuple(image.shape[-2:]) == tuple(r.size)[::-1] and exif_orientation(r.path) in (5, 6, 7, 8):
            # annotated as displayed (rotated by its EXIF tag): see experiments.data.images
            image = load_image(r.path, repair=self.bad_images == "repair", exif=True)
        if tuple(image.shape[-2:]) != tuple(r.size):
            raise ImageFileError(
                f"image file {r.path} is {image.shape[-1]}x{image.shape[-2]} (WxH) but its "
                f"annotation says {r.size[1]}x{r.size[0]}")
        return image

    def _decode_failed(self, index: int, err: Exception) -> None:
        path = self.records[index].path
        self.skips.add("image_decode_failed", str(path), str(err))
        log.warning("bad_images=%s: %s; serving the next image instead", self.bad_images, err)
        if self.decode_log is not None:
            line = f"{path}\t{type(err).__name__}: {err}".replace("\n", " ") + "\n"
            fd = os.open(self.decode_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)

    def __getitem__(self, index: int) -> tuple[Tensor, Target]:
        for attempt in range(len(self.records)):
            i = (index + attempt) % len(self.records)
            try:
                image = self._load(i)
                break
            except (ImageFileError, FileNotFoundError) as err:
                if self.bad_images == "error":
                    raise
                self._decode_failed(i, err)
        else:
            raise ImageFileError(f"no image of this dataset ({len(self.records)}) could be decoded")
        r = self.records[i]
        target = self.get_target(i)
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        validate_target(target, tuple(image.shape[-2:]), self.num_classes, where=str(r.path))
        return image, target
