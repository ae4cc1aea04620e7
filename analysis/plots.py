"""The report's plots of summary numbers, each written as PNG and PDF at slide size (16:9,
``FIGSIZE`` inches at ``DPI``): speed vs accuracy with its Pareto front, AP by object size,
boxes scored vs AP, the error breakdown, the share of top detections by kind.

Every series differs by marker, line style or hatch as well as by colour (Okabe-Ito), so the
plots read in greyscale. Figures are built with ``matplotlib.figure.Figure`` (no pyplot, no
global backend state): saving uses the Agg and PDF canvases directly.
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import LogFormatter

FIGSIZE = (10.0, 5.625)       # inches, 16:9
DPI = 120                     # -> 1200 x 675 px PNG
COLOURS = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#000000",
           "#F0E442"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
LINESTYLES = ["-", "--", ":", "-."]
HATCHES = ["", "//", "..", "xx", "\\\\", "++", "oo", "--"]
GREYS = ["0.95", "0.75", "0.55", "0.3"]
AXES_SIZES: dict[str, list[tuple[float, float]]] = {}   # plot name -> its visible axes (w, h) in inches, as saved
RC = {"font.size": 14, "axes.titlesize": 15, "axes.labelsize": 14, "legend.fontsize": 12,
      "xtick.labelsize": 12, "ytick.labelsize": 12, "axes.grid": True, "grid.alpha": 0.3,
      "lines.linewidth": 2.0, "lines.markersize": 8, "hatch.linewidth": 1.0}
BUCKET_TITLES = {"all": "all sizes", "small": "small (< 32² px)", "medium": "medium",
                 "large": "large (> 96² px)"}
ERROR_LABELS = {"cls": "classification", "loc": "localisation", "both": "class + box",
                "dupe": "duplicate", "bkg": "background", "missed": "missed"}


def series_style(i: int) -> dict:
    """Colour, marker and line style of the i-th series (a detector)."""
    return {"color": COLOURS[i % len(COLOURS)], "marker": MARKERS[i % len(MARKERS)],
            "linestyle": LINESTYLES[i % len(LINESTYLES)]}


@contextmanager
def figure(nrows: int = 1, ncols: int = 1, figsize=FIGSIZE, **kwargs):
    """A constrained-layout Figure and its axes, built under the report's rc settings."""
    with mpl.rc_context(RC):
        fig = Figure(figsize=figsize, dpi=DPI, layout="constrained")
        axes = fig.subplots(nrows, ncols, squeeze=False, **kwargs)
        yield fig, axes


def save(fig: Figure, out_dir: Path, name: str) -> list[Path]:
    """``out_dir/name.png`` (at ``DPI``) and ``.pdf``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{name}.png", out_dir / f"{name}.pdf"]
    with mpl.rc_context(RC):
        for path in paths:
            fig.savefig(path, dpi=DPI)
    width, height = fig.get_size_inches()
    AXES_SIZES[name] = [(ax.get_position().width * width, ax.get_position().height * height)
                        for ax in fig.axes if ax.get_visible() and ax.get_label() != "<colorbar>"]
    return paths


def plain_log_ticks(axis) -> None:
    """Label a log axis with plain numbers (20, 50, 100), minor ticks too when they fit."""
    for set_formatter in (axis.set_major_formatter, axis.set_minor_formatter):
        set_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))


def _column(summary: pd.DataFrame, key: str) -> np.ndarray:
    return summary[key].to_numpy(float) if key in summary else np.full(len(summary), np.nan)


def busy_rows(summary: pd.DataFrame) -> np.ndarray:
    """bool per row: its speed was timed only on a busy machine (``speed_busy``, the speed table's)."""
    if "speed_busy" not in summary:
        return np.zeros(len(summary), dtype=bool)
    return summary["speed_busy"].map(lambda b: b is True or b is np.True_ or b == 1).to_numpy(bool)


def hollow_legend(ax, hollow: np.ndarray) -> None:
    """A legend entry saying what a hollow marker means, when the plot has one."""
    if hollow.any():
        ax.plot([], [], marker="o", markerfacecolor="none", color="0.3", linestyle="none",
                label="hollow: timed on a busy machine (not a speed)")


def _labelled_points(ax, summary, x_key: str, y_key: str, y_scale: float = 100.0, hollow=None) -> None:
    """One marker per row (error bars: the 95% image-bootstrap interval of y where the runs have
    one, else the std over seeds; x: std over seeds), its group name written beside it;
    neighbours along x get their names above and below in turn, so close names do not meet.
    ``hollow`` (bool per row): an unfilled marker (a timing from a busy machine)."""
    hollow = np.zeros(len(summary), dtype=bool) if hollow is None else hollow
    order = np.argsort(np.argsort(summary[f"{x_key}_mean"].to_numpy(float), kind="stable"))
    for i, row in enumerate(summary.itertuples()):
        x, y = getattr(row, f"{x_key}_mean"), getattr(row, f"{y_key}_mean") * y_scale
        xerr = getattr(row, f"{x_key}_std", np.nan)
        yerr = getattr(row, f"{y_key}_std", np.nan) * y_scale
        low, high = getattr(row, f"{y_key}_ci_low", np.nan), getattr(row, f"{y_key}_ci_high", np.nan)
        if not (pd.isna(low) or pd.isna(high)):  # the 95% image-bootstrap interval, when the runs have one
            yerr = [[max(0.0, y - low * y_scale)], [max(0.0, high * y_scale - y)]]
        style = series_style(i)
        ax.errorbar(x, y, xerr=None if pd.isna(xerr) else xerr,
                    yerr=None if np.isscalar(yerr) and pd.isna(yerr) else yerr, color=style["color"],
                    marker=style["marker"], markersize=10, capsize=4, linestyle="none",
                    **({"markerfacecolor": "none", "markeredgewidth": 2} if hollow[i] else {}))
        above = order[i] % 2 == 0
        ax.annotate(row.group, (x, y), xytext=(8, 8 if above else -10), textcoords="offset points",
                    va="bottom" if above else "top", fontsize=12, color="0.1")


def plot_speed_vs_accuracy(summary: pd.DataFrame, out_dir: Path, device: str = "") -> list[Path]:
    """``summary``: one row per group with ``fps_b1_mean/std`` and ``map_mean/std`` (fractions).
    Images/s (log) against AP (%); the Pareto front (no other point both faster and better)
    drawn as a step line. A group timed only on a busy machine (``speed_busy``) is drawn hollow
    and left off the front."""
    summary = summary[np.isfinite(_column(summary, "fps_b1_mean"))
                      & np.isfinite(_column(summary, "map_mean"))]
    if summary.empty:
        return []
    hollow = busy_rows(summary)
    with figure() as (fig, axes):
        ax = axes[0, 0]
        _labelled_points(ax, summary, "fps_b1", "map", hollow=hollow)
        hollow_legend(ax, hollow)
        front = summary[~hollow].sort_values("fps_b1_mean", ascending=False)
        front = front[front["map_mean"] >= front["map_mean"].cummax()]
        ax.step(front["fps_b1_mean"], front["map_mean"] * 100, where="post", color="0.4",
                linestyle="--", linewidth=1.5, label="Pareto front", zorder=0)
        ax.set_xscale("log")
        plain_log_ticks(ax.xaxis)
        ax.set_xlabel("speed at batch 1 (images/s, log scale)")
        ax.set_ylabel("COCO AP@[.5:.95] (%)")
        ax.set_title("Speed vs accuracy" + (f" ({device})" if device else ""))
        ax.margins(x=0.25, y=0.2)
        ax.legend(loc="lower left")
        return save(fig, out_dir, "speed_vs_accuracy")


def plot_ap_by_size(summary: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Grouped bars: per group, AP (%) on small, medium and large objects, error bars the 95%
    image-bootstrap interval (the std over seeds for runs without one); sizes told apart by grey level and hatch."""
    sizes = [("map_small", "small (< 32² px)"), ("map_medium", "medium"),
             ("map_large", "large (> 96² px)")]
    if not any(f"{k}_mean" in summary for k, _ in sizes) or summary.empty:
        return []
    with figure(figsize=(max(FIGSIZE[0], 1.2 * len(summary) + 2), FIGSIZE[1])) as (fig, axes):
        ax = axes[0, 0]
        x, width = np.arange(len(summary)), 0.8 / len(sizes)
        for j, (key, label) in enumerate(sizes):
            means = _column(summary, f"{key}_mean") * 100
            stds = np.where(np.isnan(_column(summary, f"{key}_std")), 0, _column(summary, f"{key}_std") * 100)
            low, high = _column(summary, f"{key}_ci_low") * 100, _column(summary, f"{key}_ci_high") * 100
            has = ~np.isnan(low) & ~np.isnan(high) & ~np.isnan(means)  # the 95% image-bootstrap interval
            err = np.stack([np.where(has, np.maximum(means - low, 0), stds), np.where(has, np.maximum(high - means, 0),
                                                                                      stds)])
            ax.bar(x + (j - 1) * width, np.nan_to_num(means), width, yerr=np.nan_to_num(err), capsize=4,
                   label=label, color=GREYS[j],
                hatch=HATCHES[j + 1], edgecolor="black")
        ax.set_xticks(x, summary["group"], rotation=30 if len(summary) > 4 else 0, ha="right" if len(summary) > 4
                      else "center")
        ax.set_ylabel("COCO AP@[.5:.95] (%)")
        ax.set_xlabel("detector")
        ax.set_title("AP by object size (COCO area buckets)")
        ax.set_ylim(0, max(1.0, np.nanmax(ax.get_ylim()[1])) * 1.05)
        fig.legend(loc="outside upper center", ncols=3, frameon=False)
        return save(fig, out_dir, "ap_by_size")


def plot_candidates_vs_ap(summary: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Boxes scored before NMS (log scale: 98, 300, 8732, 24564, ...) against AP (%)."""
    summary = summary[np.isfinite(_column(summary, "num_candidates_mean"))
                      & np.isfinite(_column(summary, "map_mean"))]
    if summary.empty:
        return []
    with figure() as (fig, axes):
        ax = axes[0, 0]
        _labelled_points(ax, summary, "num_candidates", "map")
        ax.set_xscale("log")
        ticks = sorted(set(summary["num_candidates_mean"].round().astype(int)))
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel("boxes scored per image before NMS (log scale)")
        ax.set_ylabel("COCO AP@[.5:.95] (%)")
        ax.set_title("Boxes scored vs accuracy")
        ax.margins(x=0.3, y=0.2)
        return save(fig, out_dir, "candidates_vs_ap")


def plot_error_breakdown(errors: pd.DataFrame, out_dir: Path) -> list[Path]:
    """``errors``: ``tables.error_table(...).data`` (group, bucket, dap_<kind>, ...). One panel
    per size bucket: the AP50 points each error kind would add if fixed, a bar per detector."""
    if errors.empty:
        return []
    kinds = list(ERROR_LABELS)
    groups = list(dict.fromkeys(errors["group"]))
    has_data = errors[(errors["num_gt"] > 0) | (errors["num_dt"] > 0)]
    buckets = [b for b in ("all", "small", "medium", "large") if b in set(has_data["bucket"])]
    top = np.nanmax(np.r_[0.0, errors[[f"dap_{k}" for k in kinds]].to_numpy(float).ravel()])
    with figure(1, len(buckets), figsize=(max(FIGSIZE[0], 3.4 * len(buckets)), max(FIGSIZE[1], 2.2 + 0.28
                                                                                 * len(kinds) * len(groups))),
                sharex=True, sharey=True) as (fig, axes):
        height = 0.8 / len(groups)
        for ax, bucket in zip(axes[0], buckets):
            rows = errors[errors["bucket"] == bucket].set_index("group")
            for i, group in enumerate(groups):
                values = [rows.at[group, f"dap_{k}"] if group in rows.index else np.nan
                          for k in kinds]
                ax.barh(np.arange(len(kinds)) + (i - (len(groups) - 1) / 2) * height,
                        np.nan_to_num(values), height, color=COLOURS[i % len(COLOURS)],
                        hatch=HATCHES[i % len(HATCHES)], edgecolor="black",
                        label=group if ax is axes[0, 0] else None)
            ax.set_title(BUCKET_TITLES[bucket], fontsize=13)
        axes[0, 0].set_xlim(0, max(1.0, top) * 1.08)   # every bar drawn to its length, in every panel
        axes[0, 0].set_yticks(np.arange(len(kinds)), [ERROR_LABELS[k] for k in kinds])
        axes[0, 0].invert_yaxis()             # shared: the first kind on top in every panel
        fig.supxlabel("AP50 gained if this kind of error were fixed (points)", fontsize=14)
        fig.legend(loc="outside lower center", ncols=min(len(groups), 5), frameon=False)
        fig.suptitle("Error breakdown (TIDE-style, IoU 0.5)")
        return save(fig, out_dir, "error_breakdown")


def plot_top_detections(shares: pd.DataFrame, out_dir: Path) -> list[Path]:
    """``shares``: one row per label (a detector, or a paper's figure) with ``top_correct``,
    ``top_loc``, ``top_other``, ``top_bkg`` in %: stacked horizontal bars, as the YOLO paper's
    error analysis (the rest up to 100% is what the paper did not break down)."""
    if shares.empty:
        return []
    parts = [("top_correct", "correct"), ("top_loc", "localisation (or duplicate)"),
             ("top_other", "wrong class"), ("top_bkg", "background")]
    with figure(figsize=(FIGSIZE[0], max(FIGSIZE[1], 2.0 + 0.5 * len(shares)))) as (fig, axes):
        ax, left = axes[0, 0], np.zeros(len(shares))
        for j, (key, label) in enumerate(parts):
            values = np.nan_to_num(shares[key].to_numpy(float)) if key in shares else 0 * left
            ax.barh(np.arange(len(shares)), values, left=left, color=GREYS[j],
                    hatch=HATCHES[j], edgecolor="black", label=label)
            left += values
        ax.set_yticks(np.arange(len(shares)), shares.index)
        ax.invert_yaxis()
        ax.set_xlim(0, 100)
        ax.set_xlabel("share of each class's top-N detections (%, N = its ground truths)")
        ax.set_title("What the top detections are")
        fig.legend(loc="outside upper center", ncols=4, frameon=False, fontsize=11)
        return save(fig, out_dir, "top_detections")
