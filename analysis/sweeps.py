"""The report's sweep plots, drawn when a folder holds such runs:

- resolution: APs / APm / APl and images/s against the input size (``input_h`` in
  metrics.json), one line per detector family (``family``: SSD, YOLO, FasterRCNN) and kind
  (trained at that size, or one set of weights evaluated at several sizes: "test-time");
- box budget: AP and AR100 against the budget swept (Faster R-CNN's test ``proposals``, SSD's
  ``candidates_before_nms``, any detector's ``max_detections``), and AP against latency at
  batch 1, like Huang et al. 2017's proposals figure; one line per detector and budget.

A line needs at least two runs of one detector that differ in that one number only.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from analysis import plots
from analysis.runs import ok_runs

BUDGETS = {"proposals": "test proposals (RPN post-NMS top-n)",
           "candidates_before_nms": "candidates per class before NMS",
           "max_detections": "max detections per image"}
SIZE_METRICS = [("map_small", "APs"), ("map_medium", "APm"), ("map_large", "APl")]


def _numeric(runs: pd.DataFrame, key: str) -> pd.Series:
    return pd.to_numeric(runs[key], errors="coerce") if key in runs else pd.Series(np.nan, index=runs.index)


def resolution_series(runs: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """{label: runs of one family and kind, averaged per input size, sorted by it} for every
    family with at least two input sizes."""
    ok = ok_runs(runs)
    if "input_h" not in ok or "family" not in ok:
        return {}
    ok = ok.assign(input_h=_numeric(ok, "input_h"),
                   kind=np.where(_numeric(ok, "train_iterations").notna(), "trained", "test-time"))
    series = {}
    for (family, kind, dataset), of in ok.dropna(subset=["input_h"]).groupby(["family", "kind", "dataset"]):
        if of["input_h"].nunique() < 2:
            continue
        columns = [k for k in ("map", "map_small", "map_medium", "map_large", "fps_b1") if k in of]
        series[f"{family} {kind} ({dataset})"] = of.groupby("input_h")[columns].apply(
            lambda g: g.apply(pd.to_numeric, errors="coerce").mean()).reset_index()
    return series


def plot_resolution(runs: pd.DataFrame, out_dir: Path) -> list[Path]:
    series = resolution_series(runs)
    if not series:
        return []
    with plots.figure(1, 4, figsize=(16.0, 5.0)) as (fig, axes):
        for i, (label, points) in enumerate(series.items()):
            style = plots.series_style(i)
            for ax, (key, name) in zip(axes[0][:3], SIZE_METRICS):
                if key in points:
                    ax.plot(points["input_h"], points[key] * 100, label=label, **style)
                    ax.set_title(f"{name} vs input size")
                    ax.set_ylabel(f"{name} (%)")
            if "fps_b1" in points:
                axes[0][3].plot(points["input_h"], points["fps_b1"], label=label, **style)
        axes[0][3].set_title("speed vs input size")
        axes[0][3].set_ylabel("images/s at batch 1")
        for ax in axes[0]:
            ax.set_xlabel("input height (px)")
        fig.legend(*axes[0][0].get_legend_handles_labels(), loc="outside lower center", ncols=min(4, len(series)),
                   frameon=False)
        return plots.save(fig, out_dir, "resolution_sweep")


def budget_series(runs: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """{"detector: budget": runs averaged per budget value} for every detector whose runs
    differ in exactly one budget column and nothing else numeric of the model's geometry."""
    ok = ok_runs(runs)
    series = {}
    for (detector, dataset), of in ok.groupby(["detector", "dataset"]):
        if "input_h" in of and _numeric(of, "input_h").nunique() > 1:
            continue   # a resolution sweep, not a budget sweep
        varying = [k for k in BUDGETS if k in of and _numeric(of, k).nunique() > 1]
        if len(varying) != 1:
            continue
        key = varying[0]
        columns = [k for k in ("map", "mar_100", "latency_ms_p50_b1", "num_candidates") if k in of]
        points = of.assign(**{key: _numeric(of, key)}).groupby(key)[columns].apply(
            lambda g: g.apply(pd.to_numeric, errors="coerce").mean()).reset_index()
        series[f"{detector} ({dataset}): {key}"] = points.rename(columns={key: "budget"}).assign(knob=key)
    return series


def plot_box_budget(runs: pd.DataFrame, out_dir: Path) -> list[Path]:
    series = budget_series(runs)
    if not series:
        return []
    with plots.figure(1, 2) as (fig, axes):
        left, right = axes[0]
        for i, (label, points) in enumerate(series.items()):
            style = plots.series_style(i)
            left.plot(points["budget"], points["map"] * 100, label=f"{label} AP", **style)
            if "mar_100" in points:
                left.plot(points["budget"], points["mar_100"] * 100, label=f"{label} AR100",
                          **{**style, "linestyle": ":", "alpha": 0.7})
            if "latency_ms_p50_b1" in points:
                right.plot(points["latency_ms_p50_b1"], points["map"] * 100, label=label, **style)
                for x, y, b in zip(points["latency_ms_p50_b1"], points["map"] * 100, points["budget"]):
                    right.annotate(f"{b:.0f}", (x, y), xytext=(5, 5), textcoords="offset points", fontsize=10)
        knobs = sorted({p["knob"].iat[0] for p in series.values()})
        left.set_xscale("log")
        plots.plain_log_ticks(left.xaxis)
        left.set_xlabel(" / ".join(BUDGETS[k] for k in knobs) + " (log)")
        left.set_ylabel("COCO AP / AR100 (%)")
        left.set_title("Accuracy vs box budget")
        left.legend(fontsize=9)
        right.set_xlabel("latency at batch 1, p50 (ms)")
        right.set_ylabel("COCO AP@[.5:.95] (%)")
        right.set_title("Accuracy vs latency (labels: budget)")
        return plots.save(fig, out_dir, "box_budget")
