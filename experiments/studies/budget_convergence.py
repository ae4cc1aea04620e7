"""Convergence of one training run: evenly spaced validations and the *still improving* flag.

A run validates on the same validation subset (``train.val_images``) after the iterations
``validation_points`` names. It is *still improving* when the gain of its last validation over the one
before is above the noise of those images: a paired image bootstrap of the two validations (the same
resampled images scored for both), and the one-sided ``level`` (90%) lower bound of the AP gain
(last − previous, in AP units) above 0. One seed's flag says the schedule was cut while the detector
was still learning; a ranking at that budget may move with a longer one.
"""
from __future__ import annotations

import math

import numpy as np

LEVEL = 0.90          # one-sided: the lower bound is the 10% quantile of the paired gains
REPLICATES = 500      # paired bootstrap replicates of the last two validations


def validation_points(iterations: int, count: int) -> tuple[int, ...]:
    """``count`` evenly spaced iterations in (0, iterations], the last at ``iterations`` (fewer when
    the run has fewer iterations than validations)."""
    if count <= 0 or iterations <= 0:
        return ()
    return tuple(sorted({max(1, round(k * iterations / count)) for k in range(1, count + 1)}))


def improvement(gains: np.ndarray, point_gain: float, level: float = LEVEL) -> dict:
    """The verdict on the paired replicate gains [B] (last − previous AP, same images):
    ``val_gain`` (the point gain), ``val_gain_low`` (one-sided ``level`` lower bound) and
    ``still_improving`` (the bound above 0); NaN and False when fewer than 2 replicates are defined."""
    gains = np.asarray(gains, dtype=float)
    gains = gains[~np.isnan(gains)]
    if len(gains) < 2:
        return {"val_gain": point_gain, "val_gain_low": math.nan, "still_improving": False}
    low = float(np.quantile(gains, 1 - level))
    return {"val_gain": float(point_gain), "val_gain_low": low, "still_improving": bool(low > 0)}


def still_improving(previous, last, replicates: int = REPLICATES, seed: int = 0, level: float = LEVEL) -> dict:
    """The flag from two ``EvaluationResult`` of the same images (``previous`` then ``last``):
    ``improvement`` of the paired bootstrap of their COCO AP."""
    from experiments.evaluation.bootstrap import bootstrap, check_same_images

    check_same_images(previous.ground_truth.image_ids, last.ground_truth.image_ids,
                      [c for c, _ in previous.categories], [c for c, _ in last.categories],
                      ("the previous validation", "the last validation"))
    categories = [c for c, _ in last.categories]
    a = bootstrap(last.ground_truth, last.detections, categories, replicates, seed)
    b = bootstrap(previous.ground_truth, previous.detections, categories, replicates, seed)
    return improvement(a.replicates["map"] - b.replicates["map"], a.point["map"] - b.point["map"], level)


class ValidationKeeper:
    """The trainer's ``validate`` callback that also keeps the last two validations' results.

    ``score_fn(model) -> EvaluationResult | None`` scores the validation subset (None on ranks
    other than 0); the call returns its metrics, as the trainer expects."""

    def __init__(self, score_fn) -> None:
        self.score_fn, self.results, self.count = score_fn, [], 0

    def __call__(self, model) -> dict:
        result = self.score_fn(model)
        self.count += 1
        if result is None:
            return {}
        self.results = [*self.results[-1:], result]
        return result.metrics

    def metrics(self, seed: int) -> dict:
        """metrics.json's convergence keys: ``train_validations``, ``val_gain``, ``val_gain_low``,
        ``still_improving`` (None when fewer than two validations ran in this process)."""
        out = {"train_validations": self.count}
        if len(self.results) < 2:
            return {**out, "val_gain": math.nan, "val_gain_low": math.nan, "still_improving": None}
        return {**out, **still_improving(*self.results, seed=seed)}
