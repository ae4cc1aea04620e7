"""Issue 20, data as users bring it: VOC XML in loose layouts (detected, overridable), images
found by <filename> or the XML's stem, automatic seeded stratified splits, inferred classes,
and one class map for every split."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from detectors.base import Target
from experiments.data.box_policy import AnnotationError
from experiments.data.coco import COCODetection
from experiments.data.splits import split_fingerprint, stratified_split
from experiments.data.voc import VOCDetection
from experiments.data.voc_layout import detect_layout
from experiments.data.writers import write_coco, write_voc

pytestmark = pytest.mark.usefixtures("one_torch_thread")
NAMES = ["cat", "dog", "eel"]


def sample(image_id: int, labels: list[int], size=(24, 32)) -> tuple[torch.Tensor, Target]:
    n = len(labels)
    boxes = torch.tensor([[1.0 + i, 2.0, 10.0 + i, 12.0] for i in range(n)]).reshape(n, 4)
    g = torch.Generator().manual_seed(image_id)
    return torch.rand(3, *size, generator=g), Target(
        boxes=boxes, labels=torch.tensor(labels, dtype=torch.int64), image_id=image_id,
        area=torch.ones(n), iscrowd=torch.zeros(n, dtype=torch.int64))


def strict_voc(root: Path, count: int = 10) -> Path:
    # eel (label 3) is rare: 2 of the 10 images hold one
    samples = [sample(i, [1 + i % 2] + ([3] if i in (3, 8) else [])) for i in range(1, count + 1)]
    return write_voc(root, samples, NAMES)


def relayout(voc: Path, root: Path, layout: str) -> Path:
    """Copy a strict VOC folder into a loose layout."""
    xmls = sorted((voc / "Annotations").glob("*.xml"))
    for k, xml in enumerate(xmls):
        image = voc / "JPEGImages" / f"{xml.stem}.png"
        if layout == "flat":
            xml_dir = image_dir = root
        elif layout == "images_annotations":
            xml_dir, image_dir = root / "annots", root / "images"
        else:  # split_folders: 6 train, 2 valid, 2 test
            part = "train" if k < 6 else "valid" if k < 8 else "test"
            xml_dir = image_dir = root / part
        xml_dir.mkdir(parents=True, exist_ok=True)
        image_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy(xml, xml_dir / xml.name)
        shutil.copy(image, image_dir / image.name)
    return root


def all_targets(ds) -> list[tuple[str, list, list]]:
    return sorted((Path(r.path).name, r.boxes.tolist(), r.labels.tolist()) for r in ds.records)


@pytest.mark.parametrize("layout", ["flat", "images_annotations", "split_folders"])
def test_loose_layouts_read_the_same_boxes_as_strict_voc(tmp_path, layout):
    voc = strict_voc(tmp_path / "voc")
    root = relayout(voc, tmp_path / layout, layout)
    assert detect_layout(root) == layout and detect_layout(voc) == "voc"
    reference = all_targets(VOCDetection(voc, "trainval", NAMES))
    train, val = (VOCDetection(root, class_names=NAMES, split=s) for s in ("train", "val"))
    parts = all_targets(train) + all_targets(val)
    if layout == "split_folders":  # valid/ is the val split, test/ is left out
        test = VOCDetection(root, class_names=NAMES, split="test")
        parts += all_targets(test)
        assert (len(train), len(val), len(test)) == (6, 2, 2)
        assert train.split_info["layout"][0].endswith("split_folders, folder train/")
    else:  # no split of its own: 20% to val, seeded, at least one image of each class stratum
        # (strata by rarest class: eel {3, 8}, dog {1, 5, 7, 9}, cat {2, 4, 6, 10}: 1 + 1 + 1)
        assert (len(train), len(val)) == (7, 3)
        assert "val_fraction 0.2" in train.split_info["layout"][0]
    assert sorted(parts) == reference
    assert not set(train.split_info["ids"]) & set(val.split_info["ids"])
    # The layout can be forced; a wrong one says what it looked for.
    assert len(VOCDetection(root, class_names=NAMES, split="train", layout=layout)) == len(train)
    with pytest.raises(FileNotFoundError, match="image sets|does not exist"):
        VOCDetection(root, class_names=NAMES, layout="voc")


def test_split_folders_without_valid_split_train_by_fraction(tmp_path):
    root = relayout(strict_voc(tmp_path / "voc"), tmp_path / "rf", "split_folders")
    shutil.rmtree(root / "valid")
    shutil.rmtree(root / "test")
    train, val = (VOCDetection(root, class_names=NAMES, split=s) for s in ("train", "val"))
    # train/ holds images 1..6; strata eel {3}, dog {1, 5}, cat {2, 4, 6}: 0 + 1 + 1 to val
    assert (len(train), len(val)) == (4, 2) and "val_fraction" in val.split_info["layout"][0]


def test_stratified_split_is_seeded_disjoint_and_keeps_rare_classes_on_both_sides():
    keys = [f"im{i:03d}" for i in range(100)]
    classes = [{"common"} | ({"rare"} if i % 25 == 0 else set()) for i in range(100)]
    train, val = stratified_split(keys, classes, 0.2, seed=0)
    assert len(val) == 20 and len(train) == 80 and not set(train) & set(val)
    assert sorted(train + val) == keys
    rare = {k for k, c in zip(keys, classes) if "rare" in c}
    assert rare & set(val) and rare & set(train)  # 4 rare images: 1 to val, 3 to train
    assert stratified_split(keys, classes, 0.2, seed=0) == (train, val)
    other = stratified_split(keys, classes, 0.2, seed=1)
    assert other != (train, val)
    assert split_fingerprint(train, val) != split_fingerprint(*other)
    with pytest.raises(ValueError, match="val_fraction"):
        stratified_split(keys, classes, 1.0, seed=0)


def test_image_found_by_stem_when_filename_is_stale_and_double_claims(tmp_path):
    voc = strict_voc(tmp_path / "voc", 3)
    root = relayout(voc, tmp_path / "flat", "flat")
    xml = root / "000001.xml"
    xml.write_text(xml.read_text().replace("<filename>000001.png", "<filename>IMG_0001.JPG"))
    # 000003.xml claims 000002's image: the XML whose stem matches keeps it
    xml3 = root / "000003.xml"
    xml3.write_text(xml3.read_text().replace("<filename>000003.png", "<filename>000002.png"))
    ds = VOCDetection(root, class_names=NAMES, val_fraction=0.01, split="train")
    names = sorted(r.path.name for r in ds.records)
    assert names == ["000001.png", "000002.png"]
    assert ds.skips.counts["fixed_filename_mismatch"] == 1
    assert ds.skips.counts["image_claimed_twice"] == 1
    assert "000003.xml" in ds.skips.examples["image_claimed_twice"][0]


def test_duplicate_ids_in_an_image_set_are_read_once_and_counted(tmp_path):
    voc = strict_voc(tmp_path / "voc", 3)
    listing = voc / "ImageSets" / "Main" / "trainval.txt"
    listing.write_text(listing.read_text() + "000002\n000002\n")
    ds = VOCDetection(voc, "trainval", NAMES)
    assert len(ds) == 3 and ds.skips.counts["image_duplicate_id"] == 2


@pytest.mark.parametrize("size_xml", ["", "<size><width>nan</width><height>24</height></size>",
                                      "<size><width>0</width><height>0</height></size>",
                                      "<size><width>wide</width><height>24</height></size>"])
def test_xml_without_a_usable_size_takes_it_from_the_image(tmp_path, size_xml):
    voc = strict_voc(tmp_path / "voc", 1)
    xml = voc / "Annotations" / "000001.xml"
    text = xml.read_text()
    start, end = text.index("<size>"), text.index("</size>") + len("</size>")
    xml.write_text(text[:start] + size_xml + text[end:])
    ds = VOCDetection(voc, "trainval", NAMES)
    assert ds.records[0].size == (24, 32) and ds.skips.counts["fixed_size_from_image"] == 1
    image, target = ds[0]
    assert image.shape == (3, 24, 32) and len(target["boxes"]) == 1


def test_inferred_classes_come_from_every_split(tmp_path):
    root = relayout(strict_voc(tmp_path / "voc"), tmp_path / "rf", "split_folders")
    # eel (images 3 and 8) is in train/ and valid/ only; inference reads test/ as well
    train, test = (VOCDetection(root, split=s) for s in ("train", "test"))
    assert train.class_names == test.class_names == NAMES
    with pytest.raises(AnnotationError, match=r"classes found are \['cat', 'dog'"):
        VOCDetection(root, split="test", class_names=["RBC", "WBC"])


# ---- COCO: one label map for both splits ---------------------------------------------------
def test_coco_category_missing_from_train_keeps_the_same_labels(tmp_path):
    train_path = write_coco(tmp_path, [sample(1, [1, 3])], NAMES, "annotations/train.json", "train")
    write_coco(tmp_path, [sample(2, [1, 2, 3])], NAMES, "annotations/val.json", "val")
    data = json.loads(train_path.read_text())
    data["categories"] = [c for c in data["categories"] if c["name"] != "dog"]  # train lacks 'dog'
    train_path.write_text(json.dumps(data))
    alone = COCODetection(tmp_path, "annotations/train.json", "train")
    assert alone.class_names == ["cat", "eel"]  # the shift the issue describes, without the map
    files = {"train": ["annotations/train.json", "train"], "val": ["annotations/val.json", "val"]}
    train, val = (COCODetection(tmp_path, split=s, split_files=files) for s in ("train", "val"))
    assert train.class_names == val.class_names == NAMES
    assert train.label_to_category_id == val.label_to_category_id
    eel = NAMES.index("eel") + 1
    assert train.get_target(0)["labels"].tolist() == [1, eel]
    assert val.get_target(0)["labels"].tolist() == [1, 2, eel]
    data["categories"][0]["name"] = "kitten"  # the same id named differently: an error
    train_path.write_text(json.dumps(data))
    with pytest.raises(AnnotationError, match="category 1 is 'cat' but .*train.json calls it 'kitten'"):
        COCODetection(tmp_path, split="train", split_files=files)


def test_coco_single_file_is_split_by_val_fraction(tmp_path):
    write_coco(tmp_path, [sample(i, [1 + i % 3]) for i in range(1, 11)], NAMES)
    files = {"train": ["annotations/instances.json", "images"], "val": [None, None]}
    train, val = (COCODetection(tmp_path, split=s, split_files=files) for s in ("train", "val"))
    assert len(train) + len(val) == 10 and len(val) == 3  # one per class stratum (3 strata)
    assert not set(train.image_ids) & set(val.image_ids)


def test_coco_class_names_select_categories_or_list_the_found_ones(tmp_path):
    write_coco(tmp_path, [sample(1, [1, 2, 3])], NAMES)
    ds = COCODetection(tmp_path, "annotations/instances.json", "images", class_names=["eel", "cat"])
    assert ds.class_names == ["eel", "cat"] and ds.get_target(0)["labels"].tolist() == [2, 1]
    assert ds.skips.counts["unknown_class"] == 1
    with pytest.raises(AnnotationError, match=r"categories are \['cat', 'dog', 'eel'\]"):
        COCODetection(tmp_path, "annotations/instances.json", "images", class_names=["RBC"])


def test_exif_orientation_stored_frame_and_displayed_frame(tmp_path):
    """A 20x30 (HxW) stored JPEG with EXIF orientation 6 (displayed rotated, 30x20): annotated
    in the stored frame (size 20x30) it loads as stored; annotated as displayed (size 30x20) it
    loads rotated, and the bright square lies under the box in both."""
    stored = np.zeros((20, 30, 3), np.uint8)
    stored[2:8, 20:28] = 255  # a bright block near the top-right corner, as stored
    exif = Image.Exif()
    exif[0x0112] = 6
    for frame in ("stored", "displayed"):
        root = tmp_path / frame
        root.mkdir()
        Image.fromarray(stored).save(root / "a.jpg", exif=exif, quality=100)
        # orientation 6: displayed = stored rotated 90 degrees clockwise, stored (r, c) is
        # displayed (c, 19 - r); boxes are written 1-based, as VOC does
        h, w, box = (20, 30, (21, 3, 29, 9)) if frame == "stored" else (30, 20, (13, 21, 19, 29))
        (root / "a.xml").write_text(
            f"<annotation><filename>a.jpg</filename><size><width>{w}</width><height>{h}</height>"
            f"</size><object><name>sq</name><bndbox><xmin>{box[0]}</xmin><ymin>{box[1]}</ymin>"
            f"<xmax>{box[2]}</xmax><ymax>{box[3]}</ymax></bndbox></object></annotation>")
        (root / "b.xml").write_text((root / "a.xml").read_text().replace("a.jpg", "b.jpg"))
        Image.fromarray(stored).save(root / "b.jpg", exif=exif, quality=100)
        ds = VOCDetection(root, split="train", val_fraction=0.4)
        image, target = ds[0]
        assert image.shape == (3, h, w), frame
        x1, y1, x2, y2 = target["boxes"][0].round().int().tolist()
        assert image[:, y1:y2, x1:x2].mean() > 0.95, frame  # the square is under its box
        assert image.mean() < 0.2, frame
