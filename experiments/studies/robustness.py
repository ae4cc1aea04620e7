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
and rank 0 scores (``experiments.evaluation.scoring``). ``robustness.csv`` keeps one row per cell (the clean
row has corruption ``clean``, severity 0) with the objects per size bucket.

Intervals: with ``eval.bootstrap`` > 0 every cell is bootstrapped on one shared resampling of the
images (``experiments.studies.robustness_intervals``), so each ``robust_*`` figure gets its 95%
``_ci_low`` / ``_ci_high`` (mPC and rPC computed per replicate) and each csv row its cell's.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from experiments.data.corrupted import HELD_OUT, CorruptedDataset, family_of, robustness_plan
from experiments.data.size_buckets import AREA_RANGES
from experiments.job.layout import last_checkpoint
from experiments.studies.robustness_intervals import CELL_METRICS, CellReplicates, cell_intervals, summary_arrays

log = logging.getLogger("detbench")

CSV_COLUMNS = ("corruption", "family", "severity", "held_out", "images", *CELL_METRICS,
               *(f"{k}_{end}" for k in CELL_METRICS for end in ("ci_low", "ci_high")),
               "num_gt", "num_gt_small", "num_gt_medium", "num_gt_large", "time_s")


def objects_per_bucket(area: np.ndarray, iscrowd: np.ndarray) -> dict[str, int]:
    """Non-crowd objects in all and in each COCO size bucket (pycocotools' inclusive ranges):
    ``num_gt``, ``num_gt_small``, ... . small + medium + large = num_gt + the objects whose area
    is exactly 32² or 96² (counted twice)."""
    area = np.asarray(area, dtype=np.float64)[~np.asarray(iscrowd, dtype=bool)]
    counts = {"num_gt": int(area.size)}
    for name, (lo, hi) in ((k, v) for k, v in AREA_RANGES.items() if k != "all"):
        counts[f"num_gt_{name}"] = int(np.count_nonzero((area >= lo) & (area <= hi)))
    return counts


def cell_row(result, corruption: str, severity: int, time_s: float, replicates: CellReplicates | None = None) -> dict:
    """One row of robustness.csv from an EvaluationResult; with ``replicates``, the cell is
    bootstrapped on the shared resampling and its intervals join the row."""
    gt = result.ground_truth
    intervals = cell_intervals(replicates.add(result)) if replicates is not None else {}
    return {"corruption": corruption, "family": "clean" if severity == 0 else family_of(corruption),
            "severity": severity, "held_out": corruption in HELD_OUT, "images": len(gt.image_ids),
            **{k: result.metrics[k] for k in CELL_METRICS}, **intervals,
            **objects_per_bucket(gt.area, gt.iscrowd), "time_s": time_s}


def summarise(rows: pd.DataFrame) -> dict:
    """robustness.csv rows (one clean row, severity 0) -> the flat ``robust_*`` metrics (the
    point figures of ``summary_arrays``, plus each cell's AP and the cell counts)."""
    values = {k: (rows[k].to_numpy(np.float64) if k in rows else np.full(len(rows), np.nan))[:, None]
              for k in CELL_METRICS}
    metrics = {name: float(v[0]) for name, v in summary_arrays(rows, values).items()}
    corrupted = rows[rows["severity"] > 0]
    for row in corrupted.itertuples():
        metrics[f"robust_map_{row.corruption}_{row.severity}"] = float(row.map)
    metrics["robust_cells"] = int(np.count_nonzero(~corrupted["held_out"].to_numpy(bool)))
    metrics["robust_cells_heldout"] = int(np.count_nonzero(corrupted["held_out"].to_numpy(bool)))
    return metrics


def robustness_stage(cfg, model, val_set, device, out: Path, is_main: bool) -> dict:
    """Score ``val_set`` clean and under every (corruption, severity) of ``cfg.robustness``;
    write robustness.csv (rank 0) and return the ``robust_*`` metrics (empty on other ranks)."""
    from experiments.evaluation.scoring import score

    settings = cfg.robustness
    corruptions, severities, images = robustness_plan(settings.corruptions, settings.severities,
                                                      settings.images, settings.num_workers)
    severities = [s for s in severities if s > 0]
    n_images = min(images, len(val_set)) if images else len(val_set)
    log.info("robustness: %d corruptions x severities %s on %d images (%d workers)",
             len(corruptions), severities, n_images, settings.num_workers)

    def cell(dataset):
        start = time.perf_counter()
        result = score(model, dataset, cfg.eval.batch_size, device, cfg.eval.backend, images,
                       settings.num_workers)
        return result, time.perf_counter() - start

    bootstrap = int(cfg.eval.bootstrap)
    replicates = CellReplicates(bootstrap, cfg.eval.bootstrap_seed) if bootstrap > 0 and is_main else None
    start = time.perf_counter()
    result, seconds = cell(val_set)
    rows = [cell_row(result, "clean", 0, seconds, replicates)] if result is not None else []
    for corruption in corruptions:
        for severity in severities:
            result, seconds = cell(CorruptedDataset(val_set, corruption, severity, cfg.seed))
            if result is not None:
                rows.append(cell_row(result, corruption, severity, seconds, replicates))
                log.info("robustness: %s %d: AP %.1f%% (%.0f s)", corruption, severity,
                         100 * result.metrics["map"], seconds)
    if not is_main or not rows:
        return {}
    table = pd.DataFrame(rows, columns=list(CSV_COLUMNS))
    table.to_csv(out / "robustness.csv", index=False)
    metrics = summarise(table)
    if replicates is not None:
        metrics.update(replicates.intervals(table))
    metrics.update({"robust_corruptions": corruptions, "robust_severities": severities,
                    "robust_images": n_images, "robust_time_s": time.perf_counter() - start})
    log.info("robustness: P %.3f  mPC %.3f  rPC %.3f  (mPC over %d cells)", metrics["robust_p"],
             metrics["robust_mpc"], metrics["robust_rpc"], metrics["robust_cells"])
    return metrics


def stage(cfg, ctx) -> dict:
    """The ``robustness`` entry of ``experiments.stages.STAGES``."""
    return robustness_stage(cfg, ctx.model, ctx.val_set, ctx.device, ctx.out, ctx.is_main)


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
        checkpoint = last_checkpoint(metrics_file.parent)
        if (metrics.get("detector") == detector_name and metrics.get("status") == "ok"
                and checkpoint.is_file()):
            found.append(checkpoint)
    if len(found) != 1:
        raise FileNotFoundError(f"robustness.source: {source} holds {len(found)} finished runs of "
                                f"{detector_name} with checkpoints/last.pt (need exactly one; "
                                f"pass weights=FILE instead): {[str(f) for f in found]}")
    return str(found[0])
