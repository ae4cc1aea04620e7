"""A small-width Faster R-CNN (VGG-16) overfits 4 synthetic images on the CPU: AP50 >= 0.9 on
those images, scored by detbench's evaluator (pycocotools' numbers)."""
from __future__ import annotations

import torch

from detectors.faster_rcnn_builders import faster_rcnn_vgg16
from experiments.data.synthetic import SyntheticShapes
from experiments.evaluation import evaluate


def test_small_vgg16_faster_rcnn_overfits_four_synthetic_images():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the test machine is shared; one thread wastes least
    try:
        dataset = SyntheticShapes(4, image_size=300, seed=0, split="train")
        images, targets = map(list, zip(*[dataset[i] for i in range(4)]))
        assert sum(t["boxes"].shape[0] for t in targets) >= 8
        torch.manual_seed(0)
        # The paper's network at 1/4 of the channels, with BatchNorm (trains from scratch) and
        # RoIAlign; 300x300 kept as is, so anchors from 32 px; fewer proposals in training.
        model = faster_rcnn_vgg16(dataset.num_classes, width=0.25, batch_norm=True,
                                  min_size=300, max_size=300, input_size=(300, 300),
                                  rpn={"anchor_sizes": (32, 64, 128, 256), "pre_nms_top_n": (2000, 1000),
                                       "post_nms_top_n_train": 500},
                                  roi_heads={"pooling": "align"}, candidates_before_nms=300)
        assert model.num_candidates((300, 300)) == 300
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
        model.train()
        losses = []
        # At 60 steps AP50 swung between 0.89 and 0.99 with 4e-7 changes to the images; at 80
        # it was 1.0 for seeds 0, 1 and 2.
        for _ in range(80):
            loss = sum(model(images, targets).values())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        assert losses[-1] * 4 <= losses[0], losses
        model.eval()
        with torch.no_grad():
            detections = model(images)
    finally:
        torch.set_num_threads(threads)
    result = evaluate(detections, targets, dataset.class_names, [(300, 300)] * 4,
                      backend="pycocotools")
    assert result.metrics["map_50"] >= 0.9, result.metrics
