"""The report's "Coverage" table and plot: how many ground-truth objects each detector's
training-time assignment reaches (``coverage.json`` of each run, written by
``experiments.studies.coverage``), beside the AP it reached on the same size buckets.

Read from run folders only (no model code): ``coverage.json`` holds, per assignment stage,
the share of objects with at least one positive per COCO size bucket and why the others were
lost; runs whose detector has no assignment rule (torchvision's reference models) say
"coverage not defined" (``coverage_note`` in metrics.json).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from analysis import plots
from analysis.runs import ok_runs, read_json
from analysis.section import Context, Section
from analysis.table import MISSING, Table

BUCKETS = ("small", "medium", "large")


def coverage_rows(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (group, dataset, stage) of the first finished run of each group holding a
    ``coverage.json``: coverage per bucket and overall (fractions), objects, lost counts,
    median best IoU; and one row with ``note`` for groups whose coverage is not defined."""
    rows = []
    for (group, dataset), of_group in ok_runs(runs).groupby(["group", "dataset"], sort=True):
        content = next((c for c in (read_json(Path(p) / "coverage.json") for p in of_group["path"]) if c), None)
        if content is None:
            notes = of_group["coverage_note"].dropna() if "coverage_note" in of_group else []
            if len(notes):
                rows.append({"group": group, "dataset": dataset, "stage": MISSING, "note": str(notes.iat[0])})
            continue
        table = pd.DataFrame(content["rows"])
        for stage, of_stage in table.groupby("stage", sort=False):
            by_group = of_stage.set_index("group")
            row = {"group": group, "dataset": dataset, "stage": stage, "images": content.get("images"),
                   "objects": int(by_group.loc["all", "objects"]), "note": ""}
            for bucket in ("all", *BUCKETS):
                row[f"coverage_{bucket}"] = by_group.loc[bucket, "coverage"] if bucket in by_group.index else np.nan
            for key in ("best_candidate_only", "lost_below_threshold", "lost_collision", "sub_pixel"):
                row[key] = int(by_group.loc["all", key])
            row["best_iou_median"] = by_group.loc["all", "best_iou_q50"]
            rows.append(row)
    return pd.DataFrame(rows)


def coverage_table(runs: pd.DataFrame) -> Table:
    data = coverage_rows(runs)
    title = ("Coverage: ground-truth objects with a candidate at the assignment's IoU threshold (%); "
             "forced best-candidate matches beside it ('kept by best rule'), never counted as reached")
    note = ("Size buckets by COCO area in the original image (small < 32², medium < 96²); crowd objects left out. "
            "'kept by best rule': positives only from SSD's best-default-box / torchvision's low-quality matches "
            "(forced: the object has no candidate at the threshold, so it is not counted as reached); "
            "'lost: collision': another object took its cell or best candidate. Faster R-CNN's RoI stage uses the "
            "anchors as proposals (an untrained RPN's), without the ground-truth boxes torchvision appends in "
            "training (which give every object one positive RoI). See experiments/coverage.py.")
    if data.empty:
        return Table("coverage", title, data, data, "No run wrote coverage.json or a coverage note.")
    shown = pd.DataFrame({"detector": data["group"], "dataset": data["dataset"], "stage": data["stage"]})
    for bucket in ("all", *BUCKETS):
        column = data.get(f"coverage_{bucket}", pd.Series(np.nan, index=data.index))
        shown[bucket] = [MISSING if pd.isna(v) else f"{100 * v:.1f}" for v in column]
    for key, label in (("objects", "objects"), ("best_candidate_only", "kept by best rule"),
                       ("lost_below_threshold", "lost: below threshold"), ("lost_collision", "lost: collision"),
                       ("best_iou_median", "best IoU median")):
        column = data.get(key, pd.Series(np.nan, index=data.index))
        shown[label] = [MISSING if pd.isna(v) else (f"{v:.2f}" if key == "best_iou_median" else f"{v:.0f}")
                        for v in column]
    undefined = data["note"].astype(bool)
    shown.loc[undefined, "all"] = data.loc[undefined, "note"]
    return Table("coverage", title, data, shown, note)


def _ap_error_bars(summary_row: pd.Series):
    """[2, 3] distances from AP per size bucket to its image-bootstrap interval (95%), or None."""
    value = np.array([summary_row.get(f"map_{b}_mean", np.nan) for b in BUCKETS], dtype=float)
    low = np.array([summary_row.get(f"map_{b}_ci_low", np.nan) for b in BUCKETS], dtype=float)
    high = np.array([summary_row.get(f"map_{b}_ci_high", np.nan) for b in BUCKETS], dtype=float)
    if np.isnan(low).all():
        return None
    return 100 * np.nan_to_num(np.stack([np.maximum(value - low, 0), np.maximum(high - value, 0)]))


def plot_coverage_vs_size(coverage: pd.DataFrame, summary: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Left: coverage (%) per size bucket, one line per detector (its headline stage, the
    first); right: AP (%) per size bucket of the same groups (``summary``: accuracy means), error bars
    the 95% image-bootstrap interval where the runs have one."""
    if coverage.empty or "coverage_small" not in coverage:
        return []
    first = coverage[coverage["stage"] != MISSING].drop_duplicates(["group", "dataset"])
    if first.empty:
        return []
    with plots.figure(1, 2) as (fig, axes):
        left, right = axes[0]
        x = np.arange(len(BUCKETS))
        for i, row in enumerate(first.itertuples()):
            style = plots.series_style(i)
            label = f"{row.group} ({row.stage})"
            left.plot(x, [100 * getattr(row, f"coverage_{b}") for b in BUCKETS], label=label, **style)
            match = summary[(summary["group"] == row.group) & (summary["dataset"] == row.dataset)]
            if len(match) and "map_small_mean" in match:
                right.errorbar(x, [100 * match[f"map_{b}_mean"].iat[0] for b in BUCKETS],
                               yerr=_ap_error_bars(match.iloc[0]), capsize=4, label=row.group, **style)
        for ax, ylabel, title in ((left, "reached at the IoU threshold (%)", "Assignment coverage (no training)"),
                                  (right, "COCO AP@[.5:.95] (%)", "AP by object size (after training)")):
            ax.set_xticks(x, ["small\n(< 32² px)", "medium", "large\n(> 96² px)"])
            ax.set_ylabel(ylabel)
            ax.set_title(title)
            ax.set_ylim(bottom=0)
        left.set_ylim(0, 105)
        left.legend(loc="lower right", fontsize=10)
        return plots.save(fig, out_dir, "coverage_vs_size")


def section(ctx: Context) -> Section:
    """The coverage table and the coverage-vs-size plot (drawn only when a run has coverage)."""
    image = ctx.draw("coverage vs size", lambda: plot_coverage_vs_size(
        coverage_rows(ctx.labelled), ctx.summary, ctx.plot_dir) or None)
    return Section("Coverage", [coverage_table(ctx.labelled)], image)
