"""A TIDE-style error breakdown (Bolya et al., ECCV 2020), written here so the rules are in view.

Inputs are a run's ``ground_truth.json`` (COCO ground truth; boxes ``[x, y, w, h]`` in pixels,
``area`` in pixels², ``iscrowd``) and ``detections.json`` (COCO results: ``image_id``,
``category_id``, ``bbox`` ``[x, y, w, h]``, ``score``).

Matching is COCO's at IoU 0.5: per image and class, at most the 100 best-scored detections,
in score order, each takes the unmatched ground truth of its class with the highest IoU >= 0.5
(a true positive, ``tp``); one that overlaps a crowd region of its class by >= 0.5 of its own
area is ``ignored``. Every other detection is a false positive of exactly one kind, tested in
this order (IoU_same / IoU_other: its highest IoU with any non-crowd ground truth of its own
class / of another class; t_f = 0.5, t_b = 0.1):

- ``loc``  localisation:   t_b <= IoU_same < t_f
- ``cls``  classification: IoU_other >= t_f
- ``dupe`` duplicate:      IoU_same >= t_f, every such ground truth already taken by a
                           higher-scored detection
- ``bkg``  background:     IoU_same < t_b and IoU_other < t_b
- ``both`` class and box:  the rest (t_b <= IoU_other < t_f)

A ground truth is ``missed`` when no detection took it and no ``loc``/``cls`` error points at it.

"The AP each would add if fixed" (``dap_*``, AP50 points, 0-100) is AP50 after fixing one kind
minus AP50 as is: a ``cls``/``loc`` error whose ground truth nobody took becomes a true positive
of that ground truth's class (the highest-scored one, if several point at it), the others are
removed; ``both``/``dupe``/``bkg`` errors are removed; missed ground truths are taken out of
the count. AP50 here is COCO's (101 recall points, mean over classes that have ground truth),
so on the same files it equals pycocotools' AP50.

Per size bucket (COCO's: small < 32², medium < 96² <= large, by the ground truth's ``area``),
a detection counts in the bucket of the ground truth it took or points at; a background
detection in the bucket of its own box area. The buckets' counts add up to the whole.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from analysis.runs import read_json

FOREGROUND_IOU = 0.5   # t_f
BACKGROUND_IOU = 0.1   # t_b
MAX_DETECTIONS = 100   # per image and class, as COCO's maxDets
ERROR_KINDS = ("cls", "loc", "both", "dupe", "bkg", "missed")
SIZE_BUCKETS = {"small": (0.0, 32.0 ** 2), "medium": (32.0 ** 2, 96.0 ** 2),
                "large": (96.0 ** 2, np.inf)}


def _iou_xywh(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """a [D, 4], b [G, 4] as x, y, w, h -> (IoU [D, G], intersection / area of a [D, G])."""
    ax2, ay2, bx2, by2 = a[:, 0] + a[:, 2], a[:, 1] + a[:, 3], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    iw = np.clip(np.minimum(ax2[:, None], bx2) - np.maximum(a[:, None, 0], b[:, 0]), 0, None)
    ih = np.clip(np.minimum(ay2[:, None], by2) - np.maximum(a[:, None, 1], b[:, 1]), 0, None)
    inter = iw * ih                                                     # [D, G]
    area_a, area_b = a[:, 2] * a[:, 3], b[:, 2] * b[:, 3]
    union = area_a[:, None] + area_b - inter
    return inter / np.maximum(union, 1e-12), inter / np.maximum(area_a[:, None], 1e-12)


def _bucket(area: np.ndarray) -> np.ndarray:
    names = np.array(list(SIZE_BUCKETS), dtype=object)
    edges = [lo for lo, _ in SIZE_BUCKETS.values()][1:]
    return names[np.searchsorted(edges, area, side="right")]


def _tables(ground_truth: dict, detections: list) -> tuple[pd.DataFrame, pd.DataFrame]:
    """COCO dicts -> (ground truth [G] and detection [D] tables with xywh boxes)."""
    gt = pd.DataFrame(ground_truth.get("annotations") or [],
                      columns=["image_id", "category_id", "bbox", "area", "iscrowd"])
    gt["box"] = [np.asarray(b, dtype=float) for b in gt["bbox"]]
    gt["area"] = [a if pd.notna(a) else b[2] * b[3] for a, b in zip(gt["area"], gt["box"])]
    gt["iscrowd"] = gt["iscrowd"].fillna(0).astype(int).astype(bool)
    gt["bucket"] = _bucket(gt["area"].to_numpy(float))
    dt = pd.DataFrame(detections or [], columns=["image_id", "category_id", "bbox", "score"])
    dt["box"] = [np.asarray(b, dtype=float) for b in dt["bbox"]]
    # COCO keeps the best MAX_DETECTIONS per image and class (stable order on equal scores).
    dt = dt.iloc[np.argsort(-dt["score"].to_numpy(float), kind="mergesort")]
    dt = dt[dt.groupby(["image_id", "category_id"]).cumcount() < MAX_DETECTIONS]
    return gt.reset_index(drop=True), dt.reset_index(drop=True)


def classify(ground_truth: dict, detections: list) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Label every detection (``kind``: tp, loc, cls, dupe, bkg, both, ignored; ``target``: the
    ground-truth row it took or points at, -1 for none; ``bucket``) and every ground truth
    (``taken``, ``missed``, ``bucket``). Returns (ground truth, detections) tables."""
    gt, dt = _tables(ground_truth, detections)
    kind = np.full(len(dt), "bkg", dtype=object)
    target = np.full(len(dt), -1)
    taken = np.zeros(len(gt), dtype=bool)
    d_boxes, d_cat = np.stack([*dt["box"], np.zeros(4)]), dt["category_id"].to_numpy()
    g_boxes, g_cat_all = np.stack([*gt["box"], np.zeros(4)]), gt["category_id"].to_numpy()
    crowd_all = gt["iscrowd"].to_numpy()
    gt_by_image = gt.groupby("image_id").indices
    for image_id, d_rows in dt.groupby("image_id", sort=False).indices.items():
        g_rows = gt_by_image.get(image_id, np.zeros(0, dtype=int))
        if len(g_rows) == 0:
            continue                               # every detection stays background
        iou, iof = _iou_xywh(d_boxes[d_rows], g_boxes[g_rows])        # [D, G] each
        g_cat, crowd = g_cat_all[g_rows], crowd_all[g_rows]
        for i, d in enumerate(d_rows):             # d_rows are in score order
            own = g_cat == d_cat[d]
            same, other = own & ~crowd, ~own & ~crowd
            free = np.where(same & ~taken[g_rows], iou[i], -1.0)
            if free.max() >= FOREGROUND_IOU:
                j = int(free.argmax())
                kind[d], target[d], taken[g_rows[j]] = "tp", g_rows[j], True
                continue
            if np.any(crowd & own & (iof[i] >= FOREGROUND_IOU)):
                kind[d] = "ignored"
                continue
            iou_same, iou_other = np.where(same, iou[i], 0.0), np.where(other, iou[i], 0.0)
            best_same, best_other = iou_same.max(), iou_other.max()
            if BACKGROUND_IOU <= best_same < FOREGROUND_IOU:
                kind[d], target[d] = "loc", g_rows[iou_same.argmax()]
            elif best_other >= FOREGROUND_IOU:
                kind[d], target[d] = "cls", g_rows[iou_other.argmax()]
            elif best_same >= FOREGROUND_IOU:
                kind[d], target[d] = "dupe", g_rows[iou_same.argmax()]
            elif max(best_same, best_other) < BACKGROUND_IOU:
                kind[d] = "bkg"
            else:
                kind[d], target[d] = "both", g_rows[iou_other.argmax()]
    dt["kind"], dt["target"] = kind, target
    bucket = _bucket(np.array([b[2] * b[3] for b in dt["box"]], dtype=float))  # own area
    has_target = target >= 0
    bucket[has_target] = gt["bucket"].to_numpy()[target[has_target]]
    dt["bucket"] = bucket
    pointed = set(target[np.isin(kind, ["loc", "cls"])].tolist())
    gt["taken"] = taken
    gt["missed"] = ~taken & ~gt["iscrowd"] & ~gt.index.isin(pointed)
    return gt, dt


def average_precision_50(categories, scores, is_tp, num_gt: dict) -> float:
    """COCO-style AP (0-100) from scored detections already matched at one IoU: per class,
    precision at 101 recall points under the monotone envelope; mean over classes with
    ``num_gt[c] > 0``; nan when no class has ground truth."""
    frame = pd.DataFrame({"c": categories, "s": scores, "tp": np.asarray(is_tp, dtype=bool)})
    per_class = []
    for c, n in num_gt.items():
        if n <= 0:
            continue
        rows = frame[frame["c"] == c]
        if rows.empty:
            per_class.append(0.0)
            continue
        rows = rows.iloc[np.argsort(-rows["s"].to_numpy(float), kind="mergesort")]
        tp = np.cumsum(rows["tp"].to_numpy())
        fp = np.cumsum(~rows["tp"].to_numpy())
        recall = tp / n
        precision = np.maximum.accumulate((tp / np.maximum(tp + fp, 1e-12))[::-1])[::-1]
        at = np.searchsorted(recall, np.linspace(0.0, 1.0, 101), side="left")
        per_class.append(np.where(at < len(precision),
                                  precision[np.minimum(at, len(precision) - 1)], 0.0).mean())
    return float(np.mean(per_class) * 100) if per_class else float("nan")


def _ap_with_fix(gt: pd.DataFrame, dt: pd.DataFrame, fix: str | None) -> float:
    """AP50 of these rows after fixing one error kind (None: as is); see the module doc."""
    dt = dt[dt["kind"] != "ignored"]
    category = dt["category_id"].to_numpy().copy()
    is_tp = (dt["kind"] == "tp").to_numpy().copy()
    keep = np.ones(len(dt), dtype=bool)
    real_gt = gt[~gt["iscrowd"]]
    if fix in ("cls", "loc"):
        claimed = set(gt.index[gt["taken"]])
        for i in np.flatnonzero((dt["kind"] == fix).to_numpy()):   # dt is in score order
            g = dt["target"].iat[i]
            if g in claimed:
                keep[i] = False
            else:
                claimed.add(g)
                category[i], is_tp[i] = gt.at[g, "category_id"], True
    elif fix in ("both", "dupe", "bkg"):
        keep = (dt["kind"] != fix).to_numpy()
    elif fix == "missed":
        real_gt = real_gt[~real_gt["missed"]]
    num_gt = real_gt["category_id"].value_counts().to_dict()   # a class with none drops out
    return average_precision_50(category[keep], dt["score"].to_numpy()[keep], is_tp[keep], num_gt)


def breakdown(ground_truth: dict, detections: list) -> pd.DataFrame:
    """The error breakdown, one row per bucket (all, small, medium, large): ``num_gt``,
    ``num_dt``, ``ap50``, counts ``tp`` and each of ERROR_KINDS, and ``dap_<kind>``."""
    return _breakdown(*classify(ground_truth, detections))


def _breakdown(gt: pd.DataFrame, dt: pd.DataFrame) -> pd.DataFrame:
    rows = {}
    for bucket in ["all", *SIZE_BUCKETS]:
        g = gt if bucket == "all" else gt[gt["bucket"] == bucket]
        d = dt if bucket == "all" else dt[dt["bucket"] == bucket]
        counts = d["kind"].value_counts()
        row = {"num_gt": int((~g["iscrowd"]).sum()), "num_dt": int((d["kind"] != "ignored").sum()),
               "ap50": _ap_with_fix(g, d, None), "tp": int(counts.get("tp", 0))}
        row |= {k: int(counts.get(k, 0)) for k in ERROR_KINDS if k != "missed"}
        row["missed"] = int(g["missed"].sum())
        row |= {f"dap_{k}": _ap_with_fix(g, d, k) - row["ap50"] for k in ERROR_KINDS}
        rows[bucket] = row
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("bucket")


def top_detection_shares(ground_truth: dict, detections: list) -> pd.Series:
    """The YOLO paper's view (after Hoiem et al. 2012): for each class its N best-scored
    detections, N = its number of ground truths; the share (%) of all those that are
    ``top_correct`` (tp), ``top_loc`` (loc or dupe, as Hoiem counts duplicates),
    ``top_other`` (cls or both: the wrong class) and ``top_bkg`` (bkg)."""
    return _top_shares(*classify(ground_truth, detections))


def _top_shares(gt: pd.DataFrame, dt: pd.DataFrame) -> pd.Series:
    dt = dt[dt["kind"] != "ignored"]                # in score order
    n = gt[~gt["iscrowd"]]["category_id"].value_counts()
    top = dt[dt.groupby("category_id").cumcount() < dt["category_id"].map(n).fillna(0)]
    merged = top["kind"].map({"tp": "top_correct", "loc": "top_loc", "dupe": "top_loc",
                              "cls": "top_other", "both": "top_other", "bkg": "top_bkg"})
    shares = merged.value_counts(normalize=True) * 100 if len(merged) else pd.Series(dtype=float)
    return shares.reindex(["top_correct", "top_loc", "top_other", "top_bkg"], fill_value=0.0)


def run_errors(run_dir: Path) -> tuple[pd.DataFrame, pd.Series]:
    """``breakdown`` and ``top_detection_shares`` of one run folder's ``ground_truth.json``
    and ``detections.json``. Raises FileNotFoundError / ValueError naming the file when one
    is absent or malformed."""
    run_dir = Path(run_dir)
    ground_truth, detections = (read_json(run_dir / n) for n in ("ground_truth.json",
                                                                 "detections.json"))
    if not isinstance(ground_truth, dict) or "annotations" not in ground_truth:
        raise FileNotFoundError(f"{run_dir / 'ground_truth.json'}: absent, or no 'annotations'")
    if not isinstance(detections, list):
        raise FileNotFoundError(f"{run_dir / 'detections.json'}: absent, or not a list")
    try:
        gt, dt = classify(ground_truth, detections)
        return _breakdown(gt, dt), _top_shares(gt, dt)
    except (KeyError, TypeError, IndexError, ValueError) as exc:
        raise ValueError(f"{run_dir}: malformed ground_truth.json/detections.json ({exc!r})") from exc
