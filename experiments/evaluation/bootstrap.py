"""Image bootstrap of every COCO and VOC metric, and paired comparisons of two detectors.

A replicate resamples the N evaluated images with replacement (``resample``: int64 [B, N]
image slots, each row sorted, so a replicate is a multiset); a duplicated image counts once per
copy. Detections are matched once (``bootstrap_match``) and re-accumulated per replicate
(``bootstrap_accumulate``), so replicate b equals pycocotools (and the VOC devkit) run on a
dataset made of that replicate's images, each copy renumbered (the tests check it).

Intervals are debiased by default (``analysis.stats.INTERVAL_METHOD``: the replicates' spread
reflected about the point less the estimator's bias, measured on ``HALF_SAMPLES`` random halves of
the images, ``analysis.stats.half_sample_bias``; ``benchmarks/interval_coverage.py`` measured the
percentile interval under-covering by 20-25 points at 200-400 images and basic by 3-5, their misses
all below the interval); ``method="percentile"``, ``"basic"`` and ``"bca"`` (bias-corrected and
accelerated, the acceleration from the jackknife over images) on request. The halves are scored
whatever the method (float [H] per metric, ``halves``), so the report can debias paired deltas.
A paired comparison draws the same images (and halves) for both detectors: delta = A - B per
replicate (analysis.stats' one sign convention), its interval (the same method, its bias from the
paired halves A - B), and the two-sided bootstrap p-value
p = min(1, 2 (min(#{t* <= 0}, #{t* >= 0}) + 1) / (B + 1)) of the method's pivot replicates t*
(``analysis.stats.pivot_replicates``: the test inverts the interval printed): an identical pair
gives delta 0, [0, 0] and p = 1.
"""
from __future__ import annotations

import logging
import math
import numbers
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from analysis.stats import (
    HALF_SAMPLES,
    INTERVAL_METHOD,
    INTERVAL_METHODS,
    bootstrap_interval,
    half_sample_bias,
    half_samples,
    p_value,
    pivot_replicates,
)
from experiments.evaluation.bootstrap_accumulate import CocoAccumulator, VocAccumulator
from experiments.evaluation.bootstrap_match import match_coco, match_voc
from experiments.evaluation.metrics import METRICS
from experiments.evaluation.tables import DetectionTable, GroundTruthTable

log = logging.getLogger(__name__)

DEFAULT_REPLICATES = 1000
CHUNK = 32  # replicates per array op: [32, 40, points] float64 per class
METHODS = INTERVAL_METHODS


def check_bootstrap_arguments(replicates, seed) -> None:
    """B must be an int >= 1, the seed a non-negative int (bools refused): ValueError otherwise."""
    if isinstance(replicates, bool) or not isinstance(replicates, numbers.Integral) or replicates < 1:
        raise ValueError(f"bootstrap replicates must be an integer >= 1, got {replicates!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"bootstrap seed must be a non-negative integer, got {seed!r}")


def resample(num_images: int, replicates: int, seed: int) -> np.ndarray:
    """int64 [B, N]: B multisets of N image slots drawn with replacement, each row sorted."""
    check_bootstrap_arguments(replicates, seed)
    rng = np.random.default_rng(seed)
    return np.sort(rng.integers(0, num_images, size=(replicates, num_images)), axis=1)


def copies(indices: np.ndarray, num_images: int) -> np.ndarray:
    """int64 [B, N] image slots -> float64 [B, I]: how many times each image is drawn."""
    rows = np.repeat(np.arange(len(indices)), indices.shape[1])
    return np.bincount(rows * num_images + indices.ravel(), minlength=len(indices) * num_images).reshape(
        len(indices), num_images).astype(np.float64)


class ReplicateScorer:
    """Match once, then every METRICS number for any weights [b, I] (``__call__``)."""

    def __init__(self, gt: GroundTruthTable, dt: DetectionTable, category_ids):
        coco, voc = match_coco(gt, dt, category_ids), match_voc(gt, dt, category_ids)
        self.image_ids, self.category_ids = coco.image_ids, coco.category_ids
        self._coco, self._voc = CocoAccumulator(coco), VocAccumulator(voc)

    def __call__(self, weights: np.ndarray, threads: int = 2) -> dict[str, np.ndarray]:
        """float [B, I] (copies of each image, images in sorted-id order) -> name -> float64 [B]."""
        chunks = [weights[i:i + CHUNK] for i in range(0, len(weights), CHUNK)]

        def score(chunk):
            return {**self._coco(chunk), **self._voc(chunk)}

        if threads > 1 and len(chunks) > 1:
            with ThreadPoolExecutor(threads) as pool:
                parts = list(pool.map(score, chunks))
        else:
            parts = [score(c) for c in chunks]
        return {name: np.concatenate([p[name] for p in parts]) for name in METRICS}


@dataclass
class BootstrapResult:
    """point: the metrics on the images as given (the identity replicate); replicates: name ->
    float64 [B]; image_ids: int64 [B, N], the images of each replicate; low / high: name ->
    interval bounds (NaN where too few replicates define the metric); level, method, seed; halves:
    name -> float64 [H], the metrics on H random halves of the images (``half_size`` each, drawn
    without replacement, ``analysis.stats.half_samples``): the bias estimate's input."""

    point: dict[str, float]
    replicates: dict[str, np.ndarray]
    image_ids: np.ndarray
    category_ids: np.ndarray
    low: dict[str, float]
    high: dict[str, float]
    level: float
    method: str
    seed: int
    halves: dict[str, np.ndarray] | None = None
    half_size: int = 0

    def bias(self, name: str) -> float:
        """The estimator's bias of ``name`` (``analysis.stats.half_sample_bias``; NaN without halves)."""
        if not self.halves:
            return math.nan
        return half_sample_bias(self.halves[name], self.point[name], int(self.image_ids.shape[1]), self.half_size)

    def as_metrics(self) -> dict[str, float]:
        """Flat keys for metrics.json: <metric>_ci_low, <metric>_ci_high, bootstrap settings."""
        out = {}
        for name in self.low:
            out[f"{name}_ci_low"], out[f"{name}_ci_high"] = self.low[name], self.high[name]
        return {**out, "bootstrap_replicates": len(self.image_ids), "bootstrap_seed": self.seed,
                "bootstrap_level": self.level, "bootstrap_method": self.method, "interval_method": self.method,
                "eval_images": int(self.image_ids.shape[1])}

    def save(self, path: Path, image_keys: dict[int, str] | None = None) -> None:
        """An .npz: image_ids [B, N], category_ids [K], one float64 [B] array per metric,
        point_<metric> scalars, half_<metric> float64 [H] and half_size (the same seed and images
        give the same halves), so anyone can re-score a replicate or pair two runs; with
        ``image_keys``, also key_ids [M] and image_keys [M] (see ``bootstrap_evaluation``)."""
        keys = {} if image_keys is None else {
            "key_ids": np.array(list(image_keys), dtype=np.int64),
            "image_keys": np.array(list(image_keys.values()), dtype=str)}
        np.savez_compressed(path, image_ids=self.image_ids, category_ids=self.category_ids, **keys,
                            level=self.level, method=self.method, seed=self.seed, half_size=self.half_size,
                            **{f"half_{k}": v for k, v in (self.halves or {}).items()},
                            **self.replicates, **{f"point_{k}": v for k, v in self.point.items()})


def interval(values: np.ndarray, level: float = 0.95, method: str = INTERVAL_METHOD, point: float | None = None,
             jackknife: np.ndarray | None = None, bias: float | None = None) -> tuple[float, float]:
    """(low, high) of the replicate values [B]: ``analysis.stats.bootstrap_interval`` (percentile,
    basic: reflected about ``point``, bca: with the leave-one-image-out ``jackknife`` values [N],
    debiased: reflected about ``point`` less ``bias``)."""
    return bootstrap_interval(values, level, method, point, jackknife, bias)


def _intervals(point, replicates, level, method, scorer=None, num_images=0, bias=None):
    jack = None
    if method == "bca":
        jack = scorer(np.ones((num_images, num_images)) - np.eye(num_images))
    low, high = {}, {}
    for name in METRICS:
        low[name], high[name] = interval(replicates[name], level, method, point[name],
                                         None if jack is None else jack[name], None if bias is None else bias(name))
    return low, high


def bootstrap(gt: GroundTruthTable, dt: DetectionTable, category_ids, replicates: int = DEFAULT_REPLICATES,
              seed: int = 0, level: float = 0.95, method: str = INTERVAL_METHOD, threads: int = 2) -> BootstrapResult:
    """Image bootstrap of every METRICS number of one detector on one split."""
    check_bootstrap_arguments(replicates, seed)
    scorer = ReplicateScorer(gt, dt, category_ids)
    num_images = len(scorer.image_ids)
    indices = resample(num_images, replicates, seed)
    point = {k: float(v[0]) for k, v in scorer(np.ones((1, num_images)), threads=1).items()}
    values = scorer(copies(indices, num_images), threads)
    halves = scorer(half_samples(num_images, HALF_SAMPLES, seed), threads) if num_images >= 2 else None
    result = BootstrapResult(point, values, scorer.image_ids[indices], scorer.category_ids, {}, {}, level,
                             method, int(seed), halves, num_images // 2)
    result.low, result.high = _intervals(point, values, level, method, scorer, num_images, result.bias)
    return result


def check_same_images(image_ids_a, image_ids_b, categories_a, categories_b, names=("A", "B")) -> None:
    """ValueError naming the image ids / category ids found in one run and not in the other."""
    for what, a, b in (("image ids", image_ids_a, image_ids_b), ("category ids", categories_a, categories_b)):
        a, b = set(np.asarray(a).tolist()), set(np.asarray(b).tolist())
        if a != b:
            only_a, only_b = sorted(a - b), sorted(b - a)
            raise ValueError(f"{names[0]} and {names[1]} were not scored on the same {what}: "
                             f"only in {names[0]}: {only_a[:10]}{' ...' if len(only_a) > 10 else ''} "
                             f"({len(only_a)}), only in {names[1]}: {only_b[:10]}"
                             f"{' ...' if len(only_b) > 10 else ''} ({len(only_b)})")


def paired_deltas(point_a: dict, point_b: dict, reps_a: dict, reps_b: dict, level: float = 0.95,
                  names=METRICS, method: str = INTERVAL_METHOD, halves_a: dict | None = None,
                  halves_b: dict | None = None, num_images: int = 0) -> dict[str, float]:
    """delta_<m> = A - B, delta_<m>_ci_low/high (``method``, about the point delta) and p_<m> from
    paired replicates (``analysis.stats.pivot_replicates``: the test inverts the same interval).
    debiased needs both detectors' halves (the same halves: same seed, same images) and the image
    count N; without them the deltas fall back to basic."""
    out = {}
    if method == "debiased" and not (halves_a and halves_b and num_images >= 2):
        method = "basic"
    for name in names:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            deltas = np.asarray(reps_a[name]) - np.asarray(reps_b[name])
        delta = out[f"delta_{name}"] = float(point_a[name] - point_b[name])
        bias = None
        if method == "debiased":
            bias = half_sample_bias(np.asarray(halves_a[name]) - np.asarray(halves_b[name]), delta, num_images,
                                    num_images // 2)
        out[f"delta_{name}_ci_low"], out[f"delta_{name}_ci_high"] = interval(deltas, level, method, delta, bias=bias)
        out[f"p_{name}"] = p_value(pivot_replicates(deltas, method, delta, bias))
    return out


def paired_bootstrap(gt: GroundTruthTable, dt_a: DetectionTable, dt_b: DetectionTable, category_ids,
                     replicates: int = DEFAULT_REPLICATES, seed: int = 0, level: float = 0.95,
                     method: str = INTERVAL_METHOD, threads: int = 2,
                     ) -> tuple[BootstrapResult, BootstrapResult, dict[str, float]]:
    """Both detectors on the same resampled images -> (A's result, B's result, paired deltas)."""
    a = bootstrap(gt, dt_a, category_ids, replicates, seed, level, method, threads)
    b = bootstrap(gt, dt_b, category_ids, replicates, seed, level, method, threads)
    return a, b, paired_deltas(a.point, b.point, a.replicates, b.replicates, level, method=method,
                               halves_a=a.halves, halves_b=b.halves, num_images=int(a.image_ids.shape[1]))


def bootstrap_evaluation(result, replicates: int, seed: int, folder: Path | None = None,
                         level: float = 0.95, image_keys: dict[int, str] | None = None,
                         method: str = INTERVAL_METHOD) -> dict:
    """A run's intervals: the bootstrap of an ``EvaluationResult``'s tables -> metrics.json keys,
    the replicates saved as ``folder/bootstrap.npz`` (see ``BootstrapResult.save``) with
    ``image_keys`` (image id -> file name + content hash, ``experiments.evaluation.files``) as
    ``key_ids`` [M] int64 and ``image_keys`` [M] str, so the report pairs runs by image content,
    never by id. ``method``: ``analysis.stats.INTERVAL_METHODS``. replicates 0: off (only
    ``eval_images``); negative, or a bad seed: ValueError."""
    if isinstance(replicates, numbers.Integral) and not isinstance(replicates, bool) and replicates == 0:
        return {"eval_images": len(result.ground_truth.image_ids)}
    category_ids = [c for c, _ in result.categories]
    out = bootstrap(result.ground_truth, result.detections, category_ids, replicates, seed, level, method)
    gaps = [0.0 if math.isnan(v) and math.isnan(out.point[k]) else
            abs(out.point[k] - v) if not (math.isnan(v) or math.isnan(out.point[k])) else math.inf
            for k, v in result.metrics.items()]
    if max(gaps, default=0.0) > 1e-9:  # the identity replicate is the evaluator's numbers; say so if not
        log.warning("bootstrap: the identity replicate differs from the evaluation by %.3g", max(gaps))
    if folder is not None:
        out.save(Path(folder) / "bootstrap.npz", image_keys)
    return out.as_metrics()
