"""Ground truth for ``detbench-predict``'s panels: a COCO annotation file, looked up by image name.

``truth`` (conf/predict.yaml) is ``auto`` (the first run folder's ``ground_truth.json``: its
validation split, written by the eval stage, ``file_name`` relative to the split's images),
a path to any COCO-format annotation JSON, or null (none drawn). An image is matched by its
name relative to the source (``Frame.name``), else by its base name when exactly one annotated
image has it; the annotation's width and height must equal the image's, so a same-named
different image is never drawn over. Boxes are COCO ``[x, y, w, h]`` in pixels -> x1 y1 x2 y2.
"""
from __future__ import annotations

import json
import logging
from collections import defaultdict
from pathlib import Path, PurePosixPath

import torch
from torch import Tensor

log = logging.getLogger(__name__)
AUTO = "auto"


class GroundTruth:
    """The annotated images of one COCO file, looked up by name (see the module doc)."""

    def __init__(self, coco: dict, path: Path):
        self.path = Path(path)
        names = {c["id"]: str(c.get("name", c["id"])) for c in coco.get("categories", [])}
        self.images = {im["id"]: im for im in coco.get("images", []) if im.get("file_name")}
        self.by_name = {PurePosixPath(im["file_name"]).as_posix(): i for i, im in self.images.items()}
        by_base = defaultdict(list)
        for i, im in self.images.items():
            by_base[PurePosixPath(im["file_name"]).name].append(i)
        self.by_base = {name: ids[0] for name, ids in by_base.items() if len(ids) == 1}
        self.boxes = defaultdict(list)
        for a in coco.get("annotations", []):
            x, y, w, h = a["bbox"]
            self.boxes[a["image_id"]].append(([x, y, x + w, y + h], names.get(a["category_id"], str(a["category_id"]))))

    @classmethod
    def load(cls, truth, run_dirs: list[Path]) -> GroundTruth | None:
        """``truth`` as conf/predict.yaml takes it -> the ground truth, or None (none asked or found)."""
        if truth in (None, False, "", "none", "null"):
            return None
        path = Path(run_dirs[0]) / "ground_truth.json" if str(truth) == AUTO else Path(str(truth))
        if not path.is_file():
            if str(truth) == AUTO:
                return None
            raise FileNotFoundError(f"truth: {path} does not exist")
        try:
            coco = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"truth: {path} is not JSON: {error}") from error
        found = cls(coco, path)
        log.info("ground truth drawn (dashed green) for images named in %s (%d images)", path, len(found.images))
        return found

    def of(self, name: str, height: int, width: int) -> tuple[Tensor, list[str]] | None:
        """(boxes float32 [N, 4] x1 y1 x2 y2 in pixels, class names [N]) of the image ``name``
        (H x W), or None when it is not annotated here (or annotated at another size)."""
        image_id = self.by_name.get(PurePosixPath(name).as_posix())
        if image_id is None:
            image_id = self.by_base.get(PurePosixPath(name).name)
        if image_id is None:
            return None
        image = self.images[image_id]
        if (image.get("height"), image.get("width")) not in ((height, width), (None, None)):
            return None
        boxes = self.boxes.get(image_id, [])
        return (torch.tensor([b for b, _ in boxes], dtype=torch.float32).reshape(-1, 4), [n for _, n in boxes])
