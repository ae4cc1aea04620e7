"""The speed protocol on detbench's own detectors, built from their configs as the runner builds them."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from experiments.build import build_detector
from experiments.job.identity import model_facts
from experiments.speed.benchmark import benchmark, count_forward_flops

CONF = Path(__file__).resolve().parents[1] / "conf"


def build(name: str, num_classes: int, overrides: list[str] = ()):
    """The detector of conf/detector/<name>.yaml, as ``experiments.run`` instantiates it."""
    if not (CONF / "detector" / f"{name}.yaml").exists():
        pytest.skip(f"conf/detector/{name}.yaml is not written yet")
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        cfg = compose(config_name=f"detector/{name}", overrides=list(overrides))
    torch.manual_seed(0)
    return build_detector(cfg.detector.model, num_classes)


def quick_benchmark(detector):
    return benchmark(detector, batch_sizes=(1,), warmup=0, iterations=1, measure_peak=False)


def test_ssd300_gmacs_match_torchvision_card():
    """torchvision's 34.858 GMACs is its COCO model: 90 classes + background. With VOC's 20
    the class heads shrink by 70 x (sum over maps of h*w*9*channels*boxes) MACs."""
    detector = build("ssd300", num_classes=90)
    metrics = quick_benchmark(detector)
    assert metrics["gmacs"] == pytest.approx(34.858, rel=0.02)
    assert model_facts(detector, (300, 300))["num_candidates"] == 8732
    per_class = sum(h * w * 9 * c * a for h, w, c, a in [(38, 38, 512, 4), (19, 19, 1024, 6), (10, 10, 512, 6),
                                                       (5, 5, 256, 6), (3, 3, 256, 4), (1, 1, 256, 4)])
    with torch.inference_mode():
        voc_flops, _ = count_forward_flops(build("ssd300", num_classes=20), [torch.rand(3, 300, 300)])
    assert voc_flops / 2 / 1e9 == pytest.approx(metrics["gmacs"] - 70 * per_class / 1e9, rel=1e-9)


@pytest.mark.parametrize("name, candidates", [("ssd300", 8732), ("yolov1", 98), ("faster_rcnn_vgg16", 300)])
def test_paper_detectors_report_their_candidates(name, candidates):
    """Boxes scored before NMS, as the papers count them: SSD300's default boxes, YOLO's
    7x7 grid x 2, Faster R-CNN's 300 test proposals (at width 1/8 to keep the test quick)."""
    detector = build(name, num_classes=20, overrides=["detector.model.width=0.125"])
    metrics = quick_benchmark(detector)
    assert model_facts(detector, detector.input_size)["num_candidates"] == candidates
    assert metrics["gmacs"] > 0 and metrics["fps_b1"] > 0
    assert 0 <= metrics["boxes_kept_b1"] <= candidates
    if name != "faster_rcnn_vgg16":
        assert metrics["candidates_scored_b1"] == candidates       # a fixed count
        return
    # Faster R-CNN's 300 is an upper bound: the measured count is the proposals its RPN kept
    with torch.inference_mode():
        batch = detector.eval().preprocess([torch.rand(3, *detector.input_size)])
        proposals = detector.network(batch)["proposals"]
    assert detector.candidates_scored({"proposals": proposals}, batch) == [len(proposals[0])]
    assert 0 < metrics["candidates_scored_b1"] <= candidates
