"""Every file format round-trips samples written by experiments.data.writers; the same images as
COCO JSON and as YOLO txt load as the same targets; format-specific features (difficult, crowd,
sparse category ids, several VOC roots, YOLO polygons) survive."""
from __future__ import annotations

import json

import pytest
import torch

from detectors.base import Target, validate_target
from experiments.data.box_policy import AnnotationError
from experiments.data.coco import COCODetection
from experiments.data.synthetic import SyntheticShapes
from experiments.data.voc import VOC_CLASSES, VOCDetection
from experiments.data.writers import write_coco, write_voc, write_yolo_txt
from experiments.data.yolo_txt import YoloTxtDetection

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def fractional_sample(image_id: int) -> tuple[torch.Tensor, Target]:
    """A hand-made 80x100 sample with sub-pixel boxes, one crowd and one difficult object."""
    g = torch.Generator().manual_seed(image_id)
    boxes = torch.tensor([[3.25, 4.5, 40.75, 30.125], [50.5, 10.0, 99.5, 79.0],
                          [0.0, 60.0, 20.0, 80.0]], dtype=torch.float32)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return torch.rand(3, 80, 100, generator=g), Target(
        boxes=boxes, labels=torch.tensor([1, 3, 2]), image_id=image_id, area=area,
        iscrowd=torch.tensor([0, 0, 1]), difficult=torch.tensor([False, True, False]))


@pytest.fixture(scope="module")
def samples():
    ds = SyntheticShapes(4, image_size=(96, 128), seed=3)
    return [ds[i] for i in range(len(ds))] + [fractional_sample(100), fractional_sample(101)]


@pytest.fixture(scope="module")
def class_names():
    return list(SyntheticShapes(1).class_names)


def assert_same(loaded, samples, box_tol=0.0, check_crowd=True):
    assert len(loaded) == len(samples)
    for i, (image0, target0) in enumerate(samples):
        image, target = loaded[i]
        validate_target(target, tuple(image.shape[-2:]), loaded.num_classes)
        assert image.dtype == torch.float32 and image.shape == image0.shape
        assert (image - image0).abs().max() <= 1 / 255 + 1e-6  # PNG, 8 bits
        torch.testing.assert_close(target["boxes"], target0["boxes"], atol=box_tol, rtol=0)
        assert target["labels"].tolist() == target0["labels"].tolist()
        if check_crowd:
            assert target["iscrowd"].tolist() == target0["iscrowd"].tolist()


def test_voc_round_trip_keeps_boxes_and_difficult(tmp_path, samples, class_names):
    write_voc(tmp_path / "voc", samples, class_names, image_set="trainval")
    ds = VOCDetection(tmp_path / "voc", "trainval", class_names=class_names)
    assert_same(ds, samples, check_crowd=False)  # VOC has no crowd flag
    assert ds[4][1]["difficult"].tolist() == [False, True, False]
    assert ds.label_to_category_id == {1: 1, 2: 2, 3: 3, 4: 4, 5: 5}
    assert ds.image_ids[0] == f"{samples[0][1]['image_id']:06d}"


def test_voc_inferred_classes_voc_list_and_names_matching_nothing(tmp_path, samples, class_names):
    write_voc(tmp_path / "voc", samples[:2], class_names)
    inferred = VOCDetection(tmp_path / "voc", "trainval")  # class_names=None: from the XML, sorted
    present = sorted({class_names[int(label) - 1] for _, t in samples[:2] for label in t["labels"]})
    assert inferred.class_names == present and not inferred.skips.counts
    assert [inferred.class_names[int(label) - 1] for label in inferred.get_target(0)["labels"]] == \
        [class_names[int(label) - 1] for label in samples[0][1]["labels"]]
    # The 20 VOC classes match none of the shapes: an error listing the classes found.
    with pytest.raises(AnnotationError, match=r"none of the class names .*classes found are \['circle'"):
        VOCDetection(tmp_path / "voc", "trainval", "voc")
    assert VOC_CLASSES == sorted(VOC_CLASSES)  # so inference on Pascal VOC gives VOC's order
    some = VOCDetection(tmp_path / "voc", "trainval", [present[0], "aeroplane"])
    dropped = sum(len(t["boxes"]) for _, t in samples[:2]) - sum(
        len(some.get_target(i)["boxes"]) for i in range(len(some)))
    assert dropped > 0 and some.skips.counts["unknown_class"] == dropped


def test_voc_several_roots_years_and_image_sets(tmp_path, samples, class_names):
    write_voc(tmp_path / "devkit" / "VOC2007", samples[:2], class_names, "trainval")
    write_voc(tmp_path / "devkit" / "VOC2007", samples[2:3], class_names, "test")
    write_voc(tmp_path / "devkit" / "VOC2012", samples[3:5], class_names, "trainval")
    by_years = VOCDetection(tmp_path / "devkit", "trainval", class_names, years=[2007, 2012])
    by_roots = VOCDetection([tmp_path / "devkit" / "VOC2007", tmp_path / "devkit" / "VOC2012"],
                            "trainval", class_names)
    assert len(by_years) == len(by_roots) == 4
    assert [t["image_id"] for t in map(by_years.get_target, range(4))] == [1, 2, 3, 4]
    both_sets = VOCDetection(tmp_path / "devkit" / "VOC2007", ["trainval", "test"], class_names)
    assert len(both_sets) == 3
    with pytest.raises(FileNotFoundError, match="VOC2012.*test.txt"):
        VOCDetection(tmp_path / "devkit", "test", class_names, years=[2007, 2012])


def test_coco_round_trip_sparse_ids_crowd_area(tmp_path, samples, class_names):
    ids = [3, 7, 11, 40, 90]
    path = write_coco(tmp_path / "coco", samples, class_names, category_ids=ids)
    ds = COCODetection(tmp_path / "coco", path.relative_to(tmp_path / "coco"), "images")
    assert_same(ds, samples)
    assert ds.label_to_category_id == dict(zip(range(1, 6), ids))
    assert ds.class_names == class_names
    for i, (_, target0) in enumerate(samples):
        torch.testing.assert_close(ds.get_target(i)["area"], target0["area"])
        assert ds.get_target(i)["image_id"] == target0["image_id"]


def test_coco_segment_area_images_without_annotations(tmp_path, samples, class_names):
    path = write_coco(tmp_path / "coco", samples[:2], class_names)
    data = json.loads(path.read_text())
    data["annotations"][0]["area"] = 12.5  # a segment smaller than its box
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] != samples[1][1]["image_id"]]
    path.write_text(json.dumps(data))
    ds = COCODetection(tmp_path / "coco", "annotations/instances.json", "images")
    assert len(ds) == 2 and ds.get_target(0)["area"][0].item() == 12.5
    assert len(ds.get_target(1)["boxes"]) == 0
    image, target = ds[1]
    validate_target(target, tuple(image.shape[-2:]))
    ds_train = COCODetection(tmp_path / "coco", "annotations/instances.json", "images",
                             keep_empty_images=False)
    assert len(ds_train) == 1 and ds_train.skips.counts["image_no_objects"] == 1


def test_yolo_round_trip_and_names(tmp_path, samples, class_names):
    write_yolo_txt(tmp_path / "yolo", samples[:3], class_names, split="train")
    write_yolo_txt(tmp_path / "yolo", samples[3:], class_names, split="val")
    train = YoloTxtDetection(tmp_path / "yolo", "train")
    val = YoloTxtDetection(tmp_path / "yolo", "val")
    assert train.class_names == class_names
    assert_same(train, samples[:3], box_tol=1e-3, check_crowd=False)
    assert_same(val, samples[3:], box_tol=1e-3, check_crowd=False)


def test_same_images_as_coco_and_yolo_give_the_same_targets(tmp_path, samples, class_names):
    plain = [(im, Target(boxes=t["boxes"], labels=t["labels"], image_id=t["image_id"],
                         area=t["area"], iscrowd=torch.zeros_like(t["iscrowd"])))
             for im, t in samples]
    write_coco(tmp_path / "coco", plain, class_names, category_ids=[2, 4, 6, 8, 10])
    write_yolo_txt(tmp_path / "yolo", plain, class_names)
    coco = COCODetection(tmp_path / "coco", "annotations/instances.json", "images")
    yolo = YoloTxtDetection(tmp_path / "yolo", "train")
    assert len(coco) == len(yolo) == len(plain)
    for i in range(len(coco)):
        a, b = coco.get_target(i), yolo.get_target(i)
        assert (a["boxes"] - b["boxes"]).abs().max() <= 1e-3        # the writer's promise (px)
        assert a["labels"].tolist() == b["labels"].tolist()
        w, h = (a["boxes"][:, 2] - a["boxes"][:, 0]), (a["boxes"][:, 3] - a["boxes"][:, 1])
        assert ((a["area"] - b["area"]).abs() <= 1e-3 * (w + h) + 1e-6).all()   # box area from those boxes


def test_yolo_polygon_lines_list_names_and_txt_split(tmp_path):
    root = tmp_path / "poly"
    (root / "images" / "a").mkdir(parents=True)
    (root / "labels" / "a").mkdir(parents=True)
    from experiments.data.images import save_image
    save_image(torch.zeros(3, 50, 100), root / "images" / "a" / "x.png")
    (root / "labels" / "a" / "x.txt").write_text("1 0.1 0.2 0.5 0.2 0.3 0.8\n\n0 0.5 0.5 0.2 0.4\n")
    (root / "list.txt").write_text("images/a/x.png\n")
    (root / "data.yaml").write_text("train: list.txt\nnames: [cat, dog]\n")
    ds = YoloTxtDetection(root, "train")
    t = ds.get_target(0)
    torch.testing.assert_close(t["boxes"], torch.tensor([[10.0, 10.0, 50.0, 40.0],
                                                         [40.0, 15.0, 60.0, 35.0]]))
    assert t["labels"].tolist() == [2, 1] and ds.class_names == ["cat", "dog"]
