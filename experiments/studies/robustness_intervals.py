"""Image-bootstrap intervals of the robustness numbers (P, mPC, rPC, per size, held-out).

Every cell of the robustness stage (the clean images and each corruption x severity) scores the
same images, so one resampling of those images (``experiments.evaluation.bootstrap.resample``
with the run's ``eval.bootstrap`` replicates and ``eval.bootstrap_seed``) is applied to every
cell: replicate b re-scores each cell on the same multiset of images (matched once per cell,
re-accumulated per replicate, as the evaluator's bootstrap does), and P, mPC and rPC of
replicate b are computed from those cells exactly as the point figures are (``summary_arrays``,
the one implementation both use). mPC's interval therefore holds the image sampling of the clean
and the corrupted scores together, and rPC's is the ratio's, not a ratio of intervals. The
corruptions themselves are fixed per (image, corruption, severity, seed), so the replicates vary
the images only. With the same seed, two detectors' replicates draw the same images (paired).
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd

from experiments.evaluation.bootstrap import ReplicateScorer, check_same_images, copies, interval, resample

SIZES = ("small", "medium", "large")
CELL_METRICS = ("map", "map_50", "map_small", "map_medium", "map_large")
# summary suffix -> the cell metric it summarises
SUFFIXES = {"": "map", "_50": "map_50", **{f"_{s}": f"map_{s}" for s in SIZES}}


def _nanmean(values: np.ndarray) -> np.ndarray:
    """Mean over axis 0 of float [cells, B] leaving NaN cells out; NaN where every cell is NaN
    (or there are no cells)."""
    if len(values) == 0:
        return np.full(values.shape[1:], math.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(values, axis=0)


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a / b, NaN where b is 0 or either is NaN."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where((b != 0) & ~np.isnan(a) & ~np.isnan(b), a / np.where(b == 0, 1, b), math.nan)


def summary_arrays(rows: pd.DataFrame, values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The ``robust_*`` figures for B replicates at once.

    rows: one row per cell (``corruption``, ``severity``: 0 for the single clean row, ``held_out``);
    values: cell metric (CELL_METRICS) -> float [cells, B], row order. Returns name -> float [B]:
    ``robust_p``, ``robust_mpc``, ``robust_rpc``, ``robust_mpc_heldout``, ``robust_rpc_heldout``,
    each also with the suffixes ``_50`` and ``_small/_medium/_large``, and ``robust_mpc_<corruption>``
    (mean AP over the corruption's severities). B = 1 with the cells' own numbers gives the
    point figures."""
    severity = rows["severity"].to_numpy()
    clean = np.flatnonzero(severity == 0)
    if len(clean) != 1:
        raise ValueError(f"robustness rows need exactly one clean row (severity 0), got {len(clean)}")
    held_out = rows["held_out"].to_numpy(bool)
    benchmark, held = (severity > 0) & ~held_out, (severity > 0) & held_out
    out = {}
    for suffix, key in SUFFIXES.items():
        p = values[key][clean[0]]
        mpc, mpc_held = _nanmean(values[key][benchmark]), _nanmean(values[key][held])
        out[f"robust_p{suffix}"], out[f"robust_mpc{suffix}"] = p, mpc
        out[f"robust_rpc{suffix}"] = _ratio(mpc, p)
        out[f"robust_mpc_heldout{suffix}"] = mpc_held
        out[f"robust_rpc_heldout{suffix}"] = _ratio(mpc_held, p)
    corruption = rows["corruption"].to_numpy()
    for name in pd.unique(corruption[severity > 0]):
        out[f"robust_mpc_{name}"] = _nanmean(values["map"][(corruption == name) & (severity > 0)])
    return out


class CellReplicates:
    """Collects every cell's replicate metrics on one shared resampling of the images.

    replicates: B (>= 1); seed: the resampling seed. ``add(result)`` takes a cell's
    ``EvaluationResult`` (cells must share image ids and categories) and returns its CELL_METRICS
    replicates, name -> float [B]."""

    def __init__(self, replicates: int, seed: int):
        self.replicates, self.seed = int(replicates), int(seed)
        self.image_ids = self.category_ids = self.weights = None
        self.cells: list[dict[str, np.ndarray]] = []

    def add(self, result) -> dict[str, np.ndarray]:
        category_ids = [c for c, _ in result.categories]
        scorer = ReplicateScorer(result.ground_truth, result.detections, category_ids)
        if self.weights is None:
            self.image_ids, self.category_ids = scorer.image_ids, scorer.category_ids
            num_images = len(scorer.image_ids)
            self.weights = copies(resample(num_images, self.replicates, self.seed), num_images)
        else:
            check_same_images(self.image_ids, scorer.image_ids, self.category_ids, scorer.category_ids,
                              names=("the clean cell", "this cell"))
        values = scorer(self.weights)
        cell = {k: values[k] for k in CELL_METRICS}
        self.cells.append(cell)
        return cell

    def intervals(self, rows: pd.DataFrame, level: float = 0.95) -> dict[str, float]:
        """``<name>_ci_low`` / ``<name>_ci_high`` (percentile) of every ``summary_arrays`` figure,
        and ``robust_bootstrap_replicates`` / ``robust_bootstrap_seed``; rows in ``add`` order."""
        if len(rows) != len(self.cells):
            raise ValueError(f"{len(rows)} robustness rows but {len(self.cells)} cells bootstrapped")
        values = {k: np.stack([cell[k] for cell in self.cells]) for k in CELL_METRICS}
        out = {}
        for name, replicate_values in summary_arrays(rows, values).items():
            out[f"{name}_ci_low"], out[f"{name}_ci_high"] = interval(replicate_values, level, "percentile")
        return {**out, "robust_bootstrap_replicates": self.replicates, "robust_bootstrap_seed": self.seed}


def cell_intervals(cell: dict[str, np.ndarray], level: float = 0.95) -> dict[str, float]:
    """A cell's ``<metric>_ci_low`` / ``_ci_high`` for robustness.csv."""
    out = {}
    for name, values in cell.items():
        out[f"{name}_ci_low"], out[f"{name}_ci_high"] = interval(values, level, "percentile")
    return out
