"""COCO JSON detection: ``images``, ``annotations`` (``bbox`` as x y w h pixels, ``area``,
``iscrowd``), ``categories`` with ids that may be sparse (COCO's 80 classes use ids 1..90).

Labels are contiguous: the categories sorted by id get labels 1..C, and
``label_to_category_id`` maps back (what the evaluator writes into detections.json). Several
files (the splits) are matched by category NAME, never by id (``_categories``). ``area``
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


def _file_categories(path: Path, data: dict) -> dict[int, str]:
    """{category id: name} of one annotation file; a category without an int id or a name, an
    id given twice, or a name given twice (two ids for one class) is an error naming the file."""
    names: dict[int, str] = {}
    for k, c in enumerate(data["categories"]):
        if not isinstance(c, dict) or not isinstance(c.get("id"), int) or isinstance(c.get("id"), bool):
            raise AnnotationError(f"{path}: category {k} has no int 'id': {c!r}")
        if not isinstance(c.get("name"), str) or not c["name"].strip():
            raise AnnotationError(f"{path}: category {c['id']} has no 'name': {c!r}")
        if names.get(c["id"], c["name"]) != c["name"]:
            raise AnnotationError(f"{path}: category id {c['id']} is given twice, as "
                                  f"{names[c['id']]!r} and {c['name']!r}")
        twice = [cid for cid, name in names.items() if name == c["name"] and cid != c["id"]]
        if twice:
            raise AnnotationError(f"{path}: category name {c['name']!r} is given twice (ids {twice[0]} "
                                  f"and {c['id']}); one class needs one id: merge them in the file")
        names[c["id"]] = c["name"]
    return names


def _categories(files: list[tuple[Path, dict]]) -> list[tuple[int, str]]:
    """The union of the categories of several annotation files, matched by NAME (one file may
    number them differently: val ids +100), as (id, name) sorted by id. A name keeps the id of
    the first file that has it (the train file: so every split writes the same ids); a name
    only in a later file keeps its own id unless the union already uses it (then max + 1).
    One id with two names that neither file shares (a renamed class) is an error."""
    per_file = [(path, _file_categories(path, data)) for path, data in files]
    for k, (path_a, cats_a) in enumerate(per_file):
        for path_b, cats_b in per_file[k + 1:]:
            for cid, name in cats_b.items():   # one id, two names, neither in the other file:
                other = cats_a.get(cid)         # a renamed class, not two classes
                if other not in (None, name) and name not in cats_a.values() and other not in cats_b.values():
                    raise AnnotationError(f"{path_b}: category {cid} is {name!r} but {path_a} calls it "
                                          f"{other!r}, and neither file has the other name; use one name")
    union: dict[str, int] = {}
    for _, cats in per_file:
        for cid, name in cats.items():
            if name not in union:
                union[name] = cid if cid not in union.values() else max(union.values()) + 1
    return sorted((cid, name) for name, cid in union.items())


def _bbox(ann: dict, where: str) -> list[float]:
    bbox = ann.get("bbox")
    if not isinstance(bbox, list) or len(bbox) != 4 or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox):
        raise AnnotationError(f"{where}: 'bbox' must be [x, y, w, h] numbers, got {bbox!r}")
    return [float(v) for v in bbox]


def _image_fields(im, path: Path, k: int) -> tuple[int, str, tuple[int, int]]:
    """(id, file_name, (H, W)) of one 'images' entry; errors name the file and the entry."""
    if not isinstance(im, dict) or not isinstance(im.get("id"), (int, str)) or isinstance(im.get("id"), bool):
        raise AnnotationError(f"{path}: images[{k}] has no 'id': {str(im)[:200]}")
    try:
        size = (int(im["height"]), int(im["width"]))
        file_name = str(im["file_name"])
    except KeyError as err:
        raise AnnotationError(f"{path} image {im.get('id')}: missing {err}") from None
    except (TypeError, ValueError):
        raise AnnotationError(f"{path} image {im['id']}: 'height' / 'width' are not integers: "
                              f"{im.get('height')!r} x {im.get('width')!r}") from None
    return im["id"], file_name, size


class COCODetection(AnnotatedImages):
    """COCO-format detection.

    Args:
        root: the dataset folder; ``annotation_file`` and ``image_dir`` are relative to it
            (or absolute).
        annotation_file: e.g. "annotations/instances_val2017.json".
        image_dir: e.g. "val2017".
        keep_empty_images: keep images that have no annotations (empty Targets).
        category_files: other annotation files of the same dataset (the other splits): the
            label map is built from the union of all their categories, so every split gets the
            same labels even when one lacks a category.
        class_names: None = every category; a list = only these category names (labels in this
            order; an error lists the names found when none matches), others ``unknown_class``.
        split: None = the whole file; "train" / "val" = that part of a seeded split by
            ``val_fraction`` (for a dataset with one annotation file).
        split_files: {"train": [annotation file, image folder], "val": [..., ...]} (what the
            config gives): with ``split`` set, this split's pair is read (and overrides the two
            arguments above), the union of both files' categories is the label map, and a val
            file of None means one annotation file, divided by ``val_fraction``.
        box_policy, bad_images, missing_images, transforms: see ``AnnotatedImages``.
    """

    def __init__(self, root, annotation_file: str = "annotations/instances_val2017.json",
                 image_dir: str = "val2017", keep_empty_images: bool = True,
                 category_files=(), class_names=None, split: str | None = None,
                 split_files: dict | None = None,
                 val_fraction: float = 0.2, split_seed: int = 0,
                 box_policy: str = "clip", bad_images: str = "error",
                 missing_images: str | None = None, transforms=None) -> None:
        super().__init__(box_policy, bad_images, transforms, missing_images=missing_images)
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"COCO root {root.resolve()} does not exist (set dataset.root)")
        divide = None
        if split_files is not None and split is not None:
            train_pair, val_pair = list(split_files["train"]), list(split_files["val"])
            category_files = [f for f in (train_pair[0], val_pair[0]) if f is not None]
            if val_pair[0] is None:
                annotation_file, image_dir, divide = train_pair[0], train_pair[1], split
            else:
                annotation_file, image_dir = (train_pair if split == "train" else val_pair)[:2]
        elif split is not None:
            divide = split
        json_path = root / annotation_file
        data = read_coco_json(json_path)
        listed = [root / f for f in (category_files or []) if f is not None]
        files = [(p, data if p == json_path else read_coco_json(p))
                 for p in (listed if json_path in listed else [json_path, *listed])]
        categories = _categories(files)
        own_names = _file_categories(json_path, data)   # this file's ids -> names
        if class_names is not None:
            class_names = [str(n) for n in class_names]   # a numeric name from the command line
            found = [name for _, name in categories]
            categories = [next((c for c in categories if c[1] == n), (None, n)) for n in class_names]
            if all(cid is None for cid, _ in categories):
                raise AnnotationError(f"{json_path}: none of the class names {list(class_names)} is a "
                                      f"category; the categories are {found}")
            categories = [(cid if cid is not None else -1 - i, n) for i, (cid, n) in enumerate(categories)]
        self.class_names = [name for _, name in categories]
        self.label_to_category_id = {i + 1: cid for i, (cid, _) in enumerate(categories)}
        label_of_name = {name: label + 1 for label, name in enumerate(self.class_names)}
        label_of = {cid: label_of_name[name] for cid, name in own_names.items() if name in label_of_name}

        images = [_image_fields(im, json_path, k) for k, im in enumerate(data["images"])]
        per_image: dict = {image_id: [] for image_id, _, _ in images}
        if len(per_image) != len(images):
            dup = len(images) - len(per_image)
            raise AnnotationError(f"{json_path}: image ids in 'images' are not unique ({dup} repeated)")
        for k, ann in enumerate(data["annotations"]):
            where = f"{json_path} annotation {k} (id {ann.get('id') if isinstance(ann, dict) else '?'})"
            if not isinstance(ann, dict):
                raise AnnotationError(f"{where}: not an object: {ann!r}")
            image_id = ann.get("image_id")
            if not isinstance(image_id, (int, str)) or image_id not in per_image:
                if self.box_policy == "error":
                    raise AnnotationError(f"{where}: image_id {image_id!r} is not in 'images'")
                self.skips.add("unknown_image", where, f"image_id {image_id!r}")
                continue
            category = ann.get("category_id")
            if not isinstance(category, int) or category not in label_of:
                reject_unknown_class(category, self.box_policy, self.skips, where, self.class_names)
                continue
            crowd = ann.get("iscrowd", 0)
            if crowd is None or crowd not in (0, 1):
                if self.box_policy == "error":
                    raise AnnotationError(f"{where}: 'iscrowd' must be 0 or 1, got {crowd!r}")
                self.skips.add("fixed_iscrowd", where, f"iscrowd {crowd!r} read as 0")
                crowd = 0
            per_image[image_id].append((_bbox(ann, where), ann.get("area"), int(crowd),
                                        label_of[category]))

        self.split_info = {"split": split or "whole file", "file": str(json_path)}
        if divide is not None:
            from experiments.data.splits import stratified_split

            keys = [str(i) for i, _, _ in images]
            classes = [{str(a[3]) for a in per_image[i]} for i, _, _ in images]
            train, val = stratified_split(keys, classes, val_fraction, split_seed)
            chosen = set(train if divide == "train" else val)
            images = [im for im in images if str(im[0]) in chosen]
            self.split_info.update(val_fraction=val_fraction, split_seed=split_seed)
        self.image_ids: list = []
        for image_id, file_name, size in images:
            anns = per_image[image_id]
            where = f"{json_path} image {image_id} ({file_name})"
            if not anns and not keep_empty_images:
                self.skips.add("image_no_objects", where, "left out")
                continue
            xywh = np.array([a[0] for a in anns], dtype=np.float64).reshape(-1, 4)
            boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)  # x1y1x2y2
            area = np.array([a[1] if isinstance(a[1], (int, float)) else w * h
                             for a, (_, _, w, h) in zip(anns, xywh)], dtype=np.float64)
            before = len(self.records)
            numeric_id = image_id if isinstance(image_id, int) else len(self.records) + 1
            self.add_image(root / image_dir / file_name, numeric_id, size, boxes,
                           [a[3] for a in anns], where=where, area=area,
                           iscrowd=[a[2] for a in anns])
            if len(self.records) > before:
                self.image_ids.append(image_id)
        self.split_info["ids"] = list(self.image_ids)
        self.skips.log_summary(f"COCO {json_path.name} ({len(self.records)} images)")
