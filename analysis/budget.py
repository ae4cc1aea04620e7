"""The report's "Ranking against budget" section, for a folder whose runs trained one detector at
several budgets (``experiment=budget``; metrics.json's ``train_budget_kind`` / ``train_budget_value``).

* Plots: AP and APs against the iterations, training FLOPs and wall seconds each run trained, one line
  per detector, the band its 95% image-bootstrap interval (averaged over seeds like the value); a ringed
  point was still improving at its end (``still_improving``).
* Ranking per budget: the detectors in order of AP, and each pair's paired bootstrap on the same images
  (delta A − B, ``analysis.stats``), Holm-corrected over the pairs of that budget: *significant* when
  the corrected p < 0.05, else *within noise*.
* Order from: per pair, the smallest budget from which its order is significant and stays so at every
  larger budget (``stable_from``); none when the last budget is within noise or the order flips there.
* Claims: "A more accurate than B holds at k of n budgets" (significant at k of the n budgets both ran).

A budget sweep is of one kind; a folder holding two kinds (iterations and flops) gets one set each.
Reads run folders only (``bootstrap.npz`` as ``analysis.significance`` reads it).
"""
from __future__ import annotations

import math
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import plots
from analysis.runs import ok_runs
from analysis.section import Context, Section
from analysis.significance import load_replicates, paired
from analysis.stats import ALPHA, holm
from analysis.table import MISSING, Table, value_with_interval

AXES = [("train_iterations", "training iterations"), ("train_flops", "training TFLOPs (fwd + bwd)"),
        ("train_time_s", "training seconds (validations in)")]
X_SCALE = {"train_flops": 1e-12}   # FLOPs drawn in TFLOPs
METRICS = [("map", "AP"), ("map_small", "APs")]
KEY = ["dataset", "kind", "detector"]


def budget_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Finished runs of budget sweeps: those of a (dataset, budget kind, detector) that trained at two
    budgets or more, with ``kind`` and ``budget`` (train_budget_value) as columns."""
    ok = ok_runs(runs)
    if "train_budget_kind" not in ok or "train_budget_value" not in ok:
        return ok.iloc[:0]
    ok = ok.assign(kind=ok["train_budget_kind"], budget=pd.to_numeric(ok["train_budget_value"], errors="coerce"))
    ok = ok.dropna(subset=["kind", "budget"])
    swept = ok.groupby(KEY)["budget"].transform("nunique") > 1
    return ok[swept]


def budget_points(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (dataset, kind, detector, budget): means over seeds of AP, APs, their intervals and
    the cost axes; ``seeds``; ``still_improving`` (any seed)."""
    swept = budget_runs(runs)
    if not len(swept):
        return pd.DataFrame()
    columns = [c for key, _ in METRICS for c in (key, f"{key}_ci_low", f"{key}_ci_high") if c in swept]
    columns += [key for key, _ in AXES if key in swept]
    numbers = swept[columns].apply(pd.to_numeric, errors="coerce")
    improving = swept["still_improving"].map(lambda v: v in (True, "True", "true", 1)) \
        if "still_improving" in swept else pd.Series(False, index=swept.index)
    frame = pd.concat([swept[KEY + ["budget"]], numbers, improving.rename("still_improving")], axis=1)
    grouped = frame.groupby(KEY + ["budget"], sort=True)
    points = grouped[columns].mean()
    points["seeds"] = grouped.size()
    points["still_improving"] = grouped["still_improving"].any()
    return points.reset_index()


def _replicates(swept: pd.DataFrame) -> dict:
    """(dataset, kind, budget, detector) -> {seed: replicates} from each run's bootstrap.npz."""
    out: dict = {}
    for _, run in swept.iterrows():
        reps = load_replicates(run["path"])
        if reps is not None:
            out.setdefault((run["dataset"], run["kind"], run["budget"], run["detector"]), {})[run["seed"]] = reps
    return out


def pair_verdicts(runs: pd.DataFrame, metric: str = "map") -> pd.DataFrame:
    """One row per (dataset, kind, budget, pair A < B by name): delta A − B, interval, Holm p over the
    pairs of that budget, ``side`` (+1: A significantly above B, -1: below, 0: within noise or not
    comparable) and ``verdict``."""
    swept = budget_runs(runs)
    reps = _replicates(swept)
    rows = []
    for (dataset, kind, budget), at in swept.groupby(["dataset", "kind", "budget"], sort=True):
        detectors = sorted(at["detector"].unique())
        block = [{"dataset": dataset, "kind": kind, "budget": budget, "a": a, "b": b, "metric": metric,
                  **paired(reps.get((dataset, kind, budget, a), {}), reps.get((dataset, kind, budget, b), {}), metric)}
                 for a, b in combinations(detectors, 2)]
        for row, p_holm in zip(block, holm([r.get("p", math.nan) for r in block])):
            significant = "problem" not in row and p_holm < ALPHA
            row["p_holm"] = p_holm
            row["side"] = int(np.sign(row["delta"])) if significant else 0
            row["verdict"] = ("not comparable" if "problem" in row else "significant" if significant
                              else "within noise")
        rows += block
    return pd.DataFrame(rows)


def stable_from(budgets: list[float], sides: list[int]) -> tuple[float | None, int]:
    """(the smallest budget from which the order is significant and the same at every larger budget,
    its side +1/-1), or (None, 0) when the largest budget is within noise. ``budgets`` ascending."""
    if not sides or sides[-1] == 0:
        return None, 0
    start = len(sides) - 1
    while start > 0 and sides[start - 1] == sides[-1]:
        start -= 1
    return budgets[start], sides[-1]


def pair_summary(verdicts: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, kind, pair): budgets both ran (n), where each order holds (k), the stable order
    and the budget it holds from."""
    rows = []
    if not len(verdicts):
        return pd.DataFrame()
    for (dataset, kind, a, b), of in verdicts.groupby(["dataset", "kind", "a", "b"], sort=True):
        of = of.sort_values("budget")
        budgets, sides = of["budget"].tolist(), of["side"].tolist()
        start, side = stable_from(budgets, sides)
        above = sum(s == 1 for s in sides)
        below = sum(s == -1 for s in sides)
        rows.append({"dataset": dataset, "kind": kind, "a": a, "b": b, "budgets": len(sides),
                     "a_above": above, "b_above": below, "stable_from": start, "stable_side": side,
                     "flips": int(above > 0 and below > 0)})
    return pd.DataFrame(rows)


def _budget_text(kind: str, value: float) -> str:
    if kind == "flops":
        return f"{value / 1e12:.3g} TFLOPs"
    if kind == "seconds":
        return f"{value:.4g} s"
    return f"{value:.4g} {kind}"


def _override_value(overrides, key: str = "train.budget.value") -> float:
    for item in str(overrides or "").split():
        if item.startswith(key + "="):
            return pd.to_numeric(item.split("=", 1)[1], errors="coerce")
    return math.nan


def unfinished(runs: pd.DataFrame) -> dict:
    """(dataset, budget) -> ['detector (status)'] for runs of the sweep that did not finish (their budget
    from metrics.json, else from the override ``train.budget.value=...``)."""
    out: dict = {}
    for _, run in runs[runs["status"] != "ok"].iterrows():
        value = pd.to_numeric(run.get("train_budget_value"), errors="coerce")
        value = _override_value(run.get("overrides")) if pd.isna(value) else value
        if pd.notna(value):
            out.setdefault((run["dataset"], float(value)), []).append(f"{run['detector']} ({run['status']})")
    return out


def ranking_table(points: pd.DataFrame, verdicts: pd.DataFrame, missing: dict | None = None) -> Table:
    """Per budget: the detectors in order of AP (value [95% interval], * still improving), every pair's
    verdict, and the runs of that budget that did not finish (``missing``: ``unfinished``)."""
    rows, shown, missing = [], [], missing or {}
    for (dataset, kind, budget), at in points.groupby(["dataset", "kind", "budget"], sort=True):
        at = at.sort_values("map", ascending=False)
        order = " > ".join(at["detector"])
        cells = [f"{r['detector']} "
                 f"{value_with_interval(r['map'], r.get('map_ci_low'), r.get('map_ci_high'), decimals=2)}"
                 f"{'*' if r['still_improving'] else ''}" for _, r in at.iterrows()]
        here = verdicts[(verdicts["dataset"] == dataset) & (verdicts["kind"] == kind)
                        & (verdicts["budget"] == budget)] if len(verdicts) else verdicts
        pairs = "; ".join(f"{r['a']} − {r['b']}: {100 * r['delta']:+.2f} [{100 * r['low']:+.2f}, "
                          f"{100 * r['high']:+.2f}] {r['verdict']}" if "delta" in r and pd.notna(r.get("delta"))
                          else f"{r['a']} − {r['b']}: {r.get('problem', 'no replicates')}"
                          for _, r in here.iterrows())
        rows.append({"dataset": dataset, "kind": kind, "budget": budget, "order": order,
                     "seeds": int(at["seeds"].min())})
        shown.append({"dataset": dataset, "budget": _budget_text(kind, budget), "seeds": int(at["seeds"].min()),
                      "AP (ranked)": " > ".join(cells), "pairs (ΔAP A − B, Holm)": pairs or MISSING,
                      "not finished": ", ".join(missing.get((dataset, float(budget)), [])) or MISSING})
    return Table("budget_ranking", "Ranking against budget", pd.DataFrame(rows), pd.DataFrame(shown),
                 "AP in %, [95% image-bootstrap interval]; * still improving at its end (the ranking may move with "
                 "a longer schedule). Pairs: paired bootstrap on the same validation images, Holm-corrected over "
                 "the pairs of a budget; significant: Holm p < 0.05. Each budget trains with its own schedule "
                 "(train.scheduler sized to it). One seed: every verdict provisional (seeds=3).")


def claims_table(summary: pd.DataFrame) -> Table:
    """'A more accurate than B: holds at k of n budgets', and from which budget the order stays."""
    rows = []
    for _, r in summary.iterrows():
        orders = [(r["a"], r["b"], r["a_above"], 1), (r["b"], r["a"], r["b_above"], -1)]
        for first, second, k, side in [o for o in orders if o[2] > 0] or orders[:1]:
            stays = (f"from {_budget_text(r['kind'], r['stable_from'])} on" if r["stable_side"] == side
                     else "not at the largest budget" if k else MISSING)
            rows.append({"dataset": r["dataset"], "claim": f"{first} more accurate than {second}",
                         "holds at": f"{k} of {r['budgets']} budgets", "significant and stays": stays,
                         "order flips": "yes" if r["flips"] else "no"})
    frame = pd.DataFrame(rows)
    return Table("budget_claims", "Claims against budget", frame, frame,
                 "holds at k of n: significant (Holm p < 0.05) at k of the n budgets both detectors trained; "
                 "significant and stays: the smallest budget from which the order is significant at that budget "
                 "and every larger one.")


def plot_budget(points: pd.DataFrame, out_dir: Path) -> list[Path]:
    """AP (top) and APs (bottom) against iterations, training FLOPs and seconds; bands: intervals."""
    if not len(points):
        return []
    paths = []
    for (dataset, kind), of in points.groupby(["dataset", "kind"], sort=True):
        axes_shown = [(k, name) for k, name in AXES if k in of and of[k].notna().any()]
        with plots.figure(len(METRICS), len(axes_shown), figsize=(5.0 * len(axes_shown), 8.0)) as (fig, axes):
            for i, (detector, line) in enumerate(of.groupby("detector", sort=True)):
                style = plots.series_style(i)
                for row, (metric, name) in enumerate(METRICS):
                    for col, (x_key, x_name) in enumerate(axes_shown):
                        ax, ordered = axes[row][col], line.sort_values(x_key)
                        x = ordered[x_key] * X_SCALE.get(x_key, 1.0)
                        ax.plot(x, ordered[metric] * 100, label=detector, **style)
                        if f"{metric}_ci_low" in ordered:
                            ax.fill_between(x, ordered[f"{metric}_ci_low"] * 100,
                                            ordered[f"{metric}_ci_high"] * 100, color=style.get("color"), alpha=0.15)
                        ringed = ordered["still_improving"].to_numpy(bool)
                        ax.scatter(x[ringed], ordered[metric][ringed] * 100, s=160, facecolors="none",
                                   edgecolors=style.get("color"), linewidths=1.5)
                        ax.set_xscale("log")
                        plots.plain_log_ticks(ax.xaxis)
                        ax.set_xlabel(x_name + ", log")
                        ax.set_ylabel(f"{name} (%)")
                        ax.set_title(f"{name} vs {x_name.split(' (')[0]}")
            fig.legend(*axes[0][0].get_legend_handles_labels(), loc="outside lower center",
                       ncols=min(4, of["detector"].nunique()), frameon=False)
            fig.suptitle(f"Ranking against budget ({dataset}, budgets in {kind}; ringed: still improving)")
            paths += plots.save(fig, out_dir, f"budget_{dataset}_{kind}".replace("/", "_"))
    return paths


def sentences(summary: pd.DataFrame) -> list[str]:
    out = []
    for _, r in summary.iterrows():
        if r["stable_side"]:
            first, second = (r["a"], r["b"]) if r["stable_side"] > 0 else (r["b"], r["a"])
            out.append(f"{first} is more accurate than {second} from {_budget_text(r['kind'], r['stable_from'])} "
                       f"on ({r['dataset']}); {'the order flips below' if r['flips'] else 'no flip below'}.")
        else:
            out.append(f"{r['a']} vs {r['b']} ({r['dataset']}): no order that is significant at the largest budget.")
    return out


def section(ctx: Context) -> Section | None:
    """Ranking against budget: plots, the ranking per budget, the claims; None without a budget sweep."""
    points = budget_points(ctx.runs)
    if not len(points):
        return None
    verdicts = pair_verdicts(ctx.runs)
    summary = pair_summary(verdicts)
    tables = [ranking_table(points, verdicts, unfinished(ctx.runs))] + ([claims_table(summary)] if len(summary) else [])
    images = ctx.draw("ranking against budget", lambda: plot_budget(points, ctx.plot_dir))
    return Section("Ranking against budget", tables, images, sentences(summary) if len(summary) else [])
