"""The report's summary tables of a folder of runs: the runs and their status (``runs``), accuracy
by object size (``accuracy``), speed (``speed``), per-class AP (``per_class``) and the error
breakdown (``errors``). Each is a ``table.Table``: numbers (written as CSV) and the same numbers
formatted "mean ± std" over seeds (written as Markdown and LaTeX, printed).

Averages are over the runs that finished (``status == 'ok'``) of one setting (``group``:
detector and the overrides that differ, see ``runs.py``) on one dataset; std is the sample
standard deviation (ddof=1), absent with one seed. Accuracy is shown in % (metrics.json holds
fractions, the CSV keeps them as written).
"""
from __future__ import annotations

import pandas as pd

from analysis.runs import error_summary, ok_runs
from analysis.stats import CALIBRATED_FROM_IMAGES, seed_image_interval
from analysis.table import MISSING, Table, mean_std
from analysis.timing_trust import BUSY_MARK, BUSY_NOTE, without_busy_speed

# metrics.json key -> (column label, scale for display, decimals)
ACCURACY_COLUMNS = {
    "map": ("AP", 100, 1), "map_50": ("AP50", 100, 1), "map_75": ("AP75", 100, 1),
    "map_small": ("APs", 100, 1), "map_medium": ("APm", 100, 1), "map_large": ("APl", 100, 1),
    "mar_100": ("AR100", 100, 1), "voc07_map": ("VOC07 mAP", 100, 1),
}
SPEED_COLUMNS = {
    "fps_b1": ("img/s b1", 1, 1), "fps_b8": ("img/s b8", 1, 1),
    "latency_ms_p50_b1": ("latency p50 b1 (ms)", 1, 1),
    # R-CNN / Fast R-CNN: the latency above includes selective search (the speed protocol's proposal stage)
    "proposal_ms_b1": ("proposals b1 (ms)", 1, 1),
    "latency_ms_p50_without_proposals_b1": ("latency p50 b1 without proposals (ms)", 1, 1),
    "gmacs": ("GMACs", 1, 2),
    "params": ("params (M)", 1e-6, 2), "num_candidates": ("boxes scored", 1, 0),
    "boxes_kept_b1": ("boxes kept b1", 1, 1),
    "candidates_scored_b1": ("boxes scored b1 (measured)", 1, 1),
}


def _interval(ok: pd.DataFrame, key: str, row: dict, scale: float, decimals: int) -> str:
    """' [low, high]' into ``row`` and as text; '' when no run holds one. One seed: the run's
    image-bootstrap interval. Two or more: the interval of the mean over seeds with seed-to-seed
    variance inside (``stats.seed_image_interval``: t over the seeds' values plus the image variance,
    the mean of ((high − low) / 3.92)² over the seeds). A † marks an interval from fewer images
    than ``stats.CALIBRATED_FROM_IMAGES`` (where the calibrated default covered < 90%)."""
    if f"{key}_ci_low" not in ok:
        return ""
    lows = pd.to_numeric(ok[f"{key}_ci_low"], errors="coerce")
    highs = pd.to_numeric(ok[f"{key}_ci_high"], errors="coerce")
    values = pd.to_numeric(ok[key], errors="coerce")
    defined = ~(lows.isna() | highs.isna() | values.isna())
    if defined.sum() >= 2:
        image_var = float((((highs - lows)[defined] / 3.92) ** 2).mean())
        low, high = seed_image_interval(values[defined].to_numpy(), image_var=image_var)
    else:
        low, high = lows.mean(), highs.mean()
    row[f"{key}_ci_low"], row[f"{key}_ci_high"] = low, high
    if pd.isna(low) or pd.isna(high):
        return ""
    images = pd.to_numeric(ok["eval_images"], errors="coerce") if "eval_images" in ok else pd.Series(dtype=float)
    mark = "†" if len(images.dropna()) and images.min() < CALIBRATED_FROM_IMAGES else ""
    return f" [{low * scale:.{decimals}f}, {high * scale:.{decimals}f}]{mark}"


def summarise(runs: pd.DataFrame, columns: dict, name: str, title: str) -> Table:
    """Mean and std over seeds of each metric in ``columns`` (key -> (label, scale,
    decimals)), one row per (group, dataset); metrics no run holds are left out."""
    present = [k for k in columns if k in runs and runs[k].notna().any()]
    rows, shown = [], []
    for (group, dataset), runs_of in runs.groupby(["group", "dataset"], sort=True):
        ok = ok_runs(runs_of)
        row = {"group": group, "detector": runs_of["detector"].iat[0], "dataset": dataset,
               "variant": runs_of["variant"].iat[0], "seeds": len(ok),
               "failed": int((runs_of["status"] != "ok").sum())}
        pretty = {"detector": group, "dataset": dataset, "seeds": len(ok)}
        if row["failed"]:
            pretty["failed"] = row["failed"]
        for key in present:
            values = pd.to_numeric(ok[key], errors="coerce").dropna()
            row[f"{key}_mean"], row[f"{key}_std"] = values.mean(), values.std(ddof=1)
            row[f"{key}_n"] = len(values)
            label, scale, decimals = columns[key]
            pretty[label] = mean_std(row[f"{key}_mean"] * scale, row[f"{key}_std"] * scale,
                                     decimals) + _interval(ok, key, row, scale, decimals)
        rows.append(row)
        shown.append(pretty)
    data, shown = pd.DataFrame(rows), pd.DataFrame(shown)
    if "failed" in shown:
        shown["failed"] = shown["failed"].fillna(0).astype(int)
    missing = [columns[k][0] for k in columns if k not in present]
    note = f"Not measured by any run: {', '.join(missing)}." if missing else ""
    return Table(name, title, data, shown, note)


def interval_note(runs: pd.DataFrame) -> str:
    """Which interval method the runs used (``interval_method``; older folders: ``bootstrap_method``)
    and the † footnote when some interval came from fewer images than the calibration covers."""
    ok = ok_runs(runs)
    methods = set()
    for key in ("interval_method", "bootstrap_method"):
        if key in ok:
            methods |= set(ok[key].dropna().astype(str))
            if methods:
                break
    note = f"Interval method: {', '.join(sorted(methods)) or 'not recorded'}."
    if "debiased" in methods:
        note += (" Debiased: the image bootstrap's spread about the point, less AP's own small-sample bias "
                 "(measured on random halves of the images; AP on N images over-states the population's).")
    images = pd.to_numeric(ok["eval_images"], errors="coerce").dropna() if "eval_images" in ok else []
    if len(images) and images.min() < CALIBRATED_FROM_IMAGES:
        note += (f" †: scored on fewer than {CALIBRATED_FROM_IMAGES} images, where the calibrated interval covered "
                 "the true AP less than 90% of the time on a simulated population "
                 "(benchmarks/results/interval_coverage.md): read it as too narrow.")
    return note


def accuracy_table(runs: pd.DataFrame) -> Table:
    table = summarise(runs, ACCURACY_COLUMNS, "accuracy",
                      "Accuracy by object size (COCO AP and AR, VOC07 11-point mAP; %, "
                      "mean ± std over seeds [95% interval: one seed, the image bootstrap; two or more, of the "
                      "mean over seeds with seed-to-seed variance inside]")
    table.note = " ".join(x for x in (table.note, interval_note(runs)) if x)
    return table


#: runtimes other than PyTorch whose speed keys a run may hold as ``<runtime>_<key>`` (bench.runtimes)
RUNTIMES = ("onnxruntime", "openvino")


def speed_table(runs: pd.DataFrame) -> Table:
    """Speed means per group over its quiet runs (``timing_trust.without_busy_speed``); a group timed
    only on a busy machine keeps its numbers, marked ‡ in the shown table and ``speed_busy`` in the
    data (its point is drawn hollow)."""
    runs = without_busy_speed(runs)
    table = summarise(runs, SPEED_COLUMNS, "speed",
                      "Speed (images/s at batch 1 and 8, latency, GMACs per image, "
                      "parameters, boxes scored before NMS and kept after; mean ± std)")
    if len(table.data):
        flags = ok_runs(runs).groupby(["group", "dataset"])["speed_busy"].agg(lambda b: bool(len(b)) and b.all())
        table.data["speed_busy"] = [bool(flags.get((g, d), False)) for g, d in
                                    zip(table.data["group"], table.data["dataset"])]
        if table.data["speed_busy"].any():
            table.shown["detector"] = [f"{name} {BUSY_MARK}" if b else name
                                       for name, b in zip(table.shown["detector"], table.data["speed_busy"])]
            table.note = " ".join(x for x in (table.note, BUSY_NOTE, "Groups with a quiet run average their "
                                                "quiet runs only.") if x)
    devices = runs.groupby(["group", "dataset"], sort=True)["device"].agg(
        lambda d: ", ".join(sorted(set(d.dropna().astype(str))))) if "device" in runs else None
    if devices is not None and len(table.shown):
        table.shown.insert(2, "device", devices.to_numpy())
    return with_runtime_rows(table, runs)


def with_runtime_rows(table: Table, runs: pd.DataFrame) -> Table:
    """When runs hold runtime rows (``onnxruntime_fps_b1`` ...), a ``runtime`` column ("pytorch"
    for the protocol's own rows) and one row per (group, dataset, runtime) after them: the same
    columns, from the runtime's keys (GMACs and parameters are the network's, shared)."""
    present = [r for r in RUNTIMES if f"{r}_fps_b1" in runs and runs[f"{r}_fps_b1"].notna().any()]
    if not present or table.data.empty:
        return table
    data, shown = [table.data.assign(runtime="pytorch")], [table.shown.assign(runtime="pytorch")]
    for runtime in present:
        prefixed = {f"{runtime}_{k}": k for k in SPEED_COLUMNS if f"{runtime}_{k}" in runs}
        of_runtime = runs[runs[f"{runtime}_fps_b1"].notna()].drop(columns=list(prefixed.values()), errors="ignore")
        part = summarise(of_runtime.rename(columns=prefixed), SPEED_COLUMNS, table.name, table.title)
        data.append(part.data.assign(runtime=runtime))
        shown.append(part.shown.assign(runtime=runtime))
    data, shown = pd.concat(data, ignore_index=True), pd.concat(shown, ignore_index=True)
    shown.insert(1, "runtime", shown.pop("runtime"))
    note = (table.note + " " if table.note else "") + ("Runtime rows: the network exported to ONNX and run by "
                                                       "the runtime (fp32), pre/post-processing in PyTorch.")
    return Table(table.name, table.title, data, shown, note)


DATA_COLUMNS = ["classes", "split_id", "train_images", "val_images", "val_objects", "data_dropped",
                "data_skipped", "data_fixed", "decode_failures"]


def runs_table(runs: pd.DataFrame) -> Table:
    """Every run with its status; failed runs' errors in full in the CSV, cut in the view."""
    data = runs[["run", "detector", "dataset", "variant", "seed", "status", "error"]].copy()
    for key in DATA_COLUMNS:  # what the run's data was (experiments/data/prepare.py), when known
        if key in runs and runs[key].notna().any():
            data[key] = runs[key]
    shown = data.copy()
    shown["seed"] = shown["seed"].astype(object).where(shown["seed"].notna(), MISSING)
    reasons = runs["status_reason"] if "status_reason" in runs else [None] * len(runs)
    shown["error"] = [error_summary(e if s != "incomplete" or pd.isna(why) else why)
                      if s != "ok" else "" for e, s, why in zip(shown["error"], shown["status"], reasons)]
    n_bad = int((runs["status"] != "ok").sum())
    return Table("runs", f"Runs ({len(runs)}; {n_bad} not ok)", data, shown)


def per_class_table(per_class: pd.DataFrame) -> Table:
    """``per_class``: rows of every ok run's ``per_class.csv`` with ``group`` and ``dataset``
    added -> class x group, mean AP (%) over seeds."""
    if per_class.empty:
        return Table("per_class", "Per-class AP", per_class, per_class, "No per_class.csv found.")
    data = per_class.pivot_table(index=["dataset", "class_name"], columns="group",
                                 values="ap", aggfunc="mean", sort=False)
    shown = (data * 100).map(lambda v: MISSING if pd.isna(v) else f"{v:.1f}").reset_index()
    return Table("per_class", "Per-class AP (COCO AP@[.5:.95], %, mean over seeds)",
                 data.reset_index(), shown)


def error_table(errors: pd.DataFrame) -> Table:
    """``errors``: every run's error breakdown (rows of ``errors.breakdown`` with ``group``,
    ``dataset``, ``bucket`` columns) -> per group and bucket, mean over seeds; cells show
    'dAP50 (count)'."""
    if errors.empty:
        return Table("errors", "Error breakdown", errors, errors, "No run had detections.")
    errors = errors[(errors["num_gt"] > 0) | (errors["num_dt"] > 0)]    # empty buckets out
    data = errors.groupby(["group", "dataset", "bucket"], sort=False).mean(numeric_only=True)
    data = data.reset_index()
    shown = data[["group", "dataset", "bucket"]].rename(columns={"group": "detector"})
    shown["AP50"] = data["ap50"].round(1)
    for kind in ("cls", "loc", "both", "dupe", "bkg", "missed"):
        shown[kind] = [f"+{d:.1f} ({n:.0f})" if pd.notna(d) else MISSING
                       for d, n in zip(data[f"dap_{kind}"], data[kind])]
    return Table("errors", "Error breakdown, TIDE-style: AP50 points gained if fixed "
                 "(mean count over seeds)", data, shown,
                 "Kinds: cls wrong class; loc box off (0.1 ≤ IoU < 0.5); both; dupe duplicate; "
                 "bkg background (IoU < 0.1); missed ground truth. See analysis/errors.py.")
