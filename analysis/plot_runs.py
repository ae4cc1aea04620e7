"""The report's plots drawn from each run's own files: precision/recall curves
(``pr_curves.npz``), training loss and validation AP against time (``train_log.csv``,
``val_log.csv``) and a grid of validation images with each detector's detections
(``samples/<image_id>.png``, ``ground_truth.json``, ``detections.json``). Same style as
``plots.py``: PNG and PDF, greyscale-readable, slide-sized.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.image import imread
from matplotlib.patches import Rectangle

from analysis.plots import FIGSIZE, figure, plain_log_ticks, save, series_style
from analysis.runs import read_csv, read_json, read_pr_curves

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


def plot_training(runs_by_group: dict[str, list[Path]], out_dir: Path) -> list[Path]:
    """Left: training loss (log scale) against training time; right: validation AP (%)
    against training time; one line per run, one style per detector."""
    logs = {g: [(read_csv(d, "train_log.csv"), read_csv(d, "val_log.csv")) for d in dirs]
            for g, dirs in runs_by_group.items()}
    if not any(t is not None or v is not None for runs in logs.values() for t, v in runs):
        return []
    with figure(1, 2, sharex=True) as (fig, axes):
        loss_ax, ap_ax = axes[0]
        for i, (group, runs) in enumerate(logs.items()):
            style, label = series_style(i), group
            for train, val in runs:
                if train is not None and {"time_s", "loss"} <= set(train.columns):
                    loss_ax.plot(train["time_s"], train["loss"], markevery=max(1, len(train) // 8),
                                 markersize=6, label=label, **style)
                    label = None
                if val is not None and {"time_s", "map"} <= set(val.columns):
                    ap_ax.plot(val["time_s"], val["map"] * 100, markersize=6, **style)
        if not ap_ax.lines:
            ap_ax.text(0.5, 0.5, "no validation during training\n(no val_log.csv)",
                       ha="center", va="center", transform=ap_ax.transAxes)
        if loss_ax.lines:
            loss_ax.set_yscale("log")
            plain_log_ticks(loss_ax.yaxis)
        loss_ax.set_ylabel("training loss (sum of loss terms, log scale)")
        ap_ax.set_ylabel("validation COCO AP@[.5:.95] (%)")
        for ax in (loss_ax, ap_ax):
            ax.set_xlabel("training time (s)")
        loss_ax.set_title("Training loss")
        ap_ax.set_title("Validation AP")
        fig.legend(loc="outside lower center", ncols=min(len(logs), 4), frameon=False)
        return save(fig, out_dir, "training")


def _sample_ids(run_dir: Path) -> set[str]:
    return {p.stem for p in (Path(run_dir) / "samples").glob("*.png")}


def _boxes(records: list, image_id, min_score: float, top: int) -> list[dict]:
    mine = [r for r in records if str(r.get("image_id")) == str(image_id)
            and r.get("score", 1.0) >= min_score]
    return sorted(mine, key=lambda r: -r.get("score", 1.0))[:top]


def grid_size(num_images: int, num_columns: int) -> tuple[float, float]:
    """The detection grid's figure size in inches: 3.2 in per cell, slide-sized at most."""
    return (min(3.2 * num_columns, 2 * FIGSIZE[0]), min(3.2 * num_images, 2 * FIGSIZE[1]))


def plot_detection_grid(runs_by_group: dict[str, Path], out_dir: Path, max_images: int = 3,
                        min_score: float = 0.3, top: int = 10) -> list[Path]:
    """Rows: the same validation images (``samples/<image_id>.png`` every run holds);
    columns: the ground truth, then each detector's detections with score >= ``min_score``
    (at most ``top``); boxes scaled from the image's size in ``ground_truth.json``."""
    runs_by_group = {g: Path(d) for g, d in runs_by_group.items() if _sample_ids(d)}
    if not runs_by_group:
        return []
    common = set.intersection(*(_sample_ids(d) for d in runs_by_group.values()))
    first = next(iter(runs_by_group.values()))
    ids = sorted(common or _sample_ids(first), key=lambda s: (len(s), s))[:max_images]
    truth = read_json(first / "ground_truth.json") or {}
    names = {c["id"]: c.get("name", str(c["id"])) for c in truth.get("categories", [])}
    sizes = {str(im["id"]): (im.get("width"), im.get("height")) for im in truth.get("images", [])}
    columns = [("ground truth", first, truth.get("annotations", []))] + [
        (g, d, read_json(d / "detections.json") or []) for g, d in runs_by_group.items()]
    with figure(len(ids), len(columns), figsize=grid_size(len(ids), len(columns))) as (fig, axes):
        for r, image_id in enumerate(ids):
            for c, (title, run_dir, records) in enumerate(columns):
                ax, path = axes[r, c], run_dir / "samples" / f"{image_id}.png"
                ax.set_xticks([]), ax.set_yticks([]), ax.grid(False)
                if not path.is_file():
                    ax.text(0.5, 0.5, "no image", ha="center", transform=ax.transAxes)
                    continue
                image = imread(path)
                ax.imshow(image)
                width, height = sizes.get(image_id, (None, None))
                sx = image.shape[1] / width if width else 1.0
                sy = image.shape[0] / height if height else 1.0
                scored = c > 0
                boxes = _boxes(records, image_id, min_score if scored else -1.0, top)
                if scored and not boxes:
                    ax.text(0.5, 0.04, f"no detection ≥ {min_score}", ha="center", fontsize=10,
                            transform=ax.transAxes, bbox={"facecolor": "white", "alpha": 0.8})
                for box in boxes:
                    x, y, w, h = box["bbox"]
                    style = series_style(int(box.get("category_id", 0)))
                    ax.add_patch(Rectangle((x * sx, y * sy), w * sx, h * sy, fill=False,
                                           linewidth=2, edgecolor=style["color"],
                                           linestyle="-" if not scored else "--"))
                    text = names.get(box.get("category_id"), str(box.get("category_id")))
                    text += f" {box['score']:.2f}" if scored else ""
                    ax.text(x * sx, y * sy, text, fontsize=8, va="bottom", color="black",
                            bbox={"facecolor": "white", "alpha": 0.7, "pad": 1, "linewidth": 0})
                if r == 0:
                    ax.set_title(title, fontsize=12)
            axes[r, 0].set_ylabel(f"image {image_id}", fontsize=11)
        fig.suptitle(f"Ground truth (solid) and the {top} best detections with score ≥ "
                     f"{min_score} (dashed)",
                     fontsize=13)
        return save(fig, out_dir, "detection_grid")
