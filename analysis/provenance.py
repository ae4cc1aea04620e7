"""Where each run's numbers come from: weights (pretrained or from scratch), iterations run vs
planned, stopped early or not; and the runs that did not train to their plan, kept apart.

A run that trained fewer iterations than planned (``train.max_time_s``, or a metrics.json of an
older detbench that only said ``train_stopped_on_time``) has ``status: incomplete``: ``ok_runs``
leaves it out of every mean and ranking (``runs.mark_incomplete``), and ``incomplete_table`` shows
its numbers on their own. Reads run folders only (``runs.py``); never imports model code.
"""
from __future__ import annotations

import pandas as pd

from analysis.runs import number_or_none, pretrained_label, stopped_short
from analysis.summary import ACCURACY_COLUMNS
from analysis.table import MISSING, Table
from analysis.timing_trust import BUSY_MARK, BUSY_NOTE, TRAIN, is_false

TRAINING_COLUMNS = ["budget", "train TFLOPs", "images seen", "train s", "device", "still improving"]


def _iterations(row) -> str:
    run, planned = number_or_none(row.get("train_iterations")), number_or_none(row.get("train_iterations_planned"))
    if run is None:
        return MISSING
    return f"{run} / {planned}" if planned is not None else f"{run} / ?"


def _stopped_early(row) -> str:
    if stopped_short(row):
        return "yes"
    return MISSING if number_or_none(row.get("train_iterations")) is None else "no"


def _number(row, key: str, scale: float = 1.0, digits: int = 0) -> str:
    value = pd.to_numeric(row.get(key), errors="coerce")
    return MISSING if pd.isna(value) else f"{value * scale:,.{digits}f}"


def still_improving_label(value) -> str:
    """metrics.json's ``still_improving`` (True / False / None) as shown: 'yes', 'no', '–'."""
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return MISSING
    return "yes" if value in (True, "True", "true", 1) else "no"


def training_facts(row) -> str:
    """One run's training cost in a few words, for the claims: '150 iterations (budget), 7.8 TFLOPs,
    2,400 images, 127 s on cpu, still improving'. Empty when the run did not train."""
    if number_or_none(row.get("train_iterations")) is None:
        return ""
    budget = row.get("train_budget") if isinstance(row.get("train_budget"), str) else "budget ?"
    parts = [f"{row.get('train_iterations')} iterations ({budget})",
             f"{_number(row, 'train_flops', 1e-12, 2)} TFLOPs", f"{_number(row, 'train_images_seen')} images",
             f"{_number(row, 'train_time_s')} s on {row.get('device', '?')}"
             + (f" {BUSY_MARK}busy machine" if is_false(row.get(TRAIN)) else "")]
    if still_improving_label(row.get("still_improving")) == "yes":
        parts.append("still improving")
    return ", ".join(parts)


def provenance_frame(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per run: run, detector, dataset, seed, status, weights (``weights_source``),
    pretrained ('from scratch'/'pretrained'), iterations ('run / planned'), stopped early, the
    training budget and its cost (training TFLOPs, images seen, wall seconds, device) and whether
    the last validations were still improving (``experiments.studies.budget_convergence``), training precision."""
    rows = []
    for _, r in runs.iterrows():
        row = r.to_dict()
        rows.append({"run": row.get("run"), "detector": row.get("group", row.get("detector")),
                     "dataset": row.get("dataset"), "seed": row.get("seed"),
                     "status": row.get("status"),
                     "weights": row.get("weights_source") if pd.notna(row.get("weights_source"))
                     else MISSING,
                     "pretrained": pretrained_label(row.get("weights_source")),
                     "iterations run / planned": _iterations(row),
                     "stopped early": _stopped_early(row), "precision": _precision(row),
                     "budget": row.get("train_budget") if isinstance(row.get("train_budget"), str) else MISSING,
                     "train TFLOPs": _number(row, "train_flops", 1e-12, 2),
                     "images seen": _number(row, "train_images_seen"),
                     "train s": _number(row, "train_time_s") + (BUSY_MARK if is_false(row.get(TRAIN)) else ""),
                     "device": row.get("device") if isinstance(row.get("device"), str) else MISSING,
                     "still improving": still_improving_label(row.get("still_improving"))})
    return pd.DataFrame(rows, columns=["run", "detector", "dataset", "seed", "status", "weights",
                                       "pretrained", "iterations run / planned", "stopped early", "precision",
                                       *TRAINING_COLUMNS])


def _precision(row) -> str:
    """The training precision used (metrics.json ``train_precision``), '+nhwc' for channels-last,
    '+compiled' for a compiled trunk (``train_compile_used``), 'fp32 (bf16 asked)' where it fell
    back, '(compile failed: eager)' where compiling did; not recorded (no training, or an older
    run): MISSING."""
    used = row.get("train_precision")
    if not isinstance(used, str):
        return MISSING
    asked = row.get("train_precision_requested")
    label = used + ("+nhwc" if row.get("train_channels_last") is True else "")
    label += "+compiled" if row.get("train_compile_used") == "compiled" else ""
    if isinstance(asked, str) and asked != used:
        label += f" ({asked} asked)"
    if row.get("train_compile") is True and row.get("train_compile_used") != "compiled":
        label += " (compile failed: eager)"
    return label


def incomplete_frame(runs: pd.DataFrame, metrics: dict) -> pd.DataFrame:
    """The incomplete runs alone, with their reason and ``metrics`` (key -> (label, scale,
    decimals)) as measured; never averaged or ranked with the finished runs."""
    bad = runs[runs["status"] == "incomplete"]
    rows = []
    for _, r in bad.iterrows():
        row = {"run": r.get("run"), "detector": r.get("group", r.get("detector")),
               "dataset": r.get("dataset"), "iterations run / planned": _iterations(r),
               "reason": r.get("status_reason") if pd.notna(r.get("status_reason")) else MISSING}
        for key, (label, scale, decimals) in metrics.items():
            value = pd.to_numeric(r.get(key), errors="coerce")
            if key in runs:
                row[label] = MISSING if pd.isna(value) else f"{value * scale:.{decimals}f}"
        rows.append(row)
    return pd.DataFrame(rows)


def provenance_table(runs: pd.DataFrame) -> Table:
    """The report's "Provenance" table: ``provenance_frame`` as numbers and as shown."""
    frame = provenance_frame(runs)
    return Table("provenance", "Provenance (weights, pretrained or from scratch, iterations run "
                 "vs planned, stopped early, training budget and cost)", frame, frame,
                 "'from scratch': the detector recorded weights_source 'random' (nothing loaded). Budget: "
                 "train.budget as given (kind iterations, epochs, flops or seconds; seconds are machine-dependent); "
                 "train TFLOPs: forward + backward counted on a real batch (2 FLOPs per multiply-add; RoI pooling "
                 "estimated) x iterations; still improving: the last validation's AP gain over the one before is "
                 "above its noise (paired image bootstrap, one-sided 90%)."
                 + (f" {BUSY_NOTE}" if frame["train s"].astype(str).str.endswith(BUSY_MARK).any() else ""))


def incomplete_table(runs: pd.DataFrame) -> Table:
    """The report's "Incomplete runs" table: ``incomplete_frame`` with the accuracy columns;
    shown apart, never ranked."""
    frame = incomplete_frame(runs, ACCURACY_COLUMNS)
    return Table("incomplete", "Incomplete runs (trained fewer iterations than planned; apart "
                 "from every mean and ranking)", frame, frame,
                 "" if len(frame) else "Every run that trained reached its planned iterations.")


def budget_sentences(runs: pd.DataFrame) -> list[str]:
    """Which training budget the finished runs were given, per dataset and kind: what was equalised
    (iterations, training FLOPs or seconds) and what it bought each detector (budgets in order)."""
    if "train_budget_kind" not in runs:
        return []
    out = []
    ok = runs[(runs["status"] == "ok") & runs["train_budget_kind"].notna()]
    for (dataset, kind), of in ok.groupby(["dataset", "train_budget_kind"], sort=True):
        of = of.assign(**{k: pd.to_numeric(of.get(k), errors="coerce") for k in
                          ("train_budget_value", "train_iterations", "train_flops", "train_time_s")})
        budgets = of.drop_duplicates("train_budget_value").sort_values("train_budget_value")["train_budget"]
        costs = []
        for detector, rows in of.groupby("detector", sort=True):
            means = rows.groupby("train_budget_value")[["train_iterations", "train_flops", "train_time_s"]].mean()
            costs.append(f"{detector}: " + "; ".join(
                "/".join(f"{v * scale:.{digits}f}" for v in means[key]).replace("nan", "?") + unit
                for key, scale, digits, unit in (("train_iterations", 1, 0, " iterations"),
                                                 ("train_flops", 1e-12, 2, " TFLOPs"), ("train_time_s", 1, 0, " s"))))
        equal = {"iterations": "iterations", "epochs": "epochs", "flops": "training FLOPs (equal compute)",
                 "seconds": "wall seconds (machine-dependent)"}.get(kind, kind)
        out.append(f"Training budget ({dataset}): {', '.join(map(str, budgets))}, equal in {equal} for every "
                   f"detector (train.budget.kind={kind}); what it bought per detector: {' | '.join(costs)}.")
    return out
