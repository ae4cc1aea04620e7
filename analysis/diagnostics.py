"""Plots that explain errors, per detector: the confusion matrix with a background row and
column, precision / recall / F1 against the score threshold, and PR curves per class.

The confusion matrix is taken at the detector's operating point (``operating_point``): the
detections kept there and the non-crowd ground truths of each image are paired greedily by IoU
(highest first, IoU >= 0.5, whatever their classes); a pair counts in (true class, detected
class), an unpaired ground truth in (its class, background: missed), an unpaired detection in
(background, its class: a false detection on nothing). Detections inside a crowd region are
left out. Rows are normalised to sum to 1; the counts are in ``confusion_<setting>.csv``.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.errors import FOREGROUND_IOU, _iou_xywh
from analysis.operating_point import best_f1, classified, prf_curve
from analysis.plots import figure, save, series_style
from analysis.runs import read_pr_curves

BACKGROUND = "background"


def confusion(ground_truth: dict, gt: pd.DataFrame, dt: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """Counts [classes + background] x [classes + background] (rows: truth, columns: detected)
    at ``threshold``, from ``classify``'s tables; see the module doc."""
    names = {c["id"]: c.get("name", str(c["id"])) for c in ground_truth.get("categories", [])}
    ids = sorted(names) or sorted(set(gt["category_id"]) | set(dt["category_id"]))
    labels = [names.get(i, str(i)) for i in ids] + [BACKGROUND]
    index = {c: k for k, c in enumerate(ids)}
    bg = len(ids)
    counts = np.zeros((bg + 1, bg + 1), dtype=int)
    kept = dt[(dt["score"] >= threshold) & (dt["kind"] != "ignored")]
    real = gt[~gt["iscrowd"]]
    for image_id in set(real["image_id"]) | set(kept["image_id"]):
        g, d = real[real["image_id"] == image_id], kept[kept["image_id"] == image_id]
        paired_g, paired_d = set(), set()
        if len(g) and len(d):
            iou, _ = _iou_xywh(np.stack(list(d["box"])), np.stack(list(g["box"])))   # [D, G]
            for flat in np.argsort(-iou, axis=None, kind="stable"):
                i, j = divmod(int(flat), iou.shape[1])
                if iou[i, j] < FOREGROUND_IOU:
                    break
                if i in paired_d or j in paired_g:
                    continue
                paired_d.add(i), paired_g.add(j)
                counts[index[g["category_id"].iat[j]], index[d["category_id"].iat[i]]] += 1
        for j in range(len(g)):
            if j not in paired_g:
                counts[index[g["category_id"].iat[j]], bg] += 1
        for i in range(len(d)):
            if i not in paired_d:
                counts[bg, index[d["category_id"].iat[i]]] += 1
    return pd.DataFrame(counts, index=pd.Index(labels, name="true"), columns=pd.Index(labels, name="detected"))


def _slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", label).strip("_") or "run"


def plot_confusion(runs_by_group: dict[str, list[Path]], out_dir: Path) -> list[Path]:
    """One row-normalised matrix per setting (its first run), at its operating point."""
    matrices = {}
    for group, dirs in runs_by_group.items():
        found = classified(dirs[0])
        if found is None:
            continue
        threshold = best_f1(prf_curve(found[1], found[2]))["threshold"]
        counts = confusion(*found, threshold)
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        counts.to_csv(Path(out_dir) / f"confusion_{_slug(group)}.csv")
        matrices[group] = (counts, threshold)
    if not matrices:
        return []
    n = len(matrices)
    classes = max(len(c) for c, _ in matrices.values())
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    cell = max(3.6, 0.42 * classes + 1.6)
    with figure(rows, cols, figsize=(cell * cols + 0.8, cell * rows + 0.6)) as (fig, axes):
        for ax in axes.flat[n:]:
            ax.set_visible(False)
        for ax, (group, (counts, threshold)) in zip(axes.flat, matrices.items()):
            values = counts.to_numpy(float)
            rate = values / np.maximum(values.sum(axis=1, keepdims=True), 1)
            image = ax.imshow(rate, vmin=0, vmax=1, cmap="Blues")
            ax.grid(False)
            ticks = np.arange(len(counts))
            ax.set_xticks(ticks, counts.columns, rotation=45, ha="right", fontsize=10)
            ax.set_yticks(ticks, counts.index, fontsize=10)
            if len(counts) <= 12:
                for (r, c), v in np.ndenumerate(values):
                    if v:
                        ax.text(c, r, f"{int(v)}", ha="center", va="center", fontsize=9,
                                color="white" if rate[r, c] > 0.55 else "black")
            ax.set_title(f"{group} (score ≥ {threshold:.2f})", fontsize=12)
            ax.set_xlabel("detected as", fontsize=11)
            ax.set_ylabel("true class", fontsize=11)
        fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8, label="share of the row")
        fig.suptitle("Confusion matrix at each detector's operating point (cells: counts)")
        return save(fig, out_dir, "confusion_matrix")


def plot_prf_confidence(runs_by_group: dict[str, list[Path]], out_dir: Path) -> list[Path]:
    """Precision, recall and F1 (pooled over classes, IoU 0.5) against the score threshold, one
    line per setting (its first run), the operating point marked on F1."""
    curves = {}
    for group, dirs in runs_by_group.items():
        found = classified(dirs[0])
        if found is not None:
            curve = prf_curve(found[1], found[2])
            if len(curve):
                curves[group] = (curve, best_f1(curve))
    if not curves:
        return []
    with figure(1, 3, figsize=(15.0, 5.0), sharex=True, sharey=True) as (fig, axes):
        for i, (group, (curve, best)) in enumerate(curves.items()):
            style = series_style(i)
            for ax, key in zip(axes[0], ("precision", "recall", "f1")):
                ax.plot(curve["threshold"], curve[key] * 100, color=style["color"], linestyle=style["linestyle"],
                        label=group if key == "precision" else None)
            axes[0, 2].plot(best["threshold"], best["f1"] * 100, marker=style["marker"], color=style["color"],
                            markersize=10, linestyle="none")
        for ax, name in zip(axes[0], ("precision", "recall", "F1")):
            ax.set_title(f"{name} vs score threshold")
            ax.set_xlabel("score threshold")
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 101)
        axes[0, 0].set_ylabel("% (IoU 0.5, pooled over classes)")
        fig.legend(loc="outside lower center", ncols=min(len(curves), 5), frameon=False, fontsize=11)
        return save(fig, out_dir, "prf_confidence")


def plot_pr_per_class(runs_by_group: dict[str, list[Path]], out_dir: Path, max_classes: int = 20) -> list[Path]:
    """One panel per class (at most ``max_classes``): precision against recall at IoU 0.5, all
    object sizes, 100 detections, one line per setting (mean over its seeds)."""
    curves, names, recall = {}, None, None
    for group, dirs in runs_by_group.items():
        arrays = [a for a in (read_pr_curves(d) for d in dirs) if a and "precision" in a]
        if not arrays:
            continue
        p = np.stack([a["precision"][0, :, :, 0, -1] for a in arrays]).astype(float)   # [S, R, K]
        p[p < 0] = np.nan
        with np.errstate(invalid="ignore"):
            curves[group] = np.nanmean(p, axis=0)
        recall = arrays[0]["recall_thresholds"]
        names = [str(n) for n in arrays[0].get("class_names", range(p.shape[2]))]
    if not curves:
        return []
    k = min(len(names), max_classes)
    cols = min(k, 4)
    rows = math.ceil(k / cols)
    with figure(rows, cols, figsize=(3.6 * cols + 2.5, 3.0 * rows + 1.2), sharex=True, sharey=True) as (fig, axes):
        for ax in axes.flat[k:]:
            ax.set_visible(False)
        for c, ax in enumerate(axes.flat[:k]):
            for i, (group, curve) in enumerate(curves.items()):
                if c < curve.shape[1] and np.isfinite(curve[:, c]).any():
                    style = series_style(i)
                    ax.plot(recall, curve[:, c], color=style["color"], linestyle=style["linestyle"],
                            label=group if c == 0 else None)
            ax.set_title(names[c], fontsize=12)
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1.02)
        for ax in axes[-1]:
            ax.set_xlabel("recall")
        for ax in axes[:, 0]:
            ax.set_ylabel("precision")
        fig.legend(loc="outside right center", frameon=False, fontsize=11)
        fig.suptitle("Precision vs recall per class (IoU 0.5, mean over seeds)")
        return save(fig, out_dir, "pr_curves_per_class")
