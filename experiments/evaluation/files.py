"""The evaluator's run-folder files: detections.json, ground_truth.json, per_class.csv and
pr_curves.npz (README, "What a run writes")."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
from torchvision.utils import save_image

from experiments.evaluation.coco_backends import AREA_NAMES, IOU_THRESHOLDS, MAX_DETECTIONS, RECALL_THRESHOLDS
from experiments.evaluation.metrics import EvaluationResult


def save_evaluation(result: EvaluationResult, folder: Path, file_names: dict[int, str] | None = None) -> None:
    """Write detections.json, ground_truth.json, per_class.csv and pr_curves.npz into ``folder``
    (the run-folder files in README's table). ``file_names``: image_id -> the image's file (relative
    to the dataset's images), written as each ground-truth image's ``file_name``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "detections.json", "w") as f:
        json.dump(result.coco_dt, f)
    coco_gt = result.coco_gt
    for image in coco_gt["images"]:
        if file_names and image["id"] in file_names:
            image["file_name"] = file_names[image["id"]]
    with open(folder / "ground_truth.json", "w") as f:
        json.dump(coco_gt, f)
    result.per_class.to_csv(folder / "per_class.csv", index=False)
    np.savez_compressed(
        folder / "pr_curves.npz", precision=result.precision, recall=result.recall,
        iou_thresholds=IOU_THRESHOLDS, recall_thresholds=RECALL_THRESHOLDS,
        class_names=np.array(result.per_class["class_name"].tolist(), dtype=str),
        category_ids=result.per_class["category_id"].to_numpy(),
        area_names=np.array(AREA_NAMES), max_detections=np.array(MAX_DETECTIONS))


def image_file_names(dataset) -> dict[int, str]:
    """image_id -> file path relative to the folder all of the dataset's images share, for
    datasets read from files (``records``); empty for generated ones (synthetic)."""
    records = getattr(dataset, "records", None) or []
    if not records:
        return {}
    paths = [Path(r.path) for r in records]
    root = Path(os.path.commonpath([p.parent for p in paths]))
    return {int(r.image_id): p.relative_to(root).as_posix() for r, p in zip(records, paths)}


def image_keys(dataset) -> dict[int, str]:
    """image_id -> ``<file name>#<sha1 of the file's bytes, 16 hex>`` (the name relative to the
    images' common folder), or for a generated dataset ``#<sha1 of the image's float32 pixels>``:
    what two runs must share to be paired image by image (an image id is often a position)."""
    names = image_file_names(dataset)
    keys = {}
    for record in getattr(dataset, "records", None) or []:
        digest = hashlib.sha1(Path(record.path).read_bytes()).hexdigest()[:16]
        keys[int(record.image_id)] = f"{names.get(int(record.image_id), '')}#{digest}"
    if keys:
        return keys
    for i in range(len(dataset)):
        image, target = dataset[i]
        pixels = image.detach().to("cpu", copy=True).float().contiguous().numpy().tobytes()
        keys[int(target["image_id"])] = f"#{hashlib.sha1(pixels).hexdigest()[:16]}"
    return keys


def save_samples(dataset, folder: Path, count: int) -> None:
    """The first ``count`` validation images as PNG, for the report's detection grid."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(min(count, len(dataset))):
        image, target = dataset[i]
        save_image(image, folder / f"{target['image_id']}.png")
