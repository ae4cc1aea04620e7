"""R-CNN: the warp with context, the SVM and ridge stages, the fine-tuning sample and the
detector contract (detectors/rcnn.py, rcnn_svm.py, rcnn_fit.py)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from detectors.base import empty_target, validate_target
from detectors.rcnn import RCNN, context_boxes, rcnn_vgg16, warp_regions
from detectors.rcnn_svm import hard_negative_svm, linear_svm, ridge_regression
from detectors.region_proposals import FixedProposals, SlidingWindows
from experiments.build import build_detector
from experiments.data.synthetic import SyntheticShapes

CONF = Path(__file__).resolve().parents[1] / "conf" / "detector"
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def small(proposals=None, **overrides) -> RCNN:
    torch.manual_seed(0)
    return rcnn_vgg16(5, **{"width": 0.125, "batch_norm": True, "warp_size": 64, "context": 4,
                            "proposals": proposals or SlidingWindows((24, 48)), **overrides})


def test_warp_with_context_maps_a_known_box_to_the_expected_crop():
    image = torch.arange(3 * 100 * 100, dtype=torch.float32).reshape(3, 100, 100)
    # a 40 px box warped to 48 with 4 px of context: scale 1, so the crop is the box plus 4 px around it
    box = torch.tensor([[20.0, 30.0, 60.0, 70.0]])
    torch.testing.assert_close(context_boxes(box, 48, 4), torch.tensor([[16.0, 26.0, 64.0, 74.0]]))
    region = warp_regions(image, box, 48, 4)[0]
    torch.testing.assert_close(region, image[:, 26:74, 16:64])
    # the paper's 16 px at 224: a box fills the central 192 px; beyond the image is the mean (0)
    # a 96 px box at the corner: 8 px of context per side, 2 output px per image px
    corner = warp_regions(image + 1, torch.tensor([[0.0, 0.0, 96.0, 96.0]]), 224, 16)[0]
    assert corner[:, :14, :].abs().max() == 0 and corner[:, :, :14].abs().max() == 0
    assert corner[:, 18:200, 18:200].min() >= 1
    assert warp_regions(image, torch.zeros(0, 4), 48, 4).shape == (0, 3, 48, 48)


def separable(generator: torch.Generator, n_pos: int = 60, n_neg: int = 400, dim: int = 16):
    """Points (norm about 20, as R-CNN scales fc7) on either side of one fixed plane, a gap of
    2 around it; labels +1 / -1."""
    direction = torch.nn.functional.normalize(torch.randn(dim, generator=torch.Generator().manual_seed(9)), dim=0)
    points = torch.randn(n_pos + n_neg, dim, generator=generator) * 3
    side = points @ direction
    labels = torch.where(side > 1.0, 1.0, torch.where(side < -1.0, -1.0, 0.0))
    keep = labels != 0
    points, labels = points[keep] * 4, labels[keep]
    return points, labels


def test_svm_stage_separates_a_linearly_separable_set():
    points, labels = separable(torch.Generator().manual_seed(0))
    positives, negatives = points[labels > 0], points[labels < 0]
    weight, bias, info = hard_negative_svm(positives, negatives, initial_negatives=20)
    assert info["rounds"] > 1                           # mining added hard negatives
    assert ((points @ weight + bias) * labels > 0).all()   # every point on its side
    held_out, held_labels = separable(torch.Generator().manual_seed(1))
    assert ((held_out @ weight + bias) * held_labels > 0).float().mean() > 0.97


def test_svm_objective_matches_liblinear():
    svm = pytest.importorskip("sklearn.svm")
    points, labels = separable(torch.Generator().manual_seed(2), n_neg=200)
    weight, bias = linear_svm(points, labels, c=1e-3, bias_multiplier=10.0, positive_weight=2.0)
    reference = svm.LinearSVC(C=1e-3, intercept_scaling=10.0, class_weight={1: 2.0, -1: 1.0}, tol=1e-8,
                              max_iter=100000).fit(points.numpy(), labels.numpy())
    ours = (points @ weight + bias).double()
    theirs = torch.from_numpy(reference.decision_function(points.numpy()))
    torch.testing.assert_close(ours, theirs, atol=1e-3, rtol=1e-3)


def test_ridge_recovers_a_linear_map():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(500, 8, generator=g)
    true = torch.randn(8, 4, generator=g)
    w = ridge_regression(x, x @ true + 0.5, lam=1e-6)
    torch.testing.assert_close(w[:-1], true, atol=1e-3, rtol=1e-3)
    torch.testing.assert_close(w[-1], torch.full((4,), 0.5), atol=1e-3, rtol=1e-3)
    wide = ridge_regression(x[:5], (x @ true)[:5], lam=1.0)    # dual form (N < D + 1): still solves
    assert wide.shape == (9, 4) and torch.isfinite(wide).all()


def test_fine_tuning_samples_32_foreground_and_96_background():
    dataset = SyntheticShapes(4, image_size=128, seed=0)
    images, targets = map(list, zip(*[dataset[i] for i in range(4)]))
    model = small(proposals=SlidingWindows((16, 24, 32, 48, 64))).train()
    batch = model.preprocess(images, targets)
    labels = batch.extras["labels"]
    assert batch.images.shape == (128, 3, 64, 64)
    assert (labels > 0).sum() == 32 and (labels == 0).sum() == 96
    losses = model(images, targets)
    assert set(losses) == {"loss_classifier"} and torch.isfinite(losses["loss_classifier"])
    losses["loss_classifier"].backward()
    assert model.backbone[0].weight.grad.abs().sum() > 0


def test_empty_targets_and_zero_proposals():
    model = small(proposals=FixedProposals([torch.zeros(0, 4), torch.tensor([[5.0, 5.0, 40.0, 40.0]])])).train()
    losses = model([torch.rand(3, 64, 64), torch.rand(3, 64, 64)], [empty_target(0), empty_target(1)])
    assert torch.isfinite(losses["loss_classifier"])
    model.eval()
    with torch.no_grad():
        detections = model([torch.rand(3, 64, 64), torch.rand(3, 50, 70)])
    assert len(detections[0]["boxes"]) == 0 and detections[0]["boxes"].shape == (0, 4)


def test_fit_skips_classes_without_positives_and_detects_in_original_pixels():
    dataset = SyntheticShapes(6, image_size=96, seed=0)
    pairs = [dataset[i] for i in range(6)]
    kept = []
    for image, target in pairs:                       # only classes 1 and 2 remain: 3, 4, 5 have no positives
        keep = target["labels"] <= 2
        kept.append((image, {**target, **{k: target[k][keep] for k in ("boxes", "labels", "area", "iscrowd")}}))
    assert {int(c) for _, t in kept for c in t["labels"]} == {1, 2}
    model = small(proposals=SlidingWindows((16, 32, 48)))
    report = model.fit_after_training([tuple(zip(*kept[:3])), tuple(zip(*kept[3:]))], negatives_per_image=50)
    assert report["rcnn_svm_skipped"] == "3,4,5" and report["rcnn_svm_classes"] == 2
    assert report["rcnn_svm_positives"] == sum(len(t["boxes"]) for _, t in kept)
    assert model.scoring == "svm" and model.svm_ready.tolist() == [True, True, False, False, False]
    model.eval()
    images = [torch.rand(3, 80, 120), torch.rand(3, 96, 60)]
    with torch.no_grad():
        detections = model(images)
    for image, det in zip(images, detections):
        k = len(det["boxes"])
        assert k > 0 and set(det["labels"].tolist()) <= {1, 2}           # skipped classes never detected
        assert torch.all(det["scores"][:-1] >= det["scores"][1:])
        validate_target({"boxes": det["boxes"], "labels": det["labels"], "image_id": 0, "area": torch.zeros(k),
                         "iscrowd": torch.zeros(k, dtype=torch.int64)}, tuple(image.shape[-2:]), 5)
    state = model.state_dict()                        # the SVMs travel with the checkpoint
    fresh = small()
    fresh.load_state_dict(state)
    assert fresh.scoring == "svm"


def test_configs_give_the_papers_settings():
    paper_cfg = OmegaConf.load(CONF / "rcnn_vgg16.yaml")
    paper = build_detector(paper_cfg.model, 20)
    assert (paper.warp_size, paper.context, paper.fg_per_batch, paper.bg_per_batch) == (224, 16, 32, 96)
    assert paper.box_head.fc6.in_features == 512 * 7 * 7 and paper.nms_thresh == 0.3
    assert paper.num_candidates((500, 375)) == 2000 and paper_cfg.rcnn_fit.c == 0.001
    cpu_cfg = OmegaConf.merge(paper_cfg, OmegaConf.load(CONF / "rcnn_vgg16_cpu.yaml"))
    cpu = build_detector(cpu_cfg.model, 5)
    assert cpu.warp_size == 64 and cpu.num_candidates((300, 300)) == 500 and cpu.box_head.fc6.in_features == 64 * 4
