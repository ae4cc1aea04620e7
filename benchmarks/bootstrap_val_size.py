"""AP50 interval width vs the number of synthetic validation images, for a simulated detector at the
compare detectors' trained AP50 (~0.45, FINDINGS): objects found with p=0.6, jittered, plus background boxes.

    python benchmarks/bootstrap_val_size.py

How `experiment=compare`'s validation size was picked: the width halves at 4x the images (1/sqrt(N)).
"""
import numpy as np
import torch

from experiments.data.synthetic import SyntheticShapes
from experiments.evaluation import evaluate
from experiments.evaluation.bootstrap import bootstrap_evaluation

val = SyntheticShapes(num_images=500, image_size=300, seed=0, split="val")
rng = np.random.default_rng(0)
targets, dets = [], []
for i in range(len(val)):
    _, t = val[i]
    targets.append(t)
    b = t["boxes"].numpy().astype(np.float64)
    n = len(b)
    keep = rng.random(n) < 0.6
    wh = b[:, 2:] - b[:, :2]
    jit = b[keep] + rng.normal(0, 0.1, (keep.sum(), 4)) * np.repeat(wh[keep], 2, axis=1)
    fp = rng.uniform(0, 250, (3, 2))
    fp = np.c_[fp, fp + rng.uniform(10, 50, (3, 2))]
    boxes = np.r_[jit, fp]
    labels = np.r_[t["labels"].numpy()[keep], rng.integers(1, val.num_classes + 1, 3)]
    scores = np.r_[rng.beta(4, 2, keep.sum()), rng.beta(2, 4, 3)]
    dets.append({"boxes": torch.tensor(boxes, dtype=torch.float32), "labels": torch.tensor(labels),
                 "scores": torch.tensor(scores, dtype=torch.float32)})

names = [str(k) for k in range(1, val.num_classes + 1)]
for n in (100, 300, 400, 500):
    r = evaluate(dets[:n], targets[:n], names, [(300, 300)] * n)
    ci = bootstrap_evaluation(r, 1000, 0)
    low, high = ci["map_50_ci_low"], ci["map_50_ci_high"]
    print(f"N={n}: AP50 {100 * r.metrics['map_50']:.1f} [{100 * low:.1f}, {100 * high:.1f}] "
          f"width {100 * (high - low):.2f} points; AP {100 * r.metrics['map']:.1f} "
          f"width {100 * (ci['map_ci_high'] - ci['map_ci_low']):.2f}")
