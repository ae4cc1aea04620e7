"""The proposal ladder (``experiment=proposal_ladder``): R-CNN -> Fast R-CNN -> Faster R-CNN
beside SSD and YOLO v1, and the seed article's two claims about proposal methods:

(f) proposal-based detectors are slower than single-shot ones. At test: every proposal-based
    detector's median latency at batch 1, end to end *with its proposals* (selective search timed
    as the speed protocol's proposal stage), is significantly above every single-shot one's
    (interval of the difference of medians excludes 0). In training: training seconds
    (R-CNN's SVM phase included), one timing per run and no interval, so stated beside, not tested.
(g) proposal methods compromise accuracy: every proposal-based detector's COCO AP is
    significantly below every single-shot one's (paired bootstrap, Holm p < 0.05). Contradicted
    when any proposal-based detector is significantly above a single-shot one.

Rungs are told by detector name (``RUNGS``). Both tables are left out of a sweep without R-CNN or
Fast R-CNN.
"""
from __future__ import annotations

import re

import pandas as pd

from analysis.claims import (
    CONTRADICTED,
    NOT_TESTABLE,
    SUPPORTED,
    UNRESOLVED,
    accuracy_text,
    side,
    speed,
    speed_text,
    verdict,
    with_holm,
)
from analysis.runs import FAMILY_NAME_RULES, ok_runs
from analysis.section import Context, Section
from analysis.significance import latency_samples, metric_of, paired_stat, replicates_by_seed
from analysis.table import Table
from analysis.timing_trust import BUSY_MARK, BUSY_NOTE, TRAIN, busy, busy_runs, trusted, without_busy_speed

#: rung -> detector-name pattern, in the ladder's order.
RUNGS = {"R-CNN": r"^rcnn", "Fast R-CNN": r"(^|_)fast_rcnn", "Faster R-CNN": r"faster_rcnn|frcnn",
         "SSD": FAMILY_NAME_RULES["ssd"], "YOLO v1": FAMILY_NAME_RULES["yolo"]}
PROPOSAL_BASED, SINGLE_SHOT = ("R-CNN", "Fast R-CNN", "Faster R-CNN"), ("SSD", "YOLO v1")
COLUMNS = {"map": "AP %", "map_small": "APs %", "latency_ms_p50_b1": "end-to-end ms (b1, with proposals)",
           "latency_ms_p50_without_proposals_b1": "ms without proposals", "proposal_ms_b1": "proposal ms (bench)",
           "proposal_seconds_per_image": "selective search s/image (dataset)", "proposals_per_image": "proposals/image",
           "proposal_images_short": "images short", "proposal_images_empty": "images empty",
           "train_seconds": "training s", "num_candidates": "boxes scored"}


def rung(detector: str) -> str | None:
    return next((name for name, pattern in RUNGS.items() if re.search(pattern, str(detector))), None)


def _mean(rows: pd.DataFrame, key: str) -> float:
    return float(pd.to_numeric(rows[key], errors="coerce").mean()) if key in rows else float("nan")


def ladder_table(runs: pd.DataFrame) -> Table:
    """One row per (dataset, group), in ladder order: means over seeds."""
    ok = without_busy_speed(ok_runs(runs))   # a group's busy timings out of its means when it has quiet ones
    ok["train_busy"] = busy(ok, TRAIN)
    if "train_time_s" in ok:
        total = ok["train_time_total_s"] if "train_time_total_s" in ok else ok["train_time_s"]
        ok["train_seconds"] = pd.to_numeric(total, errors="coerce").fillna(pd.to_numeric(ok["train_time_s"],
                                                                                         errors="coerce"))
        for _, rows_of in ok.groupby(["dataset", "group"]):
            if (~rows_of["train_busy"]).any():
                ok.loc[rows_of.index[rows_of["train_busy"]], "train_seconds"] = float("nan")
    rows, marks = [], []
    for (dataset, group), of_group in ok.groupby(["dataset", "group"], sort=True):
        name = rung(of_group["detector"].iloc[0])
        if name is None:
            continue
        row = {"dataset": dataset, "rung": name, "detector": group, "seeds": len(of_group)}
        for key, label in COLUMNS.items():
            value = _mean(of_group, key)
            row[label] = 100 * value if key in ("map", "map_small") else value
        if pd.isna(row[COLUMNS["latency_ms_p50_without_proposals_b1"]]):   # no proposal stage: the same
            row[COLUMNS["latency_ms_p50_without_proposals_b1"]] = row[COLUMNS["latency_ms_p50_b1"]]
        rows.append(row)
        marks.append({"speed": bool(of_group["speed_busy"].all()), "train": bool(of_group["train_busy"].all()),
                      "proposals": bool(busy(of_group, "proposal_time_reliable").any())})
    data = pd.DataFrame(rows)
    shown = data.round(2)
    for i, mark in enumerate(marks):   # timings only a busy machine gave: kept, marked
        labels = {"speed": [COLUMNS[k] for k in ("latency_ms_p50_b1", "latency_ms_p50_without_proposals_b1",
                                                 "proposal_ms_b1")],
                  "train": [COLUMNS["train_seconds"]], "proposals": [COLUMNS["proposal_seconds_per_image"]]}
        for kind, columns in labels.items():
            if mark[kind]:
                for column in columns:
                    shown[column] = shown[column].astype(object)
                    shown.loc[i, column] = f"{shown.loc[i, column]}{BUSY_MARK}"
    if len(data):
        data["order"] = data["rung"].map(list(RUNGS).index)
        order = data.sort_values(["dataset", "order"]).index
        data, shown = data.loc[order].drop(columns="order"), shown.loc[order]
    note = ("Latency: median ms per image at batch 1 on the bench images, the proposal "
            "stage (selective search, computed afresh) included; 'selective search s/image' is its mean time "
            "on the dataset's images, one core each. Training s: gradient iterations (+ R-CNN's SVM phase).")
    if any(any(m.values()) for m in marks):
        note += f" {BUSY_NOTE}"
    return Table("ladder", "The proposal ladder (AP, APs, end-to-end latency with proposals, training seconds)",
                 data, shown, note)


def ladder_claims(runs: pd.DataFrame) -> Table:
    """Claims (f) and (g) of the seed article, tested like claims (a)-(e) (``analysis.claims``):
    accuracy as paired A − B differences with seeds inside the interval, Holm over the claim's own
    comparisons; latency as the difference of medians with its bootstrap interval."""
    ok = ok_runs(runs)
    latency, busy = latency_samples(runs), busy_runs(runs)
    by_seed = replicates_by_seed(ok)
    train_busy = busy_runs(runs, TRAIN)
    rows = []
    for dataset, of_dataset in ok.groupby("dataset", sort=True):
        groups = dict(zip(of_dataset["group"], of_dataset["detector"]))
        proposal = [g for g, d in groups.items() if rung(d) in PROPOSAL_BASED]
        single = [g for g, d in groups.items() if rung(d) in SINGLE_SHOT]
        if not proposal or not single:
            continue
        quiet = trusted(of_dataset, TRAIN)   # training seconds taken on a busy machine are no timing
        seconds = quiet.assign(s=pd.to_numeric(quiet.get("train_time_total_s", quiet.get("train_time_s")),
                                               errors="coerce").fillna(pd.to_numeric(quiet.get("train_time_s"),
                                                                                     errors="coerce")))
        seconds = seconds.groupby("group")["s"].mean().to_dict()
        untimed = [run for g in proposal + single if g not in seconds for run in train_busy.get((dataset, g), [])]
        sides, evidence, train_sides, train_text = [], [], [], []
        pairs = [(p, s) for p in proposal for s in single]
        accuracy = with_holm([paired_stat(by_seed.get((dataset, s), {}), by_seed.get((dataset, p), {}),
                                          metric_of("map")) for p, s in pairs])   # single − proposal
        acc_sides = [side(r) for r in accuracy]
        acc_text = [accuracy_text(s, p, r) for (p, s), r in zip(pairs, accuracy)]
        seeds = min((r.get("seeds", 0) for r in accuracy), default=0)
        for p, s in pairs:
            timing = speed(latency, dataset, s, p, busy)
            sides.append(timing["side"])
            evidence.append(speed_text(s, p, timing, latency, dataset))
            train_sides.append(1 if seconds.get(p, 0) > seconds.get(s, 0) else -1)
            nan = float("nan")
            train_text.append(f"{p} {seconds.get(p, nan):.0f} s vs {s} {seconds.get(s, nan):.0f} s")
        names = ", ".join(proposal + single)
        rows += [
            {"dataset": dataset, "claim": "(f) proposal-based slower than single-shot at test (with proposals)",
             "detectors": names, "evidence": " | ".join(evidence),
             "verdict": NOT_TESTABLE if any("busy machine" in e for e in evidence) else _all_or_any(sides)},
            {"dataset": dataset, "claim": "(f) proposal-based slower than single-shot in training",
             "detectors": names, "evidence": (f"training time of run {', '.join(untimed)} taken on a busy "
                                              "machine (train_time_reliable: false) | " if untimed else "")
             + "; ".join(train_text),
             "verdict": NOT_TESTABLE if untimed else ("holds" if all(x > 0 for x in train_sides) else "does not hold")
             + " (one timing per run, no interval: not tested)"},
            {"dataset": dataset, "claim": "(g) proposal methods compromise accuracy", "detectors": names,
             "evidence": " | ".join(acc_text),
             "verdict": verdict(_combined(acc_sides), seeds, any("problem" in r for r in accuracy))}]
    data = pd.DataFrame(rows, columns=["dataset", "claim", "detectors", "evidence", "verdict"])
    return Table("ladder_claims", "Ladder claims (f) and (g) about proposal methods, tested on this sweep", data,
                 data.copy(),
                 "(f) at test: difference of median latencies at batch 1, 95% bootstrap interval, proposals included; "
                 "(g): COCO AP, single-shot − proposal-based, paired (seeds inside the interval), Holm over its "
                 "claim's comparisons, p < 0.05; one seed: provisional. Supported only when every proposal-based "
                 "detector differs from every single-shot one in the claimed direction; contradicted by any "
                 "significant difference the other way.")


def _all_or_any(sides: list[int]) -> str:
    return {-1: CONTRADICTED, 1: SUPPORTED, 0: UNRESOLVED}[_combined(sides)]


def _combined(sides: list[int]) -> int:
    """-1 when any comparison goes the other way, +1 when every one goes the claimed way, else 0."""
    return -1 if -1 in sides else 1 if sides and all(x == 1 for x in sides) else 0


def section(ctx: Context) -> Section | None:
    """The ladder table and claims (f), (g); None for a folder without R-CNN or Fast R-CNN runs."""
    runs = ctx.labelled
    if not len(runs) or not any(rung(d) in ("R-CNN", "Fast R-CNN") for d in runs.get("detector", [])):
        return None
    return Section("The proposal ladder", [ladder_table(runs), ladder_claims(runs)])
