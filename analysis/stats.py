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
* ``bootstrap_interval``: percentile, basic (2·point − the quantiles), BCa, or debiased (the
  bootstrap's spread about the point less a half-sample estimate of the estimator's bias,
  ``half_sample_bias``) from replicates [B]; ``INTERVAL_METHOD`` is the default, chosen by
  ``benchmarks/interval_coverage.py`` (the one closest to 95% coverage at 200 and 400 images of a
  simulated detector whose AP is known).
* ``half_sample_bias``: the bias of AP on N images from its mean on random halves of them (drawn
  without replacement), scaled as N^-1/2 (``BIAS_EXPONENT``).
* ``paired_difference``: A − B over seeds and images (one seed: image bootstrap, provisional; two
  or more: ``seed_image_test``, a t over per-seed deltas with the image variance added); ``p_text``
  prints a p-value with what measured it.
* ``holm``: Holm's step-down adjusted p-values.
* ``median_interval`` / ``latency_difference``: the median of timed batches (ms) and the
  difference of two medians, with 95% intervals from seeded bootstrap resamples of the batches.
"""
from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np

ALPHA = 0.05   # significant: (Holm-corrected) p below it
INTERVAL_METHODS = ("percentile", "basic", "bca", "debiased")
INTERVAL_METHOD = "debiased"   # benchmarks/results/interval_coverage.md: closest to 95% at 200 / 400 images
CALIBRATED_FROM_IMAGES = 100   # below this many images the default covered < 90% on some metric (APl, AP50 89.2% at 50)
BIAS_EXPONENT = 0.6   # E[AP on n images] − AP ≈ c · n^-a (``half_sample_bias``: why not 1/2 or 1)
HALF_SAMPLES = 1000   # random halves the evaluator scores for the bias (``half_sample_bias``)


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


def half_sample_bias(halves: np.ndarray, point: float, num_images: int, half_size: int,
                     exponent: float = BIAS_EXPONENT) -> float:
    """The bias E[statistic on N images] − its population value, from the statistic on random
    subsets of ``half_size`` = m of the N images drawn without replacement, ``halves`` [H] (NaN left
    out). A subset drawn without replacement is itself a sample of m images from the population, so
    E[mean(halves)] − E[point] = b(m) − b(N) exactly; with b(n) = c · n^-a (``exponent`` a),
    b(N) = (mean(halves) − point) / ((N / m)^a − 1). NaN when no half is defined.

    Why a near 1/2 and not the 1/N of smooth statistics (jackknife, bootstrap bias): AP integrates
    the precision envelope (the running maximum from the right), and the maximum of a noisy curve
    exceeds the curve by an amount of the noise's order, N^-1/2: the bias is ~0.9 true SD at every
    N (benchmarks/results/interval_coverage.md). That leading order is a = 1/2; the bias measured
    there before this estimator existed (basic's table, K = 500) falls a little faster, a = 0.56
    from 50 to 400 images and 0.63 from 200 to 400 (mean over AP, AP50, APs, APl): a = 1/2
    over-states it by 15-40% at 200-400 images, so ``BIAS_EXPONENT`` is 0.6, checked on a held-out
    simulated detector (part 1b of the benchmark). The bootstrap sees less than half of the bias
    (its replicates' curves are maxed over a curve that is already the sample's envelope)."""
    halves = np.asarray(halves, dtype=float)
    halves = halves[~np.isnan(halves)]
    if len(halves) == 0 or point is None or math.isnan(point) or not 0 < half_size < num_images:
        return math.nan
    return float((halves.mean() - point) / ((num_images / half_size) ** exponent - 1))


def half_samples(num_images: int, count: int = HALF_SAMPLES, seed: int = 0) -> np.ndarray:
    """float64 [count, N] 0/1 weights: ``count`` random halves (N // 2 images each, without
    replacement) of the N images, from ``seed`` (its own stream: [seed, 1])."""
    rng = np.random.default_rng([seed, 1])
    order = np.argsort(rng.random((count, num_images)), axis=1)[:, :num_images // 2]
    weights = np.zeros((count, num_images))
    np.put_along_axis(weights, order, 1.0, axis=1)
    return weights


def bootstrap_interval(values: np.ndarray, level: float = 0.95, method: str = INTERVAL_METHOD,
                       point: float | None = None, jackknife: np.ndarray | None = None,
                       bias: float | None = None) -> tuple[float, float]:
    """(low, high) of a statistic from its bootstrap replicates ``values`` [B] (NaN left out; NaN when
    fewer than 2 are defined).

    percentile: the (1 − level)/2 and (1 + level)/2 quantiles q_lo, q_hi. basic: (2·point − q_hi,
    2·point − q_lo), the percentile interval reflected about the point, which undoes the bias the
    replicates add on top of the estimate's own (needs ``point``). bca: Efron's bias-corrected and
    accelerated interval, the acceleration from the leave-one-out ``jackknife`` values [N] (without
    them: bias-corrected only). debiased: (point − bias − (q_hi − mean), point − bias − (q_lo −
    mean)), the replicates' spread about their mean reflected about the point less ``bias`` (the
    estimator's, e.g. ``half_sample_bias``; needs ``point`` and ``bias``, NaN without): basic's
    width, its centre moved by the bias the bootstrap does not see.
    """
    if method not in INTERVAL_METHODS:
        raise ValueError(f"unknown interval method '{method}', choose one of {INTERVAL_METHODS}")
    values = values[~np.isnan(values)]
    if len(values) < 2:
        return math.nan, math.nan
    alpha = np.array([(1 - level) / 2, (1 + level) / 2])
    defined = point is not None and not math.isnan(point)
    if method == "bca" and defined:
        norm = NormalDist()
        below = np.mean(values < point) + 0.5 * np.mean(values == point)
        z0 = norm.inv_cdf(float(np.clip(below, 1e-12, 1 - 1e-12)))
        accel = 0.0
        if jackknife is not None:
            jack = jackknife[~np.isnan(jackknife)]
            d = jack.mean() - jack
            denom = 6 * np.sum(d ** 2) ** 1.5
            accel = float(np.sum(d ** 3) / denom) if denom > 0 else 0.0
        alpha = np.array([norm.cdf(z0 + (z0 + z) / (1 - accel * (z0 + z))) for z in map(norm.inv_cdf, alpha)])
    low, high = np.quantile(values, alpha)
    if method == "basic":
        if not defined:
            return math.nan, math.nan
        low, high = 2 * point - high, 2 * point - low
    if method == "debiased":
        if not defined or bias is None or math.isnan(bias):
            return math.nan, math.nan
        centre = point - bias + values.mean()
        low, high = centre - high, centre - low
    return float(low), float(high)


def pivot_replicates(values: np.ndarray, method: str = INTERVAL_METHOD, point: float | None = None,
                     bias: float | None = None) -> np.ndarray:
    """The replicates [B] whose percentile interval is ``method``'s interval (percentile and bca: as
    given; basic: 2·point − values; debiased: point − bias + mean − values), so that a bootstrap
    p-value (``p_value``) of 0 inverts the same interval the table prints."""
    values = np.asarray(values, dtype=float)
    if method == "basic":
        return 2 * point - values
    if method == "debiased":
        return point - bias + np.nanmean(values) - values
    return values


def _t_cdf_table(df: float, top: float) -> tuple[np.ndarray, np.ndarray]:
    """(x [n], P(T <= x) [n]) on [0, top] for Student's t with ``df`` degrees of freedom: the density
    integrated by the trapezoid rule on 200,001 points (about 1e-9 accurate)."""
    const = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)
    x = np.linspace(0.0, top, 200_001)
    density = const * (1 + x * x / df) ** (-(df + 1) / 2)
    return x, 0.5 + np.concatenate([[0.0], np.cumsum((density[1:] + density[:-1]) / 2 * np.diff(x))])


def t_quantile(p: float, df: float) -> float:
    """The p-quantile of Student's t with ``df`` degrees of freedom (fractional allowed; inf or
    > 1e6: the normal), p in (0.5, 1)."""
    if math.isinf(df) or df > 1e6:
        return NormalDist().inv_cdf(p)
    top = 10.0
    while True:
        x, cdf = _t_cdf_table(df, top)
        if cdf[-1] > p:
            return float(np.interp(p, cdf, x))
        top *= 10


def t_two_sided_p(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's t with ``df`` degrees of freedom (inf: the normal)."""
    t = abs(t)
    if math.isinf(df) or df > 1e6:
        return 2 * (1 - NormalDist().cdf(t))
    if t > 1e6:
        return 0.0
    x, cdf = _t_cdf_table(df, max(t, 1.0))
    return float(max(0.0, 2 * (1 - np.interp(t, x, cdf))))


def seed_image_test(points: np.ndarray, replicates: np.ndarray | None, image_var: float | None = None) -> dict:
    """The mean over S >= 2 training seeds with seed-to-seed and image variance both inside.

    points [S]: the statistic per seed on the images as given (e.g. a paired delta A − B, seed s
    of A with seed s of B); replicates [S, B]: each seed's image-bootstrap replicates on the same
    image draws (or, without them, ``image_var``). se² = var_seed / S + var_image: var_seed the
    sample variance of the S points, var_image the variance of the seed-mean replicates; df by
    Welch-Satterthwaite (S − 1 for the seed part, infinite for the image part).
    -> {"mean", "se", "df", "var_seed", "var_image"}; NaN where fewer than 2 seeds (one seed cannot
    measure the seed variance)."""
    points = np.asarray(points, dtype=float)
    nan = {"mean": math.nan, "se": math.nan, "df": math.nan, "var_seed": math.nan, "var_image": math.nan}
    if len(points) < 2 or np.isnan(points).any():
        return nan
    var_seed = float(np.var(points, ddof=1)) / len(points)
    if replicates is None:
        var_image = float(image_var or 0.0)
    else:
        mean_reps = np.asarray(replicates, dtype=float).mean(axis=0)
        mean_reps = mean_reps[~np.isnan(mean_reps)]
        var_image = float(np.var(mean_reps, ddof=1)) if len(mean_reps) > 1 else 0.0
    total = var_seed + var_image
    df = math.inf if var_seed == 0 else total ** 2 * (len(points) - 1) / var_seed ** 2
    return {"mean": float(points.mean()), "se": math.sqrt(total), "df": df, "var_seed": var_seed,
            "var_image": var_image}


def seed_image_interval(points: np.ndarray, replicates: np.ndarray | None = None, level: float = 0.95,
                        image_var: float | None = None) -> tuple[float, float]:
    """mean ± t_df · se of ``seed_image_test`` (points [S], replicates [S, B]); NaN below 2 seeds.
    Without replicates, ``image_var`` (the image-sampling variance of the seed mean; seeds scored on
    the same images share it, e.g. the mean of ((high − low) / 3.92)² over the seeds) stands in."""
    test = seed_image_test(points, replicates, image_var)
    if math.isnan(test["se"]):
        return math.nan, math.nan
    half = t_quantile((1 + level) / 2, test["df"]) * test["se"] if test["se"] > 0 else 0.0
    return test["mean"] - half, test["mean"] + half


def paired_difference(reps_a: list[np.ndarray], reps_b: list[np.ndarray], point_a: list[float],
                      point_b: list[float], level: float = 0.95, method: str = INTERVAL_METHOD,
                      bias: list[float] | None = None) -> dict:
    """Delta = A − B of one statistic, seed s of A paired with seed s of B on the same image draws:
    ``reps_*`` one float [B] array per seed, ``point_*`` the statistic on the images as given;
    ``bias``: per seed, the estimator's bias of the delta (``half_sample_bias`` of the paired halves
    A − B), which the debiased method needs (without it: basic, and the test says so).

    One seed: the image bootstrap alone (``method`` interval about the point delta; the p-value and
    the count of replicates that crossed 0 from ``pivot_replicates``, so the test and the interval
    agree); the result is *provisional*. Two or more: the seed mean with seed-to-seed variance
    inside (``seed_image_test``: t interval and p).
    -> {"delta", "low", "high", "p", "seeds", "replicates", "crossed" (one seed), "df", "test"}."""
    deltas = np.array([np.asarray(a, float) - np.asarray(b, float) for a, b in zip(reps_a, reps_b)])  # [S, B]
    points = np.array([a - b for a, b in zip(point_a, point_b)], dtype=float)                        # [S]
    out = {"delta": float(points.mean()), "seeds": len(points), "replicates": deltas.shape[1]}
    if len(points) == 1:
        d = deltas[0][~np.isnan(deltas[0])]
        b = math.nan if bias is None or bias[0] is None else float(bias[0])
        if method == "debiased" and math.isnan(b):
            method = "basic"    # no half-samples (a run folder written before them)
        low, high = bootstrap_interval(d, level, method, out["delta"], bias=b)
        pivot = pivot_replicates(d, method, out["delta"], b)
        crossed = int(min(np.count_nonzero(pivot <= 0), np.count_nonzero(pivot >= 0)))
        return {**out, "low": low, "high": high, "p": p_value(pivot), "crossed": crossed, "replicates": len(d),
                "df": math.nan, "test": f"image bootstrap ({method})"}
    test = seed_image_test(points, deltas)
    low, high = seed_image_interval(points, deltas, level)
    p = t_two_sided_p(test["mean"] / test["se"], test["df"]) if test["se"] > 0 else float(test["mean"] == 0)
    return {**out, "low": low, "high": high, "p": p, "crossed": math.nan, "df": test["df"],
            "test": "t over seeds + image variance"}


def p_text(result: dict) -> str:
    """A p-value as a measurement: 'p < 0.0002 (0 of 10000 crossed 0)' at the bootstrap's floor
    2 / (B + 1), 'p = 0.013 (63 of 10000 crossed 0)' above it, 'p = 0.04 (t, df 3.1)' over seeds."""
    p = result.get("p", math.nan)
    if p is None or math.isnan(p):
        return "p –"
    if result.get("seeds", 1) >= 2:
        return f"p = {p:.2g} (t, df {result['df']:.1f})" if p >= 1e-4 else f"p < 0.0001 (t, df {result['df']:.1f})"
    b, crossed = result["replicates"], result["crossed"]
    if crossed == 0:
        return f"p < {2 / (b + 1):.2g} (0 of {b} crossed 0)"
    return f"p = {p:.2g} ({crossed} of {b} crossed 0)"


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
