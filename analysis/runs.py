"""Read a folder of finished runs (one job, a Hydra sweep, nested sweeps) into one tidy table.

A run is any folder holding a ``metrics.json`` (the table "What a run writes" in README.md), or
a Hydra job folder (``.hydra/config.yaml``) that never wrote one: that run is listed as
``incomplete``. ``load_runs`` gives one row per run: identity columns (``detector``,
``dataset``, ``seed``, ``status``, ``error``, ``overrides``, ``variant``, ``group``, ``run``,
``path``) and every number ``metrics.json`` holds. Failed runs stay in the table with their
status and error; ``ok_runs`` selects the runs whose numbers can be averaged. A run that trained
fewer iterations than planned is ``incomplete`` (``mark_incomplete``), never averaged.

``variant`` holds the command-line overrides that differ between runs of the folder, other than
the identity ones (detector, dataset, seed, ...): runs with the same detector, dataset and
variant are seeds of one setting, and ``group`` names that setting in tables and plots.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from omegaconf import OmegaConf

from analysis.table import MISSING

IDENTITY_COLUMNS = ["group", "detector", "dataset", "variant", "seed", "status", "error",
                    "overrides", "eval_split", "run", "path"]
# Overrides that name a run's identity, or change nothing a table compares.
IDENTITY_OVERRIDE_KEYS = {"detector", "dataset", "seed", "experiment", "device", "resume",
                          "stages"}
# metrics.json's ``family`` (the detector's class just below ``Detector``) -> the family claims name
FAMILIES = {"SSD": "ssd", "YOLO": "yolo", "FasterRCNN": "frcnn"}
# For run folders without ``family`` (an older detbench's metrics.json): the detector-name rule
FAMILY_NAME_RULES = {"ssd": r"(^|_)ssd(300|512)", "yolo": r"yolov1|fast_yolo", "frcnn": r"faster_rcnn|frcnn"}
SCRATCH = "random"   # what a detector records as ``weights_source`` when nothing was loaded


def number_or_none(value) -> int | None:
    """A metrics.json count as an int; None when absent or not a number."""
    number = pd.to_numeric(value, errors="coerce")
    return None if pd.isna(number) else int(number)


def mark_incomplete(row: dict) -> dict:
    """A metrics.json row whose training stopped before its plan -> status ``incomplete`` and
    ``status_reason`` saying how far it got (rows written as ``incomplete`` keep their reason)."""
    run, planned = number_or_none(row.get("train_iterations")), number_or_none(row.get("train_iterations_planned"))
    if row.get("status") == "ok" and stopped_short(row):
        row["status"] = "incomplete"
        row.setdefault("status_reason", "training stopped by train.max_time_s after "
                       f"{run if run is not None else '?'} of "
                       f"{planned if planned is not None else '?'} iterations")
    return row


def stopped_short(row) -> bool:
    """Trained fewer iterations than planned; without a plan (older metrics.json), stopped by time."""
    run, planned = number_or_none(row.get("train_iterations")), number_or_none(row.get("train_iterations_planned"))
    if run is not None and planned is not None:
        return run < planned
    return row.get("train_stopped_on_time") is True


def pretrained_label(source) -> str:
    """``weights_source`` -> 'from scratch' | 'pretrained' | '–' (not recorded)."""
    if source is None or (isinstance(source, float) and pd.isna(source)) or source == "":
        return MISSING
    return "from scratch" if str(source) == SCRATCH else "pretrained"


def family_of(family, detector: str) -> tuple[str | None, bool]:
    """(family, told by name): 'ssd', 'yolo', 'frcnn' or None (another family, e.g. torchvision's
    single-shot models) from metrics.json's ``family``; without one, from the detector's name
    (``FAMILY_NAME_RULES``), and the second value says so."""
    if isinstance(family, str) and family:
        return FAMILIES.get(family), False
    by_name = next((f for f, rule in FAMILY_NAME_RULES.items() if re.search(rule, str(detector))), None)
    return by_name, True


def find_run_dirs(runs_dir: Path) -> list[Path]:
    """Every folder under ``runs_dir`` (itself included) with a ``metrics.json`` or a
    ``.hydra/config.yaml``, sorted by path; the report's own folder is skipped."""
    runs_dir = Path(runs_dir)
    found = {p.parent for p in runs_dir.rglob("metrics.json")}
    found |= {p.parent.parent for p in runs_dir.rglob(".hydra/config.yaml")}
    return sorted(d for d in found if "report" not in d.relative_to(runs_dir).parts[:1])


def _read_yaml(path: Path):
    try:
        return yaml.safe_load(path.read_text()) if path.is_file() else None
    except (OSError, yaml.YAMLError):
        return None


def _overrides_list(value) -> list[str]:
    """``metrics.json``'s ``overrides`` as written (list, dict or one string) -> ["k=v", ...]."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return []
    if isinstance(value, dict):
        return [f"{k}={v}" for k, v in value.items()]
    if isinstance(value, str):
        return value.split()
    return [str(v) for v in value]


def _override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _eval_split(metrics: dict, config) -> str | None:
    """The split a run was evaluated on: metrics.json's ``split``, the experiment's
    ``paper.split``, VOC's ``val_years`` + ``val_set``, COCO's ``val_annotations`` file, or
    the val dataset's ``split`` / ``image_set`` (interpolations resolved where they can be)."""
    def get(key):
        try:
            value = OmegaConf.select(config, key, default=None, throw_on_missing=False)
            return OmegaConf.to_container(value, resolve=True) \
                if OmegaConf.is_config(value) else value
        except Exception:   # an interpolation Hydra alone resolves: treat as absent
            return None

    years, val_set = get("dataset.val_years"), get("dataset.val_set")
    if years and val_set:
        years = years if isinstance(years, list) else [years]
        return "VOC" + "+".join(str(y) for y in years) + f" {val_set}"
    annotations = get("dataset.val_annotations")
    for value in (metrics.get("split"), get("paper.split"),
                  Path(annotations).stem.split("_")[-1] if isinstance(annotations, str) else None,
                  get("dataset.val.split"), get("dataset.val.image_set"),
                  get("dataset.val_split"), get("dataset.split")):
        if isinstance(value, (str, int)) and str(value):
            return str(value)
    return None


def read_run(run_dir: Path) -> dict:
    """One run folder -> one flat dict: ``metrics.json`` as written, with identity filled in
    from ``.hydra/config.yaml`` / ``overrides.yaml`` where ``metrics.json`` lacks it.
    Never raises: an unreadable ``metrics.json`` gives a row with status ``failed``."""
    run_dir = Path(run_dir)
    metrics_path = run_dir / "metrics.json"
    if metrics_path.is_file():
        try:
            row = json.loads(metrics_path.read_text())
            if not isinstance(row, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as exc:
            row = {"status": "failed", "error": f"{metrics_path}: unreadable ({exc})"}
    else:
        row = {"status": "incomplete",
               "error": "no metrics.json: the job crashed before writing it, or still runs"}
    config = _read_yaml(run_dir / ".hydra" / "config.yaml") or {}
    config = config if isinstance(config, dict) else {}
    for key in ("detector", "dataset"):
        section = config.get(key)
        if row.get(key) is None and isinstance(section, dict):
            row[key] = section.get("name")
    if row.get("seed") is None:
        row["seed"] = config.get("seed")
    if row.get("eval_split") is None:
        row["eval_split"] = _eval_split(row, OmegaConf.create(config))
    if not row.get("overrides"):
        row["overrides"] = _read_yaml(run_dir / ".hydra" / "overrides.yaml") or []
    row["overrides"] = " ".join(_overrides_list(row["overrides"]))
    row.setdefault("status", "ok")
    mark_incomplete(row)
    row["path"] = str(run_dir)
    return row


def _variants(overrides: pd.Series) -> pd.Series:
    """Per run, the overrides whose values differ across the folder (identity keys aside)."""
    per_run = [{_override_key(o): o for o in s.split()} for s in overrides]
    keys = {k for d in per_run for k in d if k not in IDENTITY_OVERRIDE_KEYS
            and not k.startswith("hydra")}
    varying = sorted(k for k in keys if len({d.get(k) for d in per_run}) > 1)
    return pd.Series([" ".join(d[k] for k in varying if k in d) for d in per_run],
                     index=overrides.index, dtype=object)


def load_runs(runs_dir: Path) -> pd.DataFrame:
    """Every run under ``runs_dir`` -> DataFrame, one row per run, identity columns first.
    ``run`` is the folder relative to ``runs_dir``; an empty folder gives an empty table."""
    runs_dir = Path(runs_dir)
    rows = [read_run(d) for d in find_run_dirs(runs_dir)]
    if not rows:
        return pd.DataFrame(columns=IDENTITY_COLUMNS)
    df = pd.DataFrame(rows)
    for column in ("detector", "dataset", "error", "eval_split"):
        if column not in df:
            df[column] = None
    df["detector"] = df["detector"].fillna("unknown").astype(str)
    df["dataset"] = df["dataset"].fillna("unknown").astype(str)
    df["seed"] = pd.to_numeric(df["seed"], errors="coerce").astype("Int64")
    df["run"] = [str(Path(p).relative_to(runs_dir)) or "." for p in df["path"]]
    df["variant"] = _variants(df["overrides"])
    df["group"] = [_group_name(r) for r in df.itertuples()]
    df = df.sort_values(["detector", "dataset", "variant", "seed", "run"], na_position="last")
    rest = [c for c in df.columns if c not in IDENTITY_COLUMNS]
    return df[IDENTITY_COLUMNS + rest].reset_index(drop=True)


def _group_name(row) -> str:
    return row.detector + (f" [{row.variant}]" if row.variant else "")


def error_summary(error, width: int = 160) -> str:
    """One line of a run's error: a traceback's last line, else the message's first line (with
    the next one when it ends in ':', as a wrapper's "Error in call to target ...:" does)."""
    if error is None or (isinstance(error, float) and np.isnan(error)):
        return ""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    if not lines:
        return ""
    if lines[0].startswith("Traceback"):
        return lines[-1][:width]
    return (" ".join(lines[:2]) if lines[0].endswith(":") else lines[0])[:width]


def ok_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs that finished (``status == 'ok'``)."""
    return runs[runs["status"] == "ok"]


def read_csv(run_dir: Path, name: str) -> pd.DataFrame | None:
    """``run_dir/name`` as a DataFrame, or None when absent or unreadable."""
    path = Path(run_dir) / name
    try:
        return pd.read_csv(path) if path.is_file() else None
    except (OSError, ValueError, pd.errors.ParserError):
        return None


def read_pr_curves(run_dir: Path) -> dict | None:
    """``pr_curves.npz`` -> dict of arrays (``precision`` [T, R, K, A, M], ``recall``
    [T, K, A, M], ``iou_thresholds`` [T], ``recall_thresholds`` [R], ``class_names``,
    ``area_names``), or None when absent or unreadable."""
    path = Path(run_dir) / "pr_curves.npz"
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError):
        return None


def read_json(path: Path):
    """A JSON file's content, or None when absent or unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
