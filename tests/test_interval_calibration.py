"""The default interval (``analysis.stats.INTERVAL_METHOD``) covers a known truth: 50 subsets of 200
images from a simulated population whose AP, AP50, APs and APl are known
(``benchmarks/coverage_simulation``), the evaluator's own matching, accumulator and bootstrap.
The full measurement (K = 500 per size, every method) is ``benchmarks/interval_coverage.py``."""
import numpy as np

from analysis.stats import INTERVAL_METHOD, bootstrap_interval, seed_image_interval, t_quantile
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
        for m in METRICS:
            low, high = bootstrap_interval(reps[m], 0.95, INTERVAL_METHOD, point[m])
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
