"""A detector's operating point: the score threshold that maximises F1 on the validation split.

Detections are matched to ground truth as COCO does at IoU 0.5 (``errors.classify``: per image
and class, in score order), so keeping the detections with score >= t keeps a prefix of that
order and its matches: precision(t) = TP / kept, recall(t) = TP / ground truths (crowd regions
and the detections they cover left out), F1 their harmonic mean, pooled over classes.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.errors import classify
from analysis.runs import read_json


def prf_curve(gt: pd.DataFrame, dt: pd.DataFrame) -> pd.DataFrame:
    """``classify``'s tables -> one row per distinct score (descending): ``threshold``,
    ``precision``, ``recall``, ``f1`` of keeping every detection scored >= threshold."""
    dt = dt[dt["kind"] != "ignored"]
    num_gt = int((~gt["iscrowd"]).sum()) if len(gt) else 0
    if dt.empty:
        return pd.DataFrame(columns=["threshold", "precision", "recall", "f1"])
    order = np.argsort(-dt["score"].to_numpy(float), kind="mergesort")
    scores = dt["score"].to_numpy(float)[order]
    tp = np.cumsum((dt["kind"].to_numpy() == "tp")[order])
    kept = np.arange(1, len(scores) + 1)
    last = np.r_[scores[1:] != scores[:-1], True]            # the last detection of each score
    precision = tp[last] / kept[last]
    recall = tp[last] / max(num_gt, 1)
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
    return pd.DataFrame({"threshold": scores[last], "precision": precision, "recall": recall, "f1": f1})


def operating_point(ground_truth: dict, detections: list) -> dict:
    """{threshold, precision, recall, f1} at the highest F1 (the highest threshold among ties);
    threshold 1.0 and zeros when nothing is detected."""
    return best_f1(prf_curve(*classify(ground_truth, detections)))


def best_f1(curve: pd.DataFrame) -> dict:
    """The row of ``prf_curve`` with the highest F1 (its first: the highest threshold) as a dict."""
    if curve.empty or curve["f1"].max() <= 0:
        return {"threshold": 1.0, "precision": 0.0, "recall": 0.0, "f1": 0.0}
    best = curve.iloc[int(curve["f1"].to_numpy().argmax())]
    return {k: float(best[k]) for k in ("threshold", "precision", "recall", "f1")}


@lru_cache(maxsize=64)
def _classified(path: str, stamp: float) -> tuple[dict, pd.DataFrame, pd.DataFrame] | None:
    truth, detections = read_json(Path(path) / "ground_truth.json"), read_json(Path(path) / "detections.json")
    if not isinstance(truth, dict) or "annotations" not in truth or not isinstance(detections, list):
        return None
    return (truth, *classify(truth, detections))


def classified(run_dir: Path) -> tuple[dict, pd.DataFrame, pd.DataFrame] | None:
    """(ground_truth.json, gt table, detection table) of a run folder, classified once per
    report; None when the files are absent."""
    path = Path(run_dir) / "detections.json"
    stamp = path.stat().st_mtime if path.is_file() else 0.0
    return _classified(str(Path(run_dir)), stamp)


def run_operating_point(run_dir: Path) -> dict | None:
    """``operating_point`` of a run folder's ground_truth.json and detections.json (the
    validation split it was evaluated on); None when they are absent."""
    found = classified(run_dir)
    if found is None:
        return None
    return best_f1(prf_curve(found[1], found[2]))
