"""What the runner does with a run's datasets before training: check them, scan their images,
and record what they are, so a run on wrong data stops in seconds and a run on right data says
what it used.

``prepare_datasets(train_set, val_set, out)``:

1. scans every image header of both splits (``experiments.data.scan``) and applies each
   dataset's ``bad_images`` policy (error / skip / repair);
2. checks that both splits share one class map (names and category ids, label by label) and
   writes it to ``class_map.json``;
3. stops with :class:`DataError` when the train split has no kept box (listing the classes
   found in the annotations and why boxes were dropped) or when a class the user named has no
   box in it (a typo: listing every class the train annotations hold), and with :class:`NoObjectsError` when
   the validation split has no object to evaluate;
4. writes ``split.json`` (how each split was made, and its ids) and returns the metrics.json
   entries: ``classes``, ``num_classes``, ``class_map``, ``split_id`` (a fingerprint of the
   ids, part of the run's identity), ``split_source``, ``train_images``, ``val_images``,
   ``val_objects``, ``data_dropped`` / ``data_skipped`` / ``data_fixed`` (reason counts as
   text, for the report's runs table) and ``data`` (the details per split).

After the stages, ``decode_failures(out)`` counts the images whose full decode failed during
training or evaluation (skipped under ``bad_images: skip | repair``; their DataLoader workers
append them to ``bad_images.log``).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

from experiments.data.box_policy import is_drop_reason
from experiments.data.scan import apply_bad_image_policy, scan_images
from experiments.data.splits import split_fingerprint
from experiments.data.stats import dataset_stats

log = logging.getLogger(__name__)
DECODE_LOG = "bad_images.log"


class DataError(ValueError):
    """The data cannot make a meaningful run (no boxes to learn, class maps that disagree)."""


class NoObjectsError(DataError):
    """The validation split has no object to evaluate (AP would be NaN)."""


def _counts_text(counts: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items()) if v)


def class_map(dataset) -> list[dict]:
    """[{label, name, category_id}] of a dataset, label 1..C."""
    ids = getattr(dataset, "label_to_category_id", {})
    return [{"label": i + 1, "name": name, "category_id": int(ids.get(i + 1, i + 1))}
            for i, name in enumerate(dataset.class_names)]


def _split_summary(dataset, name: str) -> dict:
    """Counts of one split (Targets only: no image is decoded)."""
    if hasattr(dataset, "records"):
        stats = dataset_stats(dataset)
    else:  # generated data: nothing is skipped or dropped
        stats = {"images": len(dataset), "kept_boxes": None, "dropped_by_reason": {},
                 "skipped_images": {}, "per_class": {}}
    counts = getattr(getattr(dataset, "skips", None), "counts", {})
    fixed = {k: v for k, v in counts.items() if not is_drop_reason(k) and not k.startswith("image_")}
    objects = sum(stats["per_class"].values()) if stats["kept_boxes"] is not None else None
    return {"split": name, "images": stats["images"], "kept_boxes": stats["kept_boxes"],
            "objects": objects,
            "dropped_by_reason": stats["dropped_by_reason"],
            "skipped_images": stats["skipped_images"], "fixed": dict(sorted(fixed.items())),
            "per_class": stats["per_class"], "split_info": getattr(dataset, "split_info", None)}


def _found_classes(dataset) -> str:
    examples = getattr(dataset, "skips", None)
    unknown = examples.examples.get("unknown_class", []) if examples is not None else []
    return "; ".join(unknown) or "none recorded"


def classes_in_train(train_set, per_class: dict[str, int]) -> str:
    """Every class the train annotations hold, with its box count: those kept and those left
    out as outside the class list, e.g. ``RBC 310, WBC 40, Platelets 52 (not in the list)``."""
    skips = getattr(train_set, "skips", None)
    unknown = getattr(skips, "unknown_classes", {}) if skips is not None else {}
    kept = [f"{name} {n}" for name, n in per_class.items() if n]
    return ", ".join(kept + [f"{name} {n} (not in the list)" for name, n in sorted(unknown.items())]) or "none"


def check_given_classes(train_set, per_class: dict[str, int]) -> None:
    """A class the user named (``dataset.class_names``) with no box in the train split is a
    typo or a wrong dataset, never a class to report AP over: DataError listing what is there."""
    empty = [name for name, n in per_class.items() if n == 0]
    if empty:
        raise DataError(f"dataset.class_names: {empty} ha{'s' if len(empty) == 1 else 've'} no box in "
                        f"the train split; the classes in its annotations are: "
                        f"{classes_in_train(train_set, per_class)}. Fix the name(s) in dataset.class_names")


def prepare_datasets(train_set, val_set, out: Path, classes_given: bool = False) -> dict:
    """Checks, scans and records (see the module docstring); ``train_set`` may be None (eval
    only); ``classes_given``: the class names came from the user (``dataset.class_names``), so
    each must have a box in the train split. Returns the metrics.json entries."""
    out = Path(out)
    splits = {"train": train_set, "val": val_set} if train_set is not None else {"val": val_set}
    scans = {}
    for name, dataset in splits.items():
        scans[name] = apply_bad_image_policy(dataset, scan_images(dataset), f"{name} split")
        if hasattr(dataset, "decode_log"):
            dataset.decode_log = out / DECODE_LOG
        if scans[name]["scanned"]:
            log.info("%s: scanned %d image headers, bad %s (skipped %d, repaired %d)", name,
                     scans[name]["scanned"], scans[name]["bad_by_reason"] or "none",
                     scans[name]["skipped"], scans[name]["repaired"])
    maps = {name: class_map(d) for name, d in splits.items()}
    if train_set is not None and maps["train"] != maps["val"]:
        raise DataError(f"train and val splits disagree on the class map: train {maps['train']}, "
                        f"val {maps['val']}")
    (out / "class_map.json").write_text(json.dumps(maps["val"], indent=2))
    summaries = {name: _split_summary(d, name) for name, d in splits.items()}
    for name, summary in summaries.items():
        summary["image_scan"] = scans[name]
        if len(splits[name]) == 0:
            raise DataError(f"the {name} split has no images left (skipped: "
                            f"{summary['skipped_images'] or 'none'})")
    train = summaries.get("train")
    if train is not None and train["objects"] == 0:
        raise DataError(f"the train split has no box left to learn from ({train['images']} images; "
                        f"dropped: {_counts_text(train['dropped_by_reason']) or 'none'}); classes "
                        f"used: {train_set.class_names}; unknown classes seen: {_found_classes(train_set)}")
    if train is not None and classes_given and train["kept_boxes"] is not None:
        check_given_classes(train_set, train["per_class"])
    val = summaries["val"]
    if val["objects"] == 0:
        raise NoObjectsError(f"the validation split ({val['images']} images) has no object to "
                             f"evaluate (dropped: {_counts_text(val['dropped_by_reason']) or 'none'}); "
                             f"classes used: {val_set.class_names}")
    ids = {name: (s["split_info"] or {}).get("ids", []) for name, s in summaries.items()}
    fingerprint = split_fingerprint(ids.get("train", []), ids["val"])
    (out / "split.json").write_text(json.dumps(
        {"split_id": fingerprint, **{name: s["split_info"] for name, s in summaries.items()}},
        indent=2, default=str))
    log.info("classes (%d): %s; split %s", len(val_set.class_names), val_set.class_names, fingerprint)

    def total(key: str) -> dict:
        summed: dict = {}
        for s in summaries.values():
            for k, v in s[key].items():
                summed[k] = summed.get(k, 0) + v
        return summed

    sources = {name: {k: v for k, v in (s["split_info"] or {}).items() if k != "ids"}
               for name, s in summaries.items()}
    return {"classes": ", ".join(val_set.class_names), "num_classes": len(val_set.class_names),
            "class_map": maps["val"], "split_id": fingerprint,
            "split_source": json.dumps(sources, default=str),
            "train_images": summaries["train"]["images"] if train is not None else None,
            "val_images": val["images"], "val_objects": val["objects"],
            "data_dropped": _counts_text(total("dropped_by_reason")),
            "data_skipped": _counts_text(total("skipped_images")),
            "data_fixed": _counts_text(total("fixed")),
            "data": {name: {k: v for k, v in s.items() if k != "split_info"}
                     for name, s in summaries.items()}}


def decode_failures(out: Path) -> dict:
    """{"decode_failures": n, "decode_failed_files": [...]} from ``bad_images.log``."""
    path = Path(out) / DECODE_LOG
    lines = path.read_text().splitlines() if path.is_file() else []
    files = sorted({line.split("\t")[0] for line in lines})
    return {"decode_failures": len(lines), "decode_failed_files": files[:20]}
