"""Issue 28, data rows: no input class may give a run that looks right and is wrong.

VOC XML with a namespace keeps its boxes; COCO files that number one class differently are
matched by name (a name twice is refused); a class the user names with no box in train is an
error listing the classes there; an image whose file size differs from its annotation is found
by the header scan before training (and counted when skipped); numeric class names are text."""
from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from detectors.base import Target
from experiments.data.box_policy import AnnotationError
from experiments.data.coco import COCODetection
from experiments.data.images import ImageFileError
from experiments.data.prepare import DataError, prepare_datasets
from experiments.data.scan import apply_bad_image_policy, scan_images
from experiments.data.voc import VOCDetection
from experiments.data.writers import write_coco, write_voc

NAMES = ["RBC", "WBC", "Platelets"]


def sample(image_id: int, labels=(1, 2, 3)) -> tuple[torch.Tensor, Target]:
    boxes = torch.tensor([[2.0 + 10 * k, 3.0, 9.0 + 10 * k, 12.0] for k in range(len(labels))])
    return torch.zeros(3, 24, 40), Target(
        boxes=boxes, labels=torch.tensor(labels), image_id=image_id,
        area=(boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]),
        iscrowd=torch.zeros(len(labels), dtype=torch.int64))


def test_voc_xml_with_a_namespace_keeps_its_boxes(tmp_path):
    write_voc(tmp_path, [sample(1)], NAMES)
    xml = tmp_path / "Annotations" / "000001.xml"
    xml.write_text(xml.read_text().replace("<annotation>", '<annotation xmlns="http://example.org/voc">'))
    ds = VOCDetection(tmp_path, "trainval", NAMES)
    assert ds.get_target(0)["labels"].tolist() == [1, 2, 3]
    assert VOCDetection(tmp_path, "trainval").class_names == sorted(NAMES)   # inferred through it too


def test_coco_splits_numbering_one_class_differently_share_labels(tmp_path):
    write_coco(tmp_path, [sample(1)], NAMES, "train.json", "train", category_ids=[1, 2, 3])
    write_coco(tmp_path, [sample(2, (3, 1))], NAMES, "val.json", "val", category_ids=[103, 101, 102])
    files = {"train": ["train.json", "train"], "val": ["val.json", "val"]}
    train = COCODetection(tmp_path, split="train", split_files=files)
    val = COCODetection(tmp_path, split="val", split_files=files)
    assert train.class_names == val.class_names == NAMES          # 3 classes, not 6
    assert train.label_to_category_id == val.label_to_category_id == {1: 1, 2: 2, 3: 3}
    # val calls RBC 103 and Platelets 102 (train: 1 and 3): read by name, labels 3 and 1
    assert val.get_target(0)["labels"].tolist() == [3, 1]


def test_coco_one_name_twice_is_refused(tmp_path):
    path = write_coco(tmp_path, [sample(1)], NAMES)
    data = json.loads(path.read_text())
    data["categories"].append({"id": 9, "name": "WBC"})
    path.write_text(json.dumps(data))
    with pytest.raises(AnnotationError, match="'WBC' is given twice"):
        COCODetection(tmp_path, "annotations/instances.json", "images")


def test_a_named_class_without_a_box_in_train_lists_the_classes_found(tmp_path):
    write_voc(tmp_path, [sample(1), sample(2)], NAMES)
    typo = ["RBC", "WBC", "Platelet"]
    train = VOCDetection(tmp_path, "trainval", typo)
    with pytest.raises(DataError, match=r"\['Platelet'\] has no box.*RBC 2, WBC 2, Platelets 2 \(not in the list\)"):
        prepare_datasets(train, VOCDetection(tmp_path, "trainval", typo), tmp_path, classes_given=True)


@pytest.mark.parametrize("policy", ["error", "skip"])
def test_annotated_size_differing_from_the_file_is_found_before_training(tmp_path, policy):
    write_voc(tmp_path, [sample(1), sample(2)], NAMES)
    Image.new("RGB", (20, 12)).save(tmp_path / "JPEGImages" / "000002.png")   # annotated 40x24
    ds = VOCDetection(tmp_path, "trainval", NAMES, bad_images=policy)
    scan = scan_images(ds)                       # headers only: no decode, before training
    assert scan.counts == {"size_mismatch": 1}
    if policy == "error":
        with pytest.raises(ImageFileError, match="000002.png: size_mismatch.*20x12.*annotation says 40x24"):
            apply_bad_image_policy(ds, scan, "train split")
        return
    assert apply_bad_image_policy(ds, scan, "train split")["skipped"] == 1
    assert len(ds) == 1 and ds.skips.counts["image_size_mismatch"] == 1   # left out AND counted


def test_numeric_class_names_are_read_as_text(tmp_path):
    write_voc(tmp_path, [sample(1, (1, 2))], ["7", "9"])
    assert VOCDetection(tmp_path, "trainval", [7, 9]).get_target(0)["labels"].tolist() == [1, 2]
