"""The report's "Equal tuning effort" section, for a folder of ``experiment=tune`` runs (metrics.json's
``tune_trial`` / ``tune_trials``, ``train_lr``, ``train_weight_decay``).

* Effort: trials finished per detector, and whether every detector had the same number (a failed
  trial makes the effort unequal: said, never hidden).
* Best setting: the trial with the highest AP on the split that chose (``map``: the run's evaluation
  split, validation), reported on the test split where the runs were scored on one (``test_map``,
  issue 27); without it the tuned AP is chosen and reported on the same images, marked optimistic.
* Spread: min / median / max AP over the trials (how sensitive the detector is to its setting).
* Claims: each pair's paired verdict at the default setting (trial 0) and at each detector's own best,
  and whether it changes.
"""
from __future__ import annotations

import math
from itertools import combinations

import numpy as np
import pandas as pd

from analysis.runs import ok_runs
from analysis.section import Context, Section
from analysis.significance import load_replicates, paired
from analysis.stats import ALPHA
from analysis.table import MISSING, Table

CHOOSE, REPORT = "map", "test_map"   # chosen on validation, reported on test when runs carry it


def tune_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The finished runs of tuning sweeps, ``trial`` numeric."""
    ok = ok_runs(runs)
    if "tune_trial" not in ok:
        return ok.iloc[:0]
    ok = ok.assign(trial=pd.to_numeric(ok["tune_trial"], errors="coerce"))
    return ok.dropna(subset=["trial"])


def effort(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, detector): trials planned (``tune_trials``) and finished, the best trial and its
    setting, AP at the default (trial 0) and at the best, the spread over trials."""
    tuned = tune_runs(runs)
    rows = []
    for (dataset, detector), of in tuned.groupby(["dataset", "detector"], sort=True):
        ap = pd.to_numeric(of[CHOOSE], errors="coerce")
        best = of.loc[ap.idxmax()]
        default = of[of["trial"] == 0]
        report = pd.to_numeric(best.get(REPORT), errors="coerce") if REPORT in of else math.nan
        rows.append({"dataset": dataset, "detector": detector, "trials": of["trial"].nunique(),
                     "planned": int(pd.to_numeric(of["tune_trials"], errors="coerce").max()),
                     "best_trial": int(best["trial"]), "best_lr": best.get("train_lr"),
                     "best_weight_decay": best.get("train_weight_decay"), "best_ap": float(ap.max()),
                     "best_ap_reported": report, "default_ap": float(pd.to_numeric(default[CHOOSE]).mean())
                     if len(default) else math.nan, "ap_min": float(ap.min()), "ap_median": float(ap.median()),
                     "ap_max": float(ap.max()), "ap_std": float(ap.std(ddof=1)) if len(ap) > 1 else math.nan,
                     "best_path": best["path"], "default_path": default["path"].iloc[0] if len(default) else None})
    return pd.DataFrame(rows)


def _pct(x) -> str:
    return MISSING if x is None or pd.isna(x) else f"{100 * float(x):.1f}"


def effort_table(frame: pd.DataFrame) -> Table:
    equal = frame.groupby("dataset")["trials"].nunique().le(1).all() and (frame["trials"] == frame["planned"]).all()
    shown = pd.DataFrame({
        "dataset": frame["dataset"], "detector": frame["detector"],
        "trials (finished / planned)": [f"{t} / {p}" for t, p in zip(frame["trials"], frame["planned"])],
        "default AP (trial 0)": frame["default_ap"].map(_pct),
        "best AP (chosen on val)": frame["best_ap"].map(_pct),
        "best AP on test": frame["best_ap_reported"].map(_pct),
        "best setting": [f"trial {t}: lr {lr:.2g}, wd {wd:.2g}" for t, lr, wd in
                         zip(frame["best_trial"], frame["best_lr"].astype(float),
                             frame["best_weight_decay"].astype(float))],
        "AP over trials (min / median / max, std)": [
            f"{_pct(a)} / {_pct(b)} / {_pct(c)}, {_pct(d)}" for a, b, c, d in
            zip(frame["ap_min"], frame["ap_median"], frame["ap_max"], frame["ap_std"])]})
    note = ("Every detector had the same trials (trial t: one setting for all)." if equal else
            "UNEQUAL EFFORT: the detectors finished different numbers of trials; compare with care.")
    if frame["best_ap_reported"].isna().all():
        note += (" No test split: the best setting is chosen and reported on the same validation images, so "
                 "its AP is optimistic (issue 27 adds a held-out test split).")
    return Table("tuning", "Equal tuning effort", frame.drop(columns=["best_path", "default_path"]), shown, note)


def _paired_runs(path_a, path_b) -> dict:
    reps_a, reps_b = load_replicates(path_a), load_replicates(path_b)
    if reps_a is None or reps_b is None:
        return {"problem": "no bootstrap.npz"}
    return paired({0: reps_a}, {0: reps_b}, "map")


def _verdict(result: dict, a: str, b: str) -> str:
    if "problem" in result:
        return result["problem"]
    if result["p"] >= ALPHA:
        return f"within noise ({100 * result['delta']:+.1f})"
    return f"{a if result['delta'] > 0 else b} more accurate ({100 * result['delta']:+.1f}, p {result['p']:.2g})"


def claims_table(frame: pd.DataFrame) -> Table:
    """Per pair: the verdict at the default setting and at the tuned ones (uncorrected paired p)."""
    rows = []
    for dataset, of in frame.groupby("dataset"):
        by = of.set_index("detector")
        for a, b in combinations(sorted(by.index), 2):
            default = _paired_runs(by.loc[a, "default_path"], by.loc[b, "default_path"]) \
                if by.loc[a, "default_path"] and by.loc[b, "default_path"] else {"problem": "no default trial"}
            tuned = _paired_runs(by.loc[a, "best_path"], by.loc[b, "best_path"])
            before, after = _verdict(default, a, b), _verdict(tuned, a, b)
            rows.append({"dataset": dataset, "pair": f"{a} vs {b}", "default settings": before,
                         "tuned settings": after,
                         "claim changes": "yes" if before.split(" (")[0] != after.split(" (")[0] else "no"})
    frame = pd.DataFrame(rows)
    return Table("tuning_claims", "Claims at default vs tuned settings", frame, frame,
                 "Paired bootstrap of AP on the same images, A − B; significant: p < 0.05 (one pair at a time, "
                 "not corrected). Tuned: each detector at its own best trial.")


def section(ctx: Context) -> Section | None:
    """Equal tuning effort; None without tuning runs."""
    frame = effort(ctx.runs)
    if not len(frame):
        return None
    tables = [effort_table(frame)] + ([claims_table(frame)] if frame["detector"].nunique() > 1 else [])
    spread = frame.assign(width=frame["ap_max"] - frame["ap_min"]).sort_values("width", ascending=False)
    sentences = [f"Most sensitive to tuning: {spread['detector'].iloc[0]} (AP over its trials spans "
                 f"{100 * spread['width'].iloc[0]:.1f} points)."] if np.isfinite(spread["width"]).any() else []
    return Section("Equal tuning effort", tables, sentences=sentences)
