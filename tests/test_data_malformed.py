"""Issue 20's malformed fields: each a named error (the file and the field) or a counted fix,
never a crash inside the loader or a loss."""
from __future__ import annotations

import json

import pytest
import torch

from detectors.base import Target
from experiments.data.box_policy import AnnotationError
from experiments.data.coco import COCODetection
from experiments.data.writers import write_coco, write_yolo_txt
from experiments.data.yolo_txt import YoloTxtDetection

pytestmark = pytest.mark.usefixtures("one_torch_thread")
NAMES = ["a", "b"]


def sample(image_id: int = 1, n: int = 1):
    boxes = torch.tensor([[1.0, 2.0, 9.0, 12.0]] * n).reshape(n, 4)
    return torch.rand(3, 20, 30), Target(boxes=boxes, labels=torch.ones(n, dtype=torch.int64),
                                         image_id=image_id, area=torch.ones(n),
                                         iscrowd=torch.zeros(n, dtype=torch.int64))


@pytest.fixture
def coco(tmp_path):
    """(path of a 2-image COCO file, its data, a loader of it)."""
    path = write_coco(tmp_path, [sample(1), sample(2)], NAMES)
    data = json.loads(path.read_text())

    def load(edit=None, **kwargs):
        if edit is not None:
            d = json.loads(json.dumps(data))
            edit(d)
            path.write_text(json.dumps(d))
        return COCODetection(tmp_path, "annotations/instances.json", "images", **kwargs)

    return path, data, load


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["annotations"][0].update(bbox=["1", "2", "3", "4"]),
     r"annotation 0 .*'bbox' must be \[x, y, w, h\] numbers"),
    (lambda d: d["categories"][0].pop("name"), "category 1 has no 'name'"),
    (lambda d: d["categories"][0].update(id="one"), "category 0 has no int 'id'"),
    (lambda d: d["images"][0].pop("id"), r"images\[0\] has no 'id'"),
    (lambda d: d["images"][1].update(height="tall"), "image 2: 'height' / 'width' are not integers: 'tall'"),
    (lambda d: d["images"][1].pop("file_name"), "image 2: missing 'file_name'"),
    (lambda d: d["images"].append(dict(d["images"][0])), r"image ids in 'images' are not unique \(1 repeated\)"),
])
def test_coco_malformed_fields_name_the_file_and_field(coco, edit, message):
    path, _, load = coco
    with pytest.raises(AnnotationError, match=message) as info:
        load(edit)
    assert str(path) in str(info.value)


def test_coco_iscrowd_null_list_category_and_string_ids(coco):
    _, _, load = coco
    ds = load(lambda d: d["annotations"][0].update(iscrowd=None))
    assert ds.skips.counts["fixed_iscrowd"] == 1 and ds.get_target(0)["iscrowd"].tolist() == [0]
    with pytest.raises(AnnotationError, match="'iscrowd' must be 0 or 1, got None"):
        load(box_policy="error")
    ds = load(lambda d: d["annotations"][1].update(category_id=[1]))  # a list: not a category
    assert ds.skips.counts["unknown_class"] == 1 and len(ds.get_target(1)["boxes"]) == 0

    def string_ids(d):
        for im in d["images"]:
            im["id"] = f"img-{im['id']}"
        for ann in d["annotations"]:
            ann["image_id"] = f"img-{ann['image_id']}"

    ds = load(string_ids)  # string image ids match their annotations: nothing is lost
    assert ds.image_ids == ["img-1", "img-2"] and [len(ds.get_target(i)["boxes"]) for i in (0, 1)] == [1, 1]
    assert not ds.skips.counts


def test_coco_file_that_is_not_json_or_not_an_object(coco):
    path, _, load = coco
    path.write_text("images: []\n")  # YAML, not JSON
    with pytest.raises(AnnotationError, match="instances.json: not valid JSON"):
        load()
    path.write_text("[1, 2]")
    with pytest.raises(AnnotationError, match="expected a JSON object"):
        load()


@pytest.mark.parametrize("names, message", [
    ("a b", "'names' must be a list of class names or a map"),
    ("{a: cat, b: dog}", "'names' as a mapping must have the int keys 0..1"),
    ("{0: cat, 2: dog}", "'names' as a mapping must have the int keys 0..1"),
    ("[[cat], dog]", "'names' must be a list"),
])
def test_yolo_names_must_be_a_list_or_an_int_keyed_map(tmp_path, names, message):
    write_yolo_txt(tmp_path, [sample()], NAMES)
    text = (tmp_path / "data.yaml").read_text()
    lines = [line for line in text.splitlines() if not line.startswith(("names", "- ", "  "))]
    (tmp_path / "data.yaml").write_text("\n".join(lines) + f"\nnames: {names}\n")
    with pytest.raises(AnnotationError, match=message):
        YoloTxtDetection(tmp_path, "train")


def test_yolo_int_keyed_names_and_missing_label_files_counted(tmp_path):
    write_yolo_txt(tmp_path, [sample(1), sample(2), sample(3)], NAMES)
    text = (tmp_path / "data.yaml").read_text()
    lines = [line for line in text.splitlines() if not line.startswith(("names", "- ", "  "))]
    (tmp_path / "data.yaml").write_text("\n".join(lines) + "\nnames: {1: b, 0: a}\n")
    for stem in ("000001", "000003"):
        (tmp_path / "labels" / "train" / f"{stem}.txt").unlink()
    ds = YoloTxtDetection(tmp_path, "train")
    assert ds.class_names == NAMES
    assert ds.skips.counts == {"fixed_no_label_file": 2}
    assert [len(ds.get_target(i)["boxes"]) for i in range(3)] == [0, 1, 0]


def test_yolo_without_val_is_split_by_val_fraction(tmp_path):
    write_yolo_txt(tmp_path, [sample(i, n=1) for i in range(1, 11)], NAMES)
    text = (tmp_path / "data.yaml").read_text()
    (tmp_path / "data.yaml").write_text("\n".join(ln for ln in text.splitlines() if not ln.startswith("val")))
    assert len(YoloTxtDetection(tmp_path, "train")) == 10  # no val_fraction: the whole train entry
    train, val = (YoloTxtDetection(tmp_path, s, val_fraction=0.2) for s in ("train", "val"))
    assert (len(train), len(val)) == (8, 2)
    assert not set(train.split_info["ids"]) & set(val.split_info["ids"])
    assert "val_fraction 0.2" in val.split_info["source"]
