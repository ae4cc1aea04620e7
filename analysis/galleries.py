"""Examples chosen by error, from the validation images each run saved (``samples/<id>.png``):

- the failure gallery: per detector, the images with the most missed ground truths and those
  with the most false detections at its operating point (taken in turn), ground truth drawn
  (found: green, missed: red) and the false detections dashed;
- "found by A, missed by B": ground truths one detector finds at its operating point and another
  misses, smallest first (small objects are where detectors part), one panel each.
"""
from __future__ import annotations

from itertools import permutations
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.image import imread
from matplotlib.patches import Rectangle

from analysis.operating_point import best_f1, classified, prf_curve
from analysis.plots import figure, save

FOUND, MISSED, FALSE, DETECTED = "#009E73", "#D55E00", "#E69F00", "#0072B2"


def sample_ids(run_dir: Path) -> set[str]:
    return {p.stem for p in (Path(run_dir) / "samples").glob("*.png")}


def at_operating_point(run_dir: Path):
    """(ground truth dict, gt table with ``found``, kept detections, threshold) or None."""
    found = classified(run_dir)
    if found is None:
        return None
    truth, gt, dt = found
    threshold = best_f1(prf_curve(gt, dt))["threshold"]
    kept = dt[(dt["score"] >= threshold) & (dt["kind"] != "ignored")]
    taken = set(kept.loc[kept["kind"] == "tp", "target"])
    gt = gt.assign(found=gt.index.isin(taken))
    return truth, gt, kept, threshold


def show(ax, run_dir: Path, image_id: str, truth: dict) -> tuple[float, float] | None:
    """Draw the saved image on ``ax``; (x scale, y scale) from ground-truth pixels to the image's."""
    path = Path(run_dir) / "samples" / f"{image_id}.png"
    ax.set_xticks([]), ax.set_yticks([]), ax.grid(False)
    if not path.is_file():
        ax.text(0.5, 0.5, "no image", ha="center", transform=ax.transAxes)
        return None
    image = imread(path)
    ax.imshow(image)
    sizes = {str(im["id"]): (im.get("width"), im.get("height")) for im in truth.get("images", [])}
    width, height = sizes.get(str(image_id), (None, None))
    return (image.shape[1] / width if width else 1.0, image.shape[0] / height if height else 1.0)


def box(ax, xywh, scale, colour: str, dashed: bool = False, text: str = "") -> None:
    x, y, w, h = xywh
    sx, sy = scale
    ax.add_patch(Rectangle((x * sx, y * sy), w * sx, h * sy, fill=False, linewidth=2.2, edgecolor=colour,
                           linestyle="--" if dashed else "-"))
    if text:
        ax.text(x * sx, y * sy, text, fontsize=11, va="bottom", color="black",
                bbox={"facecolor": "white", "alpha": 0.75, "pad": 1, "linewidth": 0})


def error_counts(gt: pd.DataFrame, kept: pd.DataFrame, ids: set[str]) -> pd.DataFrame:
    """Per saved image (index: image id as str): ``missed`` ground truths (crowd regions left out)
    and ``false`` detections (kept ones that are not true positives), images with neither left out."""
    missed = gt[~gt["found"] & ~gt["iscrowd"]].groupby(gt["image_id"].astype(str)).size()
    false = kept[kept["kind"] != "tp"].groupby(kept["image_id"].astype(str)).size()
    counts = pd.DataFrame({"missed": missed, "false": false}).fillna(0).astype(int)
    return counts[counts.index.isin(ids) & (counts.sum(axis=1) > 0)]


def worst_images(counts: pd.DataFrame, n: int) -> list[str]:
    """``n`` image ids taken in turn from the most-missed and the most-false-positive rankings
    (ties: more errors of the other kind first, then id), each image once."""
    by_missed = counts[counts["missed"] > 0].sort_values(["missed", "false"], ascending=False, kind="stable")
    by_false = counts[counts["false"] > 0].sort_values(["false", "missed"], ascending=False, kind="stable")
    chosen, rankings = [], [list(by_missed.index), list(by_false.index)]
    while len(chosen) < n and any(rankings):
        for ranking in rankings:
            while ranking and ranking[0] in chosen:
                ranking.pop(0)
            if ranking and len(chosen) < n:
                chosen.append(ranking.pop(0))
    return chosen


def plot_failures(runs: dict[str, Path], out_dir: Path, per_detector: int = 3) -> list[Path]:
    """Rows: detectors; columns: its ``per_detector`` worst saved images (see the module doc)."""
    chosen = {}
    for group, run_dir in runs.items():
        state = at_operating_point(run_dir)
        if state is None or not sample_ids(run_dir):
            continue
        truth, gt, kept, threshold = state
        counts = error_counts(gt, kept, sample_ids(run_dir))
        worst = worst_images(counts, per_detector)
        if worst:
            chosen[group] = (run_dir, state, worst, [counts.loc[i] for i in worst])
    if not chosen:
        return []
    names = {}
    cols = max(len(v[2]) for v in chosen.values())
    with figure(len(chosen), cols, figsize=(3.4 * cols + 0.4, min(3.4 * len(chosen) + 0.8, 40))) as (fig, axes):
        for r, (group, (run_dir, (truth, gt, kept, threshold), ids, counts)) in enumerate(chosen.items()):
            names = {c["id"]: c.get("name", str(c["id"])) for c in truth.get("categories", [])}
            for c in range(cols):
                ax = axes[r, c]
                if c >= len(ids):
                    ax.set_visible(False)
                    continue
                scale = show(ax, run_dir, ids[c], truth)
                if scale is None:
                    continue
                for g in gt[gt["image_id"].astype(str) == ids[c]].itertuples():
                    box(ax, g.box, scale, FOUND if g.found else MISSED)
                for d in kept[(kept["image_id"].astype(str) == ids[c]) & (kept["kind"] != "tp")].itertuples():
                    box(ax, d.box, scale, FALSE, dashed=True, text=f"{names.get(d.category_id, d.category_id)} "
                                                                   f"{d.score:.2f} ({d.kind})")
                ax.set_title(f"image {ids[c]}: {counts[c]['missed']} missed, {counts[c]['false']} false",
                             fontsize=11)
            axes[r, 0].set_ylabel(f"{group}\n(score ≥ {threshold:.2f})", fontsize=11)
        fig.suptitle("Failure gallery: ground truth found (green) / missed (red), false detections (dashed)")
        return save(fig, out_dir, "failure_gallery")


def found_missed(runs: dict[str, Path], limit: int = 6) -> list[dict]:
    """Up to ``limit`` ground truths found by one setting and missed by another, on images both
    saved, smallest area first; at most ``limit // 2`` per ordered pair so every pair shows."""
    states = {g: (d, at_operating_point(d)) for g, d in runs.items()}
    states = {g: v for g, v in states.items() if v[1] is not None and sample_ids(v[0])}
    cases = []
    for a, b in permutations(states, 2):
        (dir_a, (truth, gt_a, _, _)), (dir_b, (_, gt_b, _, _)) = states[a], states[b]
        ids = sample_ids(dir_a) & sample_ids(dir_b)
        both = gt_a[["image_id", "area", "found", "box", "category_id"]].assign(found_b=gt_b["found"].to_numpy()) \
            if len(gt_a) == len(gt_b) else None
        if both is None:
            continue
        hits = both[both["found"] & ~both["found_b"] & both["image_id"].astype(str).isin(ids)]
        for row in hits.sort_values("area", kind="stable").head(max(1, limit // 2)).itertuples():
            cases.append({"a": a, "b": b, "run_dir": dir_a, "truth": truth, "image_id": str(row.image_id),
                          "box": row.box, "area": float(row.area), "category_id": row.category_id})
    return sorted(cases, key=lambda c: c["area"])[:limit]


def plot_found_missed(runs: dict[str, Path], out_dir: Path, limit: int = 6) -> list[Path] | None:
    """One panel per case of ``found_missed``; None when the folder has fewer than two settings."""
    if len(runs) < 2:
        return None
    cases = found_missed(runs, limit)
    if not cases:
        return None
    cols = min(len(cases), 3)
    rows = int(np.ceil(len(cases) / cols))
    with figure(rows, cols, figsize=(3.8 * cols + 0.4, 3.8 * rows + 0.8)) as (fig, axes):
        for ax in axes.flat[len(cases):]:
            ax.set_visible(False)
        for ax, case in zip(axes.flat, cases):
            names = {c["id"]: c.get("name", str(c["id"])) for c in case["truth"].get("categories", [])}
            scale = show(ax, case["run_dir"], case["image_id"], case["truth"])
            if scale is not None:
                box(ax, case["box"], scale, MISSED, text=names.get(case["category_id"], str(case["category_id"])))
            ax.set_title(f"found by {case['a']},\nmissed by {case['b']} ({case['area']:.0f} px²)", fontsize=11)
        fig.suptitle("Found by one detector, missed by another (smallest objects first)")
        return save(fig, out_dir, "found_missed")
