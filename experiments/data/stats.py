"""What a dataset holds: counts of images and boxes, per class and per COCO size bucket, boxes
dropped and why; and a grid of sample images with their boxes. Plain functions, called by
``detbench-dataset`` (``experiments.data.dataset_cli``) and by tests.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import torch

from detectors.base import Target
from experiments.data.base import DetectionDataset
from experiments.data.box_policy import is_drop_reason
from experiments.data.size_buckets import MEDIUM_MAX, SMALL_MAX

# COCO's area buckets (pixels²): small < 32², medium in [32², 96²), large >= 96².


def target_of(dataset: DetectionDataset, index: int) -> Target:
    """The Target of image ``index``, without decoding the image when the dataset allows."""
    if hasattr(dataset, "get_target"):
        return dataset.get_target(index)
    return dataset[index][1]


def check_images(dataset: DetectionDataset) -> tuple[Counter, dict[str, list[str]]]:
    """Decode every image of a file-backed dataset; (errors by kind, a few examples each).

    Datasets without files (synthetic) are not checked. An image that fails here fails the
    same way in training, with the same message.
    """
    errors, examples = Counter(), {}
    if not hasattr(dataset, "records"):
        return errors, examples
    for i in range(len(dataset)):
        try:
            dataset[i]
        except (ValueError, OSError) as err:  # ImageFileError, FileNotFoundError, bad target
            kind = f"image_{type(err).__name__}"
            errors[kind] += 1
            examples.setdefault(kind, [])
            if len(examples[kind]) < 5:
                examples[kind].append(str(err))
    return errors, examples


def dataset_stats(dataset: DetectionDataset, decode_images: bool = False) -> dict:
    """Counts over every Target of ``dataset`` (plus what its SkipLog recorded).

    Keys: ``images``, ``images_without_boxes``, ``boxes`` (as annotated: kept + dropped),
    ``kept_boxes``, ``dropped_boxes``, ``dropped_by_reason``, ``clipped_boxes``, ``crowd``,
    ``difficult``, ``per_class`` (kept non-crowd boxes per class name), ``per_size`` (kept
    non-crowd boxes per COCO bucket of ``area``: small/medium/large), ``skipped_images``,
    ``image_errors`` (only when ``decode_images``), ``examples`` (reason -> first files).
    """
    per_class = Counter({name: 0 for name in dataset.class_names})
    per_size = Counter({"small": 0, "medium": 0, "large": 0})
    kept = crowd = difficult = empty = 0
    for i in range(len(dataset)):
        t = target_of(dataset, i)
        n = int(t["boxes"].shape[0])
        kept += n
        empty += n == 0
        is_crowd = t["iscrowd"].bool()
        crowd += int(is_crowd.sum())
        if "difficult" in t:
            difficult += int(t["difficult"].bool().sum())
        labels, area = t["labels"][~is_crowd], t["area"][~is_crowd]
        for label, count in zip(*torch.unique(labels, return_counts=True)):
            per_class[dataset.class_names[int(label) - 1]] += int(count)
        per_size["small"] += int((area < SMALL_MAX).sum())
        per_size["medium"] += int(((area >= SMALL_MAX) & (area < MEDIUM_MAX)).sum())
        per_size["large"] += int((area >= MEDIUM_MAX).sum())
    skips = dataset.skips.counts
    dropped = {k: v for k, v in skips.items() if is_drop_reason(k)}
    stats = {
        "images": len(dataset), "images_without_boxes": empty,
        "boxes": kept + sum(dropped.values()), "kept_boxes": kept,
        "dropped_boxes": sum(dropped.values()), "dropped_by_reason": dict(sorted(dropped.items())),
        "clipped_boxes": int(skips.get("clipped", 0)), "crowd": crowd, "difficult": difficult,
        "per_class": dict(per_class), "per_size": dict(per_size),
        "skipped_images": {k: v for k, v in sorted(skips.items()) if k.startswith("image_")},
        "fixed": {k: v for k, v in sorted(skips.items()) if k.startswith("fixed_")},
        "image_errors": {},
        "examples": {k: list(v) for k, v in sorted(dataset.skips.examples.items())},
    }
    if decode_images:
        errors, examples = check_images(dataset)
        stats["image_errors"] = dict(errors)
        stats["examples"].update(examples)
    return stats


def merge_stats(parts: list[dict]) -> dict:
    """Sum the counts of several splits' stats (e.g. train + val = the whole dataset)."""
    merged: dict = {}
    for part in parts:
        for key, value in part.items():
            if isinstance(value, dict):
                into = merged.setdefault(key, {})
                for k, v in value.items():
                    into[k] = into.get(k, [] if isinstance(v, list) else 0) + v
            else:
                merged[key] = merged.get(key, 0) + value
    return merged


def format_stats(stats: dict, title: str) -> str:
    """The human-readable summary ``detbench-dataset`` prints."""
    def counts(d: dict) -> str:
        return ", ".join(f"{k} {v}" for k, v in d.items()) or "none"

    lines = [f"{title}: {stats['images']} images ({stats['images_without_boxes']} without boxes)",
             f"boxes: {stats['boxes']} annotated, {stats['kept_boxes']} kept, "
             f"{stats['dropped_boxes']} dropped, {stats['clipped_boxes']} clipped to the image, "
             f"{stats['crowd']} crowd, {stats['difficult']} difficult",
             f"dropped boxes by reason: {counts(stats['dropped_by_reason'])}",
             f"boxes per class (non-crowd): {counts(stats['per_class'])}",
             f"boxes per size (COCO area, non-crowd): {counts(stats['per_size'])}",
             f"skipped images: {counts(stats['skipped_images'])}",
             f"fixed: {counts(stats.get('fixed', {}))}",
             f"unreadable images: {counts(stats['image_errors'])}"]
    for reason, shown in stats["examples"].items():
        lines.extend(f"  {reason}: {s}" for s in shown)
    return "\n".join(lines)


def draw_sample_grid(dataset: DetectionDataset, path: str | Path, num_images: int = 16,
                     columns: int = 4) -> list[int]:
    """Save a PNG grid of ``num_images`` images spread evenly over the dataset, with boxes and
    class names (crowd boxes dashed). Returns the indices drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = min(num_images, len(dataset))
    indices = sorted({round(i * (len(dataset) - 1) / max(n - 1, 1)) for i in range(n)})
    rows = max(1, -(-len(indices) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 3.2 * rows), squeeze=False)
    colours = plt.get_cmap("tab10")
    for ax in axes.flat:
        ax.axis("off")
    for ax, index in zip(axes.flat, indices):
        try:
            image, target = dataset[index]
        except (ValueError, OSError) as err:  # a bad image: say so in its panel, draw the rest
            ax.set_title(f"#{index}: unreadable", fontsize=8)
            ax.text(0.02, 0.5, str(err)[:120], fontsize=5, wrap=True, transform=ax.transAxes)
            continue
        ax.imshow(image.permute(1, 2, 0).clamp(0, 1).numpy())
        ax.set_title(f"#{index} id {target['image_id']}: {len(target['boxes'])} boxes", fontsize=8)
        for box, label, crowd in zip(target["boxes"].tolist(), target["labels"].tolist(),
                                     target["iscrowd"].tolist()):
            x1, y1, x2, y2 = box
            colour = colours((label - 1) % 10)
            ax.add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, lw=1.2,
                                       edgecolor=colour, linestyle="--" if crowd else "-"))
            ax.text(x1, y1, dataset.class_names[label - 1], fontsize=6, color="white",
                    va="bottom", bbox=dict(facecolor=colour, alpha=0.7, pad=0.5, lw=0))
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return indices
