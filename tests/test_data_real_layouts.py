"""Issue 20's closing check: ../shared/data re-laid out as users bring it, read by
``dataset=voc`` with nothing but ``dataset.root`` set (layout detected, classes inferred, a split
made where the data has none), counted by ``detbench-dataset``'s ``describe_dataset``.

1. BCCD as LabelImg leaves it: every XML beside its JPEG in one folder (no split);
2. BCCD as Roboflow's VOC export: train/ valid/ test/ (from ImageSets train/val/test);
3. coco_tiny val2017 as VOC XML in images/ + annots/ (crowd objects left out: VOC has none).

Images are symbolic links to the shared files (nothing large is copied); XML is copied or
written. Skipped when ../shared/data is absent (a clone of the project).
"""
from __future__ import annotations

import os
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from experiments.data.coco import COCODetection
from experiments.data.dataset_cli import describe_dataset
from tests.conftest import SHARED_DATA

BCCD_CLASSES = ["Platelets", "RBC", "WBC"]


def shared(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"real data {path} is absent (only in the detbench workspace, not a clone)")
    return path


def bccd_flat(root: Path) -> Path:
    bccd = shared("bccd")
    root.mkdir()
    for xml in sorted((bccd / "Annotations").glob("*.xml")):
        shutil.copy(xml, root / xml.name)
        os.symlink(bccd / "JPEGImages" / f"{xml.stem}.jpg", root / f"{xml.stem}.jpg")
    return root


def bccd_roboflow(root: Path) -> Path:
    bccd = shared("bccd")
    for image_set, folder in (("train", "train"), ("val", "valid"), ("test", "test")):
        (root / folder).mkdir(parents=True)
        for voc_id in (bccd / "ImageSets" / "Main" / f"{image_set}.txt").read_text().split():
            shutil.copy(bccd / "Annotations" / f"{voc_id}.xml", root / folder / f"{voc_id}.xml")
            os.symlink(bccd / "JPEGImages" / f"{voc_id}.jpg", root / folder / f"{voc_id}.jpg")
    return root


def coco_tiny_as_voc(root: Path) -> Path:
    coco = COCODetection(shared("coco_tiny"), "annotations/instances_val2017.json", "val2017")
    (root / "images").mkdir(parents=True)
    (root / "annots").mkdir()
    for r in coco.records:
        os.symlink(r.path, root / "images" / r.path.name)
        ann = ET.Element("annotation")
        ET.SubElement(ann, "filename").text = r.path.name
        size = ET.SubElement(ann, "size")
        ET.SubElement(size, "width").text = str(r.size[1])
        ET.SubElement(size, "height").text = str(r.size[0])
        for box, label, crowd in zip(r.boxes.tolist(), r.labels.tolist(), r.iscrowd.tolist()):
            if crowd:
                continue
            obj = ET.SubElement(ann, "object")
            ET.SubElement(obj, "name").text = coco.class_names[label - 1]
            bndbox = ET.SubElement(obj, "bndbox")
            for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), box):
                ET.SubElement(bndbox, tag).text = repr(value + 1.0)  # VOC is 1-based
        ET.ElementTree(ann).write(root / "annots" / f"{r.path.stem}.xml")
    return root


def describe(compose_config, root: Path, out: Path, split: str = "all") -> dict:
    cfg = compose_config(["dataset=voc", f"dataset.root={root}"])
    return describe_dataset(cfg.dataset, split, out, grid=0, decode_images=False)


def test_bccd_flat_folder(compose_config, tmp_path, capsys):
    stats = describe(compose_config, bccd_flat(tmp_path / "flat"), tmp_path / "out")
    printed = capsys.readouterr().out
    assert stats["images"] == 364 and stats["boxes"] == 4888 and stats["kept_boxes"] == 4886
    assert stats["dropped_by_reason"] == {"zero_area": 2}
    assert stats["classes"] == BCCD_CLASSES
    assert stats["per_class"] == {"Platelets": 361, "RBC": 4153, "WBC": 372}
    assert "flat, split by val_fraction 0.2 (seed 0) of 364 images" in stats["layout"]["train"][0]
    assert stats["image_scan"]["train"]["bad_by_reason"] == {} and "classes (3)" in printed
    val = describe(compose_config, tmp_path / "flat", tmp_path / "out_val", "val")
    assert 0.18 * 364 <= val["images"] <= 0.22 * 364  # stratified: about 20%
    assert set(val["per_class"]) == set(BCCD_CLASSES) and min(val["per_class"].values()) > 0


def test_bccd_roboflow_split_folders(compose_config, tmp_path):
    root = bccd_roboflow(tmp_path / "rf")
    train = describe(compose_config, root, tmp_path / "t", "train")
    val = describe(compose_config, root, tmp_path / "v", "val")
    assert (train["images"], val["images"]) == (205, 87)  # train/ and valid/; test/ left for test
    assert train["classes"] == BCCD_CLASSES
    assert train["boxes"] + val["boxes"] < 4888 and train["layout"]["train"][0].endswith("folder train/")


def test_coco_tiny_as_voc_xml_in_images_and_annots(compose_config, tmp_path):
    stats = describe(compose_config, coco_tiny_as_voc(tmp_path / "ia"), tmp_path / "out")
    assert stats["images"] == 80 and stats["boxes"] == 815 - 11  # crowd objects left out
    assert stats["dropped_boxes"] == 0 and len(stats["classes"]) == 80
    assert "images_annotations" in stats["layout"]["train"][0]
