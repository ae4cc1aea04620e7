"""A small-width SSD300 overfits 4 synthetic images on the CPU in about 40 CPU seconds
(AP50 on them reaches 1.0 from about 50 steps; 60 leave a margin)."""
import torch

from detectors.ssd import SSD
from experiments.data.synthetic import SyntheticShapes
from experiments.evaluation import evaluate


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
    for _ in range(60):                                               # ~40 CPU seconds
        loss = sum(model(list(images), list(targets)).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] * 10 <= losses[0], losses
    model.eval()
    with torch.no_grad():
        detections = model(list(images))
    result = evaluate(detections, list(targets), dataset.class_names, [(300, 300)] * 4, backend="pycocotools")
    assert result.metrics["map_50"] >= 0.9, result.metrics
