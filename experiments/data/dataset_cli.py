"""``detbench-dataset``: what a dataset config gives, before any training.

    detbench-dataset dataset=voc dataset.root=PATH/VOCdevkit/VOC2007 +split=val
    detbench-dataset dataset=bccd dataset.root=../shared/data/bccd +split=all
    detbench-dataset dataset=coco dataset.root=../shared/data/coco_tiny +split=val

Reads only ``cfg.dataset`` (its ``train`` / ``val`` nodes, built with
``hydra.utils.instantiate``, no augmentation) and these optional keys (add them with ``+``):

- ``split``: ``train`` (default), ``val``, or ``all`` (train and val counted together);
- ``grid``: how many sample images to draw (default 16; 0 = none);
- ``check_images``: decode every image and count unreadable ones (default true).

Prints images, boxes, boxes per class and per COCO size bucket, dropped boxes and why, what was
fixed (``fixed_*``: a size read from the image, a ``<filename>`` that did not match), the
classes, and the pre-flight image scan (``experiments.data.scan``); writes
``dataset_stats.json`` and ``dataset_samples.png`` into Hydra's output folder.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from experiments.data.scan import scan_images
from experiments.data.split_builder import build_split
from experiments.data.stats import dataset_stats, draw_sample_grid, format_stats, merge_stats

log = logging.getLogger(__name__)
SPLITS = {"train": ("train",), "val": ("val",), "all": ("train", "val")}


def describe_dataset(dataset_cfg: DictConfig, split: str, out_dir: str | Path,
                     grid: int = 16, decode_images: bool = True) -> dict:
    """Build ``dataset_cfg[split]`` (or both splits for "all"), print and write its stats
    (``dataset_stats.json``) and a sample grid (``dataset_samples.png``) into ``out_dir``.
    Returns the stats dict."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    parts, datasets = [], []
    scans = {}
    for name in SPLITS[split]:
        dataset = build_split(dataset_cfg, name)
        datasets.append(dataset)
        parts.append(dataset_stats(dataset, decode_images=decode_images))
        scans[name] = scan_images(dataset).as_dict()
    stats = parts[0] if len(parts) == 1 else merge_stats(parts)
    stats = {"dataset": str(dataset_cfg.get("name", "?")), "split": split, **stats,
             "classes": list(datasets[0].class_names), "image_scan": scans,
             "layout": {n: getattr(d, "split_info", {}).get("layout") for n, d in zip(SPLITS[split], datasets)}}
    print(format_stats(stats, f"dataset {stats['dataset']} (split {split})"))
    print(f"classes ({len(stats['classes'])}): {', '.join(stats['classes'])}")
    for name, scan in scans.items():
        print(f"image scan ({name}): {scan['images']} files, bad: "
              f"{', '.join(f'{k} {v}' for k, v in scan['bad_by_reason'].items()) or 'none'}, "
              f"modes: {', '.join(f'{k} {v}' for k, v in scan['modes'].items()) or 'none'}")
        for line in scan["bad_files"][:5]:
            print(f"  {line}")
    (out_dir / "dataset_stats.json").write_text(json.dumps(stats, indent=2))
    if grid > 0 and len(datasets[0]) > 0:
        draw_sample_grid(datasets[0], out_dir / "dataset_samples.png", num_images=grid)
    print(f"wrote {out_dir / 'dataset_stats.json'}" + (
        f" and {out_dir / 'dataset_samples.png'}" if grid > 0 else ""))
    return stats


@hydra.main(config_path="../../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    describe_dataset(cfg.dataset, str(cfg.get("split", "train")),
                     HydraConfig.get().runtime.output_dir, grid=int(cfg.get("grid", 16)),
                     decode_images=bool(cfg.get("check_images", True)))


if __name__ == "__main__":
    main()
