"""A simulated detector population whose AP is known: what ``interval_coverage.py`` and the
calibration test (``tests/test_interval_calibration.py``) check the evaluator's intervals against.

Ground truth: ``num_images`` 300x300 images with 2-6 objects of 5 classes, sizes as the synthetic
shapes' (``experiments.data.synthetic``: a COCO size bucket with weights 0.30 / 0.32 / 0.38, a side
in the bucket's range, an aspect ratio in [1/2, 2]), placed uniformly.

A detector (``Detector``) finds an object with a probability per size bucket (logistic in a
logit per bucket, plus a training-seed effect: ``seed_sd`` x N(0, 1) per bucket and seed), jitters
its box by N(0, jitter x side) per edge coordinate, calls a wrong class with ``wrong_class``
probability, adds a duplicate box with ``duplicate`` probability and Poisson(``background``)
background boxes per image; true detections score Beta(4, 2) (x0.8 for duplicates), background
ones Beta(2, 4).

The truth is the population's own AP (every image weight 1): subsets are drawn **with
replacement** from the population, i.e. i.i.d. from its empirical distribution, whose AP that is
(AP is unchanged when every weight is scaled), so coverage is measured exactly, not against
an estimate of the truth.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from experiments.evaluation.bootstrap import copies, resample
from experiments.evaluation.bootstrap_accumulate import CocoAccumulator
from experiments.evaluation.bootstrap_match import match_coco
from experiments.evaluation.tables import DetectionTable, GroundTruthTable

SIZE = 300
NUM_CLASSES = 5
BUCKETS = np.array([0.30, 0.32, 0.38])                      # small, medium, large (synthetic.py)
SIDES = np.array([[10.0, 31.0], [33.0, 94.0], [98.0, 190.0]])
METRICS = {"map": "AP", "map_50": "AP50", "map_small": "APs", "map_large": "APl"}


@dataclass
class Objects:
    """Rows of one table sorted by image: image int64 [n], boxes float64 [n, 4] (x y w h px),
    category int64 [n] (1..5), bucket int64 [n] (0 small, 1 medium, 2 large; -1 background),
    score float64 [n] (detections only); start int64 [I + 1]: image i's rows are start[i]:start[i+1]."""
    image: np.ndarray
    boxes: np.ndarray
    category: np.ndarray
    bucket: np.ndarray
    score: np.ndarray
    start: np.ndarray


def _starts(image: np.ndarray, num_images: int) -> np.ndarray:
    return np.searchsorted(image, np.arange(num_images + 1))


def population(num_images: int, seed: int = 0) -> Objects:
    """The ground truth of ``num_images`` images (see the module docstring)."""
    rng = np.random.default_rng(seed)
    per_image = rng.integers(2, 7, num_images)
    image = np.repeat(np.arange(num_images), per_image)
    n = len(image)
    bucket = rng.choice(3, n, p=BUCKETS)
    side = SIDES[bucket, 0] + (SIDES[bucket, 1] - SIDES[bucket, 0]) * rng.random(n)
    ratio = 2.0 ** (rng.random(n) * 2 - 1)
    wh = np.clip(np.round(np.stack([side * np.sqrt(ratio), side / np.sqrt(ratio)], 1)), 4, SIZE)
    xy = rng.random((n, 2)) * (SIZE - wh)
    boxes = np.c_[np.round(xy), wh]
    return Objects(image, boxes, rng.integers(1, NUM_CLASSES + 1, n), bucket, np.zeros(n),
                   _starts(image, num_images))


@dataclass
class Detector:
    """Logit of the detection probability per size bucket (small, medium, large), box jitter per
    bucket (share of the side), error rates, and the seed effect's SD on those logits."""
    logit: tuple = (-0.8, 0.6, 1.4)
    jitter: tuple = (0.14, 0.09, 0.07)
    wrong_class: float = 0.1
    duplicate: float = 0.15
    background: float = 3.0
    seed_sd: float = 0.0

    def detect(self, gt: Objects, seed: int, training_seed: int = 0) -> Objects:
        """Detections of ``gt``'s images; ``training_seed`` draws the seed effect (the same seed,
        the same detector), ``seed`` the per-image outcomes."""
        shift = self.seed_sd * np.random.default_rng([training_seed, 7]).normal(0, 1, 3)   # sd < 0: antithetic
        rng = np.random.default_rng(seed)
        p = 1 / (1 + np.exp(-(np.asarray(self.logit) + shift)))
        found = rng.random(len(gt.image)) < p[gt.bucket]
        dup = found & (rng.random(len(gt.image)) < self.duplicate)
        rows = np.r_[np.flatnonzero(found), np.flatnonzero(dup)]
        boxes = gt.boxes[rows].copy()
        sd = np.asarray(self.jitter)[gt.bucket[rows]] * np.sqrt(boxes[:, 2] * boxes[:, 3])
        boxes += rng.normal(0, 1, boxes.shape) * sd[:, None]
        boxes[:, 2:] = np.maximum(boxes[:, 2:], 2.0)
        category = gt.category[rows].copy()
        wrong = rng.random(len(rows)) < self.wrong_class
        category[wrong] = (category[wrong] + rng.integers(1, NUM_CLASSES, wrong.sum()) - 1) % NUM_CLASSES + 1
        score = rng.beta(4, 2, len(rows)) * np.where(np.arange(len(rows)) >= found.sum(), 0.8, 1.0)
        num_images = len(gt.start) - 1
        extra = rng.poisson(self.background, num_images)
        bg_image = np.repeat(np.arange(num_images), extra)
        bg_wh = rng.uniform(8, 80, (len(bg_image), 2))
        bg = np.c_[rng.random((len(bg_image), 2)) * (SIZE - bg_wh), bg_wh]
        image = np.r_[gt.image[rows], bg_image]
        order = np.argsort(image, kind="stable")
        return Objects(image[order], np.r_[boxes, bg][order],
                       np.r_[category, rng.integers(1, NUM_CLASSES + 1, len(bg_image))][order],
                       np.r_[gt.bucket[rows], np.full(len(bg_image), -1)][order],
                       np.r_[score, rng.beta(2, 4, len(bg_image))][order], _starts(image[order], num_images))


def _gather(objects: Objects, subset: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows of ``objects`` in the images ``subset`` [N] (repeats allowed), their slot in subset)."""
    counts = objects.start[subset + 1] - objects.start[subset]
    slot = np.repeat(np.arange(len(subset)), counts)
    offsets = np.cumsum(counts) - counts
    rows = objects.start[subset][slot] + np.arange(counts.sum()) - offsets[slot]
    return rows, slot


def tables(gt: Objects, dt: Objects, subset: np.ndarray) -> tuple[GroundTruthTable, DetectionTable]:
    """The evaluator's tables of the images ``subset`` [N] (a repeated image is a renumbered copy)."""
    g, g_slot = _gather(gt, subset)
    d, d_slot = _gather(dt, subset)
    n = len(subset)
    area = gt.boxes[g, 2] * gt.boxes[g, 3]
    return (GroundTruthTable(np.arange(n), np.full((n, 2), SIZE), g_slot, gt.boxes[g], gt.category[g], area,
                             np.zeros(len(g), bool), np.zeros(len(g), bool)),
            DetectionTable(d_slot, dt.boxes[d], dt.score[d], dt.category[d]))


class Scorer:
    """COCO metrics of one detector on one subset for any image weights: ``__call__(w [b, N])``
    -> name -> float64 [b] (the evaluator's own accumulator, matched once)."""

    def __init__(self, gt: Objects, dt: Objects, subset: np.ndarray):
        g, d = tables(gt, dt, subset)
        self.num_images = len(subset)
        self.accumulate = CocoAccumulator(match_coco(g, d, np.arange(1, NUM_CLASSES + 1)))

    def __call__(self, weights: np.ndarray, chunk: int = 32) -> dict[str, np.ndarray]:
        parts = [self.accumulate(weights[i:i + chunk]) for i in range(0, len(weights), chunk)]
        return {m: np.concatenate([p[m] for p in parts]) for m in METRICS}

    def point(self) -> dict[str, float]:
        return {m: float(v[0]) for m, v in self(np.ones((1, self.num_images))).items()}

    def replicates(self, replicates: int, seed: int) -> dict[str, np.ndarray]:
        """The evaluator's image bootstrap: name -> float64 [B]."""
        return self(copies(resample(self.num_images, replicates, seed), self.num_images))

    def jackknife(self) -> dict[str, np.ndarray]:
        """Leave-one-image-out values: name -> float64 [N]."""
        return self(np.ones((self.num_images, self.num_images)) - np.eye(self.num_images))


def true_metrics(gt: Objects, dt: Objects) -> dict[str, float]:
    """The population's metrics (every image once): the truth the intervals should cover."""
    return Scorer(gt, dt, np.arange(len(gt.start) - 1)).point()
