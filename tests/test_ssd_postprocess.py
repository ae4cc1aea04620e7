"""SSD's post-processing (one NMS call over the best candidates, ``detectors.topk_nms``) against
the class-by-class, image-by-image NMS it replaced, on random and on trained-like logits."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import batched_nms

from benchmarks.ssd_postprocess_speed import reference_postprocess, trained_like_logits
from detectors.boxes import decode
from detectors.ssd import SSD


def assert_same(new, old):
    assert len(new) == len(old)
    for a, b in zip(new, old):
        assert torch.equal(a["labels"], b["labels"])
        assert torch.equal(a["scores"], b["scores"])
        assert torch.equal(a["boxes"], b["boxes"])


@pytest.mark.parametrize("kind", ["random", "trained_like", "few_above", "small_max_detections"])
def test_one_call_nms_gives_the_reference_detections(kind):
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(1)
    options = {"small_max_detections": {"max_detections": 7}, "few_above": {"score_thresh": 0.97}}.get(kind, {})
    model = SSD(num_classes=20, width=0.0625, **options).eval()
    b, a = 4, model.priors.shape[0]
    loc = torch.randn(b, a, 4, generator=generator) * 0.5
    if kind == "trained_like":
        conf = trained_like_logits(b, a, 20, generator)
    else:
        conf = torch.randn(b, a, 21, generator=generator) * (3.0 if kind == "few_above" else 0.3)
    sizes = [(300, 300), (375, 500), (480, 640), (200, 250)]
    batch = model.preprocess([torch.rand(3, *s) for s in sizes])
    new = model.postprocess((loc, conf), batch)
    old = reference_postprocess(model, loc, conf, sizes)
    assert_same(new, old)
    counts = [len(d["scores"]) for d in new]
    if kind == "random":
        assert counts == [200] * 4              # the cap binds: the first round's early stop is exercised
    elif kind == "small_max_detections":
        assert counts == [7] * 4
    else:
        assert min(counts) > 0 and min(counts) < 200, counts  # an image whose every candidate was examined


def test_candidates_before_nms_none_and_empty_images():
    torch.manual_seed(0)
    model = SSD(num_classes=3, width=0.0625, candidates_before_nms=None, score_thresh=0.5).eval()
    a = model.priors.shape[0]
    conf = torch.zeros(2, a, 4)
    conf[0, :50, 2] = torch.linspace(4, 6, 50)  # image 0: 50 candidates of class 2 (no ties); image 1: none
    loc = torch.randn(2, a, 4) * 0.3
    batch = model.preprocess([torch.rand(3, 300, 300)] * 2)
    new = model.postprocess((loc, conf), batch)
    assert_same(new, reference_postprocess(model, loc, conf, [(300, 300)] * 2))
    assert len(new[1]["scores"]) == 0 and set(new[0]["labels"].tolist()) == {2}


def test_matches_torchvision_batched_nms_per_image():
    """The same kept set as torchvision's batched_nms over each image's candidates (up to order of ties)."""
    torch.manual_seed(0)
    model = SSD(num_classes=5, width=0.0625, max_detections=10_000).eval()
    a = model.priors.shape[0]
    loc, conf = torch.randn(1, a, 4) * 0.5, torch.randn(1, a, 6)
    batch = model.preprocess([torch.rand(3, 300, 300)])
    det = model.postprocess((loc, conf), batch)[0]
    ref = reference_postprocess(model, loc, conf, [(300, 300)])[0]
    scores = F.softmax(conf, -1)[0, :, 1:]
    top_scores, top_index = scores.T.topk(400, dim=1)
    boxes = (decode(loc, model.priors, model.variances)[0] * 300).clamp(0, 300)
    candidates, flat = boxes[top_index.reshape(-1)], top_scores.reshape(-1)
    labels = torch.arange(5).repeat_interleave(400)
    above = flat > model.score_thresh
    keep = batched_nms(candidates[above], flat[above], labels[above], model.nms_thresh)
    assert len(det["scores"]) == len(keep) == len(ref["scores"])
    assert torch.equal(det["scores"].sort().values, flat[above][keep].sort().values)


def test_few_classes_with_boxes_piled_on_few_objects_go_class_by_class_with_the_same_detections(monkeypatch):
    """The case a growing fused prefix was slow at (compare's 5 classes, trained-like boxes):
    one round does not finish, so the CPU path goes class by class; the detections are the same."""
    from benchmarks.ssd_postprocess_speed import few_classes_outputs
    from detectors import topk_nms

    calls = []
    original = topk_nms.class_by_class
    monkeypatch.setattr(topk_nms, "class_by_class", lambda *a, **k: calls.append(1) or original(*a, **k))
    model, loc, conf = few_classes_outputs(2, torch.Generator().manual_seed(2))
    sizes = [(300, 300), (375, 500)]
    batch = model.preprocess([torch.rand(3, *s) for s in sizes])
    new = model.postprocess((loc, conf), batch)
    assert_same(new, reference_postprocess(model, loc, conf, sizes))
    assert len(calls) == 2 and all(0 < len(d["scores"]) < 100 for d in new)
