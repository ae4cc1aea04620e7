"""Faster R-CNN's threaded RoIAlign backward and RPN filtering give torchvision's serial numbers
on a fixed batch: the same proposals, losses and gradients."""
from __future__ import annotations

import pytest
import torch
from torchvision.models.detection.rpn import RegionProposalNetwork
from torchvision.ops import roi_align

from detectors.faster_rcnn_builders import faster_rcnn_vgg16
from detectors.faster_rcnn_threads import ThreadedRoIAlign, ThreadedRPN, _RoIAlign, image_runs, with_serial_ops
from experiments.data.collate import collate
from experiments.data.synthetic import SyntheticShapes


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)    # the threaded paths need more than one thread
    yield
    torch.set_num_threads(before)


def test_image_runs_cover_the_batch_in_order():
    assert image_runs(16, 2) == [(0, 8), (8, 16)]
    assert image_runs(5, 3) == [(0, 2), (2, 3), (3, 5)]
    assert image_runs(1, 2) == [(0, 1)]


def test_roi_align_backward_split_by_image_is_the_serial_kernels(two_threads):
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(4, 8, 19, 19, generator=generator, requires_grad=True)
    counts = [5, 0, 7, 3]                      # an image without RoIs too
    xy = torch.rand(sum(counts), 2, generator=generator) * 200
    boxes = torch.cat([xy, xy + 16 + torch.rand(sum(counts), 2, generator=generator) * 100], 1)
    rois = torch.cat([torch.arange(4).repeat_interleave(torch.tensor(counts))[:, None].float(), boxes], 1)
    grad = torch.randn(sum(counts), 8, 7, 7, generator=generator)
    ours = _RoIAlign.apply(features, rois, 1 / 16, 7, 7, 2)
    (ours_grad,) = torch.autograd.grad(ours, features, grad)
    theirs = roi_align(features, rois, 7, 1 / 16, 2)
    (theirs_grad,) = torch.autograd.grad(theirs, features, grad)
    assert torch.equal(ours, theirs) and torch.equal(ours_grad, theirs_grad)


def test_threaded_faster_rcnn_trains_and_proposes_as_the_serial_one(two_threads):
    torch.manual_seed(0)
    model = faster_rcnn_vgg16(5, width=0.125, batch_norm=True, min_size=160, max_size=160,
                              input_size=(160, 160), rpn={"anchor_sizes": [32, 64, 128]},
                              roi_heads={"pooling": "align", "batch_size_per_image": 32})
    assert isinstance(model.rpn, ThreadedRPN) and isinstance(model.roi_heads.box_roi_pool, ThreadedRoIAlign)
    reference = with_serial_ops(model)
    assert type(reference.rpn) is RegionProposalNetwork
    assert type(reference.roi_heads.box_roi_pool) is not ThreadedRoIAlign
    dataset = SyntheticShapes(4, image_size=160, seed=3)
    images, targets = collate([dataset[i] for i in range(4)])
    results = []
    for m in (model, reference):
        m.train()
        torch.manual_seed(1)                    # the same anchor and RoI sampling draws
        losses = m(images, targets)
        grads = torch.autograd.grad(sum(losses.values()), list(m.parameters()), allow_unused=True)
        m.eval()
        with torch.no_grad():
            proposals = m.propose(m.preprocess(images), m.features(m.preprocess(images).images))[0]
        results.append((losses, grads, proposals))
    (losses, grads, proposals), (ref_losses, ref_grads, ref_proposals) = results
    assert all(torch.equal(losses[k], ref_losses[k]) for k in ref_losses)
    assert all((a is None and b is None) or torch.equal(a, b) for a, b in zip(grads, ref_grads))
    assert len(proposals) == 4 and all(torch.equal(a, b) for a, b in zip(proposals, ref_proposals))


def test_threaded_rpn_runs_under_the_callers_autocast(two_threads):
    """Autocast is thread-local: without it in the workers, NMS meets bf16 boxes and fails."""
    torch.manual_seed(0)
    model = faster_rcnn_vgg16(5, width=0.125, batch_norm=True, min_size=160, max_size=160,
                              input_size=(160, 160), rpn={"anchor_sizes": [32, 64, 128]},
                              roi_heads={"pooling": "align", "batch_size_per_image": 32}).train()
    dataset = SyntheticShapes(2, image_size=160, seed=3)
    images, targets = collate([dataset[i] for i in range(2)])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = model(images, targets)
    assert all(torch.isfinite(v) for v in losses.values())
