"""Speed of the image bootstrap beside one plain evaluation of the same data.

    python benchmarks/bootstrap_speed.py [--images 5000] [--replicates 1000] [--threads 2]

Data: N images of 640 x 480, 7 objects each on average (80 classes, sides 4-400 px: all three
size buckets), 100 detections per image (jittered objects, duplicates, wrong classes and
background boxes, random scores). Prints, in one process: one plain evaluation
(``score_tables``, faster-coco-eval's C++ COCO plus the VOC metrics), the bootstrap's matching
(once) and its B replicates of all 14 metrics, and their ratio. Goal: 1000 replicates of 5000
images x 100 detections x 80 classes in <= 30 s on 2 cores.
"""
from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

from experiments.evaluation import score_tables
from experiments.evaluation.bootstrap import ReplicateScorer, copies, interval, resample
from experiments.evaluation.tables import DetectionTable, GroundTruthTable

WIDTH, HEIGHT, CLASSES = 640, 480, 80


def synthetic_split(num_images: int, detections_per_image: int, seed: int = 0):
    """(GroundTruthTable, DetectionTable, category ids) of a generated split."""
    rng = np.random.default_rng(seed)
    n_obj = rng.poisson(7, num_images)
    image_index = np.repeat(np.arange(num_images), n_obj)
    wh = np.exp(rng.uniform(np.log(4), np.log(400), (len(image_index), 2)))
    wh = np.minimum(wh, [WIDTH - 1, HEIGHT - 1])
    xy = rng.uniform(0, 1, (len(image_index), 2)) * ([WIDTH, HEIGHT] - wh)
    gt = GroundTruthTable(
        image_ids=np.arange(1, num_images + 1) * 3, image_sizes=np.tile([HEIGHT, WIDTH], (num_images, 1)),
        image_index=image_index, boxes=np.c_[xy, wh], category_ids=rng.integers(1, CLASSES + 1, len(image_index)),
        area=wh.prod(axis=1), iscrowd=rng.random(len(image_index)) < 0.01,
        difficult=np.zeros(len(image_index), dtype=bool))
    # per image: each object found with probability 0.8 (jittered), the rest background boxes
    found = rng.random(len(image_index)) < 0.8
    fxy = xy[found] + rng.normal(0, 0.08, (found.sum(), 2)) * wh[found]
    fwh = wh[found] * np.exp(rng.normal(0, 0.1, (found.sum(), 2)))
    fcat = np.where(rng.random(found.sum()) < 0.1, rng.integers(1, CLASSES + 1, found.sum()),
                    gt.category_ids[found])
    fimg = image_index[found]
    per_image = np.bincount(fimg, minlength=num_images)
    extra = np.maximum(detections_per_image - per_image, 0)
    bimg = np.repeat(np.arange(num_images), extra)
    bwh = rng.uniform(4, 300, (len(bimg), 2))
    bxy = rng.uniform(0, 1, (len(bimg), 2)) * ([WIDTH, HEIGHT] - bwh)
    img = np.r_[fimg, bimg]
    order = np.argsort(img, kind="stable")
    scores = np.r_[rng.beta(4, 2, len(fimg)), rng.beta(1, 4, len(bimg))]
    dt = DetectionTable(image_index=img[order], boxes=np.r_[np.c_[fxy, fwh], np.c_[bxy, bwh]][order],
                        scores=scores[order], category_ids=np.r_[fcat, rng.integers(1, CLASSES + 1, len(bimg))][order])
    return gt, dt, list(range(1, CLASSES + 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--detections", type=int, default=100)
    parser.add_argument("--replicates", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    gt, dt, category_ids = synthetic_split(args.images, args.detections)
    print(f"{args.images} images, {len(gt.category_ids)} objects, {len(dt.scores)} detections, {CLASSES} classes; "
          f"{args.replicates} replicates, {args.threads} threads; {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores visible")
    start = time.perf_counter()
    plain = score_tables(gt, dt, [(c, str(c)) for c in category_ids])
    plain_s = time.perf_counter() - start
    start = time.perf_counter()
    scorer = ReplicateScorer(gt, dt, category_ids)
    match_s = time.perf_counter() - start
    identity = scorer(np.ones((1, args.images)), threads=1)
    worst = max(abs(identity[k][0] - plain.metrics[k]) for k in plain.metrics)
    indices = resample(args.images, args.replicates, seed=0)
    start = time.perf_counter()
    values = scorer(copies(indices, args.images), threads=args.threads)
    replicate_s = time.perf_counter() - start
    low, high = interval(values["map_50"], method="percentile")   # the speed is the point here
    print(f"plain evaluation (score_tables, faster_coco_eval + VOC): {plain_s:8.2f} s")
    print(f"bootstrap: match once                                : {match_s:8.2f} s")
    print(f"bootstrap: {args.replicates} replicates x 14 metrics             : {replicate_s:8.2f} s "
          f"({1e3 * replicate_s / args.replicates:.1f} ms per replicate)")
    print(f"bootstrap total / plain evaluation                   : {(match_s + replicate_s) / plain_s:8.2f} x")
    print(f"identity replicate vs plain evaluation, max |diff|   : {worst:.2e}")
    print(f"AP50 {100 * plain.metrics['map_50']:.2f} [{100 * low:.2f}, {100 * high:.2f}]")


if __name__ == "__main__":
    main()
