"""COCO JSON detection: ``images``, ``annotations`` (``bbox`` as x y w h pixels, ``area``,
``iscrowd``), ``categories`` with ids that may be sparse (COCO's 80 classes use ids 1..90).

Labels are contiguous: the categories sorted by id get labels 1..C, and
``label_to_category_id`` maps back (what the evaluator writes into detections.json). ``area``
is the annotation's own (segment) area, as COCO's size buckets use it; crowd objects are kept
with ``iscrowd = 1`` (the evaluator ignores them; detectors must not learn them). Images with no
annotations are kept with an empty Target unless ``keep_empty_images=False``.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from experiments.data.annotated import AnnotatedImages
from experiments.data.box_policy import AnnotationError, reject_unknown_class


def read_coco_json(path: Path) -> dict:
    """Load and shape-check a COCO instances file; errors name the file and the problem."""
    if not path.is_file():
        raise FileNotFoundError(f"COCO annotation file {path.resolve()} does not exist")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise AnnotationError(f"{path}: not valid JSON: {err}") from err
    if not isinstance(data, dict):
        raise AnnotationError(f"{path}: expected a JSON object with 'images', 'annotations', "
                              f"'categories', got {type(data).__name__}")
    for key in ("images", "categories"):
        if not isinstance(data.get(key), list):
            raise AnnotationError(f"{path}: missing list '{key}'")
    if not isinstance(data.setdefault("annotations", []), list):
        raise AnnotationError(f"{path}: 'annotations' must be a list")
    return data


class COCODetection(AnnotatedImages):
    """COCO-format detection.

    Args:
        root: the dataset folder; ``annotation_file`` and ``image_dir`` are relative to it
            (or absolute).
        annotation_file: e.g. "annotations/instances_val2017.json".
        image_dir: e.g. "val2017".
        keep_empty_images: keep images that have no annotations (empty Targets).
        box_policy, missing_images, transforms: see ``AnnotatedImages``.
    """

    def __init__(self, root, annotation_file: str = "annotations/instances_val2017.json",
                 image_dir: str = "val2017", keep_empty_images: bool = True,
                 box_policy: str = "clip", missing_images: str = "error", transforms=None) -> None:
        super().__init__(box_policy, missing_images, transforms)
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"COCO root {root.resolve()} does not exist (set dataset.root)")
        json_path = root / annotation_file
        data = read_coco_json(json_path)
        categories = sorted(data["categories"], key=lambda c: c["id"])
        self.class_names = [str(c["name"]) for c in categories]
        self.label_to_category_id = {i + 1: int(c["id"]) for i, c in enumerate(categories)}
        label_of = {cid: label for label, cid in self.label_to_category_id.items()}

        per_image: dict[int, list[dict]] = {int(im["id"]): [] for im in data["images"]}
        if len(per_image) != len(data["images"]):
            raise AnnotationError(f"{json_path}: image ids in 'images' are not unique")
        for k, ann in enumerate(data["annotations"]):
            where = f"{json_path} annotation {k} (id {ann.get('id')})"
            image_id = ann.get("image_id")
            if image_id not in per_image:
                if self.box_policy == "error":
                    raise AnnotationError(f"{where}: image_id {image_id!r} is not in 'images'")
                self.skips.add("unknown_image", where, f"image_id {image_id!r}")
                continue
            if ann.get("category_id") not in label_of:
                reject_unknown_class(ann.get("category_id"), self.box_policy, self.skips, where,
                                     self.class_names)
                continue
            bbox = ann.get("bbox")
            if not isinstance(bbox, list) or len(bbox) != 4:
                raise AnnotationError(f"{where}: 'bbox' must be [x, y, w, h], got {bbox!r}")
            per_image[image_id].append(ann)

        for im in data["images"]:
            anns = per_image[int(im["id"])]
            if not anns and not keep_empty_images:
                self.skips.add("image_no_objects", f"{json_path} image {im['id']}", "left out")
                continue
            try:
                size = (int(im["height"]), int(im["width"]))
                file_name = im["file_name"]
            except KeyError as err:
                raise AnnotationError(f"{json_path} image {im.get('id')}: missing {err}") from None
            xywh = np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)
            boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)  # x1y1x2y2
            area = np.array([a.get("area", w * h) for a, (_, _, w, h) in zip(anns, xywh)],
                            dtype=np.float64)
            self.add_image(root / image_dir / file_name, int(im["id"]), size, boxes,
                           [label_of[a["category_id"]] for a in anns],
                           where=f"{json_path} image {im['id']} ({file_name})", area=area,
                           iscrowd=[int(a.get("iscrowd", 0)) for a in anns])
