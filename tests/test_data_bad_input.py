"""Every bad-input case of issue 2: a clear error naming the file and the problem, or a skip
that is counted in ``dataset.skips`` (box policy drop | clip | error)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from detectors.base import Target, validate_target
from experiments.data.base import SkipLog
from experiments.data.box_policy import AnnotationError, apply_box_policy
from experiments.data.coco import COCODetection
from experiments.data.images import ImageFileError, load_image
from experiments.data.voc import VOCDetection
from experiments.data.writers import write_coco, write_voc, write_yolo_txt
from experiments.data.yolo_txt import YoloTxtDetection

NAMES = ["a", "b"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def sample(boxes, labels=None, image_id=1, size=(40, 60)) -> tuple[torch.Tensor, Target]:
    b = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    labels = torch.tensor(labels if labels is not None else [1] * len(b), dtype=torch.int64)
    return torch.rand(3, *size), Target(boxes=b, labels=labels, image_id=image_id,
                                        area=torch.ones(len(b)), iscrowd=torch.zeros(len(b), dtype=torch.int64))


# ---- boxes: the policy itself -------------------------------------------------------------
BAD = np.array([[10, 10, 20, 20],          # fine
                [30, 5, 30, 15],           # x2 == x1 (zero area)
                [20, 5, 10, 15],           # x2 < x1
                [np.nan, 1, 5, 5],         # NaN
                [-5, -3, 10, 10],          # negative coordinates: partly outside
                [50, 30, 70, 45],          # partly outside (right/bottom) of 60x40
                [70, 50, 90, 60]], float)  # wholly outside


def test_box_policy_clip():
    skips = SkipLog()
    boxes, keep = apply_box_policy(BAD, (40, 60), "clip", skips, "f.xml")
    assert keep.tolist() == [True, False, False, False, True, True, False]
    np.testing.assert_array_equal(boxes[keep], [[10, 10, 20, 20], [0, 0, 10, 10], [50, 30, 60, 40]])
    assert skips.counts == {"zero_area": 2, "nonfinite": 1, "clipped": 2, "outside_image": 1}
    assert skips.examples["nonfinite"][0].startswith("f.xml")


def test_box_policy_drop():
    skips = SkipLog()
    _, keep = apply_box_policy(BAD, (40, 60), "drop", skips, "f.xml")
    assert keep.tolist() == [True, False, False, False, False, False, False]
    assert skips.counts == {"zero_area": 2, "nonfinite": 1, "outside_image": 3}


@pytest.mark.parametrize("row, problem", [(1, "x2 <= x1"), (3, "NaN"), (4, "outside"),
                                          (5, "outside"), (6, "outside")])
def test_box_policy_error_names_file_and_box(row, problem):
    with pytest.raises(AnnotationError, match=f"f.xml: box 0 .*{problem}"):
        apply_box_policy(BAD[row:row + 1], (40, 60), "error", SkipLog(), "f.xml")


def test_box_policy_tolerates_float_rounding_and_rejects_unknown_policy():
    skips = SkipLog()
    boxes, keep = apply_box_policy(np.array([[0, 0, 60.001, 40.0]]), (40, 60), "error", skips, "f")
    assert keep.all() and boxes[0, 2] == 60 and not skips.counts
    sliver = np.array([[60.0, 0, 60.005, 10]])  # just past the right border of a 60-wide image
    _, keep = apply_box_policy(sliver, (40, 60), "clip", skips, "f")
    assert not keep.any() and skips.counts == {"outside_image": 1}
    with pytest.raises(ValueError, match="box_policy"):
        VOCDetection("/nonexistent", box_policy="ignore")


# ---- boxes through the loaders ------------------------------------------------------------
def test_voc_zero_area_nan_negative_outside_boxes(tmp_path):
    # Written 1-based by the writer: x1 = -1 + 1 = 0 in the file, like real off-by-one exports.
    write_voc(tmp_path, [sample([[5, 5, 5, 9], [-1, 2, 10, 12], [10, 10, 80, 30],
                                 [float("nan"), 1, 4, 4], [3, 3, 9, 9]])], NAMES)
    ds = VOCDetection(tmp_path, "trainval", NAMES)
    image, target = ds[0]
    validate_target(target, tuple(image.shape[-2:]), 2)
    assert target["boxes"].tolist() == [[0, 2, 10, 12], [10, 10, 60, 30], [3, 3, 9, 9]]
    assert target["area"].tolist() == [100, 1000, 36]  # recomputed after clipping
    assert ds.skips.counts == {"zero_area": 1, "nonfinite": 1, "clipped": 2}
    with pytest.raises(AnnotationError, match=r"000001.xml: box 3 \[nan.*NaN or infinite"):
        VOCDetection(tmp_path, "trainval", NAMES, box_policy="error")
    dropped = VOCDetection(tmp_path, "trainval", NAMES, box_policy="drop")
    assert len(dropped.get_target(0)["boxes"]) == 1


def test_unknown_class_name_and_index(tmp_path):
    write_voc(tmp_path / "voc", [sample([[1, 1, 9, 9], [2, 2, 8, 8]], labels=[1, 2])], NAMES)
    ds = VOCDetection(tmp_path / "voc", "trainval", ["a"])  # "b" is not in the list
    assert ds.get_target(0)["labels"].tolist() == [1] and ds.skips.counts["unknown_class"] == 1
    with pytest.raises(AnnotationError, match="000001.xml: class 'b' is not in the class list"):
        VOCDetection(tmp_path / "voc", "trainval", ["a"], box_policy="error")
    write_yolo_txt(tmp_path / "yolo", [sample([[1, 1, 9, 9]])], NAMES)
    (tmp_path / "yolo" / "labels" / "train" / "000001.txt").write_text("0 .5 .5 .2 .2\n7 .5 .5 .1 .1\n")
    yolo = YoloTxtDetection(tmp_path / "yolo", "train")
    assert len(yolo.get_target(0)["boxes"]) == 1 and yolo.skips.counts["unknown_class"] == 1
    path = write_coco(tmp_path / "coco", [sample([[1, 1, 9, 9]])], NAMES)
    data = json.loads(path.read_text())
    data["annotations"][0]["category_id"] = 99
    path.write_text(json.dumps(data))
    coco = COCODetection(tmp_path / "coco", "annotations/instances.json", "images")
    assert len(coco.get_target(0)["boxes"]) == 0 and coco.skips.counts["unknown_class"] == 1


def test_image_without_objects_in_every_format(tmp_path):
    empty = [sample([])]
    write_voc(tmp_path / "voc", empty, NAMES)
    write_coco(tmp_path / "coco", empty, NAMES)
    write_yolo_txt(tmp_path / "yolo", empty, NAMES)
    (tmp_path / "yolo" / "labels" / "train" / "000001.txt").unlink()  # no label file at all
    for ds in (VOCDetection(tmp_path / "voc", "trainval", NAMES),
               COCODetection(tmp_path / "coco", "annotations/instances.json", "images"),
               YoloTxtDetection(tmp_path / "yolo", "train")):
        image, target = ds[0]
        validate_target(target, tuple(image.shape[-2:]), 2)
        assert target["boxes"].shape == (0, 4) and target["labels"].shape == (0,)


# ---- annotation files ---------------------------------------------------------------------
def test_invalid_xml_json_yaml_and_label_lines(tmp_path):
    write_voc(tmp_path / "voc", [sample([[1, 1, 9, 9]])], NAMES)
    (tmp_path / "voc" / "Annotations" / "000001.xml").write_text("<annotation><object>")
    with pytest.raises(AnnotationError, match="000001.xml: not valid XML"):
        VOCDetection(tmp_path / "voc", "trainval", NAMES)
    path = write_coco(tmp_path / "coco", [sample([[1, 1, 9, 9]])], NAMES)
    path.write_text('{"images": [')
    with pytest.raises(AnnotationError, match="instances.json: not valid JSON"):
        COCODetection(tmp_path / "coco", "annotations/instances.json", "images")
    path.write_text('{"images": []}')
    with pytest.raises(AnnotationError, match="missing list 'categories'"):
        COCODetection(tmp_path / "coco", "annotations/instances.json", "images")
    write_yolo_txt(tmp_path / "yolo", [sample([[1, 1, 9, 9]])], NAMES)
    (tmp_path / "yolo" / "labels" / "train" / "000001.txt").write_text("0 0.5 0.5 0.2\n")
    with pytest.raises(AnnotationError, match=r"000001.txt:1: expected 'class cx cy w h'"):
        YoloTxtDetection(tmp_path / "yolo", "train")
    (tmp_path / "yolo" / "labels" / "train" / "000001.txt").write_text("0 0.5 zero 0.2 0.2\n")
    with pytest.raises(AnnotationError, match=r"000001.txt:1: not numbers"):
        YoloTxtDetection(tmp_path / "yolo", "train")
    (tmp_path / "yolo" / "data.yaml").write_text("names: [a, b\ntrain: [")
    with pytest.raises(AnnotationError, match="data.yaml: not valid YAML"):
        YoloTxtDetection(tmp_path / "yolo", "train")


def test_missing_root_names_the_path(tmp_path):
    for make in (lambda p: VOCDetection(p), lambda p: COCODetection(p),
                 lambda p: YoloTxtDetection(p)):
        with pytest.raises(FileNotFoundError, match=str(tmp_path / "absent")):
            make(tmp_path / "absent")


# ---- image files --------------------------------------------------------------------------
def test_missing_image_file_error_or_counted_skip(tmp_path):
    write_voc(tmp_path, [sample([[1, 1, 9, 9]], image_id=1), sample([[2, 2, 9, 9]], image_id=2)], NAMES)
    (tmp_path / "JPEGImages" / "000002.png").unlink()
    with pytest.raises(FileNotFoundError, match="000002.png does not exist"):
        VOCDetection(tmp_path, "trainval", NAMES)
    ds = VOCDetection(tmp_path, "trainval", NAMES, missing_images="skip")
    assert len(ds) == 1 and ds.skips.counts["image_missing"] == 1


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupt_or_truncated_image_names_the_file(tmp_path, damage):
    write_voc(tmp_path, [sample([[1, 1, 9, 9]])], NAMES)
    png = tmp_path / "JPEGImages" / "000001.png"
    data = png.read_bytes()
    png.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"not an image at all")
    ds = VOCDetection(tmp_path, "trainval", NAMES)  # the XML gives the size: no decode yet
    with pytest.raises(ImageFileError, match="000001.png is corrupt or truncated"):
        ds[0]


def test_image_size_differing_from_annotation_is_an_error(tmp_path):
    write_voc(tmp_path, [sample([[1, 1, 9, 9]])], NAMES)
    Image.new("RGB", (30, 20)).save(tmp_path / "JPEGImages" / "000001.png")
    with pytest.raises(ImageFileError, match="000001.png is 30x20.*annotation says 60x40"):
        VOCDetection(tmp_path, "trainval", NAMES)[0]


def _modes(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)
    gray16 = rng.integers(0, 65536, (12, 10), dtype=np.uint16)
    files = {"L": Image.fromarray(rgb[..., 0]), "RGBA": Image.fromarray(rgb).convert("RGBA"),
             "P": Image.fromarray(rgb).convert("P"), "I16": Image.fromarray(gray16),
             "1": Image.fromarray(rgb[..., 0]).convert("1"), "CMYK": Image.fromarray(rgb).convert("CMYK")}
    paths = {}
    for name, im in files.items():
        paths[name] = tmp_path / f"{name}.{'jpg' if name == 'CMYK' else 'png'}"
        im.save(paths[name])
    return rgb, gray16, paths


def test_grayscale_rgba_palette_16bit_images_become_rgb01(tmp_path):
    rgb, gray16, paths = _modes(tmp_path)
    for name, path in paths.items():
        image = load_image(path)
        assert image.dtype == torch.float32 and image.shape == (3, 12, 10), name
        assert image.min() >= 0 and image.max() <= 1 and torch.isfinite(image).all(), name
    gray = load_image(paths["L"])
    torch.testing.assert_close(gray[0], torch.from_numpy(rgb[..., 0]).float() / 255)
    assert torch.equal(gray[0], gray[2])
    torch.testing.assert_close(load_image(paths["RGBA"]), torch.from_numpy(rgb).permute(2, 0, 1).float() / 255)
    torch.testing.assert_close(load_image(paths["I16"])[1], torch.from_numpy(gray16.astype(np.float32)) / 65535)
    assert load_image(paths["P"]).std() > 0.1  # a real palette lookup, not the indices


def test_grayscale_image_through_a_loader(tmp_path):
    write_voc(tmp_path, [sample([[1, 1, 9, 9]])], NAMES)
    Image.new("L", (60, 40), 128).save(tmp_path / "JPEGImages" / "000001.png")
    image, _ = VOCDetection(tmp_path, "trainval", NAMES)[0]
    assert image.shape == (3, 40, 60) and abs(image.mean().item() - 128 / 255) < 1e-6


def test_coco_annotation_of_unknown_image_and_duplicate_image_ids(tmp_path):
    path = write_coco(tmp_path, [sample([[1, 1, 9, 9]], image_id=1), sample([[2, 2, 9, 9]], image_id=2)], NAMES)
    data = json.loads(path.read_text())
    data["annotations"][1]["image_id"] = 77
    path.write_text(json.dumps(data))
    ds = COCODetection(tmp_path, "annotations/instances.json", "images")
    assert ds.skips.counts["unknown_image"] == 1 and len(ds.get_target(1)["boxes"]) == 0
    with pytest.raises(AnnotationError, match="image_id 77 is not in 'images'"):
        COCODetection(tmp_path, "annotations/instances.json", "images", box_policy="error")
    data["images"][1]["id"] = 1
    path.write_text(json.dumps(data))
    with pytest.raises(AnnotationError, match="instances.json: image ids .* not unique"):
        COCODetection(tmp_path, "annotations/instances.json", "images")
