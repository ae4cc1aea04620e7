"""``detbench-eval``: score any COCO results file against any COCO ground truth.

    detbench-eval --gt ground_truth.json --dt detections.json [--backend pycocotools] \
                  [--out metrics.json] [--per-class per_class.csv]

Prints the flat dict of ``experiments.evaluation.METRICS`` as JSON (NaN where undefined) and
writes it to ``--out``. A run folder's ``ground_truth.json`` and ``detections.json`` re-score
to the run's own numbers; any other COCO files work too (the VOC metrics then read an optional
``difficult`` field of the annotations). Bad input exits with status 2 and names the entry.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

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
    args = parser.parse_args(argv)
    try:
        ground_truth = _load_json(args.gt, "ground-truth")
        results = _load_json(args.dt, "detections")
        if not isinstance(ground_truth, dict):
            raise ValueError(f"{args.gt}: a COCO ground truth is a JSON object")
        try:
            gt, dt, categories = tables_from_coco(ground_truth, results)
        except ValueError as error:
            raise ValueError(f"{args.gt} / {args.dt}: {error}") from None
        result = score_tables(gt, dt, categories, args.backend)
    except ValueError as error:
        print(f"detbench-eval: error: {error}", file=sys.stderr)
        return 2
    text = json.dumps(result.metrics, indent=1)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    if args.per_class:
        args.per_class.parent.mkdir(parents=True, exist_ok=True)
        result.per_class.to_csv(args.per_class, index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
