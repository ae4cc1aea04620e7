"""Do the evaluator's 95% intervals cover the true AP? Measured on a simulated detector population
whose AP is known (``coverage_simulation``), with the evaluator's own matching, accumulator and
image bootstrap.

    python benchmarks/interval_coverage.py                       # the committed run (long)
    python benchmarks/interval_coverage.py --subsets 40 --sizes 200 400 --seed-trials 0   # a look

Part 1, one detector: K subsets of N images (drawn with replacement from a 20,000-image
population); per subset B bootstrap replicates, H random halves (the evaluator's
``analysis.stats.half_samples``) and, per metric (AP, AP50, APs, APl) and method (percentile,
basic, BCa, debiased a=0.5 and a=0.6: basic's spread less the half-sample bias estimate scaled as
N^-a (``analysis.stats.half_sample_bias``; the evaluator's ``debiased`` uses ``BIAS_EXPONENT``),
and jackknife-debiased: the same with the grouped jackknife's bias estimate (G − 1)(mean − point),
the 1/N scaling of smooth statistics), the 95% interval.

Part 1b, held out: the same table at 200 and 400 images for a second detector (fewer finds,
other jitter and background) on another population, whose bias was never looked at when the
exponent was chosen. Printed: coverage (share of subsets whose interval holds
the population's value) with its Monte-Carlo standard error sqrt(c (1 - c) / K), the share of
misses with the truth below / above the interval, the mean width against 3.92 x the true SD of
the estimate (the SD of the K point estimates: coverage bought by width does not count), and the
mean bias of the point estimate.

Part 2, seeds: two detectors A and B (B finds fewer objects), each trained with S seeds (a seed
shifts the detection logits per size bucket by N(0, seed_sd) and draws its own per-image
outcomes); seed s of A is paired with seed s of B on the same N images. The truth is
E_seed AP(A) - E_seed AP(B) on the population (``--truth-seeds`` antithetic seed pairs each).
Methods for the interval of the mean delta over seeds: image-only (replicates averaged over seeds,
the report before issue 27), two-level bootstrap (resample seeds, then images; basic), and
t over per-seed deltas with the image variance added (Welch-Satterthwaite df).

BCa's acceleration here comes from a grouped jackknife (min(N, 100) groups); the evaluator's
uses every image.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.stats import (  # noqa: E402
    BIAS_EXPONENT,
    HALF_SAMPLES,
    INTERVAL_METHOD,
    bootstrap_interval,
    half_sample_bias,
    half_samples,
    seed_image_interval,
)
from benchmarks.coverage_simulation import METRICS, Detector, Scorer, population, true_metrics  # noqa: E402

Z95 = 3.92   # width of a normal 95% interval in SDs
EXPONENTS = (0.5, 0.6)   # the half-sample bias scaled as N^-a: 1/2 the envelope's leading order, 0.6 as measured
METHODS = ("percentile", "basic", "bca", *(f"debiased a={a}" for a in EXPONENTS), "jackknife-debiased")
HELD_OUT = {"logit": (-1.0, 0.4, 1.2), "jitter": (0.12, 0.10, 0.08), "background": 2.0}   # part 1b's detector


def grouped_jackknife(scorer: Scorer, groups: int = 100) -> dict[str, np.ndarray]:
    """Delete-a-group jackknife values [G] (G = min(N, groups) contiguous groups of the subset)."""
    n = scorer.num_images
    g = min(n, groups)
    member = np.arange(n) * g // n
    weights = 1.0 - (member[None, :] == np.arange(g)[:, None])
    return scorer(weights)


def one_subset(gt, dt, n, replicates, halves, rng) -> dict:
    """metric -> {"point", "bias", method: (low, high)} for one random subset of n images ("bias": the
    half-sample estimate of the estimator's bias)."""
    subset = rng.integers(0, len(gt.start) - 1, n)
    scorer = Scorer(gt, dt, subset)
    point = scorer.point()
    seed = int(rng.integers(2 ** 31))
    reps = scorer.replicates(replicates, seed)
    half = scorer(half_samples(n, halves, seed))
    jack = grouped_jackknife(scorer)
    out = {}
    for m in METRICS:
        bias = {a: half_sample_bias(half[m], point[m], n, n // 2, exponent=a) for a in EXPONENTS}
        groups = len(jack[m])
        jack_bias = (groups - 1) * (np.nanmean(jack[m]) - point[m])
        out[m] = {"point": point[m], "bias": bias[BIAS_EXPONENT],
                  **{method: bootstrap_interval(reps[m], 0.95, method, point[m], jack[m])
                     for method in ("percentile", "basic", "bca")},
                  **{f"debiased a={a}": bootstrap_interval(reps[m], 0.95, "debiased", point[m], bias=bias[a])
                     for a in EXPONENTS},
                  "jackknife-debiased": bootstrap_interval(reps[m], 0.95, "debiased", point[m], bias=jack_bias)}
    return out


def summarise(results: list[dict], truth: float, methods) -> list[dict]:
    """Per method: coverage, its MC SE, misses below / above, mean width, true SD, bias (points)."""
    points = np.array([r["point"] for r in results])
    sd = float(np.nanstd(points, ddof=1))
    rows = []
    for method in methods:
        lo = np.array([r[method][0] for r in results])
        hi = np.array([r[method][1] for r in results])
        ok = ~(np.isnan(lo) | np.isnan(hi))
        k = int(ok.sum())
        below, above = int(np.sum(truth < lo[ok])), int(np.sum(truth > hi[ok]))
        cover = 1 - (below + above) / max(k, 1)
        rows.append({"method": method, "K": k, "coverage": cover, "se": math.sqrt(cover * (1 - cover) / max(k, 1)),
                     "below": below, "above": above, "width": float(np.mean(hi[ok] - lo[ok])),
                     "z_width": Z95 * sd, "bias": float(np.nanmean(points) - truth),
                     "estimated": float(np.nanmean([r.get("bias", math.nan) for r in results]))})
    return rows


def part_one(args, out: list[str], detector: Detector | None = None, population_seed: int = 0,
             sizes=None, subsets: int | None = None, title: str = "One detector") -> dict:
    """The coverage table of one simulated detector (default: the main one) -> (N, metric, method) -> row."""
    gt = population(args.population, population_seed)
    dt = (detector or Detector()).detect(gt, 1 + population_seed)
    truth = true_metrics(gt, dt)
    out.append(f"## {title}: {args.population} images, {len(gt.image)} objects, {len(dt.image)} detections; "
               f"B = {args.replicates}, H = {args.halves} halves\n")
    out.append("Population (true) values: " + ", ".join(f"{METRICS[m]} {100 * v:.2f}" for m, v in truth.items()))
    out.append("")
    out.append("| N | metric | method | K | coverage (± MC SE) | misses below / above | mean width | "
               f"3.92 x true SD | width ratio | bias of the estimate | half-sample estimate (a = {BIAS_EXPONENT}) |")
    out.append("|---|---|---|---|---|---|---|---|---|---|---|")
    summary = {}
    for n in sizes or args.sizes:
        rng = np.random.default_rng(1000 + n + population_seed)
        start = time.perf_counter()
        k = subsets or dict(args.subsets_at).get(n, args.subsets)
        results = [one_subset(gt, dt, n, args.replicates, args.halves, rng) for _ in range(k)]
        seconds = time.perf_counter() - start
        for m in METRICS:
            for row in summarise([r[m] for r in results], truth[m], METHODS):
                summary[(n, m, row["method"])] = row
                out.append(f"| {n} | {METRICS[m]} | {row['method']} | {row['K']} | {100 * row['coverage']:.1f} "
                           f"± {100 * row['se']:.1f} | {row['below']} / {row['above']} | {100 * row['width']:.2f} | "
                           f"{100 * row['z_width']:.2f} | {row['width'] / row['z_width']:.2f} | "
                           f"{100 * row['bias']:+.2f} | {100 * row['estimated']:+.2f} |")
        print(f"{title}, N={n}: {k} subsets in {seconds:.0f} s", flush=True)
    return summary


def seed_truth(gt, detector: Detector, pairs: int) -> float:
    """E_seed of the population AP, from ``pairs`` antithetic seed pairs (+z, -z)."""
    values = []
    for s in range(pairs):
        for sign in (1.0, -1.0):
            d = Detector(**{**detector.__dict__, "seed_sd": sign * detector.seed_sd})
            values.append(true_metrics(gt, d.detect(gt, 10_000 + s, training_seed=s))["map"])
    return float(np.mean(values))


def part_two(args, out: list[str]) -> dict:
    gt = population(args.seed_population, 1)
    a = Detector(seed_sd=args.seed_sd)
    b = Detector(logit=(-1.0, 0.4, 1.2), seed_sd=args.seed_sd)
    truth = seed_truth(gt, a, args.truth_seeds) - seed_truth(gt, b, args.truth_seeds)
    most = max(args.seed_counts)
    out.append(f"\n## Seeds: paired ΔAP (A − B) over S seeds, {args.seed_population} images, seed SD "
               f"{args.seed_sd} on the detection logits, N = {args.seed_images}, B = {args.replicates}\n")
    out.append(f"True ΔAP = E_seed AP(A) − E_seed AP(B) = {100 * truth:.2f} points "
               f"({args.truth_seeds} antithetic seed pairs per detector)\n")
    rng = np.random.default_rng(77)
    records = {s: {k: [] for k in ("point", "image-only", "two-level", "t + image")} for s in args.seed_counts}
    seed_sd, image_sd = [], []
    for trial in range(args.seed_trials):
        subset = rng.integers(0, len(gt.start) - 1, args.seed_images)
        boot_seed = int(rng.integers(2 ** 31))
        reps, points = [], []
        for s in range(most):
            training = 1000 * (trial + 1) + s       # seeds no truth seed used
            sa = Scorer(gt, a.detect(gt, training, training), subset)
            sb = Scorer(gt, b.detect(gt, training + 500, training + 500), subset)
            reps.append(sa.replicates(args.replicates, boot_seed)["map"]
                        - sb.replicates(args.replicates, boot_seed)["map"])
            points.append(sa.point()["map"] - sb.point()["map"])
        reps, points = np.array(reps), np.array(points)          # [S, B], [S]
        seed_sd.append(np.std(points, ddof=1))
        image_sd.append(np.mean(np.std(reps, axis=1, ddof=1)))
        for s in args.seed_counts:
            point = float(points[:s].mean())
            records[s]["point"].append(point)
            records[s]["image-only"].append(bootstrap_interval(reps[:s].mean(0), 0.95, "basic", point))
            records[s]["t + image"].append(seed_image_interval(points[:s], reps[:s]))
            records[s]["two-level"].append(two_level(points[:s], reps[:s], rng))
    out.append(f"Seed-to-seed SD of ΔAP {100 * np.mean(seed_sd):.2f} points, image-bootstrap SD "
               f"{100 * np.mean(image_sd):.2f} points (means over {args.seed_trials} trials)\n")
    out.append("| seeds | method | K | coverage (± MC SE) | misses below / above | mean width | 3.92 x true SD |")
    out.append("|---|---|---|---|---|---|---|")
    summary = {}
    for s in args.seed_counts:
        rows = summarise([{"point": p, **{k: records[s][k][i] for k in records[s] if k != "point"}}
                          for i, p in enumerate(records[s]["point"])], truth, ["image-only", "two-level", "t + image"])
        for row in rows:
            summary[(s, row["method"])] = row
            out.append(f"| {s} | {row['method']} | {row['K']} | {100 * row['coverage']:.1f} ± {100 * row['se']:.1f} | "
                       f"{row['below']} / {row['above']} | {100 * row['width']:.2f} | {100 * row['z_width']:.2f} |")
    return summary


def two_level(points: np.ndarray, reps: np.ndarray, rng) -> tuple[float, float]:
    """Resample seeds (with replacement) per replicate, then the images (the replicate's column):
    delta* = mean of reps[seeds*, b]; basic interval about the mean point."""
    s, b = reps.shape
    pick = rng.integers(0, s, (b, s))
    values = reps[pick, np.arange(b)[:, None]].mean(1)
    return bootstrap_interval(values, 0.95, "basic", float(points.mean()))


def verdict(summary: dict, sizes, out: list[str], title: str = "Verdict") -> None:
    """The method closest to 95% at 200 and 400 images (mean |coverage - 0.95| over the metrics), and
    per method the smallest N from which it covers >= 90% on every metric."""
    out.append(f"\n## {title}\n")
    at = [n for n in (200, 400) if n in sizes] or list(sizes)
    distance = {m: float(np.mean([abs(summary[(n, k, m)]["coverage"] - 0.95) for n in at for k in METRICS]))
                for m in METHODS}
    for m in METHODS:
        ok = [n for n in sizes if all(summary[(x, k, m)]["coverage"] >= 0.90 for x in sizes if x >= n for k in METRICS)]
        ratio = np.mean([summary[(n, k, m)]["width"] / summary[(n, k, m)]["z_width"] for n in at for k in METRICS])
        out.append(f"- {m}: mean |coverage − 95%| at N = {', '.join(map(str, at))}: {100 * distance[m]:.1f} points; "
                   f"mean width / (3.92 x true SD) {ratio:.2f}; covers >= 90% on every metric from N = "
                   f"{min(ok) if ok else 'never (in the sizes run)'}; misses below / above "
                   f"{sum(summary[(n, k, m)]['below'] for n in at for k in METRICS)} / "
                   f"{sum(summary[(n, k, m)]['above'] for n in at for k in METRICS)}")
    out.append(f"\nClosest to 95%: **{min(distance, key=distance.get)}** (the evaluator's `{INTERVAL_METHOD}` is "
               f"`debiased a={BIAS_EXPONENT}`)")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--population", type=int, default=20_000)
    parser.add_argument("--sizes", type=int, nargs="+", default=[50, 100, 200, 400, 1000])
    parser.add_argument("--subsets", type=int, default=500)
    parser.add_argument("--subsets-at", type=lambda x: tuple(map(int, x.split("="))), nargs="*", default=[],
                        help="N=K: another K at that size (e.g. 1000=150 where the CPU cannot afford 500)")
    parser.add_argument("--replicates", type=int, default=1000)
    parser.add_argument("--halves", type=int, default=HALF_SAMPLES, help="random halves per subset (debiased)")
    parser.add_argument("--held-out-subsets", type=int, default=200,
                        help="K of part 1b: a second detector the exponent was not read from (0: off)")
    parser.add_argument("--seed-population", type=int, default=5000)
    parser.add_argument("--seed-images", type=int, default=100)
    parser.add_argument("--seed-sd", type=float, default=0.15)
    parser.add_argument("--seed-counts", type=int, nargs="+", default=[2, 3, 5])
    parser.add_argument("--seed-trials", type=int, default=200)
    parser.add_argument("--truth-seeds", type=int, default=16)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    out = ["# Interval coverage on a simulated detector population (benchmarks/interval_coverage.py)\n",
           "`" + " ".join(["python benchmarks/interval_coverage.py", *(argv if argv is not None else sys.argv[1:])])
           + "`\n"]
    start = time.perf_counter()
    if args.subsets:
        verdict(part_one(args, out), args.sizes, out)
    if args.held_out_subsets:
        sizes = [n for n in (200, 400) if n in args.sizes] or args.sizes
        verdict(part_one(args, out, Detector(**HELD_OUT), 11, sizes, args.held_out_subsets,
                         f"Held out: another detector {HELD_OUT} on another population"), sizes, out,
                "Verdict on the held-out detector")
    if args.seed_trials:
        part_two(args, out)
    out.append(f"\n{time.perf_counter() - start:.0f} s in all")
    text = "\n".join(out)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
