"""Assignment coverage: how many ground-truth objects a detector's training-time target
assignment can reach at all (the recall ceiling of training), by COCO size bucket and class,
with no training.

For every image of a split, the image's Target goes through the detector's own
``preprocess`` (so the boxes are scaled to its input size by its own code) and its own
``assign_objects`` (the code its loss runs: see ``detectors.assignment``). Per object we keep
the positives, the best candidate's IoU and the status (matched; kept only by the
best-candidate rule; lost below the threshold; lost to a collision).

Policies (each said in ``coverage.json``):

- Size buckets use the object's ``area`` in the ORIGINAL image, as COCO's evaluator does
  (COCO: the segment area; other formats: the box area): small < 32², medium < 96², large.
- Crowd objects (``iscrowd`` 1) are left out before assignment, as every detector's loss leaves
  them out of matching (the evaluator ignores them; the contract says they are never learned).
- An object less than one pixel wide or high at the input size is assigned as training would
  assign it, and counted (``sub_pixel``) and logged.
- A split without (non-crowd) objects is an error: coverage is not defined.
- A detector without an assignment rule (torchvision's reference models) raises
  ``CoverageNotDefined``.
"""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import torch

from detectors.assignment import STATUSES
from experiments.data.size_buckets import size_of
from experiments.data.stats import target_of

log = logging.getLogger(__name__)
SIZE_BUCKETS = ("small", "medium", "large")
QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)
BUCKET_RULE = "COCO area in the original image (segment area for COCO, else box area): small < 32², medium < 96²"


class CoverageNotDefined(ValueError):
    """The detector has no training-time assignment rule detbench can run."""


def image_size_of(dataset, index: int) -> tuple[int, int]:
    """(H, W) of image ``index`` without decoding it where the dataset allows."""
    if hasattr(dataset, "records"):
        return tuple(int(v) for v in dataset.records[index].size)
    if hasattr(dataset, "image_size"):
        return tuple(int(v) for v in dataset.image_size)
    return tuple(int(v) for v in dataset[index][0].shape[-2:])


def object_records(detector, dataset, max_images: int = 0, where: str = "dataset") -> pd.DataFrame:
    """One row per (stage, non-crowd object) of the first ``max_images`` images (0: all).

    Columns: stage, image_id, label, class_name, area (original pixels²), bucket, width_input,
    height_input (input pixels), sub_pixel, positives, best_iou, status, threshold."""
    if not _has_rule(detector):
        raise CoverageNotDefined(f"{type(detector).__name__}: no training-time assignment rule: coverage not defined")
    count = len(dataset) if not max_images else min(max_images, len(dataset))
    rows, was_training = [], detector.training
    detector.train()   # the assignment as training runs it (e.g. the R-CNN transform's resize)
    try:
        for i in range(count):
            target = target_of(dataset, i)
            keep = target["iscrowd"] == 0
            if not keep.any():
                continue
            target = {**target, **{k: target[k][keep] for k in ("boxes", "labels", "area", "iscrowd")}}
            height, width = image_size_of(dataset, i)
            device = next(detector.buffers(), torch.zeros(0)).device
            batch = detector.preprocess([torch.zeros(3, height, width, device=device)], [target])
            try:
                stages = detector.assign_objects(batch)[0]
            except NotImplementedError as error:
                raise CoverageNotDefined(str(error)) from error
            scaled = batch.targets[0]["boxes"].cpu()
            size_in = (scaled[:, 2:] - scaled[:, :2]).numpy()                  # [G, 2] w, h
            for stage, result in stages.items():
                if len(result.positives) != len(scaled):
                    raise RuntimeError(f"{type(detector).__name__}.assign_objects gave {len(result.positives)} "
                                       f"objects for {len(scaled)} ({where} image {target['image_id']})")
                for k in range(len(scaled)):
                    area = float(target["area"][k])
                    label = int(target["labels"][k])
                    rows.append({"stage": stage, "image_id": target["image_id"], "label": label,
                                 "class_name": dataset.class_names[label - 1], "area": area,
                                 "bucket": size_of(area), "width_input": float(size_in[k, 0]),
                                 "height_input": float(size_in[k, 1]),
                                 "sub_pixel": bool(min(size_in[k]) < 1.0),
                                 "positives": int(result.positives[k]), "best_iou": float(result.best_iou[k]),
                                 "status": STATUSES[int(result.status[k])], "threshold": result.threshold})
    finally:
        detector.train(was_training)
    if not rows:
        raise ValueError(f"{where}: no (non-crowd) objects in its {count} images: coverage not defined")
    records = pd.DataFrame(rows)
    tiny = int(records.loc[records["stage"] == records["stage"].iat[0], "sub_pixel"].sum())
    if tiny:
        log.warning("%s: %d objects are less than 1 pixel wide or high at %s's input size; assigned "
                    "as training would, counted as sub_pixel", where, tiny, type(detector).__name__)
    return records


def _has_rule(detector) -> bool:
    from detectors.base import Detector

    return type(detector).assign_objects is not Detector.assign_objects


def summarise(records: pd.DataFrame) -> pd.DataFrame:
    """Per stage and group (``all``; each size bucket; each class): objects, covered (>= 1
    positive), coverage (share), the count per status, sub_pixel, best-IoU quantiles and
    positives per object (mean, median)."""
    rows = []
    for stage, of_stage in records.groupby("stage", sort=False):
        groups = [("all", "all", of_stage)]
        groups += [("size", b, of_stage[of_stage["bucket"] == b]) for b in SIZE_BUCKETS]
        groups += [("class", c, g) for c, g in of_stage.groupby("class_name", sort=True)]
        for kind, name, group in groups:
            n = len(group)
            row = {"stage": stage, "kind": kind, "group": name, "objects": n,
                   "covered": int((group["positives"] > 0).sum()),
                   "coverage_any_positive": float((group["positives"] > 0).mean()) if n else float("nan")}
            row |= {s: int((group["status"] == s).sum()) for s in STATUSES}
            # reached: a candidate at the assignment's IoU threshold; a forced best-candidate match is not
            row["coverage"] = row["matched"] / n if n else float("nan")
            row["forced"] = row["best_candidate_only"] / n if n else float("nan")
            row["sub_pixel"] = int(group["sub_pixel"].sum())
            iou = group["best_iou"].dropna()
            row |= {f"best_iou_q{int(q * 100)}": float(iou.quantile(q)) if len(iou) else float("nan")
                    for q in QUANTILES}
            row["positives_mean"] = float(group["positives"].mean()) if n else float("nan")
            row["positives_median"] = float(group["positives"].median()) if n else float("nan")
            rows.append(row)
    return pd.DataFrame(rows)


def headline(summary: pd.DataFrame) -> dict[str, float]:
    """metrics.json's ``coverage``, ``coverage_small`` / ``_medium`` / ``_large``: the share of
    objects with a candidate at the assignment's IoU threshold (status matched), and beside them
    ``coverage_forced*``: the share reached only by the forced best-candidate rule, never counted
    as reached (issue 27). The first stage: the detector's headline assignment; NaN for an empty bucket."""
    first = summary[summary["stage"] == summary["stage"].iat[0]]
    reached, forced = dict(zip(first["group"], first["coverage"])), dict(zip(first["group"], first["forced"]))
    metrics = {"coverage": reached["all"], "coverage_forced": forced["all"]}
    metrics |= {f"coverage_{b}": reached.get(b, float("nan")) for b in SIZE_BUCKETS}
    metrics |= {f"coverage_forced_{b}": forced.get(b, float("nan")) for b in SIZE_BUCKETS}
    return metrics


def format_table(summary: pd.DataFrame, kind: str = "size") -> str:
    """The summary rows of ``kind`` (plus ``all``) as a Markdown table, shares in %."""
    rows = summary[(summary["kind"] == kind) | (summary["kind"] == "all")].copy()
    rows["coverage %"] = (rows["coverage"] * 100).round(1)
    columns = ["stage", "group", "objects", "coverage %", *STATUSES, "sub_pixel", "best_iou_q10",
               "best_iou_q50", "best_iou_q90", "positives_mean"]
    return rows[columns].to_markdown(index=False, floatfmt=".3g")


def coverage_of(detector, dataset, max_images: int = 0, where: str = "dataset") -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per-object records, summary) of ``detector`` on ``dataset``."""
    records = object_records(detector, dataset, max_images, where)
    return records, summarise(records)


def to_json(summary: pd.DataFrame, **identity) -> dict:
    """coverage.json's content: identity, the bucket rule, the headline and every summary row."""
    clean = summary.replace({np.nan: None})
    return {**identity, "size_buckets": BUCKET_RULE, "crowd": "left out before assignment",
            "statuses": list(STATUSES),
            **{k: None if np.isnan(v) else v for k, v in headline(summary).items()},
            "rows": clean.to_dict(orient="records")}


def run_coverage(detector, dataset, out_dir, max_images: int = 0, where: str = "val split") -> dict:
    """What every run adds to metrics.json: ``coverage`` and ``coverage_small/medium/large``
    of the first ``max_images`` images (0: all; ``coverage_images`` says how many), and
    ``coverage.json`` / ``coverage.csv`` in ``out_dir``. Never raises for a detector without a
    rule or a split without objects: ``coverage_note`` says why there are no numbers."""
    import json
    from pathlib import Path

    try:
        _, summary = coverage_of(detector, dataset, max_images, where)
    except ValueError as error:   # CoverageNotDefined, or no objects
        log.warning("coverage: %s", error)
        return {"coverage_note": "coverage not defined" if isinstance(error, CoverageNotDefined) else str(error)}
    images = len(dataset) if not max_images else min(max_images, len(dataset))
    out_dir = Path(out_dir)
    summary.to_csv(out_dir / "coverage.csv", index=False)
    (out_dir / "coverage.json").write_text(json.dumps({"images": images, **to_json(summary)}, indent=2))
    return {**headline(summary), "coverage_images": images}
