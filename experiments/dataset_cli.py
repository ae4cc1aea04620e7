"""``detbench-dataset``: what a dataset config gives, before any training.

    detbench-dataset dataset=voc dataset.root=PATH/VOCdevkit/VOC2007 +split=val
    detbench-dataset dataset=bccd dataset.root=../shared/data/bccd +split=all
    detbench-dataset dataset=coco dataset.root=../shared/data/coco_tiny +split=val

Reads only ``cfg.dataset`` (its ``train`` / ``val`` nodes, built with
``hydra.utils.instantiate``, no augmentation) and these optional keys (add them with ``+``):

- ``split``: ``train`` (default), ``val``, or ``all`` (train and val counted together);
- ``grid``: how many sample images to draw (default 16; 0 = none);
- ``check_images``: decode every image and count unreadable ones (default true).

Prints images, boxes, boxes per class and per COCO size bucket, dropped boxes and why; writes
``dataset_stats.json`` and ``dataset_samples.png`` into Hydra's output folder.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

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
    if OmegaConf.is_missing(dataset_cfg, "root"):
        raise ValueError(f"dataset '{dataset_cfg.get('name')}' needs dataset.root=PATH")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    parts, datasets = [], []
    for name in SPLITS[split]:
        dataset = instantiate(dataset_cfg[name])
        datasets.append(dataset)
        parts.append(dataset_stats(dataset, decode_images=decode_images))
    stats = parts[0] if len(parts) == 1 else merge_stats(parts)
    stats = {"dataset": str(dataset_cfg.get("name", "?")), "split": split, **stats}
    print(format_stats(stats, f"dataset {stats['dataset']} (split {split})"))
    (out_dir / "dataset_stats.json").write_text(json.dumps(stats, indent=2))
    if grid > 0 and len(datasets[0]) > 0:
        draw_sample_grid(datasets[0], out_dir / "dataset_samples.png", num_images=grid)
    print(f"wrote {out_dir / 'dataset_stats.json'}" + (
        f" and {out_dir / 'dataset_samples.png'}" if grid > 0 else ""))
    return stats


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    describe_dataset(cfg.dataset, str(cfg.get("split", "train")),
                     HydraConfig.get().runtime.output_dir, grid=int(cfg.get("grid", 16)),
                     decode_images=bool(cfg.get("check_images", True)))


if __name__ == "__main__":
    main()
