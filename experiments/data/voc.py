"""Pascal VOC XML: one XML file per image, in any of the layouts of ``voc_layout`` (strict VOC
with ``ImageSets/Main`` id lists, Roboflow's split folders, sibling images/ + annotations/
folders, or XML beside the images).

Classes: ``class_names=None`` infers them from every XML file of the dataset (all splits), sorted
by name (for Pascal VOC itself this is the 20 VOC classes in VOC's order); ``"voc"`` is VOC's
list; a list is used as given, and an error lists the classes found when none of them occurs.
Splits: strict VOC reads ``image_set``; split folders read ``train/``, ``valid/`` or ``val/``,
``test/``; data without a split of its own is split by ``val_fraction`` (seeded, stratified by
class, see ``experiments.data.splits``). ``split_info`` says which and lists the ids.

Coordinates: VOC's ``xmin ymin xmax ymax`` are 1-based pixel indices; like py-faster-rcnn and
lufficc/SSD we subtract 1 from all four, so boxes are 0-based pixels x1 y1 x2 y2 with the
annotated width ``xmax - xmin`` (a box with xmin == xmax stays zero-size and is dropped).
``difficult`` objects are kept, flagged in ``Target['difficult']`` so the VOC metric can ignore
them (``keep_difficult=False`` leaves them out instead).
"""
from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from experiments.data.annotated import AnnotatedImages
from experiments.data.box_policy import AnnotationError, reject_unknown_class
from experiments.data.splits import stratified_split
from experiments.data.voc_layout import LAYOUTS, detect_layout, find_image, split_folder, xml_folder

log = logging.getLogger(__name__)
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


def _xml_size(tree: ET.Element) -> tuple[int, int] | None:
    """(H, W) from ``<size>``, or None when it is absent, not a number, NaN or <= 0."""
    try:
        w, h = float(tree.findtext("size/width", "")), float(tree.findtext("size/height", ""))
    except ValueError:
        return None
    if not (np.isfinite(w) and np.isfinite(h) and w > 0 and h > 0):
        return None
    return int(h), int(w)


def parse_xml(path: Path) -> ET.Element:
    """The XML's root with every namespace taken off its tags (``<annotation xmlns=...>``
    then reads like plain VOC: ``{uri}object`` becomes ``object``)."""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as err:
        raise AnnotationError(f"{path}: not valid XML: {err}") from err
    for node in root.iter():
        if isinstance(node.tag, str) and node.tag.startswith("{"):
            node.tag = node.tag.split("}", 1)[1]
    return root


def object_names(tree: ET.Element, where: str) -> list[str]:
    return [_text(obj, "name", f"{where} object {k}") for k, obj in enumerate(tree.iter("object"))]


class VOCDetection(AnnotatedImages):
    """Pascal VOC XML detection (VOC, BCCD, LabelImg and Roboflow exports).

    Args:
        root: a dataset folder or a list of them (see :func:`voc_roots`).
        image_set: strict layout only: the ``ImageSets/Main`` list(s) to read in every root
            ("trainval", "test", or a list such as ["trainval", "test"]).
        class_names: None = inferred (sorted), "voc" = the 20 VOC classes, or a list (label
            i + 1 = class_names[i]). Objects of other classes are dropped (``unknown_class``).
        years: optional VOC years when ``root`` is a VOCdevkit folder.
        keep_difficult: keep ``difficult`` objects (flagged) or leave them out.
        image_dir: the images folder name inside each strict-VOC root.
        layout: see ``experiments.data.voc_layout`` ("auto" detects it).
        split: "train", "val" or "test": which part of a layout without ``ImageSets`` to read.
        val_fraction, split_seed: the automatic split of data that has no split of its own.
        box_policy, bad_images, missing_images, transforms: see ``AnnotatedImages``.
    """

    def __init__(self, root, image_set: str | Sequence[str] = "trainval",
                 class_names: Sequence[str] | str | None = None, years=None,
                 keep_difficult: bool = True, image_dir: str = "JPEGImages",
                 layout: str = "auto", split: str = "train", val_fraction: float = 0.2,
                 split_seed: int = 0, box_policy: str = "clip", bad_images: str = "error",
                 missing_images: str | None = None, transforms=None) -> None:
        super().__init__(box_policy, bad_images, transforms, missing_images=missing_images)
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        if split not in ("train", "val", "test"):
            raise ValueError(f"split must be train, val or test, got {split!r}")
        self.keep_difficult = keep_difficult
        self._trees: dict[Path, ET.Element] = {}
        entries, pool, sources = [], [], []
        for r in voc_roots(root, years):
            found = detect_layout(r) if layout == "auto" else layout
            e, p, source = self._entries(r, found, image_set, image_dir, split, val_fraction,
                                         split_seed)
            entries += e
            pool += p
            sources.append(f"{r}: {found}, {source}")
        if class_names is None:
            names = sorted({n for xml, _, _ in pool for n in object_names(self._tree(xml), str(xml))})
            log.info("classes inferred from %d XML files: %s", len(pool), names)
        else:
            names = list(VOC_CLASSES) if class_names == "voc" else [str(n) for n in class_names]  # 7: "7"
        self.class_names = names
        self.label_to_category_id = {i + 1: i + 1 for i in range(len(names))}
        self.image_ids: list[str] = []  # the id (XML path relative to its root, no suffix) of each record
        self.split_info = {"split": split, "layout": sources}
        if any("val_fraction" in source for source in sources):
            self.split_info.update(val_fraction=val_fraction, split_seed=split_seed)
        label_of = {name: i + 1 for i, name in enumerate(names)}
        found_names: set[str] = set()
        for xml_path, image_path, key in self._claim_images(entries):
            found_names.update(self._read_annotation(xml_path, image_path, key, label_of))
        if class_names is not None and found_names and not found_names & set(names):
            raise AnnotationError(f"{sources}: none of the class names {names} occurs in the "
                                  f"annotations; the classes found are {sorted(found_names)}")
        self.split_info["ids"] = list(self.image_ids)
        self.skips.log_summary(f"VOC {split} ({len(self.records)} images)")

    def _tree(self, xml_path: Path) -> ET.Element:
        if xml_path not in self._trees:
            self._trees[xml_path] = parse_xml(xml_path)
        return self._trees[xml_path]

    def _entries(self, root: Path, layout: str, image_set, image_dir: str, split: str,
                 val_fraction: float, seed: int):
        """(this split's (xml, image folder, id) triples, the whole dataset's, how it was split)."""
        if layout == "voc":
            ann = root / "Annotations"
            ids = [i for s in _as_list(image_set) for i in self._read_image_set(root, str(s))]
            mine = [(ann / f"{i}.xml", root / image_dir, i) for i in ids]
            for xml, _, _ in mine:
                if not xml.is_file():
                    raise FileNotFoundError(f"VOC annotation {xml} does not exist")
            pool = [(x, root / image_dir, x.stem) for x in sorted(ann.glob("*.xml"))]
            return mine, pool, f"image sets {list(map(str, _as_list(image_set)))}"
        if layout == "split_folders":
            folders = {r: split_folder(root, r) for r in ("train", "val", "test")}
            distinct = {name: f for f, name in folders.values() if f is not None}
            pool = [(x, f.image_dir, f"{name}/{x.stem}") for name, f in distinct.items()
                    for x in f.xml_files()]
            has_held_out = folders["val"][0] is not None
            folder, name = folders[split]
            if folder is not None and has_held_out:
                return ([(x, folder.image_dir, f"{name}/{x.stem}") for x in folder.xml_files()],
                        pool, f"folder {name}/")
            folder, name = folders["train"]
            if folder is None:
                raise FileNotFoundError(f"{root}: no train/ folder with XML (layout split_folders)")
            candidates = [(x, folder.image_dir, f"{name}/{x.stem}") for x in folder.xml_files()]
        else:
            folder = xml_folder(root)
            if folder is None or (layout == "flat") != (folder.xml_dir == root):
                raise FileNotFoundError(f"{root}: no XML files for layout {layout!r}")
            candidates = [(x, folder.image_dir, x.stem) for x in folder.xml_files()]
            pool = candidates
        keys = [k for _, _, k in candidates]
        classes = [set(object_names(self._tree(x), str(x))) for x, _, _ in candidates]
        train, val = stratified_split(keys, classes, val_fraction, seed)
        chosen = set(train if split == "train" else val)
        return ([c for c in candidates if c[2] in chosen], pool,
                f"split by val_fraction {val_fraction} (seed {seed}) of {len(candidates)} images")

    def _read_image_set(self, root: Path, image_set: str) -> list[str]:
        path = root / "ImageSets" / "Main" / f"{image_set}.txt"
        if not path.is_file():
            raise FileNotFoundError(f"VOC image set {path} does not exist")
        # Lines are "<id>" or, in per-class lists, "<id> <flag>"; keep the id, once.
        ids = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
        unique = list(dict.fromkeys(ids))
        if len(unique) < len(ids):
            self.skips.add("image_duplicate_id", str(path), f"{len(ids) - len(unique)} id(s) listed "
                           "more than once, read once", n=len(ids) - len(unique))
        return unique

    def _claim_images(self, entries):
        """(xml, image path, id) per XML; an image claimed by two XML files keeps the one whose
        stem matches the image's (else the first), the others are counted and left out."""
        resolved, claims = [], {}
        for xml_path, image_dir, key in entries:
            filename = (self._tree(xml_path).findtext("filename") or "").strip()
            image_path, mismatch = find_image(image_dir, filename, xml_path)
            if mismatch:
                self.skips.add("fixed_filename_mismatch", str(xml_path),
                               f"<filename> {filename!r} not found, used {image_path.name}")
            resolved.append((xml_path, image_path, key))
            claims.setdefault(image_path, []).append(xml_path)
        winners = {img: next((x for x in xs if x.stem == img.stem), xs[0]) for img, xs in claims.items()}
        for xml_path, image_path, key in resolved:
            if winners[image_path] != xml_path:
                self.skips.add("image_claimed_twice", str(xml_path),
                               f"its image {image_path.name} is also claimed by {winners[image_path]}")
                continue
            yield xml_path, image_path, key

    def _read_annotation(self, xml_path: Path, image_path: Path, key: str,
                         label_of: dict[str, int]) -> set[str]:
        """Add the record of one XML file; returns the class names it holds."""
        where = str(xml_path)
        tree = self._tree(xml_path)
        size = _xml_size(tree)
        if size is None:  # no <size>, 0x0, nan or text: read the image header instead
            size = self.header_size(image_path, where)
            if size is None:
                return set()
            self.skips.add("fixed_size_from_image", where, f"<size> missing or invalid, {size} (HxW) "
                           "from the image header")
        boxes, labels, difficult, names = [], [], [], set()
        for k, obj in enumerate(tree.iter("object")):
            name = _text(obj, "name", f"{where} object {k}")
            names.add(name)
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
        before = len(self.records)
        self.add_image(image_path, len(self.records) + 1, size, np.array(boxes).reshape(-1, 4),
                       labels, where, difficult=difficult)
        if len(self.records) > before:
            self.image_ids.append(key)
        return names
