"""Write (image, Target) samples as a dataset on disk in each supported format.

Used by the round-trip tests (write synthetic samples, load them back, compare) and handy for
exporting the synthetic set to other tools. Images are written as PNG (lossless); box
coordinates are written at full float precision (YOLO's normalised ones with 9 decimals), so
loading back gives the same boxes (YOLO: within 1e-3 px).
"""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from pathlib import Path

import yaml
from torch import Tensor

from detectors.base import Target
from experiments.data.images import save_image

Sample = tuple[Tensor, Target]


def write_voc(root, samples: Iterable[Sample], class_names: Sequence[str],
              image_set: str = "trainval") -> Path:
    """Write ``root/{Annotations, JPEGImages, ImageSets/Main/<image_set>.txt}``.

    VOC ids are the zero-padded image ids; coordinates are written 1-based (x + 1), the
    inverse of what ``VOCDetection`` reads. Appends to an existing image set file.
    """
    root = Path(root)
    ids = []
    for image, target in samples:
        voc_id = f"{target['image_id']:06d}"
        h, w = image.shape[-2:]
        save_image(image, root / "JPEGImages" / f"{voc_id}.png")
        ann = ET.Element("annotation")
        ET.SubElement(ann, "filename").text = f"{voc_id}.png"
        size = ET.SubElement(ann, "size")
        for tag, value in (("width", w), ("height", h), ("depth", 3)):
            ET.SubElement(size, tag).text = str(int(value))
        difficult = target.get("difficult")
        for i, (box, label) in enumerate(zip(target["boxes"].tolist(), target["labels"].tolist())):
            obj = ET.SubElement(ann, "object")
            ET.SubElement(obj, "name").text = class_names[label - 1]
            flag = int(bool(difficult[i])) if difficult is not None else 0
            ET.SubElement(obj, "difficult").text = str(flag)
            bndbox = ET.SubElement(obj, "bndbox")
            for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), box):
                ET.SubElement(bndbox, tag).text = repr(value + 1.0)
        (root / "Annotations").mkdir(parents=True, exist_ok=True)
        ET.ElementTree(ann).write(root / "Annotations" / f"{voc_id}.xml")
        ids.append(voc_id)
    sets = root / "ImageSets" / "Main"
    sets.mkdir(parents=True, exist_ok=True)
    with open(sets / f"{image_set}.txt", "a") as f:
        f.writelines(f"{i}\n" for i in ids)
    return root


def write_coco(root, samples: Iterable[Sample], class_names: Sequence[str],
               annotation_file: str = "annotations/instances.json", image_dir: str = "images",
               category_ids: Sequence[int] | None = None) -> Path:
    """Write ``root/<image_dir>/*.png`` and ``root/<annotation_file>`` (COCO instances JSON).

    category_ids: the COCO id of each class (label i + 1 -> category_ids[i]); default 1..C.
    ``area`` and ``iscrowd`` come from the Targets. Returns the JSON path.
    """
    root = Path(root)
    category_ids = list(category_ids) if category_ids is not None else list(range(1, len(class_names) + 1))
    images, annotations = [], []
    for image, target in samples:
        h, w = image.shape[-2:]
        file_name = f"{target['image_id']:012d}.png"
        save_image(image, root / image_dir / file_name)
        images.append({"id": target["image_id"], "file_name": file_name, "height": int(h),
                       "width": int(w)})
        for box, label, area, crowd in zip(target["boxes"].tolist(), target["labels"].tolist(),
                                           target["area"].tolist(), target["iscrowd"].tolist()):
            x1, y1, x2, y2 = box
            annotations.append({"id": len(annotations) + 1, "image_id": target["image_id"],
                                "category_id": category_ids[label - 1],
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": area,
                                "iscrowd": int(crowd)})
    categories = [{"id": cid, "name": name, "supercategory": "object"}
                  for cid, name in zip(category_ids, class_names)]
    path = root / annotation_file
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"images": images, "annotations": annotations,
                                "categories": categories}))
    return path


def write_yolo_txt(root, samples: Iterable[Sample], class_names: Sequence[str],
                   split: str = "train") -> Path:
    """Write ``root/images/<split>/*.png``, ``root/labels/<split>/*.txt`` and add the split to
    ``root/data.yaml`` (created with ``names`` if absent). Returns the YAML path."""
    root = Path(root)
    for image, target in samples:
        h, w = image.shape[-2:]
        stem = f"{target['image_id']:06d}"
        save_image(image, root / "images" / split / f"{stem}.png")
        lines = []
        for (x1, y1, x2, y2), label in zip(target["boxes"].tolist(), target["labels"].tolist()):
            cx, cy, bw, bh = (x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h
            lines.append(f"{label - 1} {cx:.9f} {cy:.9f} {bw:.9f} {bh:.9f}\n")
        labels = root / "labels" / split / f"{stem}.txt"
        labels.parent.mkdir(parents=True, exist_ok=True)
        labels.write_text("".join(lines))
    path = root / "data.yaml"
    data = yaml.safe_load(path.read_text()) if path.is_file() else {}
    data.update({"path": ".", split: f"images/{split}",
                 "names": {i: n for i, n in enumerate(class_names)}})
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path
