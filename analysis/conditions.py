"""The report's "Conditions": what bounds the answer, right after it.

Per setting: the dataset by its own name (a folder read in VOC or COCO layout is named after its
folder, not "voc") with its split sizes, the training budget in iterations run / planned (and
training FLOPs where the run recorded them), the width, the input size, pretrained or from
scratch, the seeds, and whether training had converged (validation AP or loss still moving at
the end). Then, as sentences: the interval method, the experiment and the overrides that differ
from its defaults, and the legend of the short setting labels (``analysis.labels``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from analysis.labels import legend
from analysis.runs import IDENTITY_OVERRIDE_KEYS, number_or_none, ok_runs, pretrained_label, read_csv
from analysis.section import Context, Section
from analysis.table import MISSING, Table

LAYOUTS = {"voc", "coco", "yolo_txt"}        # readers of a user's files: named after the folder
FLOP_KEYS = {"train_flops": 1.0, "train_tflops": 1e12, "train_pflops": 1e15}
RISING_POINTS = 0.5                          # AP points between the last two validations


def _config(run_dir) -> dict:
    try:
        config = yaml.safe_load((Path(run_dir) / ".hydra" / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return config if isinstance(config, dict) else {}


def _get(config: dict, dotted: str):
    for key in dotted.split("."):
        if not isinstance(config, dict):
            return None
        config = config.get(key)
    return config


def dataset_name(run: pd.Series, config: dict) -> str:
    """The dataset by its own name: 'BCCD (voc layout)' for a user's folder read as VOC."""
    name = str(run.get("dataset", MISSING))
    root = _get(config, "dataset.root")
    if name in LAYOUTS and isinstance(root, str) and root not in ("", "???"):
        folder = Path(root.rstrip("/")).name
        if folder.upper().startswith(("VOC", "COCO")) and folder.lower().startswith(name[:3]):
            return folder
        return f"{folder} ({name} layout)"
    return name


def convergence(run_dir) -> str:
    """'AP still rising: 10.2 → 35.1' / 'AP flat' from val_log.csv's last two points; else the
    training loss's last quarter against the quarter before; '–' without logs."""
    val = read_csv(run_dir, "val_log.csv")
    if val is not None and "map" in val and len(val.dropna(subset=["map"])) >= 2:
        before, last = (val["map"].dropna().to_numpy(float)[-2:] * 100)
        trend = "still rising" if last - before > RISING_POINTS else "falling" if before - last > RISING_POINTS \
            else "flat"
        return f"val AP {trend}: {before:.1f} → {last:.1f}"
    train = read_csv(run_dir, "train_log.csv")
    if train is not None and "loss" in train and len(train) >= 8:
        loss = train["loss"].to_numpy(float)
        quarter = len(loss) // 4
        before, last = np.nanmean(loss[-2 * quarter:-quarter]), np.nanmean(loss[-quarter:])
        return "loss still falling" if last < 0.95 * before else "loss flat"
    return MISSING


def _flops(run: pd.Series) -> str:
    for key, scale in FLOP_KEYS.items():
        value = pd.to_numeric(run.get(key), errors="coerce")
        if pd.notna(value):
            return f"{value * scale / 1e12:.3g} TFLOPs"
    return MISSING


def _iterations(rows: pd.DataFrame) -> str:
    done = sorted({number_or_none(v) for v in rows.get("train_iterations", []) if number_or_none(v) is not None})
    planned = sorted({number_or_none(v) for v in rows.get("train_iterations_planned", [])
                      if number_or_none(v) is not None})
    if not done:
        return "not trained here" if not planned else MISSING
    text = "/".join(map(str, done))
    return text + (f" of {'/'.join(map(str, planned))}" if planned and planned != done else "")


def conditions_frame(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per setting (``label``) with the columns the module doc names."""
    rows = []
    for label, of in runs.groupby("label", sort=False):
        first, config = of.iloc[0], _config(of.iloc[0]["path"])
        width = _get(config, "detector.model.width")
        input_h, input_w = number_or_none(first.get("input_h")), number_or_none(first.get("input_w"))
        ok = ok_runs(of)
        rows.append({
            "setting": label, "dataset": dataset_name(first, config),
            "train / val images": f"{number_or_none(first.get('train_images')) or MISSING} / "
                                  f"{number_or_none(first.get('val_images')) or MISSING}",
            "iterations": _iterations(of), "training FLOPs": _flops(first),
            "width": MISSING if width is None else f"{float(width):g}",
            "input": f"{input_w}×{input_h}" if input_h and input_w else MISSING,
            "weights": pretrained_label(first.get("weights_source")),
            "seeds": ", ".join(str(s) for s in sorted(ok["seed"].dropna().astype(int))) or MISSING,
            "convergence": "; ".join(dict.fromkeys(convergence(p) for p in ok["path"])) or MISSING,
        })
    return pd.DataFrame(rows)


def _overrides(runs: pd.DataFrame) -> tuple[list[str], list[str]]:
    """(experiments named, overrides every run shares that are not identity keys)."""
    per_run = [set(str(o).split()) for o in runs["overrides"].fillna("")]
    shared = set.intersection(*per_run) if per_run else set()
    experiments = sorted({o.split("=", 1)[1] for o in shared if o.startswith("experiment=")})
    keep = sorted(o for o in shared if o.split("=", 1)[0].lstrip("+~") not in IDENTITY_OVERRIDE_KEYS
                  and not o.startswith("hydra"))
    return experiments, keep


def interval_sentence(runs: pd.DataFrame) -> str:
    ok = ok_runs(runs)
    if "bootstrap_replicates" not in ok or ok["bootstrap_replicates"].isna().all():
        return "Intervals: none recorded (eval.bootstrap=0); ± is the sample std over seeds."
    first = ok.dropna(subset=["bootstrap_replicates"]).iloc[0]
    level = pd.to_numeric(first.get("bootstrap_level"), errors="coerce")
    return (f"Intervals: {level * 100 if pd.notna(level) else 95:.0f}% {first.get('bootstrap_method', 'percentile')} "
            f"bootstrap over the validation images ({int(first['bootstrap_replicates'])} replicates, "
            f"seed {first.get('bootstrap_seed', MISSING)}); ± is the sample std over seeds (ddof=1).")


def section(ctx: Context) -> Section | None:
    runs = ctx.runs
    if runs.empty:
        return None
    frame = conditions_frame(runs)
    experiments, shared = _overrides(runs)
    sentences = [interval_sentence(runs),
                 f"Experiment: {', '.join(experiments) or 'none named (the defaults of conf/config.yaml)'}; "
                 f"overrides that differ from its defaults: {' '.join(shared) or 'none'}."]
    tables = [Table("conditions", "Conditions of every setting (what bounds the answer)", frame, frame,
                    "iterations: run (of planned, where fewer); convergence: the last two validations "
                    f"(a rise of more than {RISING_POINTS} AP points: still rising), else the training loss.")]
    variants = legend(runs)
    if len(variants):
        tables.append(Table("variants", "Setting labels and the overrides they stand for", variants, variants))
    return Section("Conditions", tables, sentences=sentences)
