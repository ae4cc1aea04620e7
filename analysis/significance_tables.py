"""The report's verdict sections: the "Pairwise" table (paired bootstrap, Δ = A − B with interval and
Holm p per metric), the "Claims" table (the seed article's claims, each with its evidence and
verdict), and one sentence per setting on which variance dominates (seed to seed, or image
sampling); from ``significance`` and ``claims``."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis.claims import evaluate_claims, group_families
from analysis.runs import ok_runs
from analysis.section import Context, Section
from analysis.significance import PAIR_METRICS
from analysis.table import Table


def _interval_text(delta: float, low: float, high: float) -> str:
    if any(isinstance(x, float) and math.isnan(x) for x in (delta, low, high)):
        return "–"
    return f"{100 * delta:+.1f} [{100 * low:+.1f}, {100 * high:+.1f}]"


def pairwise_table(pairs: pd.DataFrame) -> Table:
    """One row per (dataset, pair): ΔAP, ΔAP50, ΔAPs (A − B, points) with intervals and Holm p."""
    shown = []
    if len(pairs):
        for (dataset, a, b), rows in pairs.groupby(["dataset", "a", "b"], sort=False):
            row = {"dataset": dataset, "pair (A − B)": f"{a} − {b}"}
            for metric, label in PAIR_METRICS.items():
                r = rows[rows["metric"] == metric].iloc[0]
                if isinstance(r.get("problem"), str):
                    row[f"Δ{label}"], row[f"p {label}"] = "not testable", r["problem"]
                    continue
                row[f"Δ{label}"] = _interval_text(r["delta"], r["low"], r["high"])
                one_seed = ", provisional: one seed" if r.get("seeds", 1) < 2 else ""
                row[f"p {label}"] = f"Holm {r['p_holm']:.2g}; {r['p_text']} ({r['verdict']}{one_seed})"
            shown.append(row)
    family = int(pairs["family_size"].max()) if len(pairs) and "family_size" in pairs else 0
    return Table("pairwise", "Pairwise (Δ = A − B in AP points, 95% interval; two-sided p, Holm-corrected "
                 f"per dataset and metric over the {family} pairs this table lists)", pairs, pd.DataFrame(shown),
                 "significant: Holm p < 0.05; within noise otherwise. One seed: the paired image bootstrap alone "
                 "(p counts the replicates whose delta crossed 0; its floor is 2/(B+1)); two or more seeds: a t "
                 "over the per-seed deltas with the image variance added. Pairs need the same images of the same "
                 "split and bootstrap seed (eval.bootstrap_seed). The claims correct over their own comparisons, "
                 "not over this table.")


def claims_table(runs: pd.DataFrame, pairs: pd.DataFrame | None = None, claims: pd.DataFrame | None = None) -> Table:
    """The claims, one row per (claim, metric, detectors): effect [interval], p, Holm family, verdict,
    conditions and evidence."""
    claims = evaluate_claims(runs) if claims is None else claims
    shown = claims.copy()
    if len(shown):
        scale = shown["unit"].map(lambda u: 100.0 if u == "AP points" else 1.0)
        shown["effect"] = [_interval_text(e * k, lo * k, hi * k) if not math.isnan(e) else "–"
                           for e, lo, hi, k in zip(claims["effect"], claims["low"], claims["high"], scale / 100)]
        shown = shown.drop(columns=["low", "high"])
    note = ("Effect: A − B as the detectors are named (AP points, or ms for latency), 95% interval. One seed: "
            "the paired image bootstrap alone and the verdict is provisional; two or more: seed-to-seed variance "
            "inside (t over per-seed deltas + image variance). Holm: over the comparisons the claim makes, never "
            "over unrelated runs. Pretrained references (tv_*) are not pooled with from-scratch runs.")
    by_name = [g for g, (family, named) in group_families(ok_runs(runs)).items() if named and family]
    if by_name:
        note += (" Family told by detector name (the run folders' metrics.json has no 'family'): "
                 + ", ".join(by_name) + ".")
    return Table("claims", "Claims of the seed article, tested on this sweep", claims, shown, note)


def variance_sentences(runs: pd.DataFrame, metric: str = "map") -> list[str]:
    """Per group with >= 2 seeds: the std over seeds vs the image-bootstrap std (interval width / 3.92)."""
    out = []
    ok = ok_runs(runs)
    low, high = f"{metric}_ci_low", f"{metric}_ci_high"
    if metric not in ok or low not in ok:
        return out
    for (dataset, group), rows in ok.groupby(["dataset", "group"], sort=True):
        values = pd.to_numeric(rows[metric], errors="coerce").dropna()
        widths = (pd.to_numeric(rows[high], errors="coerce") - pd.to_numeric(rows[low], errors="coerce")).dropna()
        if len(values) < 2 or widths.empty:
            continue
        seed_std, image_std = values.std(ddof=1), float(np.mean(widths)) / 3.92
        which = "seed-to-seed variance dominates" if seed_std > image_std else "image-sampling variance dominates"
        out.append(f"{group} ({dataset}): AP std over {len(values)} seeds {100 * seed_std:.2f} points, "
                   f"image-bootstrap std {100 * image_std:.2f} points: {which}.")
    if not out:
        out.append("One seed per setting: only the image-sampling variance (the bootstrap intervals) is "
                   "measured; seed-to-seed variance needs seeds (experiment=compare seeds=3).")
    return out


def variance_section(ctx: Context) -> Section:
    """Which variance dominates, one sentence per setting with seeds."""
    return Section("Variance", sentences=variance_sentences(ctx.labelled))
