"""The ``robustness`` stage: the validation split scored clean and under COCO-C style corruptions
(Michaelis et al. 2019, "Benchmarking Robustness in Object Detection"), per severity, per
corruption and per COCO size bucket.

Definitions (the paper's, with AP = COCO AP@[.5:.95] unless the name ends in ``_50``):

* ``robust_p``: AP on the clean images (the same images as every corrupted cell);
* ``robust_mpc``: mean over the chosen benchmark corruptions and severities (>= 1) of AP;
* ``robust_rpc = robust_mpc / robust_p`` (NaN when P is 0 or undefined);
* the same per size bucket (``robust_p_small``, ``robust_mpc_small``, ``robust_rpc_small``, ...:
  COCO's APs/APm/APl) and for AP50 (``robust_p_50``, ..., the Pascal-C figures);
* the held-out corruptions (speckle noise, gaussian blur, spatter, saturate) never enter mPC:
  they have their own ``robust_mpc_heldout`` and ``robust_rpc_heldout``;
* ``robust_map_<corruption>_<severity>`` and ``robust_mpc_<corruption>`` (mean over severities).

Every cell is a full ``experiments.evaluation.evaluate`` of the corrupted images; the corruption
happens in the DataLoader workers (``CorruptedDataset``); under DDP each rank predicts its share
and rank 0 scores (``experiments.predict``). ``robustness.csv`` keeps one row per cell (the clean
row has corruption ``clean``, severity 0) with the objects per size bucket.
"""
from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd

from experiments.data.corrupted import HELD_OUT, CorruptedDataset, check_corruptions, family_of

log = logging.getLogger("detbench")

SIZES = ("small", "medium", "large")
# pycocotools' area ranges (pixels², both ends inclusive, so an object of area exactly 32² or 96²
# is counted in two buckets, as COCOeval counts it).
AREA_RANGES = {"small": (0.0, 32.0**2), "medium": (32.0**2, 96.0**2), "large": (96.0**2, 1e10)}
CELL_METRICS = ("map", "map_50", "map_small", "map_medium", "map_large")
CSV_COLUMNS = ("corruption", "family", "severity", "held_out", "images", *CELL_METRICS,
               "num_gt", "num_gt_small", "num_gt_medium", "num_gt_large", "time_s")


def objects_per_bucket(area: np.ndarray, iscrowd: np.ndarray) -> dict[str, int]:
    """Non-crowd objects in all and in each COCO size bucket (pycocotools' inclusive ranges):
    ``num_gt``, ``num_gt_small``, ... . small + medium + large = num_gt + the objects whose area
    is exactly 32² or 96² (counted twice)."""
    area = np.asarray(area, dtype=np.float64)[~np.asarray(iscrowd, dtype=bool)]
    counts = {"num_gt": int(area.size)}
    for name, (lo, hi) in AREA_RANGES.items():
        counts[f"num_gt_{name}"] = int(np.count_nonzero((area >= lo) & (area <= hi)))
    return counts


def cell_row(result, corruption: str, severity: int, time_s: float) -> dict:
    """One row of robustness.csv from an EvaluationResult."""
    gt = result.ground_truth
    return {"corruption": corruption, "family": "clean" if severity == 0 else family_of(corruption),
            "severity": severity, "held_out": corruption in HELD_OUT, "images": len(gt.image_ids),
            **{k: result.metrics[k] for k in CELL_METRICS},
            **objects_per_bucket(gt.area, gt.iscrowd), "time_s": time_s}


def _mean(values) -> float:
    values = [v for v in values if not math.isnan(v)]
    return float(np.mean(values)) if values else math.nan


def _ratio(a: float, b: float) -> float:
    return a / b if b and not (math.isnan(a) or math.isnan(b)) else math.nan


def summarise(rows: pd.DataFrame) -> dict:
    """robustness.csv rows (one clean row, severity 0) -> the flat ``robust_*`` metrics."""
    clean = rows[rows["severity"] == 0]
    if len(clean) != 1:
        raise ValueError(f"robustness rows need exactly one clean row (severity 0), got {len(clean)}")
    clean = clean.iloc[0]
    corrupted = rows[rows["severity"] > 0]
    benchmark, held_out = corrupted[~corrupted["held_out"]], corrupted[corrupted["held_out"]]
    metrics = {}
    for suffix, key in [("", "map"), ("_50", "map_50")] + [(f"_{s}", f"map_{s}") for s in SIZES]:
        p = float(clean[key])
        mpc = _mean(benchmark[key])
        metrics[f"robust_p{suffix}"] = p
        metrics[f"robust_mpc{suffix}"] = mpc
        metrics[f"robust_rpc{suffix}"] = _ratio(mpc, p)
        metrics[f"robust_mpc_heldout{suffix}"] = _mean(held_out[key])
        metrics[f"robust_rpc_heldout{suffix}"] = _ratio(metrics[f"robust_mpc_heldout{suffix}"], p)
    for corruption, cells in corrupted.groupby("corruption", sort=False):
        metrics[f"robust_mpc_{corruption}"] = _mean(cells["map"])
        for row in cells.itertuples():
            metrics[f"robust_map_{corruption}_{row.severity}"] = float(row.map)
    metrics["robust_cells"] = int(len(benchmark))
    metrics["robust_cells_heldout"] = int(len(held_out))
    return metrics


def robustness_stage(cfg, model, val_set, device, out: Path, is_main: bool) -> dict:
    """Score ``val_set`` clean and under every (corruption, severity) of ``cfg.robustness``;
    write robustness.csv (rank 0) and return the ``robust_*`` metrics (empty on other ranks)."""
    from experiments.predict import score

    settings = cfg.robustness
    corruptions, severities = list(settings.corruptions), [int(s) for s in settings.severities]
    check_corruptions(corruptions, severities)
    severities = [s for s in severities if s > 0]
    images = int(settings.images)
    n_images = min(images, len(val_set)) if images else len(val_set)
    log.info("robustness: %d corruptions x severities %s on %d images (%d workers)",
             len(corruptions), severities, n_images, settings.num_workers)

    def cell(dataset):
        start = time.perf_counter()
        result = score(model, dataset, cfg.eval.batch_size, device, cfg.eval.backend, images,
                       settings.num_workers)
        return result, time.perf_counter() - start

    start = time.perf_counter()
    result, seconds = cell(val_set)
    rows = [cell_row(result, "clean", 0, seconds)] if result is not None else []
    for corruption in corruptions:
        for severity in severities:
            result, seconds = cell(CorruptedDataset(val_set, corruption, severity, cfg.seed))
            if result is not None:
                rows.append(cell_row(result, corruption, severity, seconds))
                log.info("robustness: %s %d: AP %.3f (%.0f s)", corruption, severity,
                         result.metrics["map"], seconds)
    if not is_main or not rows:
        return {}
    table = pd.DataFrame(rows, columns=list(CSV_COLUMNS))
    table.to_csv(out / "robustness.csv", index=False)
    metrics = summarise(table)
    metrics.update({"robust_corruptions": corruptions, "robust_severities": severities,
                    "robust_images": n_images, "robust_time_s": time.perf_counter() - start})
    log.info("robustness: P %.3f  mPC %.3f  rPC %.3f  (mPC over %d cells)", metrics["robust_p"],
             metrics["robust_mpc"], metrics["robust_rpc"], metrics["robust_cells"])
    return metrics


def robustness_weights(cfg) -> str | None:
    """The checkpoint to load: ``weights=`` if given, else, when the robustness stage runs with
    ``robustness.source=SWEEP_DIR``, that sweep's finished run of this detector."""
    if cfg.weights or "robustness" not in cfg.stages:
        return cfg.weights
    source = cfg.robustness.get("source") if "robustness" in cfg else None
    if source:
        return weights_from_sweep(source, cfg.detector.name)
    if "train" not in cfg.stages:
        log.warning("robustness: no weights= and no train stage: the detector is scored as built "
                    "(%s)", "randomly initialised unless its config loads weights")
    return None


def weights_from_sweep(source: str | Path, detector_name: str) -> str:
    """``checkpoints/last.pt`` of the finished run of ``detector_name`` under the sweep folder
    ``source`` (e.g. an ``experiment=compare`` folder). Raises naming what was looked for."""
    source = Path(source)
    if not source.is_dir():
        raise FileNotFoundError(f"robustness.source: {source.resolve()} is not a folder")
    found = []
    for metrics_file in sorted(source.glob("**/metrics.json")):
        metrics = json.loads(metrics_file.read_text())
        checkpoint = metrics_file.parent / "checkpoints" / "last.pt"
        if (metrics.get("detector") == detector_name and metrics.get("status") == "ok"
                and checkpoint.is_file()):
            found.append(checkpoint)
    if len(found) != 1:
        raise FileNotFoundError(f"robustness.source: {source} holds {len(found)} finished runs of "
                                f"{detector_name} with checkpoints/last.pt (need exactly one; "
                                f"pass weights=FILE instead): {[str(f) for f in found]}")
    return str(found[0])
