"""One split of a configured dataset, with the root checks every command shares.

``build_split(dataset_cfg, "val")`` is how ``detbench``, ``detbench-dataset``,
``detbench-coverage`` and ``detbench-predict`` turn ``dataset.<split>`` into a dataset object:
a missing ``dataset.root`` (``???``) or a root that does not exist is an error naming the
dataset and the path tried, before any file is read.
"""
from __future__ import annotations

from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf


def check_dataset_root(dataset_cfg: DictConfig) -> None:
    """A missing or absent ``dataset.root`` is an error that names the path tried."""
    if OmegaConf.is_missing(dataset_cfg, "root"):
        raise ValueError(f"dataset '{dataset_cfg.get('name')}' needs dataset.root=PATH (the folder "
                         "holding the data)")
    root = dataset_cfg.get("root")
    if root is not None and not Path(str(root)).exists():
        raise FileNotFoundError(f"dataset.root: {Path(str(root)).resolve()} does not exist")


def build_split(dataset_cfg: DictConfig, split: str, **kwargs):
    """``dataset_cfg[split]`` instantiated (``kwargs`` passed on, e.g. ``transforms``); the
    validation split must not be empty."""
    check_dataset_root(dataset_cfg)
    if split not in dataset_cfg:
        raise ValueError(f"dataset '{dataset_cfg.get('name')}' has no '{split}' split "
                         f"(it has {[k for k in ('train', 'val', 'test') if k in dataset_cfg]})")
    dataset = instantiate(dataset_cfg[split], **kwargs)
    if split == "val" and len(dataset) == 0:
        raise ValueError(f"dataset '{dataset_cfg.get('name')}': the validation split is empty")
    return dataset
