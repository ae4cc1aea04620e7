"""A small-width SSD300 overfits 4 synthetic images on the CPU in well under a minute of compute."""
import contextlib
import io

import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detectors.ssd import SSD
from experiments.data.synthetic import SyntheticShapes


def coco_ap50(targets, detections, num_classes, size=300):
    """pycocotools' AP at IoU 0.5 of ``detections`` against ``targets`` (one entry per image)."""
    gt = {"images": [{"id": i, "width": size, "height": size} for i in range(len(targets))],
          "categories": [{"id": c} for c in range(1, num_classes + 1)], "annotations": []}
    results = []
    for i, (target, det) in enumerate(zip(targets, detections)):
        for (x1, y1, x2, y2), label, area in zip(target["boxes"].tolist(), target["labels"].tolist(),
                                                 target["area"].tolist()):
            gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": i, "category_id": label,
                                      "bbox": [x1, y1, x2 - x1, y2 - y1], "area": area, "iscrowd": 0})
        for (x1, y1, x2, y2), score, label in zip(det["boxes"].tolist(), det["scores"].tolist(),
                                                  det["labels"].tolist()):
            results.append({"image_id": i, "category_id": label, "bbox": [x1, y1, x2 - x1, y2 - y1],
                            "score": score})
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        evaluator = COCOeval(coco, coco.loadRes(results), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator.stats[1]


def test_small_ssd300_overfits_four_synthetic_images():
    dataset = SyntheticShapes(4, image_size=300, seed=0, split="train")
    images, targets = zip(*[dataset[i] for i in range(4)])
    assert sum(t["boxes"].shape[0] for t in targets) >= 8
    torch.manual_seed(0)
    model = SSD(num_classes=dataset.num_classes, width=0.125, batch_norm=True)
    assert model.num_candidates((300, 300)) == 8732                  # the paper's geometry, 1/8 of the channels
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    model.train()
    losses = []
    for _ in range(50):
        loss = sum(model(list(images), list(targets)).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] * 10 <= losses[0], losses
    model.eval()
    with torch.no_grad():
        detections = model(list(images))
    assert coco_ap50(targets, detections, dataset.num_classes) >= 0.9
