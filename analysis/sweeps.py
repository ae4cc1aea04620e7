"""The report's sweep plots, drawn when a folder holds such runs:

- resolution: APs / APm / APl and images/s against the input size (``input_h`` in
  metrics.json), one line per detector family (``family``: SSD, YOLO, FasterRCNN) and kind
  (trained at that size, or one set of weights evaluated at several sizes: "test-time");
- box budget: AP and AR100 against the budget swept (Faster R-CNN's test ``proposals``, SSD's
  ``candidates_before_nms``, any detector's ``max_detections``), and AP against latency at
  batch 1, like Huang et al. 2017's proposals figure; one line per detector and budget.

A line needs at least two runs of one detector that differ in that one number only. Where the
runs carry the image-bootstrap intervals (``<metric>_ci_low/_ci_high``, averaged over seeds like
the metric), the plots draw them as error bars and the tables print ``AP [low, high]``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from analysis import plots
from analysis.runs import ok_runs
from analysis.section import Context, Section
from analysis.table import MISSING, Table, value_with_interval

BUDGETS = {"proposals": "test proposals (RPN post-NMS top-n)",
           "candidates_before_nms": "candidates per class before NMS",
           "max_detections": "max detections per image"}
SIZE_METRICS = [("map_small", "APs"), ("map_medium", "APm"), ("map_large", "APl")]


def _numeric(runs: pd.DataFrame, key: str) -> pd.Series:
    return pd.to_numeric(runs[key], errors="coerce") if key in runs else pd.Series(np.nan, index=runs.index)


def _with_intervals(runs: pd.DataFrame, keys) -> list[str]:
    """``keys`` present in ``runs``, each followed by its ``_ci_low`` / ``_ci_high`` columns where
    the runs hold them."""
    columns = []
    for key in keys:
        if key in runs:
            columns += [key] + [f"{key}_{end}" for end in ("ci_low", "ci_high") if f"{key}_{end}" in runs]
    return columns


def _mean_per(runs: pd.DataFrame, by: str, columns: list[str]) -> pd.DataFrame:
    """Mean over seeds of every column, one row per value of ``by``, sorted by it."""
    return runs.groupby(by)[columns].apply(lambda g: g.apply(pd.to_numeric, errors="coerce").mean()).reset_index()


def error_bars(points: pd.DataFrame, key: str, scale: float = 100.0):
    """[2, n] distances below / above ``points[key]`` to its interval (0 where a point has none),
    or None when no point has one."""
    if f"{key}_ci_low" not in points:
        return None
    value = points[key].to_numpy(float) * scale
    low = points[f"{key}_ci_low"].to_numpy(float) * scale
    high = points[f"{key}_ci_high"].to_numpy(float) * scale
    if np.isnan(low).all():
        return None
    return np.nan_to_num(np.stack([np.maximum(value - low, 0), np.maximum(high - value, 0)]))


def with_interval(point: pd.Series, key: str) -> str:
    """'35.8 [33.1, 38.4]' for one point (the value alone without an interval; '–' without a value)."""
    return value_with_interval(point.get(key, np.nan), point.get(f"{key}_ci_low", np.nan),
                               point.get(f"{key}_ci_high", np.nan))


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
        columns = _with_intervals(of, ("map", "map_small", "map_medium", "map_large", "fps_b1"))
        series[f"{family} {kind} ({dataset})"] = _mean_per(of, "input_h", columns).assign(
            runs=of.groupby("input_h").size().to_numpy())
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
                    ax.errorbar(points["input_h"], points[key] * 100, yerr=error_bars(points, key), capsize=4,
                                label=label, **style)
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
        columns = _with_intervals(of, ("map", "mar_100", "latency_ms_p50_b1", "num_candidates"))
        of = of.assign(**{key: _numeric(of, key)})
        points = _mean_per(of, key, columns).assign(runs=of.groupby(key).size().to_numpy())
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
            left.errorbar(points["budget"], points["map"] * 100, yerr=error_bars(points, "map"), capsize=4,
                          label=f"{label} AP", **style)
            if "mar_100" in points:
                left.errorbar(points["budget"], points["mar_100"] * 100, yerr=error_bars(points, "mar_100"),
                              capsize=4, label=f"{label} AR100", **{**style, "linestyle": ":", "alpha": 0.7})
            if "latency_ms_p50_b1" in points:
                right.errorbar(points["latency_ms_p50_b1"], points["map"] * 100, yerr=error_bars(points, "map"),
                               capsize=4, label=label, **style)
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


INTERVAL_NOTE = ("In %; [low, high]: the 95% image-bootstrap interval of the validation images (eval.bootstrap), "
                 "averaged over seeds like the value; runs: the runs averaged at that point.")


def _number(point: pd.Series, key: str, decimals: int = 1) -> str:
    value = point.get(key, np.nan)
    return MISSING if pd.isna(value) else f"{value:.{decimals}f}"


def _series_rows(series: dict[str, pd.DataFrame], shown_of) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(numbers, formatted rows) of every point of every series; ``shown_of(point)`` formats one."""
    rows, shown = [], []
    for label, points in series.items():
        for _, point in points.iterrows():
            rows.append({"series": label, **point.to_dict()})
            shown.append({"series": label, **shown_of(point)})
    return pd.DataFrame(rows), pd.DataFrame(shown)


def resolution_table(runs: pd.DataFrame) -> Table | None:
    """AP, APs, APm, APl (with intervals) and images/s per input size of every resolution
    series; None when the folder holds no resolution sweep."""
    series = resolution_series(runs)
    if not series:
        return None

    def shown_of(point):
        return {"input": f"{point['input_h']:.0f}", "runs": int(point["runs"]),
                **{name: with_interval(point, key) for key, name in [("map", "AP"), *SIZE_METRICS]},
                "img/s (b1)": _number(point, "fps_b1")}

    data, shown = _series_rows(series, shown_of)
    return Table("resolution_sweep", "Input resolution sweep", data, shown,
                 INTERVAL_NOTE + " Trained: a model trained at each size; test-time: one set of weights "
                 "evaluated at each size.")


def budget_table(runs: pd.DataFrame) -> Table | None:
    """AP and AR100 (with intervals) and latency per budget of every box-budget series; None
    when the folder holds no budget sweep."""
    series = budget_series(runs)
    if not series:
        return None

    def shown_of(point):
        return {"budget": f"{BUDGETS[point['knob']]} = {point['budget']:.0f}", "runs": int(point["runs"]),
                "AP": with_interval(point, "map"), "AR100": with_interval(point, "mar_100"),
                "latency b1 p50 (ms)": _number(point, "latency_ms_p50_b1")}

    data, shown = _series_rows(series, shown_of)
    return Table("box_budget", "Box-budget sweep", data, shown, INTERVAL_NOTE)


def report_tables(runs: pd.DataFrame) -> list[Table]:
    """The sweep tables this folder has (none, one or both)."""
    return [t for t in (resolution_table(runs), budget_table(runs)) if t is not None]


def section(ctx: Context) -> Section:
    """The sweep tables and plots this folder has (none, one or both sweeps)."""
    runs = ctx.runs
    tables = report_tables(runs)
    images = (ctx.draw("resolution sweep", lambda: plot_resolution(runs, ctx.plot_dir) or None)
              + ctx.draw("box budget", lambda: plot_box_budget(runs, ctx.plot_dir) or None))
    return Section("Sweeps", tables, images)
