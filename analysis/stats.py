"""The statistics every verdict rests on, in numpy alone (a leaf: numpy and the standard library,
nothing first-party), so that the evaluator (``experiments.evaluation.bootstrap``) and the report
share one implementation.

Sign convention: a paired delta is always **A − B**, the first named minus the second, replicate
by replicate on the same images (``paired_difference(a, b)``; a latency difference is
median(a) − median(b)). Positive: A holds more of the metric (more AP; more milliseconds, i.e.
slower). Tables name the pair "A − B" in that order.

* ``p_value``: two-sided bootstrap p-value of delta = 0 from the replicate deltas [B],
  p = min(1, 2 (min(#{d <= 0}, #{d >= 0}) + 1) / (B + 1)).
* ``percentile_interval``: the (1 − level)/2 and (1 + level)/2 quantiles of replicates [B].
* ``holm``: Holm's step-down adjusted p-values.
* ``median_interval`` / ``latency_difference``: the median of timed batches (ms) and the
  difference of two medians, with 95% intervals from seeded bootstrap resamples of the batches.
"""
from __future__ import annotations

import math

import numpy as np

ALPHA = 0.05   # significant: (Holm-corrected) p below it


def p_value(deltas: np.ndarray) -> float:
    """Two-sided bootstrap p-value of delta = 0 from the replicate deltas [B] (NaN left out):
    min(1, 2 (min(#{delta* <= 0}, #{delta* >= 0}) + 1) / (B + 1)). The one implementation: the
    evaluator's paired bootstrap (experiments.evaluation.bootstrap) uses it too."""
    deltas = deltas[~np.isnan(deltas)]
    if len(deltas) == 0:
        return math.nan
    tail = min(np.count_nonzero(deltas <= 0), np.count_nonzero(deltas >= 0))
    return float(min(1.0, 2 * (tail + 1) / (len(deltas) + 1)))


def percentile_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """(low, high): the (1-level)/2 and (1+level)/2 quantiles of the replicate values [B], NaN left
    out; NaN when fewer than 2 are defined. The evaluator's percentile intervals are this one."""
    values = values[~np.isnan(values)]
    if len(values) < 2:
        return math.nan, math.nan
    low, high = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def paired_difference(reps_a: list[np.ndarray], reps_b: list[np.ndarray], point_a: list[float],
                      point_b: list[float]) -> dict:
    """Delta = A − B of one metric, replicates paired on the same images and averaged over seeds:
    ``reps_*`` one float [B] array per seed, ``point_*`` the metric on the images as given per seed
    -> {"delta" (mean point difference), "low", "high" (95% percentile interval), "p"}."""
    deltas = np.mean([a - b for a, b in zip(reps_a, reps_b)], axis=0)          # [B]
    point = float(np.mean([a - b for a, b in zip(point_a, point_b)]))
    low, high = percentile_interval(deltas)
    return {"delta": point, "low": low, "high": high, "p": p_value(deltas)}


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values (NaN kept as NaN)."""
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full(len(p), np.nan)
    defined = np.flatnonzero(~np.isnan(p))
    order = defined[np.argsort(p[defined], kind="stable")]
    running = 0.0
    for i, j in enumerate(order):
        running = max(running, min(1.0, (len(order) - i) * p[j]))
        adjusted[j] = running
    return adjusted.tolist()


def median_interval(samples: np.ndarray, resamples: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """(median, low, high): the 95% bootstrap interval of the median latency (ms) of ``samples`` [n]."""
    rng = np.random.default_rng(seed)
    medians = np.median(samples[rng.integers(0, len(samples), (resamples, len(samples)))], axis=1)
    return float(np.median(samples)), *percentile_interval(medians)


def latency_difference(a: np.ndarray, b: np.ndarray, resamples: int = 2000, seed: int = 0) -> tuple:
    """median(a) − median(b) in ms and its 95% interval (the batches of a and b resampled apart,
    a's first: the interval depends on the order asked, the sign convention does not)."""
    rng = np.random.default_rng(seed)
    ma = np.median(a[rng.integers(0, len(a), (resamples, len(a)))], axis=1)
    mb = np.median(b[rng.integers(0, len(b), (resamples, len(b)))], axis=1)
    return float(np.median(a) - np.median(b)), *percentile_interval(ma - mb)
