"""Pascal VOC: one XML file per image (``Annotations/``), images in ``JPEGImages/``, splits as
id lists in ``ImageSets/Main/<image_set>.txt``.

Coordinates: VOC's ``xmin ymin xmax ymax`` are 1-based pixel indices; like py-faster-rcnn and
lufficc/SSD we subtract 1 from all four, so boxes are 0-based pixels x1 y1 x2 y2 with the
annotated width ``xmax - xmin`` (a box with xmin == xmax stays zero-size and is dropped).
``difficult`` objects are kept, flagged in ``Target['difficult']`` so the VOC metric can ignore
them (``keep_difficult=False`` leaves them out instead).
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from experiments.data.annotated import AnnotatedImages
from experiments.data.box_policy import AnnotationError, reject_unknown_class
from experiments.data.images import image_size

VOC_CLASSES = ["aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
               "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
               "sheep", "sofa", "train", "tvmonitor"]


def _as_list(value) -> list:
    if value is None:
        return []
    if isinstance(value, (str, Path, int)):
        return [value]
    return list(value)


def voc_roots(root, years=None) -> list[Path]:
    """The VOC folders (each holding Annotations/, JPEGImages/, ImageSets/) to read.

    root: one folder or a list (VOC07+12: [VOCdevkit/VOC2007, VOCdevkit/VOC2012]).
    years: optional; each root is then a VOCdevkit and ``root/VOC<year>`` is read per year.
    """
    roots = [Path(r) for r in _as_list(root)]
    if not roots:
        raise ValueError("VOCDetection needs a root (dataset.root)")
    if years is not None:
        roots = [r / f"VOC{y}" for r in roots for y in _as_list(years)]
    for r in roots:
        if not r.is_dir():
            raise FileNotFoundError(f"VOC root {r.resolve()} does not exist (set dataset.root)")
    return roots


def _text(node: ET.Element, tag: str, where: str) -> str:
    child = node.find(tag)
    if child is None or child.text is None or not child.text.strip():
        raise AnnotationError(f"{where}: missing <{tag}>")
    return child.text.strip()


def _number(node: ET.Element, tag: str, where: str) -> float:
    text = _text(node, tag, where)
    try:
        return float(text)  # "nan" parses and is then dropped by the box policy
    except ValueError:
        raise AnnotationError(f"{where}: <{tag}> is not a number: {text!r}") from None


class VOCDetection(AnnotatedImages):
    """Pascal VOC detection (also BCCD and any labelImg export in the VOC layout).

    Args:
        root: a VOC folder or a list of them (see :func:`voc_roots`).
        image_set: the ``ImageSets/Main`` list(s) to read in every root: "trainval", "test",
            or a list such as ["trainval", "test"].
        class_names: the classes, label i + 1 = class_names[i]; None = the 20 VOC classes.
            Objects of other classes are dropped (counted as ``unknown_class``).
        years: optional VOC years when ``root`` is a VOCdevkit folder.
        keep_difficult: keep ``difficult`` objects (flagged) or leave them out.
        image_dir: the images folder name inside each root.
        box_policy, missing_images, transforms: see ``AnnotatedImages``.
    """

    def __init__(self, root, image_set: str | Sequence[str] = "trainval",
                 class_names: Sequence[str] | None = None, years=None,
                 keep_difficult: bool = True, image_dir: str = "JPEGImages",
                 box_policy: str = "clip", missing_images: str = "error", transforms=None) -> None:
        super().__init__(box_policy, missing_images, transforms)
        self.class_names = list(class_names) if class_names is not None else list(VOC_CLASSES)
        self.label_to_category_id = {i + 1: i + 1 for i in range(len(self.class_names))}
        self.keep_difficult = keep_difficult
        self.image_ids: list[str] = []  # the VOC id of each record, e.g. "2008_000123"
        label_of = {name: i + 1 for i, name in enumerate(self.class_names)}
        for r in voc_roots(root, years):
            for image_set_name in _as_list(image_set):
                for voc_id in self._read_image_set(r, str(image_set_name)):
                    self._read_annotation(r, voc_id, image_dir, label_of)

    @staticmethod
    def _read_image_set(root: Path, image_set: str) -> list[str]:
        path = root / "ImageSets" / "Main" / f"{image_set}.txt"
        if not path.is_file():
            raise FileNotFoundError(f"VOC image set {path} does not exist")
        # Lines are "<id>" or, in per-class lists, "<id> <flag>"; keep the id.
        return [line.split()[0] for line in path.read_text().splitlines() if line.strip()]

    def _read_annotation(self, root: Path, voc_id: str, image_dir: str,
                         label_of: dict[str, int]) -> None:
        xml_path = root / "Annotations" / f"{voc_id}.xml"
        where = str(xml_path)
        if not xml_path.is_file():
            raise FileNotFoundError(f"VOC annotation {xml_path} does not exist")
        try:
            tree = ET.parse(xml_path).getroot()
        except ET.ParseError as err:
            raise AnnotationError(f"{where}: not valid XML: {err}") from err
        filename = (tree.findtext("filename") or "").strip()
        image_path = root / image_dir / (filename or f"{voc_id}.jpg")
        if not image_path.is_file() and (root / image_dir / f"{voc_id}.jpg").is_file():
            image_path = root / image_dir / f"{voc_id}.jpg"  # <filename> without extension or stale
        size_node = tree.find("size")
        size = None
        if size_node is not None:
            w, h = int(_number(size_node, "width", where)), int(_number(size_node, "height", where))
            size = (h, w) if w > 0 and h > 0 else None
        if size is None:  # some exports write 0x0: read the image header instead
            size = image_size(image_path) if image_path.is_file() else (1, 1)
        boxes, labels, difficult = [], [], []
        for k, obj in enumerate(tree.iter("object")):
            name = _text(obj, "name", f"{where} object {k}")
            is_difficult = obj.findtext("difficult", "0").strip() in ("1", "true")
            if is_difficult and not self.keep_difficult:
                continue
            if name not in label_of:
                reject_unknown_class(name, self.box_policy, self.skips, where, self.class_names)
                continue
            bndbox = obj.find("bndbox")
            if bndbox is None:
                raise AnnotationError(f"{where} object {k}: missing <bndbox>")
            boxes.append([_number(bndbox, t, f"{where} object {k}") - 1.0
                          for t in ("xmin", "ymin", "xmax", "ymax")])
            labels.append(label_of[name])
            difficult.append(is_difficult)
        self.add_image(image_path, len(self.records) + 1, size, np.array(boxes).reshape(-1, 4),
                       labels, where, difficult=difficult)
        if len(self.image_ids) < len(self.records):
            self.image_ids.append(voc_id)
