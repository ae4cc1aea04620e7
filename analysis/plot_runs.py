"""The report's plots drawn from each run's own files: precision/recall curves
(``pr_curves.npz``) and a grid of validation images with each detector's detections
(``samples/<image_id>.png``, ``ground_truth.json``, ``detections.json``). Same style as
``plots.py``: PNG and PDF, greyscale-readable, slide-sized. Training curves: ``training_curves``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.image import imread
from matplotlib.patches import Rectangle

from analysis.operating_point import run_operating_point
from analysis.plots import FIGSIZE, figure, save, series_style
from analysis.runs import read_json, read_pr_curves

AREA_TITLES = ["all sizes", "small (< 32² px)", "medium", "large (> 96² px)"]


def mean_precision(precision: np.ndarray, iou_index: int = 0,
                   max_dets_index: int = -1) -> np.ndarray:
    """COCOeval precision [T, R, K, A, M] -> [R, A]: the mean over classes that have ground
    truth (entries -1 are undefined and left out; nan where no class is defined)."""
    p = precision[iou_index, :, :, :, max_dets_index].astype(float)   # [R, K, A]
    p[p < 0] = np.nan
    with np.errstate(invalid="ignore"):
        return np.nanmean(p, axis=1) if p.shape[1] else np.full(p.shape[::2], np.nan)


def plot_pr_curves(runs_by_group: dict[str, list[Path]], out_dir: Path) -> list[Path]:
    """One panel per size bucket (all, small, medium, large); per detector the precision at
    IoU 0.5 and 100 detections per image against recall, averaged over classes, then seeds."""
    curves = {}
    for group, run_dirs in runs_by_group.items():
        arrays = [read_pr_curves(d) for d in run_dirs]
        per_seed = [mean_precision(a["precision"]) for a in arrays if a and "precision" in a]
        if per_seed:
            recall = next(a["recall_thresholds"] for a in arrays if a and "precision" in a)
            with np.errstate(invalid="ignore"):
                curves[group] = (np.asarray(recall), np.nanmean(np.stack(per_seed), axis=0))
    if not curves:
        return []
    with figure(2, 2, sharex=True, sharey=True) as (fig, axes):
        fig.get_layout_engine().set(wspace=0.06)
        for a, ax in enumerate(axes.flat):
            for i, (group, (recall, precision)) in enumerate(curves.items()):
                if a < precision.shape[1] and np.isfinite(precision[:, a]).any():
                    ax.plot(recall, precision[:, a], markevery=10, markersize=6,
                            label=group if a == 0 else None, **series_style(i))
            ax.set_title(AREA_TITLES[a] if a < len(AREA_TITLES) else f"area {a}", fontsize=13)
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1.02)
        for ax in axes[1]:
            ax.set_xlabel("recall")
        for ax in axes[:, 0]:
            ax.set_ylabel("precision")
        fig.legend(loc="outside right center", frameon=False)
        fig.suptitle("Precision vs recall at IoU 0.5 (mean over classes and seeds)")
        return save(fig, out_dir, "pr_curves")


def _sample_ids(run_dir: Path) -> set[str]:
    return {p.stem for p in (Path(run_dir) / "samples").glob("*.png")}


def _boxes(records: list, image_id, min_score: float, top: int) -> list[dict]:
    mine = [r for r in records if str(r.get("image_id")) == str(image_id)
            and r.get("score", 1.0) >= min_score]
    return sorted(mine, key=lambda r: -r.get("score", 1.0))[:top]


def grid_size(num_images: int, num_columns: int) -> tuple[float, float]:
    """The detection grid's figure size in inches: 3.2 in per cell, slide-sized at most."""
    return (min(3.2 * num_columns, 2 * FIGSIZE[0]), min(3.2 * num_images + 0.6, 2 * FIGSIZE[1]))


def plot_detection_grid(runs_by_group: dict[str, Path], out_dir: Path, max_images: int = 3,
                        min_score: float | None = None, top: int = 10) -> list[Path]:
    """Rows: validation images every run saved (``samples/<image_id>.png``), those with the most
    ground truths first; columns: the ground truth, then each detector's detections (at most
    ``top``) with score >= its own operating point (``operating_point``: the F1-maximising
    threshold on the validation split), or >= ``min_score`` for all when given; boxes scaled from
    the image's size in ``ground_truth.json``."""
    runs_by_group = {g: Path(d) for g, d in runs_by_group.items() if _sample_ids(d)}
    if not runs_by_group:
        return []
    common = set.intersection(*(_sample_ids(d) for d in runs_by_group.values()))
    first = next(iter(runs_by_group.values()))
    truth = read_json(first / "ground_truth.json") or {}
    per_image = {}
    for a in truth.get("annotations", []):
        per_image[str(a.get("image_id"))] = per_image.get(str(a.get("image_id")), 0) + 1
    ids = sorted(common or _sample_ids(first), key=lambda s: (-per_image.get(s, 0), len(s), s))[:max_images]
    names = {c["id"]: c.get("name", str(c["id"])) for c in truth.get("categories", [])}
    sizes = {str(im["id"]): (im.get("width"), im.get("height")) for im in truth.get("images", [])}
    thresholds = {g: min_score if min_score is not None else (run_operating_point(d) or {"threshold": 0.3})["threshold"]
                  for g, d in runs_by_group.items()}
    columns = [("ground truth", first, truth.get("annotations", []), -1.0)] + [
        (f"{g}\nscore ≥ {thresholds[g]:.2f}", d, read_json(d / "detections.json") or [], thresholds[g])
        for g, d in runs_by_group.items()]
    with figure(len(ids), len(columns), figsize=grid_size(len(ids), len(columns))) as (fig, axes):
        for r, image_id in enumerate(ids):
            for c, (title, run_dir, records, threshold) in enumerate(columns):
                ax, path = axes[r, c], run_dir / "samples" / f"{image_id}.png"
                ax.set_xticks([]), ax.set_yticks([]), ax.grid(False)
                if r == 0:
                    ax.set_title(title, fontsize=12)
                if not path.is_file():
                    ax.text(0.5, 0.5, "no image", ha="center", transform=ax.transAxes)
                    continue
                image = imread(path)
                ax.imshow(image)
                width, height = sizes.get(image_id, (None, None))
                sx = image.shape[1] / width if width else 1.0
                sy = image.shape[0] / height if height else 1.0
                scored = c > 0
                boxes = _boxes(records, image_id, threshold, top)
                if scored and not boxes:
                    ax.text(0.5, 0.04, "no detection above its threshold", ha="center", fontsize=10,
                            transform=ax.transAxes, bbox={"facecolor": "white", "alpha": 0.8})
                for box in boxes:
                    x, y, w, h = box["bbox"]
                    style = series_style(int(box.get("category_id", 0)))
                    ax.add_patch(Rectangle((x * sx, y * sy), w * sx, h * sy, fill=False,
                                           linewidth=2, edgecolor=style["color"],
                                           linestyle="-" if not scored else "--"))
                    text = names.get(box.get("category_id"), str(box.get("category_id")))
                    text += f" {box['score']:.2f}" if scored else ""
                    ax.text(x * sx, y * sy, text, fontsize=10, va="bottom", color="black",
                            bbox={"facecolor": "white", "alpha": 0.7, "pad": 1, "linewidth": 0})
            axes[r, 0].set_ylabel(f"image {image_id}", fontsize=11)
        how = f"score ≥ {min_score}" if min_score is not None else "each at its operating point (max F1 on val)"
        fig.suptitle(f"Ground truth (solid) and the {top} best detections, {how} (dashed)", fontsize=13)
        return save(fig, out_dir, "detection_grid")
