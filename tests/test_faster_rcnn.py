"""Faster R-CNN: the paper's geometry (anchors, proposals), the contract (loss keys, empty
images, original pixels) and equality with torchvision's fasterrcnn_resnet50_fpn."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torchvision.models.detection import fasterrcnn_resnet50_fpn
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import MultiScaleRoIAlign

from detectors.base import empty_target, validate_target
from detectors.faster_rcnn import FasterRCNN
from detectors.faster_rcnn_builders import faster_rcnn_resnet50_fpn, faster_rcnn_vgg16
from experiments.build import build_detector
from experiments.data.synthetic import SyntheticShapes

CONF = Path(__file__).resolve().parents[1] / "conf" / "detector"
LOSS_KEYS = {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")   # small tensors: one thread (conftest)


def small_vgg(**overrides) -> FasterRCNN:
    torch.manual_seed(0)
    settings = dict(width=0.125, batch_norm=True)
    return faster_rcnn_vgg16(5, **{**settings, **overrides})


def test_anchor_count_for_a_600x1000_image_is_the_papers_about_20k():
    model = small_vgg()  # width does not change the geometry
    # conv5_3 of a 600x1000 input, padded to a multiple of 16 (Caffe's pools round up):
    # ceil(600/16) x ceil(1000/16) locations, 3 scales x 3 aspect ratios each.
    expected = math.ceil(600 / 16) * math.ceil(1000 / 16) * 3 * 3
    assert expected == 38 * 63 * 9 == 21546
    assert model.num_anchors((600, 1000)) == expected
    # An image given at another size is first resized (shorter side 600): 300x500 -> 600x1000.
    assert model.num_anchors((300, 500)) == expected


def test_anchor_count_matches_the_anchors_the_rpn_generates():
    model = small_vgg(min_size=200, max_size=400).eval()
    image = torch.rand(3, 150, 250)  # -> 200 x 333, padded to 208 x 336
    batch = model.preprocess([image])
    features = model.features(batch.images)
    anchors = model.rpn.anchor_generator(ImageList(batch.images, batch.input_sizes), list(features.values()))
    assert anchors[0].shape == (model.num_anchors((150, 250)), 4)
    assert anchors[0].shape[0] == math.ceil(200 / 16) * math.ceil(333 / 16) * 9


def test_300_proposals_at_test_and_2000_in_training():
    model = small_vgg().eval()
    assert model.num_candidates((600, 1000)) == 300
    batch = model.preprocess([torch.rand(3, 600, 1000)])
    with torch.no_grad():
        features = model.features(batch.images)
        proposals, losses = model.propose(batch, features)
        assert losses == {} and proposals[0].shape == (300, 4)
        model.train()
        train_batch = model.preprocess([torch.rand(3, 600, 1000)], [empty_target(0)])
        proposals, _ = model.propose(train_batch, model.features(train_batch.images))
    assert proposals[0].shape == (2000, 4)


def test_training_gives_the_four_named_losses_and_gradients():
    dataset = SyntheticShapes(2, image_size=160, seed=0)
    images, targets = zip(*[dataset[i] for i in range(2)])
    model = small_vgg(min_size=160, max_size=160, rpn={"anchor_sizes": (32, 64, 128)}).train()
    losses = model(list(images), list(targets))
    assert set(losses) == LOSS_KEYS
    assert all(torch.isfinite(v) and v.ndim == 0 for v in losses.values())
    sum(losses.values()).backward()
    assert model.backbone[0].weight.grad.abs().sum() > 0          # conv1_1 learns
    assert model.roi_heads.box_predictor.bbox_pred.weight.grad.abs().sum() > 0


def test_a_training_step_on_an_image_without_objects():
    model = small_vgg(min_size=160, max_size=160).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    before = model.rpn.head.cls_logits.weight.detach().clone()
    losses = model([torch.rand(3, 160, 200)], [empty_target(7)])
    assert set(losses) == LOSS_KEYS and all(torch.isfinite(v) for v in losses.values())
    # Nothing to regress towards: only the objectness and classification losses are non-zero.
    assert losses["loss_rpn_box_reg"] == 0 and losses["loss_box_reg"] == 0
    assert losses["loss_objectness"] > 0 and losses["loss_classifier"] > 0
    optimizer.zero_grad()
    sum(losses.values()).backward()
    optimizer.step()
    assert not torch.equal(before, model.rpn.head.cls_logits.weight)


def test_eval_gives_valid_detections_in_original_pixels():
    model = small_vgg(min_size=200, max_size=400).eval()
    images = [torch.rand(3, 100, 150), torch.rand(3, 120, 90)]  # both resized up, differently
    with torch.no_grad():
        detections = model(images)
    assert len(detections) == 2
    for image, det in zip(images, detections):
        h, w = image.shape[-2:]
        k = det["boxes"].shape[0]
        assert 0 < k <= 100 and det["scores"].shape == (k,) and det["labels"].shape == (k,)
        assert det["boxes"].dtype == torch.float32 and det["labels"].dtype == torch.int64
        assert torch.all(det["scores"][:-1] >= det["scores"][1:])
        assert det["labels"].min() >= 1 and det["labels"].max() <= 5
        # boxes are clipped to the resized image and then scaled back: inside the original
        validate_target({"boxes": det["boxes"], "labels": det["labels"], "image_id": 0,
                         "area": torch.zeros(k), "iscrowd": torch.zeros(k, dtype=torch.int64)},
                        image_size=(h, w), num_classes=5)
        assert det["boxes"][:, 2].max() > 0.5 * w  # not left in the 200-400 px input frame's corner


def test_roi_pool_is_7x7_on_conv5_3_at_stride_16():
    model = small_vgg()
    pool = model.roi_heads.box_roi_pool
    features = {"0": torch.arange(2 * 20 * 30, dtype=torch.float32).view(1, 2, 20, 30)}
    # a region of input pixels [16, 32] .. [16 + 6 * 16, 32 + 6 * 16] covers 7 x 7 cells of the
    # stride-16 map, one per bin: RoI max pooling gives those cells themselves
    proposals = [torch.tensor([[16.0, 32.0, 16.0 + 96, 32.0 + 96], [0.0, 0.0, 479.0, 319.0]])]
    out = pool(features, proposals, [(320, 480)])
    assert out.shape == (2, 2, 7, 7)
    torch.testing.assert_close(out[0], features["0"][0, :, 2:9, 1:8], rtol=0, atol=0)
    assert out[1].amax() == features["0"].amax()               # the whole map: its maximum is kept
    assert model.roi_heads.box_head.fc6.in_features == model.backbone.out_channels * 7 * 7
    aligned = small_vgg(roi_heads={"pooling": "align"}).roi_heads.box_roi_pool
    assert aligned(features, proposals, [(320, 480)]).shape == (2, 2, 7, 7)


def test_roi_pooling_variants_and_bad_value():
    assert type(small_vgg().roi_heads.box_roi_pool).__name__ == "SingleMapRoIPool"
    align = small_vgg(roi_heads={"pooling": "align"}).roi_heads.box_roi_pool
    assert isinstance(align, MultiScaleRoIAlign) and type(align).__name__ == "ThreadedRoIAlign"   # threaded backward
    with pytest.raises(ValueError, match="roi_heads.pooling"):
        small_vgg(roi_heads={"pooling": "warp"})
    with pytest.raises(ValueError, match=r"RoIHeadSettings: unknown settings \['poling'\]"):
        small_vgg(roi_heads={"poling": "align"})


def test_width_scales_channels_and_fc_layers():
    model = small_vgg(width=0.25)
    assert model.backbone.out_channels == 128
    assert model.roi_heads.box_head.fc6.in_features == 128 * 7 * 7
    assert model.roi_heads.box_head.fc7.out_features == 1024  # 4096 / 4


def test_resnet50_fpn_with_torchvision_weights_gives_torchvision_detections():
    torch.manual_seed(0)
    reference = fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=6,
                                        min_size=128, max_size=192).eval()
    ours = faster_rcnn_resnet50_fpn(5, min_size=128, max_size=192).eval()
    ours.load_state_dict(reference.state_dict())  # same parts, same keys: strict load
    images = [torch.rand(3, 100, 140), torch.rand(3, 150, 120)]  # resized, and mapped back
    with torch.no_grad():
        expected = reference(images)
        got = ours(images)
    for e, g in zip(expected, got):
        assert e["boxes"].shape[0] > 0
        torch.testing.assert_close(g["boxes"], e["boxes"])
        torch.testing.assert_close(g["scores"], e["scores"])
        assert torch.equal(g["labels"], e["labels"])
    assert ours.num_candidates((800, 1333)) == 1000


def test_the_configs_build_the_papers_settings():
    vgg_cfg = OmegaConf.load(CONF / "faster_rcnn_vgg16.yaml")
    assert vgg_cfg.name == "faster_rcnn_vgg16" and "num_classes" not in vgg_cfg.model
    vgg_cfg.model.width = 0.125  # the geometry is what is checked here
    model = build_detector(vgg_cfg.model, 20)
    assert isinstance(model, FasterRCNN) and model.input_size == (600, 1000)
    assert model.num_candidates(model.input_size) == 300
    assert model.rpn.anchor_generator.num_anchors_per_location() == [9]
    assert model.roi_heads.box_predictor.cls_score.out_features == 21
    r50_cfg = OmegaConf.load(CONF / "faster_rcnn_r50_fpn.yaml")
    model = build_detector(r50_cfg.model, 3)
    assert model.input_size == (800, 1333) and model.num_candidates((800, 1333)) == 1000


def test_a_wrong_predictor_size_is_refused():
    model = small_vgg()
    with pytest.raises(ValueError, match="num_classes \\+ 1"):
        FasterRCNN(4, model.backbone, model.rpn, model.roi_heads, model.transform, (600, 1000))
