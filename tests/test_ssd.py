"""SSD: box counts, default-box spot values, output shapes, loss, post-processing, configs."""
import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from detectors.base import empty_target, validate_target
from detectors.ssd import SSD
from detectors.ssd_default_boxes import SCALE_PRESETS, default_box_scales, default_boxes, resolve_scales
from experiments.build import build_detector

CONF = Path(__file__).resolve().parents[1] / "conf" / "detector"
SSD512_RATIOS = [[2], [2, 3], [2, 3], [2, 3], [2, 3], [2], [2]]


def small_ssd300(**kwargs) -> SSD:
    torch.manual_seed(0)
    return SSD(num_classes=5, width=0.125, batch_norm=True, **kwargs)


def make_target(boxes, labels, image_id=0):
    boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    return {"boxes": boxes, "labels": torch.tensor(labels, dtype=torch.int64), "image_id": image_id,
            "area": (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]),
            "iscrowd": torch.zeros(len(labels), dtype=torch.int64)}


@pytest.mark.parametrize("name, candidates, maps", [
    ("ssd300", 8732, [38, 19, 10, 5, 3, 1]),
    ("ssd512", 24564, [64, 32, 16, 8, 4, 2, 1]),
    ("ssd_mobilenet_v1", 3000, [19, 10, 5, 3, 2, 1]),
])
def test_configs_build_the_papers_geometry_at_reduced_width(name, candidates, maps):
    cfg = OmegaConf.load(CONF / f"{name}.yaml")
    assert cfg.name == name and cfg.augmentation == "ssd" and "num_classes" not in cfg.model
    cfg.model.width = 0.125
    model = build_detector(cfg.model, 3)
    assert model.num_candidates(model.input_size) == candidates
    assert [h for h, _ in model.features.map_sizes(model.input_size)] == maps
    assert model.weights_source == "random"
    with torch.no_grad():
        sizes = [tuple(m.shape[-2:]) for m in model.features(torch.zeros(1, 3, *model.input_size))]
    assert sizes == [(m, m) for m in maps]


def test_default_box_spot_values_voc300():
    boxes = small_ssd300(scales="voc300").priors                       # [8732, 4] cxcywh, fractions
    s2 = math.sqrt(2)
    c0 = 4 / 300                                                       # (0 + 0.5) * step 8 / 300
    assert torch.allclose(boxes[0], torch.tensor([c0, c0, 0.1, 0.1]))  # 30 px at conv4_3
    assert torch.allclose(boxes[1, 2:], torch.full((2,), math.sqrt(0.1 * 0.2)))
    assert torch.allclose(boxes[2, 2:], torch.tensor([0.1 * s2, 0.1 / s2]))
    assert torch.allclose(boxes[3, 2:], torch.tensor([0.1 / s2, 0.1 * s2]))
    assert torch.allclose(boxes[4, :2], torch.tensor([12 / 300, c0]))  # next column, same row
    assert torch.allclose(boxes[38 * 4, :2], torch.tensor([c0, 12 / 300]))  # next row
    fc7 = boxes[38 * 38 * 4]                                           # first fc7 box: step 16, 60 px
    assert torch.allclose(fc7, torch.tensor([8 / 300, 8 / 300, 0.2, 0.2]))
    last = boxes[-4:]                                                  # conv11_2: one cell, 4 boxes
    assert torch.allclose(last[:, :2], torch.full((4, 2), 0.5))
    assert torch.allclose(last[1, 2:], torch.full((2,), math.sqrt(0.88 * 1.05)))
    assert torch.allclose(last[2, 2:], torch.tensor([1.0, 0.88 / s2]))  # 1.24 clipped to the image


def test_default_box_scales_formula_and_presets():
    assert default_box_scales(6, 0.2, 0.9, first_scale=0.1) == pytest.approx([0.1, 0.2, 0.375, 0.55, 0.725, 0.9, 1.075])
    assert default_box_scales(6, 0.2, 0.9) == pytest.approx([0.2, 0.34, 0.48, 0.62, 0.76, 0.9, 1.04])
    assert resolve_scales("coco300", 6) == SCALE_PRESETS["coco300"]
    with pytest.raises(ValueError, match="7 scales"):
        resolve_scales([0.1, 0.2], 6)
    with pytest.raises(ValueError, match="unknown"):
        resolve_scales("voc301", 6)
    boxes = default_boxes([(2, 2)], (100, 100), [0.5, 1.0], [[]], steps=None, clip=False)
    assert boxes.shape == (8, 4) and torch.allclose(boxes[0], torch.tensor([0.25, 0.25, 0.5, 0.5]))


def test_eval_output_is_a_detection_per_image_in_original_pixels():
    model = small_ssd300().eval()
    images = [torch.rand(3, 200, 400), torch.rand(3, 300, 300)]
    with torch.no_grad():
        batch = model.preprocess(images)
        loc, conf = model.network(batch)
        detections = model.postprocess((loc, conf), batch)
    assert batch.images.shape == (2, 3, 300, 300)
    assert loc.shape == (2, 8732, 4) and conf.shape == (2, 8732, 6)
    for det, (h, w) in zip(detections, [(200, 400), (300, 300)]):
        k = det["boxes"].shape[0]
        assert 0 < k <= 200 and det["scores"].shape == (k,) and det["labels"].shape == (k,)
        assert det["labels"].dtype == torch.int64 and det["labels"].min() >= 1 and det["labels"].max() <= 5
        assert (det["scores"][:-1] >= det["scores"][1:]).all() and det["scores"].min() > 0.01
        assert det["boxes"][:, 0::2].max() <= w + 1e-3 and det["boxes"][:, 1::2].max() <= h + 1e-3
        assert det["boxes"].min() >= 0


def test_boxes_map_back_to_the_original_image():
    """A network that always predicts the default boxes themselves: decoded boxes are the
    priors, scaled from the 300x300 input to each original image."""
    model = small_ssd300(score_thresh=0.0, nms_thresh=1.0, max_detections=100000, candidates_before_nms=None).eval()
    loc = torch.zeros(1, 8732, 4)
    conf = torch.zeros(1, 8732, 6)
    conf[0, :, 2] = 5.0                                                # everything is class 2
    batch = model.preprocess([torch.rand(3, 150, 600)])
    det = model.postprocess((loc, conf), batch)[0]
    keep = det["labels"] == 2
    expected = model.priors_xyxy.clamp(0, 1) * torch.tensor([600.0, 150.0, 600.0, 150.0])
    found = det["boxes"][keep]
    assert found.shape[0] == 8732
    as_rows = lambda b: torch.tensor(sorted(b.tolist()))  # noqa: E731
    assert torch.allclose(as_rows(found), as_rows(expected), atol=1e-3)


def test_loss_keys_finite_and_zero_for_a_batch_without_objects():
    model = small_ssd300().train()
    images = [torch.rand(3, 300, 300), torch.rand(3, 300, 300)]
    losses = model(images, [make_target([[30, 40, 120, 200]], [2]), empty_target(1)])
    assert set(losses) == {"loss_conf", "loss_loc"}
    total = sum(losses.values())
    assert torch.isfinite(total) and total > 0
    total.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    empty = model(images, [empty_target(0), empty_target(1)])
    assert all(torch.isfinite(v) and v == 0 for v in empty.values())


def test_hard_negative_mining_keeps_three_negatives_per_positive():
    model = small_ssd300()
    loss = model.multibox_loss
    classes = torch.zeros(1, 10, dtype=torch.int64)
    classes[0, 0] = 1                                                  # one positive
    conf = torch.zeros(1, 10, 3)
    conf[0, :, 1] = torch.arange(10, dtype=torch.float32)              # negatives' losses grow with index
    out = loss(torch.zeros(1, 10, 4), conf, classes, torch.zeros(1, 10, 4))
    ce = torch.nn.functional.cross_entropy(conf[0], torch.zeros(10, dtype=torch.int64), reduction="none")
    positive_ce = torch.nn.functional.cross_entropy(conf[0, :1], classes[0, :1])
    assert torch.allclose(out["loss_conf"], positive_ce + ce[7:].sum())  # the 3 hardest: 7, 8, 9
    assert out["loss_loc"] == 0


def test_training_targets_are_rescaled_to_the_input():
    model = small_ssd300()
    batch = model.preprocess([torch.rand(3, 150, 600)], [make_target([[60, 15, 120, 75]], [1])])
    assert torch.allclose(batch.targets[0]["boxes"], torch.tensor([[30.0, 30.0, 60.0, 150.0]]))
    validate_target(batch.targets[0], (300, 300), 5)


def test_bad_configuration_is_a_clear_error():
    with pytest.raises(ValueError, match="aspect-ratio"):
        SSD(num_classes=2, width=0.125, aspect_ratios=[[2]] * 5)
    with pytest.raises(ValueError, match="backbone"):
        SSD(num_classes=2, backbone="resnet")
    with pytest.raises(ValueError, match="extra_layers"):
        SSD(num_classes=2, width=0.125, extra_layers="ssd400")


def test_no_detection_above_the_threshold_gives_empty_detections():
    model = small_ssd300(score_thresh=0.999).eval()
    batch = model.preprocess([torch.rand(3, 300, 300)])
    det = model.postprocess((torch.zeros(1, 8732, 4), torch.zeros(1, 8732, 6)), batch)[0]
    assert det["boxes"].shape == (0, 4) and det["scores"].shape == (0,) and det["labels"].dtype == torch.int64


def test_training_and_inference_under_bfloat16_autocast():
    model = small_ssd300()
    images = [torch.rand(3, 300, 300), torch.rand(3, 300, 300)]   # BatchNorm needs 2 at the 1x1 map
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = model(images, [make_target([[30, 40, 120, 200]], [2]), empty_target(1)])
        assert all(torch.isfinite(v) for v in losses.values())
        sum(losses.values()).backward()
        model.eval()
        det = model(images)[0]
    assert det["boxes"].shape[0] > 0 and torch.isfinite(det["boxes"]).all()
