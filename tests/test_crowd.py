"""Crowd regions are never learned, by any family; difficult objects as each paper did;
SSD's bipartite matching gives every object its own best default box."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from detectors import reference
from detectors.base import empty_target
from detectors.boxes import match
from detectors.ssd import SSD
from experiments.build import build_detector

CONF = Path(__file__).resolve().parents[1] / "conf" / "detector"


pytestmark = pytest.mark.usefixtures("one_torch_thread")   # small tensors: one thread (conftest)


def target(boxes, labels, crowd, difficult=None, image_id=0):
    boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    t = {"boxes": boxes, "labels": torch.tensor(labels, dtype=torch.int64), "image_id": image_id,
         "area": (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]),
         "iscrowd": torch.tensor(crowd, dtype=torch.int64)}
    if difficult is not None:
        t["difficult"] = torch.tensor(difficult, dtype=torch.bool)
    return t


def images(n=2, size=128):
    torch.manual_seed(3)
    return [torch.rand(3, size, size) for _ in range(n)]


CROWD_ONLY = [target([[10, 10, 100, 90]], [1], [1]), target([[30, 5, 120, 60]], [2], [1], image_id=1)]
EMPTY = [empty_target(0), empty_target(1)]


def losses(model, targets, seed=0):
    model.train()
    torch.manual_seed(seed)
    return {k: float(v.detach()) for k, v in model(images(), targets).items()}


def test_ssd_crowd_only_batch_learns_nothing():
    torch.manual_seed(0)
    model = SSD(num_classes=3, width=0.125, batch_norm=True)
    out = losses(model, CROWD_ONLY)
    assert out["loss_conf"] == 0.0 and out["loss_loc"] == 0.0      # was loss_conf 38.9


def test_ssd_default_boxes_inside_a_crowd_region_are_neither_positive_nor_negative():
    torch.manual_seed(0)
    model = SSD(num_classes=3, width=0.125, batch_norm=True)
    h, w = model.input_size
    scale = torch.tensor([w, h, w, h], dtype=torch.float32)
    person = torch.tensor([[0.05, 0.05, 0.35, 0.45]]) * scale
    crowd = torch.tensor([[0.5, 0.5, 1.0, 1.0]]) * scale
    boxes = torch.cat([person, crowd]) / scale
    classes, _ = model.multibox_loss.assign(model.priors, model.priors_xyxy, [boxes],
                                            [torch.tensor([1, 2])], [torch.tensor([0, 1])])
    p = model.priors_xyxy
    inside = ((p[:, 0] >= 0.5) & (p[:, 1] >= 0.5) & (p[:, 2] <= 1.0) & (p[:, 3] <= 1.0))
    assert (classes[0][inside] == -1).all() and int(inside.sum()) > 100
    assert not (classes[0] == 2).any(), "the crowd's class is never a target"
    assert (classes[0] == 1).sum() >= 1 and (classes[0] == 0).sum() > 1000
    # the ignored boxes are not mined as negatives: a huge background score there costs nothing
    loc = torch.zeros(1, p.shape[0], 4)
    conf = torch.zeros(1, p.shape[0], 4)
    base = model.multibox_loss(loc, conf, classes, torch.zeros(1, p.shape[0], 4))["loss_conf"]
    conf[0, inside, 1] = 50.0
    assert model.multibox_loss(loc, conf, classes, torch.zeros(1, p.shape[0], 4))["loss_conf"] == base


def _yaml_model(name, **overrides):
    cfg = OmegaConf.load(CONF / f"{name}.yaml")
    base = OmegaConf.load(CONF / f"{cfg.defaults[0]}.yaml") if "defaults" in cfg else OmegaConf.create()
    merged = OmegaConf.merge(base, cfg)
    merged.model.update(overrides)
    torch.manual_seed(0)
    return build_detector(merged.model, 3)


@pytest.mark.parametrize("name, overrides", [
    ("yolov1_cpu", {}),
    ("faster_rcnn_vgg16_cpu", {"min_size": 128, "max_size": 128, "input_size": [128, 128]}),
])
def test_crowd_only_batch_equals_an_empty_batch(name, overrides):
    model = _yaml_model(name, **overrides)
    assert losses(model, CROWD_ONLY) == losses(model, EMPTY)
    with_person = [target([[10, 10, 60, 60], [70, 70, 120, 120]], [1, 2], [0, 1]), EMPTY[1]]
    person_only = [target([[10, 10, 60, 60]], [1], [0]), EMPTY[1]]
    assert losses(model, with_person) == losses(model, person_only)


def test_torchvision_adapters_drop_crowd_boxes():
    torch.manual_seed(0)
    model = reference.torchvision_detector("ssdlite320", 3, input_size=(128, 128))
    assert not model.ignores_crowd_in_loss
    with_crowd = [target([[10, 10, 60, 60], [70, 70, 120, 120]], [1, 2], [0, 1]), EMPTY[1]]
    person_only = [target([[10, 10, 60, 60]], [1], [0]), EMPTY[1]]
    kept = model.training_targets(with_crowd)
    assert kept[0]["boxes"].tolist() == [[10.0, 10.0, 60.0, 60.0]] and kept[0]["iscrowd"].tolist() == [0]
    assert losses(model, with_crowd) == losses(model, person_only)


def test_difficult_objects_follow_the_detectors_setting():
    torch.manual_seed(0)
    model = SSD(num_classes=3, width=0.125, batch_norm=True)
    t = [target([[10, 10, 60, 60], [70, 70, 120, 120]], [1, 2], [0, 0], difficult=[False, True])]
    assert model.learn_difficult and len(model.training_targets(t)[0]["labels"]) == 2
    model.learn_difficult = False
    assert model.training_targets(t)[0]["labels"].tolist() == [1]
    for name, learned in (("ssd300", True), ("ssd512", True), ("yolov1", False),
                          ("faster_rcnn_vgg16", False)):
        assert OmegaConf.load(CONF / f"{name}.yaml").learn_difficult is learned, name


def test_two_objects_sharing_a_best_default_box_each_get_one():
    priors = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 11.0, 11.0]])
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0],      # IoU 1.0 with prior 0, 0.68 with prior 1
                       [0.0, 0.0, 9.0, 9.0]])       # IoU 0.81 with prior 0 (its best), 0.55 with 1
    matched, iou = match(gt, priors, 0.5)
    assert matched.tolist() == [0, 1], "the weaker object takes its best remaining box"
    assert iou[1].item() == pytest.approx(64 / 117)
    matched, _ = match(gt.flip(0), priors, 0.5)
    assert matched.tolist() == [1, 0]
