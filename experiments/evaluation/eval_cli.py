"""``detbench-eval``: score any COCO results file against any COCO ground truth.

    detbench-eval --gt ground_truth.json --dt detections.json [--backend pycocotools] \
                  [--out metrics.json] [--per-class per_class.csv]
    detbench-eval --gt GT --dt A.json [--dt2 B.json] --bootstrap 1000 --seed 0 --out m.json \
                  [--save-replicates R.npz]

Prints the flat dict of ``experiments.evaluation.METRICS`` as JSON (NaN where undefined) and
writes it to ``--out``. A run folder's ``ground_truth.json`` and ``detections.json`` re-score
to the run's own numbers; any other COCO files work too (the VOC metrics then read an optional
``difficult`` field of the annotations). Bad input exits with status 2 and names the entry.

``--bootstrap B`` adds the image-bootstrap interval of every metric (``<metric>_ci_low``,
``<metric>_ci_high``; debiased (the calibrated default), ``--level`` 0.95, ``--method`` percentile, basic or
bca on request). ``--dt2`` scores
a second results file on the same resampled images: its metrics as ``dt2_<metric>`` (with
intervals) and the paired ``delta_<metric>`` = dt - dt2 (A - B, the project's one sign convention),
``delta_<metric>_ci_low/high`` and the
two-sided bootstrap ``p_<metric>``. ``--save-replicates R.npz`` writes the resampled image ids
``image_ids`` [B, N] and every metric per replicate (``dt2_<metric>`` for the second file), with
the half-sample values the debiased interval reads (``half_<metric>`` [H], ``half_size``).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from experiments.evaluation.bootstrap import (
    INTERVAL_METHOD,
    METHODS,
    bootstrap,
    check_bootstrap_arguments,
    paired_deltas,
)
from experiments.evaluation.metrics import BACKENDS, score_tables
from experiments.evaluation.tables import tables_from_coco


def _load_json(path: Path, what: str):
    try:
        with open(path) as f:
            return json.load(f)
    except OSError as error:
        raise ValueError(f"cannot read the {what} file {path}: {error.strerror}") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"the {what} file {path} is not valid JSON: {error}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="detbench-eval",
        description="Score a COCO results file (detections) against a COCO ground-truth file: "
                    "COCO AP/AR (pycocotools' numbers) and Pascal VOC07 / VOC2010+ mAP.")
    parser.add_argument("--gt", type=Path, required=True, help="COCO ground-truth JSON")
    parser.add_argument("--dt", type=Path, required=True,
                        help="COCO results JSON: a list of {image_id, category_id, bbox [x,y,w,h], score}")
    parser.add_argument("--backend", choices=BACKENDS, default="faster_coco_eval",
                        help="who computes the COCO numbers (both give pycocotools' numbers)")
    parser.add_argument("--out", type=Path, help="write the metrics JSON here too")
    parser.add_argument("--per-class", type=Path, help="write the per-class table (CSV) here")
    parser.add_argument("--dt2", type=Path, help="a second results JSON, compared with --dt on the same images")
    parser.add_argument("--bootstrap", type=int, metavar="B", help="image-bootstrap replicates (>= 1)")
    parser.add_argument("--seed", type=int, default=0, help="the bootstrap's seed (a non-negative integer)")
    parser.add_argument("--level", type=float, default=0.95, help="interval level")
    parser.add_argument("--method", choices=METHODS, default=INTERVAL_METHOD,
                        help=f"interval method (default {INTERVAL_METHOD}: the calibrated one)")
    parser.add_argument("--save-replicates", type=Path, metavar="R.npz",
                        help="write the resampled image ids [B, N] and every metric per replicate")
    args = parser.parse_args(argv)
    if args.dt2 is not None and args.bootstrap is None:
        parser.error("--dt2 needs --bootstrap B (the paired comparison resamples the images)")
    if args.save_replicates is not None and args.bootstrap is None:
        parser.error("--save-replicates needs --bootstrap B")
    try:
        ground_truth = _load_json(args.gt, "ground-truth")
        results = _load_json(args.dt, "detections")
        if not isinstance(ground_truth, dict):
            raise ValueError(f"{args.gt}: a COCO ground truth is a JSON object")
        try:
            gt, dt, categories = tables_from_coco(ground_truth, results)
        except ValueError as error:
            raise ValueError(f"{args.gt} / {args.dt}: {error}") from None
        if not (~gt.iscrowd).any():
            raise ValueError(f"{args.gt}: the ground truth has no (non-crowd) annotation "
                             f"({len(gt.image_ids)} images): every AP would be NaN, there is nothing to score")
        result = score_tables(gt, dt, categories, args.backend)
        output = dict(result.metrics)
        if args.bootstrap is not None:
            check_bootstrap_arguments(args.bootstrap, args.seed)
            if not 0 < args.level < 1:
                raise ValueError(f"--level must lie in (0, 1), got {args.level}")
            output.update(_bootstrap(args, ground_truth, gt, dt, categories))
    except ValueError as error:
        print(f"detbench-eval: error: {error}", file=sys.stderr)
        return 2
    text = json.dumps(output, indent=1)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    if args.per_class:
        args.per_class.parent.mkdir(parents=True, exist_ok=True)
        result.per_class.to_csv(args.per_class, index=False)
    return 0


def _bootstrap(args, ground_truth: dict, gt, dt, categories) -> dict:
    """Intervals (and with --dt2 the second file's metrics and the paired deltas) as flat keys."""
    category_ids = [c for c, _ in categories]
    a = bootstrap(gt, dt, category_ids, args.bootstrap, args.seed, args.level, args.method)
    out = a.as_metrics()
    arrays = {"image_ids": a.image_ids, "category_ids": a.category_ids, **a.replicates, "half_size": a.half_size,
              **{f"half_{k}": v for k, v in (a.halves or {}).items()}}
    if args.dt2 is not None:
        results2 = _load_json(args.dt2, "second detections")
        try:
            _, dt2, _ = tables_from_coco(ground_truth, results2)
        except ValueError as error:
            raise ValueError(f"{args.gt} / {args.dt2}: {error}") from None
        b = bootstrap(gt, dt2, category_ids, args.bootstrap, args.seed, args.level, args.method)
        out.update({f"dt2_{k}": v for k, v in score_tables(gt, dt2, categories, args.backend).metrics.items()})
        out.update({f"dt2_{k}": v for k, v in b.as_metrics().items() if k.endswith(("_ci_low", "_ci_high"))})
        out.update(paired_deltas(a.point, b.point, a.replicates, b.replicates, args.level, method=args.method,
                                 halves_a=a.halves, halves_b=b.halves, num_images=int(a.image_ids.shape[1])))
        arrays.update({f"dt2_{k}": v for k, v in b.replicates.items()})
        arrays.update({f"dt2_half_{k}": v for k, v in (b.halves or {}).items()})
    if args.save_replicates is not None:
        args.save_replicates.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(args.save_replicates, **arrays)
    return out


if __name__ == "__main__":
    sys.exit(main())
