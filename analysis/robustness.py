"""The report's robustness section, from run folders only (``robustness.csv`` and the
``robust_*`` numbers of ``metrics.json``, written by the robustness stage):

* a table of P, mPC, rPC (COCO AP and AP50), rPC per size bucket and the held-out corruptions'
  mPC per setting, beside Michaelis et al.'s published COCO-C / Pascal-C figures
  (``analysis/papers.csv``, metrics ``robust_*``);
* AP vs severity, one panel per corruption family (noise, blur, weather, digital; the held-out
  four in a fifth), one line per setting: the mean over the family's corruptions that the run
  scored, severity 0 being the clean images;
* rPC by size bucket, one bar per setting, error bars its 95% image-bootstrap interval where
  the runs have one.

Means over seeds are plain means of the runs that finished. Which corruptions, severities and
images a run used is said in the table's note (the default is a CPU-budget subset).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from analysis import plots
from analysis.papers import load_papers
from analysis.runs import ok_runs, read_csv
from analysis.section import Context, Section
from analysis.table import Table, value_with_interval

FAMILIES = ("noise", "blur", "weather", "digital")
SIZES = ("all", "small", "medium", "large")
# metrics.json key -> column label; all shown in %
COLUMNS = {"robust_p": "P", "robust_mpc": "mPC", "robust_rpc": "rPC",
           "robust_p_50": "P (AP50)", "robust_mpc_50": "mPC (AP50)", "robust_rpc_50": "rPC (AP50)",
           "robust_rpc_small": "rPC small", "robust_rpc_medium": "rPC medium",
           "robust_rpc_large": "rPC large", "robust_mpc_heldout": "mPC held-out",
           "robust_rpc_heldout": "rPC held-out"}


def robustness_rows(runs: pd.DataFrame) -> pd.DataFrame:
    """Every finished run's robustness.csv, stacked, with ``label`` and ``dataset``."""
    frames = []
    for _, run in ok_runs(runs).iterrows():
        rows = read_csv(run["path"], "robustness.csv")
        if rows is not None and {"corruption", "severity", "map"} <= set(rows.columns):
            frames.append(rows.assign(label=run["label"], dataset=run["dataset"], run=run["run"]))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _subset_note(runs: pd.DataFrame) -> str:
    notes = set()
    for _, run in runs.iterrows():
        corruptions = run.get("robust_corruptions")
        if isinstance(corruptions, list):
            notes.add(f"{len(corruptions)} corruptions ({', '.join(corruptions)}), severities "
                      f"{run.get('robust_severities')}, {run.get('robust_images')} images")
    return "; ".join(sorted(notes))


def robustness_table(runs: pd.DataFrame) -> Table:
    """One row per (setting, dataset) with robustness numbers, then the published rows."""
    ok = ok_runs(runs)
    ok = ok[ok["robust_p"].notna()] if "robust_p" in ok else ok.iloc[:0]
    rows = []
    for (label, dataset), runs_of in ok.groupby(["label", "dataset"], sort=True):
        row = {"detector": label, "dataset": dataset, "seeds": len(runs_of), "source": "ours"}
        for key in COLUMNS:
            for column in (key, f"{key}_ci_low", f"{key}_ci_high"):
                row[column] = pd.to_numeric(runs_of[column], errors="coerce").mean() if column in runs_of else np.nan
        rows.append(row)
    papers = load_papers()
    papers = papers[papers["metric"].str.startswith("robust_")]
    for (detector, split, source), group in papers.groupby(["detector", "split", "paper"], sort=False):
        row = {"detector": f"{detector} (paper)", "dataset": split, "seeds": np.nan, "source": source}
        row.update({m: v / 100 for m, v in zip(group["metric"], group["value"])})
        rows.append(row)
    bounds = [f"{k}_{end}" for k in COLUMNS for end in ("ci_low", "ci_high")]
    data = pd.DataFrame(rows, columns=["detector", "dataset", "seeds", "source", *COLUMNS, *bounds])
    shown = data[["detector", "dataset"]].copy()
    for key, label in COLUMNS.items():
        shown[label] = [value_with_interval(v, lo, hi) for v, lo, hi in
                        zip(data[key], data[f"{key}_ci_low"], data[f"{key}_ci_high"])]
    shown["source"] = data["source"]
    note = ("P: clean AP; mPC: mean AP over the benchmark corruptions and severities scored; "
            "rPC = mPC / P (Michaelis et al. 2019); AP@[.5:.95] unless AP50; in %. "
            "Held-out: speckle noise, gaussian blur, spatter, saturate (never in mPC). "
            "[low, high]: the 95% image-bootstrap interval (every cell resampled on the same images, mPC and rPC "
            "per replicate; averaged over seeds). ")
    subset = _subset_note(ok)
    if subset:
        note += f"Ours: {subset} (means over seeds). Published rows: the full benchmark (15 x 5)."
    return Table("robustness", "Robustness to corruptions (COCO-C protocol)", data, shown, note)


def severity_curves(rows: pd.DataFrame) -> pd.DataFrame:
    """Mean AP per (label, family, severity) over the family's corruptions (held-out ones as
    family 'held-out') and seeds; severity 0 (clean) is repeated in every family."""
    if rows.empty:
        return rows
    rows = rows.copy()
    rows["panel"] = np.where(rows["held_out"].astype(bool), "held-out", rows["family"])
    clean = rows[rows["severity"] == 0]
    corrupted = rows[rows["severity"] > 0]
    per_run = corrupted.groupby(["label", "run", "panel", "severity"], sort=False)["map"].mean().reset_index()
    clean_rows = [clean.assign(panel=panel) for panel in per_run["panel"].unique()]
    per_run = pd.concat([per_run, *[c[["label", "run", "panel", "severity", "map"]] for c in clean_rows]])
    return per_run.groupby(["label", "panel", "severity"], sort=False)["map"].mean().reset_index()


def plot_ap_vs_severity(rows: pd.DataFrame, out_dir: Path) -> list[Path]:
    curves = severity_curves(rows)
    if curves.empty:
        return []
    panels = [p for p in (*FAMILIES, "held-out") if p in set(curves["panel"])]
    labels = sorted(curves["label"].unique())
    with plots.figure(1, len(panels), sharey=True) as (fig, axes):
        for ax, panel in zip(axes[0], panels):
            for i, label in enumerate(labels):
                line = curves[(curves["panel"] == panel) & (curves["label"] == label)].sort_values("severity")
                ax.plot(line["severity"], 100 * line["map"], label=label, **plots.series_style(i))
            ax.set_title(panel)
            ax.set_xlabel("severity (0: clean)")
            ax.set_xticks(range(6))
        axes[0][0].set_ylabel("AP (%), mean over the family")
        axes[0][-1].legend(loc="upper right")
        return plots.save(fig, out_dir, "robustness_ap_vs_severity")


def plot_rpc_by_size(table: Table, out_dir: Path) -> list[Path]:
    ours = table.data[table.data["source"] == "ours"]
    keys = {"all": "robust_rpc", **{s: f"robust_rpc_{s}" for s in SIZES[1:]}}
    if ours.empty or ours[list(keys.values())].isna().all().all():
        return []
    width = 0.8 / len(ours)
    with plots.figure() as (fig, axes):
        ax = axes[0][0]
        for i, (_, row) in enumerate(ours.iterrows()):
            values = np.array([100 * row[k] for k in keys.values()])
            low = np.array([100 * row.get(f"{k}_ci_low", np.nan) for k in keys.values()])
            high = np.array([100 * row.get(f"{k}_ci_high", np.nan) for k in keys.values()])
            errors = None if np.isnan(low).all() else np.nan_to_num(
                np.stack([np.maximum(values - low, 0), np.maximum(high - values, 0)]))  # the 95% bootstrap interval
            ax.bar(np.arange(len(keys)) + i * width, values, width, yerr=errors, capsize=4, label=row["detector"],
                   color=plots.COLOURS[i % len(plots.COLOURS)], hatch=plots.HATCHES[i % len(plots.HATCHES)],
                   edgecolor="black")
        ax.set_xticks(np.arange(len(keys)) + width * (len(ours) - 1) / 2,
                      [plots.BUCKET_TITLES[s] for s in keys])
        ax.set_ylabel("rPC = mPC / P (%)")
        ax.axhline(100, color="0.4", linewidth=1)
        ax.legend()
        return plots.save(fig, out_dir, "robustness_rpc_by_size")


def section(ctx: Context) -> Section | None:
    """The robustness table and its two plots; None when no run has a robustness.csv."""
    rows = robustness_rows(ctx.runs)
    if rows.empty:
        return None
    table = robustness_table(ctx.runs)
    images = (ctx.draw("robustness: AP vs severity", lambda: plot_ap_vs_severity(rows, ctx.plot_dir) or None)
              + ctx.draw("robustness: rPC by size", lambda: plot_rpc_by_size(table, ctx.plot_dir) or None))
    return Section("Robustness", [table], images)
