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


def _iterations(row) -> str:
    run, planned = number_or_none(row.get("train_iterations")), number_or_none(row.get("train_iterations_planned"))
    if run is None:
        return MISSING
    return f"{run} / {planned}" if planned is not None else f"{run} / ?"


def _stopped_early(row) -> str:
    if stopped_short(row):
        return "yes"
    return MISSING if number_or_none(row.get("train_iterations")) is None else "no"


def provenance_frame(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per run: run, detector, dataset, seed, status, weights (``weights_source``),
    pretrained ('from scratch'/'pretrained'), iterations ('run / planned'), stopped early,
    training precision."""
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
                     "stopped early": _stopped_early(row), "precision": _precision(row)})
    return pd.DataFrame(rows, columns=["run", "detector", "dataset", "seed", "status", "weights",
                                       "pretrained", "iterations run / planned", "stopped early", "precision"])


def _precision(row) -> str:
    """The training precision used (metrics.json ``train_precision``), '+nhwc' for channels-last,
    'fp32 (bf16 asked)' where it fell back; not recorded (no training, or an older run): MISSING."""
    used = row.get("train_precision")
    if not isinstance(used, str):
        return MISSING
    asked = row.get("train_precision_requested")
    label = used + ("+nhwc" if row.get("train_channels_last") is True else "")
    return f"{label} ({asked} asked)" if isinstance(asked, str) and asked != used else label


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
                 "vs planned, stopped early)", frame, frame,
                 "'from scratch': the detector recorded weights_source 'random' (nothing loaded).")


def incomplete_table(runs: pd.DataFrame) -> Table:
    """The report's "Incomplete runs" table: ``incomplete_frame`` with the accuracy columns;
    shown apart, never ranked."""
    frame = incomplete_frame(runs, ACCURACY_COLUMNS)
    return Table("incomplete", "Incomplete runs (trained fewer iterations than planned; apart "
                 "from every mean and ranking)", frame, frame,
                 "" if len(frame) else "Every run that trained reached its planned iterations.")
