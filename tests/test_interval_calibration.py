"""The default interval (``analysis.stats.INTERVAL_METHOD``) covers a known truth: 50 subsets of 200
images from a simulated population whose AP, AP50, APs and APl are known
(``benchmarks/coverage_simulation``), the evaluator's own matching, accumulator, bootstrap and
half-sample bias estimate.
The full measurement (K = 500 per size, every method) is ``benchmarks/interval_coverage.py``."""
import math

import numpy as np

from analysis.stats import (
    HALF_SAMPLES,
    INTERVAL_METHOD,
    bootstrap_interval,
    half_sample_bias,
    half_samples,
    pivot_replicates,
    seed_image_interval,
    t_quantile,
)
from benchmarks.coverage_simulation import METRICS, Detector, Scorer, population, true_metrics


def test_default_interval_covers_the_known_truth_at_200_images():
    gt = population(5000, 3)
    dt = Detector().detect(gt, 4)
    truth = true_metrics(gt, dt)
    rng = np.random.default_rng(5)
    below = above = total = 0
    for k in range(50):
        scorer = Scorer(gt, dt, rng.integers(0, 5000, 200))
        point, reps = scorer.point(), scorer.replicates(200, k)
        halves = scorer(half_samples(200, HALF_SAMPLES, k))
        for m in METRICS:
            bias = half_sample_bias(halves[m], point[m], 200, 100)
            low, high = bootstrap_interval(reps[m], 0.95, INTERVAL_METHOD, point[m], bias=bias)
            below += truth[m] < low
            above += truth[m] > high
            total += 1
    coverage = 1 - (below + above) / total
    assert 0.85 <= coverage <= 0.99, (coverage, below, above)
    assert below > 0 and above > 0, ("misses all on one side", below, above)


def test_basic_interval_is_the_percentile_one_reflected_about_the_point():
    values = np.array([1.0, 2.0, 3.0, 4.0, 10.0])
    lo, hi = bootstrap_interval(values, 0.5, "percentile")
    blo, bhi = bootstrap_interval(values, 0.5, "basic", point=3.0)
    assert (blo, bhi) == (6.0 - hi, 6.0 - lo)


def test_debiased_interval_is_basic_moved_by_the_bias_the_bootstrap_does_not_see():
    values = np.array([1.0, 2.0, 3.0, 4.0, 10.0])                 # mean 4: the bootstrap's own bias +1
    blo, bhi = bootstrap_interval(values, 0.5, "basic", point=3.0)
    dlo, dhi = bootstrap_interval(values, 0.5, "debiased", point=3.0, bias=1.0)
    assert (dlo, dhi) == (blo, bhi)                               # a bias the bootstrap saw: basic
    lo2, hi2 = bootstrap_interval(values, 0.5, "debiased", point=3.0, bias=2.5)
    assert (lo2, hi2) == (blo - 1.5, bhi - 1.5)
    assert math.isnan(bootstrap_interval(values, 0.5, "debiased", point=3.0)[0])   # no bias: no interval
    pivot = pivot_replicates(values, "debiased", 3.0, 2.5)         # its percentile interval is the debiased one
    assert bootstrap_interval(pivot, 0.5, "percentile") == (lo2, hi2)


def test_half_sample_bias_recovers_a_root_n_bias():
    # E[statistic on n images] = 1 + 2 / sqrt(n): at N = 400 the bias is 0.1, the halves (200) sit at
    # 1 + 2 / sqrt(200); with a = 1/2 the estimate is exactly 0.1; with n^-0.6, likewise 2 · 400^-0.6
    halves = np.full(50, 1 + 2 / math.sqrt(200))
    assert abs(half_sample_bias(halves, 1.1, 400, 200, exponent=0.5) - 0.1) < 1e-12
    halves = np.full(50, 1 + 2 * 200 ** -0.6)
    assert abs(half_sample_bias(halves, 1 + 2 * 400 ** -0.6, 400, 200, exponent=0.6) - 2 * 400 ** -0.6) < 1e-12
    weights = half_samples(9, 20, 3)
    assert weights.shape == (20, 9) and (weights.sum(1) == 4).all() and set(np.unique(weights)) == {0.0, 1.0}
    assert np.array_equal(weights, half_samples(9, 20, 3))        # same seed, same halves (paired runs)


def test_t_quantile_matches_known_values():
    for df, q in ((1, 12.7062), (2, 4.3027), (5, 2.5706), (30, 2.0423)):
        assert abs(t_quantile(0.975, df) - q) < 1e-3


def test_seed_interval_widens_with_seed_disagreement():
    reps = np.random.default_rng(0).normal(0, 0.01, (2, 1000))
    agree = seed_image_interval(np.array([0.10, 0.10]), reps)
    disagree = seed_image_interval(np.array([0.20, 0.0]), reps)
    assert agree[0] > 0.07 and agree[1] < 0.13                # image variance only: ± 1.96 x 0.01 / ...
    assert disagree[0] < 0 < disagree[1]                       # +20 and 0: not resolved
    assert np.isnan(seed_image_interval(np.array([0.1]), reps[:1])[0])


def test_one_seed_delta_uses_the_default_method_and_basic_without_halves():
    from analysis.stats import paired_difference

    rng = np.random.default_rng(1)
    a, b = rng.normal(0.3, 0.01, 1000), rng.normal(0.2, 0.01, 1000)
    debiased = paired_difference([a], [b], [0.3], [0.2], bias=[0.02])
    assert debiased["test"] == f"image bootstrap ({INTERVAL_METHOD})" == "image bootstrap (debiased)"
    assert (debiased["low"], debiased["high"]) == bootstrap_interval(a - b, 0.95, "debiased", 0.3 - 0.2, bias=0.02)
    old = paired_difference([a], [b], [0.3], [0.2])                    # a run folder without halves
    assert old["test"] == "image bootstrap (basic)"
    assert (old["low"], old["high"]) == bootstrap_interval(a - b, 0.95, "basic", 0.3 - 0.2)


def test_report_pairs_debias_with_the_runs_halves():
    from analysis.significance import delta_bias, metric_of

    rng = np.random.default_rng(2)
    image_ids = np.sort(rng.integers(0, 40, (200, 40)), axis=1)

    def run(point, half_mean):
        return {"image_ids": image_ids, "map": rng.normal(point, 0.01, 200), "point_map": np.float64(point),
                "half_map": np.full(100, half_mean), "half_size": np.int64(20)}

    a, b = run(0.30, 0.34), run(0.20, 0.22)      # A's halves sit higher above its point: more bias in A
    expected = half_sample_bias(np.full(100, 0.12), 0.10, 40, 20)
    assert abs(delta_bias(a, b, metric_of("map")) - expected) < 1e-12 and expected > 0
    old = {k: v for k, v in b.items() if not k.startswith("half_")}
    assert delta_bias(a, old, metric_of("map")) is None      # written before the halves: basic
