"""Augmentation policies keep every box valid and inside the image, and every per-box field
(labels, area, iscrowd, difficult) aligned with the boxes, over many random draws."""
from __future__ import annotations

import pytest
import torch
from torchvision import tv_tensors
from torchvision.ops import box_iou
from torchvision.transforms import v2

from detectors.base import Target, validate_target
from experiments.data.iou_crop import BatchedIoUCrop
from experiments.data.synthetic import SyntheticShapes
from experiments.data.transforms import POLICIES, box_area, build_policy

# Small per-image tensor ops, as in a DataLoader worker (one thread): extra threads only add
# contention on a busy 2-core machine.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def samples():
    ds = SyntheticShapes(12, image_size=(96, 128), seed=5)
    out = [ds[i] for i in range(len(ds))]
    # Tag each box with a unique label so the test can follow it; add crowd/difficult fields.
    tagged = []
    for image, t in out:
        n = len(t["boxes"])
        tagged.append((image, Target(boxes=t["boxes"], labels=t["labels"], image_id=t["image_id"],
                                     area=t["area"] * 0.5,  # a "segment" half the box
                                     iscrowd=(torch.arange(n) % 3 == 0).long(),
                                     difficult=torch.arange(n) % 2 == 0)))
    empty = Target(boxes=torch.zeros(0, 4), labels=torch.zeros(0, dtype=torch.int64), image_id=99,
                   area=torch.zeros(0), iscrowd=torch.zeros(0, dtype=torch.int64),
                   difficult=torch.zeros(0, dtype=torch.bool))
    return tagged + [(torch.rand(3, 96, 128), empty)]


def test_none_is_no_transform_and_unknown_name_fails():
    assert build_policy("none") is None
    with pytest.raises(ValueError, match="unknown augmentation policy 'mosaic'"):
        build_policy("mosaic")
    assert set(POLICIES) == {"none", "ssd", "yolo", "flip"}


@pytest.mark.parametrize("name", ["ssd", "yolo"])
def test_policy_keeps_boxes_valid_over_many_draws(samples, name):
    torch.manual_seed(0)
    policy = build_policy(name)
    changed_size = kept_some = 0
    for draw in range(40):
        for image, target in samples:
            out_image, out = policy(image, target)
            h, w = out_image.shape[-2:]
            validate_target(out, (h, w), num_classes=5, where=f"{name} draw {draw}")
            assert out_image.dtype == torch.float32 and out_image.shape[0] == 3
            assert out_image.min() >= 0 and out_image.max() <= 1
            assert (out["boxes"] >= 0).all() and (out["boxes"][:, 2] <= w).all() and (out["boxes"][:, 3] <= h).all()
            n = len(out["boxes"])
            assert out["difficult"].shape == out["iscrowd"].shape == out["area"].shape == (n,)
            # area stays "segment = half the box" through every geometric change
            torch.testing.assert_close(out["area"], box_area(out["boxes"]) * 0.5, rtol=1e-4, atol=1e-3)
            assert (box_area(out["boxes"]) >= 1.0).all()
            assert out["image_id"] == target["image_id"]
            changed_size += (h, w) != tuple(image.shape[-2:])
            kept_some += n > 0
    assert kept_some > 0
    if name == "ssd":
        assert changed_size > 0  # zoom-out and crops did happen


def test_fields_stay_with_their_box(samples):
    """Follow each box by a unique label through a flip: iscrowd/difficult move with it."""
    image, t = samples[0]
    n = len(t["boxes"])
    tagged = Target(boxes=t["boxes"], labels=torch.arange(1, n + 1), image_id=0, area=t["area"],
                    iscrowd=t["iscrowd"], difficult=t["difficult"])
    torch.manual_seed(1)
    policy = build_policy("ssd")
    for _ in range(30):
        _, out = policy(image, tagged)
        idx = out["labels"] - 1
        assert torch.equal(out["iscrowd"], t["iscrowd"][idx])
        assert torch.equal(out["difficult"], t["difficult"][idx])


def test_output_size_resizes_image_and_boxes(samples):
    image, target = samples[1]
    out_image, out = build_policy("yolo", output_size=64)(image, target)
    assert out_image.shape[-2:] == (64, 64)
    validate_target(out, (64, 64), 5)


def test_batched_iou_crop_meets_its_min_iou():
    """Every crop it picks holds a box whose centre is inside and whose IoU >= the option."""
    torch.manual_seed(2)
    boxes = tv_tensors.BoundingBoxes(torch.tensor([[10.0, 10.0, 60.0, 50.0], [100, 20, 140, 90]]),
                                     format="XYXY", canvas_size=(100, 160))
    image = tv_tensors.Image(torch.rand(3, 100, 160))
    for option in (0.1, 0.5, 0.7):
        crop = BatchedIoUCrop(sampler_options=[option])
        for _ in range(20):
            params = crop.make_params([image, boxes])
            x, y, w, h = params["left"], params["top"], params["width"], params["height"]
            assert 0 <= x and x + w <= 160 and 0 <= y and y + h <= 100
            window = torch.tensor([[x, y, x + w, y + h]], dtype=torch.float32)
            iou = box_iou(boxes.as_subclass(torch.Tensor), window)[:, 0]
            assert (iou[params["is_within_crop_area"]] >= option).any()
    no_boxes = tv_tensors.BoundingBoxes(torch.zeros(0, 4), format="XYXY", canvas_size=(100, 160))
    assert crop.make_params([image, no_boxes]) == {}  # no boxes: no crop


def test_works_inside_a_dataset_and_v2_pipeline(samples):
    ds = SyntheticShapes(3, image_size=(90, 90), transforms=build_policy("ssd"))
    for i in range(3):
        image, target = ds[i]
        validate_target(target, tuple(image.shape[-2:]), ds.num_classes)
    assert isinstance(build_policy("ssd").pipeline, v2.Compose)


def test_policies_and_datasets_pickle_for_dataloader_workers(tmp_path):
    import pickle

    from experiments.data.voc import VOCDetection
    from experiments.data.writers import write_voc

    ds = SyntheticShapes(2, image_size=(64, 64))
    write_voc(tmp_path, [ds[0], ds[1]], ds.class_names)
    voc = VOCDetection(tmp_path, "trainval", ds.class_names, transforms=build_policy("ssd"))
    clone = pickle.loads(pickle.dumps(voc))
    image, target = clone[1]
    validate_target(target, tuple(image.shape[-2:]), voc.num_classes)
    assert pickle.loads(pickle.dumps(build_policy("yolo"))).name == "yolo"
