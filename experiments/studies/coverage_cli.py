"""``detbench-coverage``: how many ground-truth objects a detector's training-time assignment
reaches, by COCO size bucket and class, before any training (``experiments.studies.coverage``).

    detbench-coverage detector=ssd300 dataset=coco dataset.root=../shared/data/coco_tiny +split=val
    detbench-coverage detector=yolov1 +split=val          # the synthetic shapes
    detbench-coverage detector=faster_rcnn_vgg16 detector.model.width=0.125 +split=val

The geometry (input size, default boxes, grid, anchors, thresholds) does not depend on the
channel width, so ``detector.model.width=0.125`` gives the same numbers, built faster.
Optional keys (add with ``+``): ``split`` (train, the default, or val), ``max_images``
(0 = all). Writes ``coverage.json`` (the summary and the policies), ``coverage.csv`` (one row
per stage and group) and ``coverage_objects.csv`` (one row per object) into Hydra's output
folder, and prints the size table (and the class table with ``+by_class=true``).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from experiments.build import build_detector
from experiments.data.split_builder import build_split
from experiments.job.folder import describe_error
from experiments.studies.coverage import CoverageNotDefined, coverage_of, format_table, to_json

SPLITS = ("train", "val")


def describe_coverage(cfg: DictConfig, split: str, out_dir: str | Path, max_images: int = 0,
                      by_class: bool = False) -> dict:
    """Coverage of ``cfg.detector`` on ``cfg.dataset[split]``; writes and prints it, returns
    coverage.json's content (``{"defined": False, "reason": ...}`` for a detector without an
    assignment rule)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dataset = build_split(cfg.dataset, split)
    model = build_detector(cfg.detector.model, dataset.num_classes)   # as a run builds it
    identity = {"detector": str(cfg.detector.name), "dataset": str(cfg.dataset.name), "split": split,
                "input_size": list(model.input_size), "images": len(dataset) if not max_images
                else min(max_images, len(dataset))}
    where = f"dataset {cfg.dataset.name} split {split}"
    try:
        records, summary = coverage_of(model, dataset, max_images, where)
    except CoverageNotDefined as error:
        content = {**identity, "defined": False, "reason": str(error)}
        (out_dir / "coverage.json").write_text(json.dumps(content, indent=2))
        print(f"{cfg.detector.name}: coverage not defined ({error})")
        return content
    content = {**identity, "defined": True, **to_json(summary)}
    (out_dir / "coverage.json").write_text(json.dumps(content, indent=2))
    summary.to_csv(out_dir / "coverage.csv", index=False)
    records.to_csv(out_dir / "coverage_objects.csv", index=False)
    print(f"\nassignment coverage of {cfg.detector.name} (input {model.input_size[0]}x{model.input_size[1]}) "
          f"on {where}, {identity['images']} images; buckets by {content['size_buckets']}\n")
    print(format_table(summary, "size"))
    if by_class:
        print("\n" + format_table(summary, "class"))
    print(f"\nwrote {out_dir / 'coverage.json'}, coverage.csv and coverage_objects.csv")
    return content


#: what a user's input raises (a missing root, a bad annotation or image, a wrong setting, and
#: those wrapped by Hydra's instantiate): one line, exit 1, no traceback.
INPUT_ERRORS = (OSError, ValueError, KeyError, TypeError, OmegaConfBaseException, InstantiationException)


@hydra.main(config_path="../../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        describe_coverage(cfg, str(cfg.get("split", "train")), HydraConfig.get().runtime.output_dir,
                          max_images=int(cfg.get("max_images", 0)), by_class=bool(cfg.get("by_class", False)))
    except INPUT_ERRORS as error:
        sys.exit(f"detbench-coverage: error: {describe_error(error)}")


if __name__ == "__main__":
    main()
