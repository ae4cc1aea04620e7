"""Where a Pascal-VOC-XML dataset keeps its files: the layouts ``VOCDetection`` reads.

``layout`` (``dataset.layout``) is one of:

- ``"voc"``: strict VOC, ``root/Annotations/<id>.xml``, ``root/JPEGImages/``, the split as id
  lists ``root/ImageSets/Main/<image_set>.txt``;
- ``"split_folders"``: Roboflow's VOC export, ``root/train/``, ``root/valid/`` (or ``val/``),
  ``root/test/``, each holding images and XML (beside each other, or as below);
- ``"images_annotations"``: sibling folders, images in ``images/`` (or ``JPEGImages/``,
  ``Images/``, ``imgs/``) and XML in ``annotations/`` (or ``Annotations/``, ``annots/``,
  ``labels/``, ``xml/``); no split of its own;
- ``"flat"``: LabelImg's default, every XML beside its image in ``root``; no split of its own;
- ``"auto"`` (default): the first of these that matches, in this order: ``voc`` when
  ``ImageSets/Main`` exists, ``split_folders`` when ``train/`` holds XML, ``images_annotations``,
  ``flat``.

The image of an XML file is its ``<filename>`` in the image folder; when that file does not
exist, the XML's stem with any common image extension (counted as ``image_filename_mismatch``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from experiments.data.images import IMAGE_SUFFIXES

LAYOUTS = ("auto", "voc", "split_folders", "images_annotations", "flat")
ANNOTATION_DIRS = ("Annotations", "annotations", "annots", "labels", "xml")
IMAGE_DIRS = ("JPEGImages", "images", "Images", "imgs")
SPLIT_FOLDERS = {"train": ("train",), "val": ("valid", "val", "validation"), "test": ("test",)}


@dataclass
class XmlFolder:
    """XML files ``xml_dir/*.xml`` whose images are looked up in ``image_dir``."""

    xml_dir: Path
    image_dir: Path

    def xml_files(self) -> list[Path]:
        return sorted(self.xml_dir.glob("*.xml"))


def _has_xml(folder: Path) -> bool:
    return folder.is_dir() and next(folder.glob("*.xml"), None) is not None


def xml_folder(folder: Path) -> XmlFolder | None:
    """The XML + image folders inside ``folder`` (sibling folders, or XML beside images)."""
    for name in ANNOTATION_DIRS:
        if _has_xml(folder / name):
            images = next((folder / d for d in IMAGE_DIRS if (folder / d).is_dir()), folder)
            return XmlFolder(folder / name, images)
    if _has_xml(folder):
        return XmlFolder(folder, folder)
    return None


def detect_layout(root: Path) -> str:
    """The layout of ``root`` under ``"auto"``; FileNotFoundError listing what was looked for."""
    if (root / "ImageSets" / "Main").is_dir() and (root / "Annotations").is_dir():
        return "voc"
    if any(_split_dir(root, "train")) and xml_folder(next(_split_dir(root, "train"))):
        return "split_folders"
    found = xml_folder(root)
    if found is not None:
        return "flat" if found.xml_dir == root else "images_annotations"
    raise FileNotFoundError(
        f"{root}: no VOC XML found: looked for ImageSets/Main + Annotations/ (strict VOC), "
        f"train/ valid/ test/ folders with XML, an XML folder ({', '.join(ANNOTATION_DIRS)}) "
        f"beside an image folder ({', '.join(IMAGE_DIRS)}), or *.xml files in the root")


def _split_dir(root: Path, role: str):
    return (root / name for name in SPLIT_FOLDERS[role] if (root / name).is_dir())


def split_folder(root: Path, role: str) -> tuple[XmlFolder | None, str]:
    """(the XML folder of split ``role`` under a split_folders root, the folder name used).

    A missing val folder falls back to test/ (and the reverse); (None, "") when neither exists:
    the caller then splits train/ by ``val_fraction``.
    """
    order = {"train": ("train",), "val": ("val", "test"), "test": ("test", "val")}[role]
    for r in order:
        for folder in _split_dir(root, r):
            found = xml_folder(folder)
            if found is not None:
                return found, folder.name
    return None, ""


def find_image(image_dir: Path, filename: str, xml_path: Path) -> tuple[Path, bool]:
    """(image path, whether ``<filename>`` was not used) for one XML file.

    ``<filename>`` inside ``image_dir`` wins when it exists (as a relative path or as its base
    name, LabelImg sometimes writes the full path); else the XML's stem with any of
    ``IMAGE_SUFFIXES`` (either case). When nothing exists, the ``<filename>`` path (or stem.jpg)
    is returned so that the missing-image policy names it.
    """
    if filename:
        for candidate in (image_dir / filename, image_dir / Path(filename.replace("\\", "/")).name):
            if candidate.is_file():
                return candidate, False
    for suffix in IMAGE_SUFFIXES:
        for s in (suffix, suffix.upper()):
            candidate = image_dir / f"{xml_path.stem}{s}"
            if candidate.is_file():
                return candidate, bool(filename) and candidate.name != filename
    return image_dir / (filename or f"{xml_path.stem}.jpg"), False
