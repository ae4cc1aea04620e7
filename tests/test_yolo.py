"""YOLO v1 / Fast YOLO: geometry, the loss against hand-computed values, decoding, configs."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from detectors import darknet
from detectors.base import Batch, empty_target
from detectors.yolo import YOLO
from detectors.yolo_grid import assign_objects_to_cells
from detectors.yolo_loss import YOLOLoss
from experiments.build import read_state_dict

CONF_DIR = Path(__file__).resolve().parents[1] / "conf" / "detector"


def small_yolo(**kwargs) -> YOLO:
    args = dict(num_classes=3, width=0.125, input_size=128)
    args.update(kwargs)
    return YOLO(**args)


def count_convs(model: nn.Module) -> int:
    return sum(isinstance(m, nn.Conv2d) for m in model.modules())


# -- geometry -------------------------------------------------------------------------------

def test_num_candidates_is_98_for_the_defaults_and_s_s_b_otherwise():
    assert small_yolo().num_candidates((448, 448)) == 98
    assert small_yolo(architecture="fast_yolo").num_candidates((300, 500)) == 98
    assert small_yolo(grid_size=5, boxes_per_cell=3).num_candidates((448, 448)) == 75
    assert small_yolo().input_size == (128, 128)
    assert YOLO(num_classes=3, width=0.125).input_size == (448, 448)


@pytest.mark.parametrize("architecture, convs", [("yolo", 24), ("fast_yolo", 9)])
def test_output_shape_and_layer_counts(architecture, convs):
    model = small_yolo(architecture=architecture, grid_size=5, boxes_per_cell=3).eval()
    batch = model.preprocess([torch.rand(3, 100, 150), torch.rand(3, 90, 60)])
    assert batch.images.shape == (2, 3, 128, 128)
    outputs = model.network(batch)
    assert outputs.shape == (2, 5, 5, 3 * 5 + 3)
    assert count_convs(model) == convs
    linears = [m for m in model.head if isinstance(m, nn.Linear)]
    assert len(linears) == 2 and linears[1].out_features == 5 * 5 * 18
    assert isinstance(model.head[-1], nn.Linear)  # the last layer is linear


def test_paper_geometry_at_448():
    """7x7x1024 features at 448 for both stacks; 20 backbone + 4 detection convs for YOLO."""
    specs = darknet.YOLO_BACKBONE + darknet.YOLO_DETECTION_CONVS
    assert darknet.output_size(darknet.YOLO_BACKBONE, (448, 448)) == (14, 14)
    assert darknet.output_size(specs, (448, 448)) == (7, 7)
    assert darknet.output_size(darknet.FAST_YOLO_BACKBONE, (448, 448)) == (7, 7)
    assert darknet.count_convs(darknet.YOLO_BACKBONE) == 20
    assert darknet.count_convs(specs) == 24
    assert darknet.count_convs(darknet.FAST_YOLO_BACKBONE) == 9
    model = small_yolo(input_size=448, width=0.25)
    first_fc = model.head[1]
    assert first_fc.in_features == 7 * 7 * 256 and first_fc.out_features == 1024
    assert isinstance(model.head[2], nn.LeakyReLU) and model.head[2].negative_slope == 0.1
    assert isinstance(model.head[3], nn.Dropout) and model.head[3].p == 0.5


def test_batch_norm_option():
    plain = small_yolo()
    normed = small_yolo(batch_norm=True)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in plain.modules())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in normed.modules()) == 24


def test_backbone_weights_from_a_local_file(tmp_path):
    source = small_yolo(batch_norm=True)
    path = tmp_path / "darknet.pt"
    torch.save(source.backbone.state_dict(), path)
    loaded = small_yolo(batch_norm=True)
    loaded.load_backbone_state(read_state_dict(path), f"file:{path}")
    assert loaded.weights_source == f"file:{path}"
    for (name, a), b in zip(source.backbone.state_dict().items(),
                            loaded.backbone.state_dict().values()):
        assert torch.equal(a, b), name
    with pytest.raises(ValueError, match="darknet.pt"):
        small_yolo(architecture="fast_yolo").load_backbone_state(read_state_dict(path), f"file:{path}")


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="architecture"):
        small_yolo(architecture="yolov9")
    with pytest.raises(ValueError, match="confidence_target"):
        small_yolo(confidence_target="half")


# -- the loss, against values computed by hand ----------------------------------------------
# S = 2, B = 2, C = 3, one image; boxes normalised to the input. Layout per cell:
# [x, y, sqrt_w, sqrt_h, conf] * B + [p1, p2, p3].

GOOD = [0.5, 0.5, 0.5, 0.5]    # cell (0, 0): centre (0.25, 0.25), 0.25 x 0.25: [.125, .125, .375, .375]
TINY = [0.0, 0.0, 0.2, 0.2]    # cell (0, 0): centre (0, 0), 0.04 x 0.04: [-.02, -.02, .02, .02]


def hand_outputs() -> torch.Tensor:
    """Cell (0, 0): predictor 0 the tiny box (conf 0.3), predictor 1 the good box (conf 0.8),
    classes [0.2, 0.7, 0.1]. The three other cells: both confidences 0.1, other numbers 0.5."""
    outputs = torch.full((1, 2, 2, 13), 0.5)
    outputs[..., 4] = 0.1
    outputs[..., 9] = 0.1
    outputs[0, 0, 0] = torch.tensor(TINY + [0.3] + GOOD + [0.8] + [0.2, 0.7, 0.1])
    return outputs


def make_loss(confidence_target: str = "iou") -> YOLOLoss:
    return YOLOLoss(grid_size=2, boxes_per_cell=2, num_classes=3, lambda_coord=5.0,
                    lambda_noobj=0.5, confidence_target=confidence_target)


def test_loss_one_object_by_hand():
    # Object [0.1, 0.1, 0.4, 0.3], label 2: centre (0.25, 0.2) -> cell (row 0, col 0),
    # in-cell x = 0.25 * 2 = 0.5, y = 0.2 * 2 = 0.4, w = 0.3, h = 0.2.
    boxes, labels = [torch.tensor([[0.1, 0.1, 0.4, 0.3]])], [torch.tensor([2])]
    # IoU(good, object): intersection 0.25 x 0.175 = 0.04375, union 0.0625 + 0.06 - 0.04375
    # = 0.07875 -> 5/9. IoU(tiny, object) = 0, so predictor 1 is responsible.
    iou = 5 / 9
    losses = make_loss()(hand_outputs(), boxes, labels)
    coord = 5.0 * ((0.5 - 0.5) ** 2 + (0.5 - 0.4) ** 2 + (0.5 - math.sqrt(0.3)) ** 2
                   + (0.5 - math.sqrt(0.2)) ** 2)
    conf_obj = (iou - 0.8) ** 2
    conf_noobj = 0.5 * (0.3 ** 2 + 6 * 0.1 ** 2)  # the tiny box + 3 cells x 2 predictors
    class_error = 0.2 ** 2 + (1 - 0.7) ** 2 + 0.1 ** 2
    assert losses["loss_coord"].item() == pytest.approx(coord, rel=1e-5)
    assert losses["loss_conf_obj"].item() == pytest.approx(conf_obj, rel=1e-5)
    assert losses["loss_conf_noobj"].item() == pytest.approx(conf_noobj, rel=1e-5)
    assert losses["loss_class"].item() == pytest.approx(class_error, rel=1e-5)

    one = make_loss("one")(hand_outputs(), boxes, labels)
    assert one["loss_conf_obj"].item() == pytest.approx((1 - 0.8) ** 2, rel=1e-5)


def test_loss_picks_the_nearest_predictor_when_no_box_overlaps():
    """All IoUs 0: the predictor nearest in (x, y, sqrt w, sqrt h) is responsible."""
    outputs = hand_outputs()
    outputs[0, 0, 0, 5:9] = torch.tensor([0.9, 0.9, 0.1, 0.1])  # predictor 1: tiny, far corner
    # Object [.05, .05, .15, .15], cell (0, 0): neither tiny box [-.02, -.02, .02, .02] nor
    # predictor 1's [.445, .445, .455, .455] overlaps it.
    boxes, labels = [torch.tensor([[0.05, 0.05, 0.15, 0.15]])], [torch.tensor([1])]
    # target x = y = 0.2, sqrt w = sqrt h = sqrt(0.1) = 0.3162.
    # predictor 0 (0, 0, .2, .2): distance 2 * 0.04 + 2 * 0.0135 = 0.107;
    # predictor 1 (.9, .9, .1, .1): 2 * 0.49 + 2 * 0.0468 = 1.07 -> predictor 0.
    losses = make_loss()(outputs, boxes, labels)
    target = [0.2, 0.2, math.sqrt(0.1), math.sqrt(0.1)]
    coord = 5.0 * sum((p - t) ** 2 for p, t in zip(TINY, target))
    assert losses["loss_coord"].item() == pytest.approx(coord, rel=1e-5)
    assert losses["loss_conf_obj"].item() == pytest.approx((0 - 0.3) ** 2, rel=1e-5)  # IoU 0
    assert losses["loss_conf_noobj"].item() == pytest.approx(0.5 * (0.8 ** 2 + 6 * 0.01), rel=1e-5)


def test_loss_two_objects_in_one_cell_learns_the_largest():
    """Small A [.05, .05, .25, .25] (label 1, area 0.04) and large B [0, 0, .45, .4]
    (label 3, area 0.18) both have their centre in cell (0, 0): the cell learns B, in either
    listing order, and A is not learned at all."""
    large = [0.0, 0.0, 0.45, 0.4]
    small = [0.05, 0.05, 0.25, 0.25]
    # B: centre (0.225, 0.2) -> x = 0.45, y = 0.4, w = 0.45, h = 0.4.
    # IoU(good, B): good lies inside B: 0.0625 / 0.18; IoU(tiny, B): 0.0004 / 0.1812.
    iou = 0.0625 / 0.18
    coord = 5.0 * ((0.5 - 0.45) ** 2 + (0.5 - 0.4) ** 2 + (0.5 - math.sqrt(0.45)) ** 2
                   + (0.5 - math.sqrt(0.4)) ** 2)
    class_error = 0.2 ** 2 + 0.7 ** 2 + (1 - 0.1) ** 2
    for order in ([small, large], [large, small]):
        labels = torch.tensor([1, 3] if order[0] is small else [3, 1])
        losses = make_loss()(hand_outputs(), [torch.tensor(order)], [labels])
        assert losses["loss_coord"].item() == pytest.approx(coord, rel=1e-5)
        assert losses["loss_conf_obj"].item() == pytest.approx((iou - 0.8) ** 2, rel=1e-5)
        assert losses["loss_class"].item() == pytest.approx(class_error, rel=1e-5)
    cells = assign_objects_to_cells([torch.tensor([small, large])], [torch.tensor([1, 3])], 2)
    assert cells["label"].tolist() == [3] and cells["image"].tolist() == [0]


def test_empty_image_gives_only_the_no_object_term():
    outputs = hand_outputs()
    losses = make_loss()(outputs, [torch.zeros(0, 4)], [torch.zeros(0, dtype=torch.int64)])
    confidences = outputs[..., [4, 9]]
    assert losses["loss_coord"].item() == 0
    assert losses["loss_conf_obj"].item() == 0
    assert losses["loss_class"].item() == 0
    expected = 0.5 * (confidences ** 2).sum().item()  # 0.5 * (0.09 + 0.64 + 6 * 0.01)
    assert losses["loss_conf_noobj"].item() == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx(0.5 * 0.79)


def test_loss_is_averaged_over_images_and_differentiable():
    boxes = [torch.tensor([[0.1, 0.1, 0.4, 0.3]]), torch.zeros(0, 4)]
    labels = [torch.tensor([2]), torch.zeros(0, dtype=torch.int64)]
    outputs = torch.cat([hand_outputs(), hand_outputs()]).requires_grad_()
    losses = make_loss()(outputs, boxes, labels)
    single = make_loss()(hand_outputs(), boxes[:1], labels[:1])
    empty = make_loss()(hand_outputs(), boxes[1:], labels[1:])
    for key in losses:
        assert losses[key].item() == pytest.approx((single[key] + empty[key]).item() / 2, rel=1e-5)
    sum(losses.values()).backward()
    assert outputs.grad.abs().sum() > 0


def test_detector_loss_uses_input_pixels_and_skips_crowds():
    """The detector's training forward rescales targets to the input and normalises them."""
    torch.manual_seed(0)
    model = small_yolo(num_classes=3, grid_size=2, dropout=0.0).train()
    image = torch.rand(3, 100, 200)
    target = {"boxes": torch.tensor([[20.0, 10.0, 80.0, 30.0], [0.0, 0.0, 200.0, 100.0]]),
              "labels": torch.tensor([2, 1]), "image_id": 0,
              "area": torch.tensor([1200.0, 20000.0]), "iscrowd": torch.tensor([0, 1])}
    batch = model.preprocess([image], [target])
    assert batch.targets[0]["boxes"][0].tolist() == pytest.approx([12.8, 12.8, 51.2, 38.4])
    outputs = model.network(batch)
    losses = model.loss(outputs, batch)
    direct = model.criterion(outputs, [torch.tensor([[0.1, 0.1, 0.4, 0.3]])], [torch.tensor([2])])
    for key in losses:
        assert losses[key].item() == pytest.approx(direct[key].item(), rel=1e-5)


# -- decoding -------------------------------------------------------------------------------

def test_decoding_a_hand_made_output():
    """S = 2, B = 2, C = 2; the original image is 200 wide and 100 high."""
    model = small_yolo(num_classes=2, grid_size=2, score_thresh=0.1, nms_thresh=0.5)
    outputs = torch.zeros(1, 2, 2, 12)
    # Cell (row 1, col 0), predictor 1: centre ((0 + .5) / 2, (1 + .5) / 2) = (.25, .75),
    # w = h = .25 -> [.125, .625, .375, .875] -> pixels [25, 62.5, 75, 87.5]; conf 0.9;
    # classes [0.2, 0.8] -> scores 0.18 (label 1) and 0.72 (label 2).
    outputs[0, 1, 0, 5:10] = torch.tensor([0.5, 0.5, 0.5, 0.5, 0.9])
    # Predictor 0 of the same cell: the same centre, h = .49 -> IoU .51 with the first;
    # conf 0.5 -> scores 0.1 (= threshold, dropped) and 0.4 (suppressed by NMS, label 2).
    outputs[0, 1, 0, 0:5] = torch.tensor([0.5, 0.5, 0.5, 0.7, 0.5])
    outputs[0, 1, 0, 10:12] = torch.tensor([0.2, 0.8])
    # Cell (row 0, col 1), predictor 0: centre (.95, .05), .36 x .36 -> [.77, -.13, 1.13, .23],
    # clipped to the image -> pixels [154, 0, 200, 23]; conf 0.6, classes [1, 0] -> 0.6 label 1.
    # Its class score 1.3 and confidence 0.6 show the clamp: 1.3 counts as 1.
    outputs[0, 0, 1, 0:5] = torch.tensor([0.9, 0.1, 0.6, 0.6, 0.6])
    outputs[0, 0, 1, 10:12] = torch.tensor([1.3, -0.4])
    batch = Batch(images=torch.zeros(1, 3, 128, 128), original_sizes=[(100, 200)],
                  input_sizes=[(128, 128)])
    (detection,) = model.postprocess(outputs, batch)
    assert detection["labels"].tolist() == [2, 1, 1]
    assert detection["scores"].tolist() == pytest.approx([0.72, 0.6, 0.18], abs=1e-6)
    expected = [[25, 62.5, 75, 87.5], [154, 0, 200, 23], [25, 62.5, 75, 87.5]]
    for box, want in zip(detection["boxes"].tolist(), expected):
        assert box == pytest.approx(want, abs=1e-4)


def test_eval_forward_returns_detections_in_original_pixels():
    torch.manual_seed(0)
    model = small_yolo(score_thresh=0.0).eval()
    detections = model([torch.rand(3, 60, 90), torch.rand(3, 300, 200)])
    assert len(detections) == 2
    for det, (h, w) in zip(detections, [(60, 90), (300, 200)]):
        assert det["boxes"].dtype == torch.float32 and det["labels"].dtype == torch.int64
        assert len(det["boxes"]) <= 100
        if len(det["boxes"]):
            assert det["boxes"][:, 2].max() <= w and det["boxes"][:, 3].max() <= h
            assert (det["scores"][:-1] >= det["scores"][1:]).all()
            assert ((det["labels"] >= 1) & (det["labels"] <= 3)).all()


def test_empty_target_trains():
    model = small_yolo().train()
    losses = model([torch.rand(3, 64, 64)], [empty_target(0)])
    assert set(losses) == {"loss_coord", "loss_conf_obj", "loss_conf_noobj", "loss_class"}
    assert losses["loss_coord"].item() == 0 and losses["loss_conf_noobj"].item() > 0


# -- configs --------------------------------------------------------------------------------

@pytest.mark.parametrize("name, architecture", [("yolov1", "yolo"), ("fast_yolo", "fast_yolo")])
def test_configs_instantiate(name, architecture, compose_config):
    from experiments.build import build_detector

    cfg = compose_config([f"detector={name}"]).detector   # fast_yolo inherits yolov1's values
    assert cfg.name == name and cfg.augmentation == "yolo"
    assert "num_classes" not in cfg.model
    cfg.model.width = 0.125  # the paper's width 1 is 200M+ parameters: too slow for a test
    model = build_detector(cfg.model, 5)
    assert isinstance(model, YOLO) and model.architecture == architecture
    assert model.num_candidates(model.input_size) == 98 and model.input_size == (448, 448)


# -- learning ---------------------------------------------------------------------------------

def test_small_yolo_overfits_four_synthetic_images():
    """Width 1/8, BatchNorm, no dropout (the point is capacity, not regularisation), AdamW:
    the loss falls at least 10x and AP50 on the same 4 images (eval mode) reaches 0.9."""
    from experiments.data.synthetic import SyntheticShapes
    from experiments.evaluation import evaluate

    torch.manual_seed(0)
    dataset = SyntheticShapes(4, split="train")
    images, targets = zip(*(dataset[i] for i in range(4)))
    model = YOLO(num_classes=dataset.num_classes, width=0.125, batch_norm=True, input_size=160,
                 dropout=0.0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    model.train()
    history = []
    for _ in range(80):
        losses = model(list(images), list(targets))
        loss = sum(losses.values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    assert history[-1] < history[0] / 10, history[::10]
    model.eval()
    with torch.no_grad():
        detections = model(list(images))
    result = evaluate(detections, list(targets), dataset.class_names,
                      [tuple(im.shape[-2:]) for im in images])
    assert result.metrics["map_50"] >= 0.9, (result.metrics, history[::10])


def test_conv_head_keeps_the_grid_and_needs_an_input_of_64_s():
    model = YOLO(num_classes=3, width=0.125, head="conv", input_size=448).eval()
    assert isinstance(model.head[0], nn.Conv2d) and model.head[0].kernel_size == (1, 1)
    outputs = model.network(model.preprocess([torch.rand(3, 50, 70)]))
    assert outputs.shape == (1, 7, 7, 13)
    assert model.num_candidates((448, 448)) == 98
    with pytest.raises(ValueError, match="448"):
        YOLO(num_classes=3, width=0.125, head="conv", input_size=224)
    with pytest.raises(ValueError, match="head"):
        YOLO(num_classes=3, width=0.125, head="mlp")


def test_output_layer_starts_near_a_neutral_prediction():
    """x = y = 0.5, sqrt w = sqrt h = 0.5, confidence 0, class 1/C, give or take the small
    random weights, for both heads."""
    torch.manual_seed(0)
    for head in ("fc", "conv"):
        model = YOLO(num_classes=4, width=0.125, head=head, input_size=448).eval()
        outputs = model.network(model.preprocess([torch.rand(3, 120, 160)]))
        expected = torch.tensor([0.5, 0.5, 0.5, 0.5, 0.0] * 2 + [0.25] * 4)
        assert (outputs[0] - expected).abs().max() < 0.1, head
