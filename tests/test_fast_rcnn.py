"""Fast R-CNN: the paper's RoI sampling (64 per image, 25% fg at IoU >= 0.5, bg in [0.1, 0.5)),
external proposals mapped to input pixels and back, and the detector contract."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torchvision.ops import box_iou

from detectors.base import empty_target, validate_target
from detectors.fast_rcnn import FastRCNN, fast_rcnn_vgg16
from detectors.region_proposals import FixedProposals, SlidingWindows
from experiments.build import build_detector
from experiments.data.synthetic import SyntheticShapes

CONF = Path(__file__).resolve().parents[1] / "conf" / "detector"
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def small(proposals=None, **overrides) -> FastRCNN:
    torch.manual_seed(0)
    return fast_rcnn_vgg16(5, **{"width": 0.125, "batch_norm": True, "min_size": 160, "max_size": 160,
                                 "proposals": proposals or SlidingWindows(), **overrides})


def boxes_around(gt: torch.Tensor, count: int, spread: float, generator: torch.Generator) -> torch.Tensor:
    """``count`` boxes jittered from ``gt`` [4] by up to ``spread`` of its size."""
    size = (gt[2:] - gt[:2]).repeat(2)
    jitter = (torch.rand(count, 4, generator=generator) * 2 - 1) * spread * size
    boxes = gt + jitter
    return torch.cat([boxes[:, :2], torch.maximum(boxes[:, 2:], boxes[:, :2] + 4)], 1).clamp(0, 300)


def test_roi_sampling_has_the_papers_fractions_and_iou_ranges():
    model = small(proposals=FixedProposals([torch.zeros(0, 4)]))
    heads = model.roi_heads
    assert (heads.fg_bg_sampler.batch_size_per_image, heads.fg_bg_sampler.positive_fraction) == (64, 0.25)
    g = torch.Generator().manual_seed(0)
    gt = torch.tensor([[100.0, 100.0, 200.0, 200.0]])
    proposals = torch.cat([boxes_around(gt[0], 400, 0.6, g),                 # all IoUs from ~0 to ~1
                           torch.tensor([[0.0, 0.0, 30.0, 30.0]]).repeat(50, 1)])  # IoU 0: below the floor
    iou = box_iou(proposals, gt)[:, 0]
    assert (iou >= 0.5).sum() > 16 and ((iou >= 0.1) & (iou < 0.5)).sum() > 48   # enough of each kind
    target = {"boxes": gt, "labels": torch.tensor([3])}
    for _ in range(5):   # two images per batch, as the paper; the sampler is random
        sampled, _, labels, _ = heads.select_training_samples([proposals.clone(), proposals.clone()],
                                                              [target, target])
        for boxes, label in zip(sampled, labels):
            assert len(boxes) == 64
            assert (label == 3).sum() == 16 and (label == 0).sum() == 48     # 25% foreground
            best = box_iou(boxes, gt)[:, 0]
            assert (best[label == 3] >= 0.5).all()
            assert ((best[label == 0] >= 0.1) & (best[label == 0] < 0.5)).all()   # never the IoU-0 boxes


def test_training_losses_and_gradients():
    dataset = SyntheticShapes(2, image_size=160, seed=0)
    images, targets = zip(*[dataset[i] for i in range(2)])
    model = small().train()
    losses = model(list(images), list(targets))
    assert set(losses) == {"loss_classifier", "loss_box_reg"}
    assert all(torch.isfinite(v) and v.ndim == 0 for v in losses.values())
    sum(losses.values()).backward()
    assert model.backbone[0].weight.grad.abs().sum() > 0
    assert model.roi_heads.box_predictor.bbox_pred.weight.grad.abs().sum() > 0


def test_empty_targets_and_images_without_proposals_train():
    model = small(proposals=FixedProposals([torch.zeros(0, 4), torch.tensor([[10.0, 10.0, 60.0, 60.0]])])).train()
    losses = model([torch.rand(3, 160, 200), torch.rand(3, 100, 100)], [empty_target(0), empty_target(1)])
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_box_reg"] == 0 and losses["loss_classifier"] > 0


def test_predictions_are_the_proposals_in_original_pixels():
    """With a zero box regressor and zero class scores every class scores each proposal 1/6,
    and decoding gives the proposal back: the detections must be the proposals, in the pixels of
    each image as given, whatever the resize."""
    proposals = [torch.tensor([[10.0, 20.0, 60.0, 90.0], [5.0, 5.0, 40.0, 30.0]]),
                 torch.tensor([[30.0, 10.0, 80.0, 50.0]])]
    model = small(proposals=FixedProposals(proposals), min_size=300, max_size=500).eval()
    for layer in (model.roi_heads.box_predictor.bbox_pred, model.roi_heads.box_predictor.cls_score):
        torch.nn.init.zeros_(layer.weight)
        torch.nn.init.zeros_(layer.bias)
    images = [torch.rand(3, 100, 150), torch.rand(3, 120, 90)]
    with torch.no_grad():
        batch = model.preprocess(images)
        scale = batch.input_sizes[0][0] / 100
        torch.testing.assert_close(batch.extras["proposals"][0], proposals[0] * scale)
        detections = model.postprocess(model.network(batch), batch)
    for image, det, given in zip(images, detections, proposals):
        k = len(det["boxes"])
        assert k == 5 * len(given)                       # every class, every proposal
        torch.testing.assert_close(det["scores"], torch.full((k,), 1 / 6))
        assert torch.allclose(box_iou(det["boxes"], given).max(1).values, torch.ones(k), atol=1e-4)
        validate_target({"boxes": det["boxes"], "labels": det["labels"], "image_id": 0, "area": torch.zeros(k),
                         "iscrowd": torch.zeros(k, dtype=torch.int64)}, tuple(image.shape[-2:]), 5)


def test_zero_proposals_still_score_the_image_and_a_missing_source_is_named():
    model = small(proposals=FixedProposals([torch.zeros(0, 4)])).eval()
    with torch.no_grad():
        detections = model([torch.rand(3, 64, 64), torch.rand(3, 80, 64)])
    assert [len(d["boxes"]) for d in detections] == [0, 0]
    bare = fast_rcnn_vgg16(5, width=0.125).eval()
    with pytest.raises(ValueError, match="proposal source"):
        bare([torch.rand(3, 64, 64)])


def test_configs_give_the_papers_settings():
    paper = build_detector(OmegaConf.load(CONF / "fast_rcnn_vgg16.yaml").model, 20)
    assert isinstance(paper, FastRCNN) and paper.num_candidates((500, 375)) == 2000
    assert paper.proposals_train == 2000 and paper.input_size == (600, 1000)
    sampler = paper.roi_heads.fg_bg_sampler
    assert (sampler.batch_size_per_image, sampler.positive_fraction) == (64, 0.25)
    assert paper.roi_heads.bg_iou_low == 0.1 and paper.roi_heads.nms_thresh == 0.3
    assert paper.roi_heads.box_roi_pool.output_size == 7                  # RoIPool 7x7 at 1/16
    cpu_cfg = OmegaConf.merge(OmegaConf.load(CONF / "fast_rcnn_vgg16.yaml"),
                              OmegaConf.load(CONF / "fast_rcnn_vgg16_cpu.yaml"))
    cpu_cfg.pop("defaults", None)
    cpu = build_detector(cpu_cfg.model, 5)
    assert cpu.backbone[0].out_channels == 8 and cpu.input_size == (300, 300)


def test_speed_protocol_times_proposals_as_their_own_stage():
    from experiments.speed.benchmark import benchmark

    calls = []

    def windows(image):
        calls.append(image.shape)
        return SlidingWindows((32, 64)).windows(*image.shape[-2:])

    model = small(proposals=FixedProposals(windows), min_size=128, max_size=128, input_size=(128, 128))
    metrics = benchmark(model, batch_sizes=[1], warmup=0, iterations=2, measure_peak=False)
    assert metrics["proposal_ms_b1"] > 0 and len(calls) >= 2
    assert metrics["latency_ms_p50_without_proposals_b1"] < metrics["latency_ms_p50_b1"]
    assert metrics["candidates_scored_b1"] == len(SlidingWindows((32, 64)).windows(128, 128))
