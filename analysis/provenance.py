"""Where each run's numbers come from: weights (pretrained or from scratch), iterations run vs
planned, stopped early or not; and the runs that did not train to their plan, kept apart.

A run that trained fewer iterations than planned (``train.max_time_s``, or a metrics.json of an
older detbench that only said ``train_stopped_on_time``) has ``status: incomplete``: ``ok_runs``
leaves it out of every mean and ranking, and ``incomplete_table`` shows its numbers on their own.
Reads run folders only (``runs.py``); never imports model code.
"""
from __future__ import annotations

import pandas as pd

MISSING = "–"
SCRATCH = "random"   # what a detector records as ``weights_source`` when nothing was loaded


def _int(value):
    number = pd.to_numeric(value, errors="coerce")
    return None if pd.isna(number) else int(number)


def mark_incomplete(row: dict) -> dict:
    """A metrics.json row whose training stopped before its plan -> status ``incomplete`` and
    ``status_reason`` saying how far it got (rows written as ``incomplete`` keep their reason)."""
    run, planned = _int(row.get("train_iterations")), _int(row.get("train_iterations_planned"))
    short = _short(row)
    if row.get("status") == "ok" and short:
        row["status"] = "incomplete"
        row.setdefault("status_reason", "training stopped by train.max_time_s after "
                       f"{run if run is not None else '?'} of "
                       f"{planned if planned is not None else '?'} iterations")
    return row


def _short(row) -> bool:
    """Trained fewer iterations than planned; without a plan (older metrics.json), stopped by time."""
    run, planned = _int(row.get("train_iterations")), _int(row.get("train_iterations_planned"))
    if run is not None and planned is not None:
        return run < planned
    return row.get("train_stopped_on_time") is True


def pretrained_label(source) -> str:
    """``weights_source`` -> 'from scratch' | 'pretrained' | '–' (not recorded)."""
    if source is None or (isinstance(source, float) and pd.isna(source)) or source == "":
        return MISSING
    return "from scratch" if str(source) == SCRATCH else "pretrained"


def _iterations(row) -> str:
    run, planned = _int(row.get("train_iterations")), _int(row.get("train_iterations_planned"))
    if run is None:
        return MISSING
    return f"{run} / {planned}" if planned is not None else f"{run} / ?"


def _stopped_early(row) -> str:
    if _short(row):
        return "yes"
    return MISSING if _int(row.get("train_iterations")) is None else "no"


def provenance_frame(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per run: run, detector, dataset, seed, status, weights (``weights_source``),
    pretrained ('from scratch'/'pretrained'), iterations ('run / planned'), stopped early."""
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
                     "stopped early": _stopped_early(row)})
    return pd.DataFrame(rows, columns=["run", "detector", "dataset", "seed", "status", "weights",
                                       "pretrained", "iterations run / planned", "stopped early"])


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


def provenance_table(runs: pd.DataFrame):
    """The report's "Provenance" table (``tables.Table``)."""
    from analysis.tables import Table

    frame = provenance_frame(runs)
    return Table("provenance", "Provenance (weights, pretrained or from scratch, iterations run "
                 "vs planned, stopped early)", frame, frame,
                 "'from scratch': the detector recorded weights_source 'random' (nothing loaded).")


def incomplete_table(runs: pd.DataFrame):
    """The report's "Incomplete runs" table (``tables.Table``): shown apart, never ranked."""
    from analysis.tables import ACCURACY_COLUMNS, Table

    frame = incomplete_frame(runs, ACCURACY_COLUMNS)
    return Table("incomplete", "Incomplete runs (trained fewer iterations than planned; apart "
                 "from every mean and ranking)", frame, frame,
                 "" if len(frame) else "Every run that trained reached its planned iterations.")


def _voc_years(train_data: str) -> list[int] | None:
    """'VOC07+12, expansion (SSD300*)' -> [2007, 2012]; None when not a VOC-only figure."""
    head = str(train_data).split(",")[0].strip()
    if not head.startswith("VOC") or "COCO" in head:
        return None
    return [2000 + int(y) for y in head[3:].split("+")]


def setting_differences(run: dict, paper: dict) -> list[str]:
    """What separates ``run`` (a metrics.json row) from the setting of ``paper`` (a row of
    analysis/papers.csv): from-scratch weights, a recipe other than experiment=paper_*, other
    training years, the SSD "expansion" (starred rows) used or not. Empty: the same setting."""
    run = {k: (None if not isinstance(v, (list, tuple)) and pd.isna(v) else v) for k, v in run.items()}
    differs = []
    weights = pretrained_label(run.get("weights_source"))
    if weights != "pretrained":
        differs.append("from scratch (paper: ImageNet-pretrained)" if weights == "from scratch"
                       else "weights not recorded (paper: ImageNet-pretrained)")
    if not isinstance(run.get("paper_name"), str) or not run.get("paper_name"):
        differs.append("not the paper's recipe (no experiment=paper_*)")
    wanted, ours = _voc_years(paper.get("train_data", "")), run.get("train_years")
    if wanted is not None and isinstance(ours, list) and sorted(int(y) for y in ours) != wanted:
        differs.append(f"trained on VOC {'+'.join(map(str, ours))} (paper: {paper['train_data']})")
    if str(run.get("detector", "")).startswith("ssd") and "metric" in paper \
            and not str(paper["metric"]).startswith(("fps", "num_", "gmacs")):
        starred = "expansion" in str(paper.get("train_data", ""))
        if run.get("augmentation") == "ssd" and not starred:
            differs.append("trained with expansion (this paper row: without)")
        elif run.get("augmentation") not in (None, "ssd") and starred:
            differs.append(f"augmentation {run.get('augmentation')} (paper: with expansion)")
    return differs
