"""YOLO txt detection in the Ultralytics layout.

A data YAML names the classes and the splits::

    path: .                 # dataset folder; relative = relative to the YAML's folder
    train: images/train     # a folder of images, a .txt list of image paths, or a list of these
    val: images/val
    names: {0: RBC, 1: WBC} # or a list [RBC, WBC]

Each image ``.../images/<sub>/<stem>.<ext>`` has its labels in ``.../labels/<sub>/<stem>.txt``,
one object per line: ``class cx cy w h`` normalised to [0, 1] by the image's width and height
(a polygon line ``class x1 y1 x2 y2 ...`` is turned into its enclosing box, as Ultralytics
does). An image without a label file, or with an empty one, has no objects. Labels are the
class index + 1.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from experiments.data.annotated import AnnotatedImages
from experiments.data.box_policy import AnnotationError, reject_unknown_class
from experiments.data.images import IMAGE_SUFFIXES


def read_data_yaml(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"YOLO data YAML {path.resolve()} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise AnnotationError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(data, dict) or "names" not in data:
        raise AnnotationError(f"{path}: expected a mapping with 'names' (and the splits)")
    names = data["names"]
    if isinstance(names, dict):
        if not all(isinstance(k, int) and not isinstance(k, bool) for k in names) \
                or sorted(names) != list(range(len(names))):
            raise AnnotationError(f"{path}: 'names' as a mapping must have the int keys "
                                  f"0..{len(names) - 1}, got {list(names)}")
        names = [names[k] for k in sorted(names)]
    if not isinstance(names, list) or not all(isinstance(n, (str, int)) for n in names):
        raise AnnotationError(f"{path}: 'names' must be a list of class names or a map "
                              f"{{0: name, 1: name, ...}}, got {names!r}")
    data["names"] = [str(n) for n in names]
    return data


def label_path(image_path: Path) -> Path:
    """Ultralytics' rule: the last ``images`` folder in the path becomes ``labels``."""
    parts = list(image_path.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


def list_images(base: Path, entry: str, data_yaml: Path) -> list[Path]:
    """Images named by one split entry: a folder (searched recursively) or a .txt list."""
    path = Path(entry) if Path(entry).is_absolute() else base / entry
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if path.is_file() and path.suffix == ".txt":
        lines = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
        return [Path(ln) if Path(ln).is_absolute() else (base / ln).resolve() for ln in lines]
    raise FileNotFoundError(f"{data_yaml}: split entry {entry!r} -> {path.resolve()} is neither "
                            "a folder nor a .txt list of images")


def parse_label_file(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(class indices int [N], boxes cx cy w h normalised float [N, 4]); malformed lines raise
    AnnotationError naming the file and line. Class indices are checked by the caller."""
    classes, boxes = [], []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        values = line.split()
        if not values:
            continue
        try:
            numbers = [float(v) for v in values]
        except ValueError:
            raise AnnotationError(f"{path}:{n}: not numbers: {line!r}") from None
        cls = numbers[0]
        if not np.isfinite(cls) or cls != int(cls):
            raise AnnotationError(f"{path}:{n}: class index {values[0]!r} is not an integer")
        coords = np.array(numbers[1:], dtype=np.float64)
        if len(coords) == 4:
            box = coords
        elif len(coords) >= 6 and len(coords) % 2 == 0:  # polygon x1 y1 x2 y2 ... (normalised)
            xs, ys = coords[0::2], coords[1::2]
            box = np.array([(xs.min() + xs.max()) / 2, (ys.min() + ys.max()) / 2,
                            xs.max() - xs.min(), ys.max() - ys.min()])
        else:
            raise AnnotationError(f"{path}:{n}: expected 'class cx cy w h' (or a polygon), "
                                  f"got {len(values)} values")
        classes.append(int(cls))
        boxes.append(box)
    return np.array(classes, dtype=np.int64), np.array(boxes, dtype=np.float64).reshape(-1, 4)


class YoloTxtDetection(AnnotatedImages):
    """YOLO txt detection (Ultralytics layout).

    Args:
        root: the folder holding ``data_yaml`` (and, by default, the dataset).
        split: the data YAML key to read: "train", "val" or "test".
        data_yaml: the data YAML's file name inside ``root`` (or an absolute path).
        val_fraction, split_seed: when given (the config gives 0.2) and the YAML has no ``val``
            (or it is null), "train" and "val" are the two parts of a seeded split of
            ``train``'s images, stratified by class (``experiments.data.splits``).
        box_policy, bad_images, missing_images, transforms: see ``AnnotatedImages``. A class
            index outside ``names`` is an ``unknown_class`` box.
    """

    def __init__(self, root, split: str = "train", data_yaml: str = "data.yaml",
                 val_fraction: float | None = None, split_seed: int = 0,
                 box_policy: str = "clip", bad_images: str = "error",
                 missing_images: str | None = None, transforms=None) -> None:
        super().__init__(box_policy, bad_images, transforms, missing_images=missing_images)
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"YOLO txt root {root.resolve()} does not exist (set dataset.root)")
        yaml_path = root / data_yaml
        data = read_data_yaml(yaml_path)
        self.class_names = [str(n) for n in data["names"]]   # numeric names read as text
        self.label_to_category_id = {i + 1: i + 1 for i in range(len(self.class_names))}
        base = Path(data.get("path") or ".")
        base = base if base.is_absolute() else yaml_path.parent / base
        divide = (val_fraction is not None and split in ("train", "val") and data.get("val") is None
                  and data.get("train") is not None)
        key = "train" if divide else split
        if key not in data or data[key] is None:
            raise AnnotationError(f"{yaml_path}: no split {split!r} (has {sorted(data)})")
        entries = data[key] if isinstance(data[key], list) else [data[key]]
        images = [p for e in entries for p in list_images(base, str(e), yaml_path)]
        self.split_info = {"split": split, "entries": [str(e) for e in entries]}
        if divide:
            from experiments.data.splits import stratified_split

            def classes_of(image_path: Path) -> set[str]:
                labels = label_path(image_path)
                return {ln.split()[0] for ln in labels.read_text().splitlines() if ln.split()} \
                    if labels.is_file() else set()

            keys = [str(p) for p in images]
            train, val = stratified_split(keys, [classes_of(p) for p in images], val_fraction, split_seed)
            chosen = set(train if split == "train" else val)
            images = [p for p in images if str(p) in chosen]
            self.split_info.update(source=f"split of {key} by val_fraction {val_fraction} (seed {split_seed})")
        for image_path in images:
            self._read_labels(image_path)
        self.split_info["ids"] = [str(r.path) for r in self.records]
        self.skips.log_summary(f"YOLO {split} ({len(self.records)} images)")

    def _read_labels(self, image_path: Path) -> None:
        labels_file = label_path(image_path)
        where = str(labels_file)
        if not image_path.is_file():
            self.add_image(image_path, len(self.records) + 1, (1, 1), np.zeros((0, 4)), [], where)
            return  # add_image raised or counted the missing image
        size = self.header_size(image_path, str(image_path))
        if size is None:
            return
        h, w = size
        if labels_file.is_file():
            classes, cxcywh = parse_label_file(labels_file)
        else:
            self.skips.add("fixed_no_label_file", str(image_path), f"no {labels_file.name}: no objects")
            classes, cxcywh = np.zeros(0, np.int64), np.zeros((0, 4))
        known = (classes >= 0) & (classes < len(self.class_names))
        for c in classes[~known]:
            reject_unknown_class(int(c), self.box_policy, self.skips, where, self.class_names)
        classes, cxcywh = classes[known], cxcywh[known]
        scale = np.array([w, h, w, h], dtype=np.float64)
        centre, half = cxcywh[:, :2], cxcywh[:, 2:] / 2
        boxes = np.concatenate([centre - half, centre + half], axis=1) * scale  # x1y1x2y2 px
        self.add_image(image_path, len(self.records) + 1, (h, w), boxes, classes + 1, where)
