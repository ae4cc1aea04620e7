"""One name per shared setting: a sweep over every detector changes the same thing in each."""
from __future__ import annotations

import pytest
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser

from detectors.faster_rcnn import FasterRCNN
from detectors.reference import TorchvisionSingleShot
from experiments.build import build_detector
from experiments.job.settings import check_config

SWEEP = ["detector=ssd300_cpu,yolov1_cpu,faster_rcnn_vgg16_cpu", "detector.model.nms_thresh=0.45,0.6",
         "detector.model.score_thresh=0.2", "detector.model.max_detections=50"]


def effective(model) -> dict:
    """The values each detector actually uses at inference, read from its parts."""
    if isinstance(model, FasterRCNN):
        heads = model.roi_heads
        return {"nms_thresh": heads.nms_thresh, "score_thresh": heads.score_thresh,
                "max_detections": heads.detections_per_img,
                "candidates_before_nms": model.rpn._post_nms_top_n["testing"]}
    return {"nms_thresh": model.nms_thresh, "score_thresh": model.score_thresh,
            "max_detections": model.max_detections}


def test_the_three_detector_sweep_composes_and_builds_each_detector(compose_config):
    parsed = OverridesParser.create().parse_overrides(SWEEP)
    jobs = BasicSweeper.split_arguments(parsed, max_batch_size=None)[0]
    assert len(jobs) == 6
    seen = set()
    for job in jobs:
        cfg = compose_config(list(job))
        check_config(cfg)
        model = build_detector(cfg.detector.model, 3)
        values = effective(model)
        assert values["nms_thresh"] == cfg.detector.model.nms_thresh
        assert values["score_thresh"] == 0.2 and values["max_detections"] == 50
        seen.add((cfg.detector.name, values["nms_thresh"]))
    assert seen == {(d, t) for d in ("ssd300_cpu", "yolov1_cpu", "faster_rcnn_vgg16_cpu") for t in (0.45, 0.6)}


def test_candidates_before_nms_reaches_ssd_faster_rcnn_and_torchvision_rows(compose_config):
    ssd = build_detector(compose_config(["detector=ssd300_cpu", "detector.model.candidates_before_nms=50"]
                                        ).detector.model, 3)
    assert ssd.candidates_before_nms == 50
    frcnn = build_detector(compose_config(["detector=faster_rcnn_vgg16_cpu",
                                           "detector.model.candidates_before_nms=50"]).detector.model, 3)
    assert effective(frcnn)["candidates_before_nms"] == 50 and frcnn.num_candidates((300, 300)) == 50
    tv = build_detector(compose_config(["detector=tv_ssdlite320", "detector.model.candidates_before_nms=50",
                                        "detector.model.nms_thresh=0.6"]).detector.model, 3)
    assert isinstance(tv, TorchvisionSingleShot)
    assert tv.model.topk_candidates == 50 and tv.model.nms_thresh == 0.6


@pytest.mark.parametrize("detector, old, new", [
    ("ssd300_cpu", "top_k", "max_detections"),
    ("ssd300_cpu", "candidates_per_class", "candidates_before_nms"),
    ("yolov1_cpu", "score_threshold", "score_thresh"),
    ("yolov1_cpu", "weights_path", "backbone_weights"),
    ("faster_rcnn_vgg16_cpu", "box_nms_thresh", "nms_thresh"),
    ("faster_rcnn_vgg16_cpu", "rpn_post_nms_top_n", "candidates_before_nms"),
    ("faster_rcnn_vgg16_cpu", "roi_pooling", "roi_heads.pooling"),
])
def test_an_old_name_is_refused_naming_the_new_one(compose_config, detector, old, new):
    cfg = compose_config([f"detector={detector}", f"+detector.model.{old}=1"])
    with pytest.raises(ValueError, match=rf"detector\.model\.{old} is now {new}"):
        check_config(cfg)


def test_yolo_candidates_before_nms_keeps_each_class_best_boxes():
    import torch

    from detectors.yolo import YOLO

    torch.manual_seed(0)
    model = YOLO(3, width=0.0625, batch_norm=True, head="conv", dropout=0.0, score_thresh=0.0,
                 nms_thresh=1.0, max_detections=1000).eval()
    images = [torch.rand(3, 448, 448)]
    with torch.no_grad():
        every = model(images)[0]
        model.candidates_before_nms = 2
        best_two = model(images)[0]
    assert len(every["scores"]) > 6 >= len(best_two["scores"])
    for label in best_two["labels"].unique():
        ours = best_two["scores"][best_two["labels"] == label].sort(descending=True).values
        theirs = every["scores"][every["labels"] == label].sort(descending=True).values[:2]
        torch.testing.assert_close(ours, theirs)
