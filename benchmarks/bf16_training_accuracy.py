"""The accuracy cost of training in bf16: detectors trained in fp32 and in bf16 autocast with the
same seeds, scored on the same test images, compared with the seed-level test the report uses.

    python benchmarks/bf16_training_accuracy.py FP32_SWEEP BF16_SWEEP [--margin 2] [--out FILE]

Each sweep is an ``experiment=compare seeds=S`` folder (``train.precision=fp32`` / ``bf16``). Seed s
of bf16 is paired with seed s of fp32 (the same initial weights and image order; only the
arithmetic differs), on the same bootstrap draws of the same test images:
``analysis.stats.paired_difference`` (t over the per-seed deltas with the image-bootstrap variance
of their mean added, Welch-Satterthwaite df). Equivalence (two one-sided tests, TOST): bf16 is
*equivalent* for a metric when the 90% interval of bf16 − fp32 lies inside ±margin AP points;
*not shown* otherwise. A detector's training default may become bf16 only when AP (COCO
AP@[.5:.95]) and AP50 are equivalent; its training seconds (``train_time_s``) are printed beside.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from analysis.significance import load_replicates  # noqa: E402
from analysis.stats import paired_difference  # noqa: E402

METRICS = {"map": "AP", "map_50": "AP50", "map_small": "APs", "map_large": "APl"}
DECIDING = ("map", "map_50")


def runs_by_detector(sweep: Path) -> dict[str, dict[int, Path]]:
    """detector -> seed -> finished run folder (metrics.json status ok, bootstrap.npz present)."""
    out: dict[str, dict[int, Path]] = {}
    for metrics_file in sorted(sweep.glob("*/metrics.json")):
        m = json.loads(metrics_file.read_text())
        if m.get("status") == "ok" and (metrics_file.parent / "bootstrap.npz").is_file():
            out.setdefault(m["detector"], {})[int(m["seed"])] = metrics_file.parent
    return out


def compare_detector(fp32: dict[int, Path], bf16: dict[int, Path], margin: float) -> tuple[list[str], bool]:
    """Table rows (markdown) for one detector and whether bf16 is equivalent on AP and AP50."""
    seeds = sorted(set(fp32) & set(bf16))
    reps = {p: [load_replicates(runs[s]) for s in seeds] for p, runs in (("fp32", fp32), ("bf16", bf16))}
    for a, b in zip(reps["fp32"], reps["bf16"]):
        if not (np.array_equal(a["image_ids"], b["image_ids"]) and np.array_equal(a["image_keys"], b["image_keys"])):
            raise ValueError(f"{fp32} and {bf16}: not scored on the same images and bootstrap draws")
    times = {p: [json.loads((runs[s] / "metrics.json").read_text())["train_time_s"] for s in seeds]
             for p, runs in (("fp32", fp32), ("bf16", bf16))}
    rows, equivalent = [], True
    for key, label in METRICS.items():
        point = {p: [100 * float(r[f"point_{key}"]) for r in reps[p]] for p in reps}
        draws = {p: [100 * np.asarray(r[key], float) for r in reps[p]] for p in reps}
        d95 = paired_difference(draws["bf16"], draws["fp32"], point["bf16"], point["fp32"], 0.95)
        d90 = paired_difference(draws["bf16"], draws["fp32"], point["bf16"], point["fp32"], 0.90)
        inside = -margin < d90["low"] and d90["high"] < margin
        if key in DECIDING:
            equivalent &= inside
        per_seed = " / ".join(f"{a:.1f}→{b:.1f}" for a, b in zip(point["fp32"], point["bf16"]))
        rows.append(f"| {label} | {len(seeds)} | {per_seed} | {np.mean(point['fp32']):.2f} | "
                    f"{np.mean(point['bf16']):.2f} | {d95['delta']:+.2f} [{d95['low']:+.2f}, {d95['high']:+.2f}] | "
                    f"[{d90['low']:+.2f}, {d90['high']:+.2f}] | {'equivalent' if inside else 'not shown'} |")
    rows.append(f"| train s | {len(seeds)} | " + " / ".join(f"{a:.0f}→{b:.0f}" for a, b in
                                                          zip(times["fp32"], times["bf16"])) +
                f" | {np.median(times['fp32']):.0f} | {np.median(times['bf16']):.0f} | "
                f"x{np.median(times['fp32']) / np.median(times['bf16']):.2f} faster (median) | | |")
    return rows, equivalent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("fp32", type=Path)
    parser.add_argument("bf16", type=Path)
    parser.add_argument("--margin", type=float, default=2.0, help="equivalence margin, AP points")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    fp32, bf16 = runs_by_detector(args.fp32), runs_by_detector(args.bf16)
    lines = ["# bf16 training vs fp32 (benchmarks/bf16_training_accuracy.py)", "",
             f"fp32 sweep `{args.fp32}`, bf16 sweep `{args.bf16}`; load average now "
             f"{' / '.join(f'{x:.1f}' for x in os.getloadavg())}. Seed s of bf16 paired with seed s of fp32 "
             f"on the same test images and bootstrap draws; Δ = bf16 − fp32 in AP points, 95% interval "
             f"and the 90% interval of the equivalence test (margin ±{args.margin:g}), both with seed-to-seed "
             "and image variance inside (t over seeds + image variance).", ""]
    verdicts = []
    for detector in sorted(set(fp32) & set(bf16)):
        rows, equivalent = compare_detector(fp32[detector], bf16[detector], args.margin)
        lines += [f"## {detector}", "",
                  "| metric | seeds | per seed fp32→bf16 | mean fp32 | mean bf16 | Δ [95%] | 90% | equivalence |",
                  "|---|---|---|---|---|---|---|---|", *rows, ""]
        verdict = "equivalent on AP and AP50: bf16 may be its default" if equivalent else \
            "NOT shown equivalent: fp32 stays its default"
        verdicts.append(f"- {detector}: bf16 {verdict}")
    lines += ["## Verdicts", "", *verdicts, ""]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
