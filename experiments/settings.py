"""Typed schemas for the run-level parts of the config, checked before anything is built.

``check_config`` merges the composed config into these dataclasses, so a value of the wrong
type (``train.epochs=ten``) or an unknown stage fails at once with OmegaConf's message, naming
the key, before any data is read or any training starts.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf

STAGES = ("train", "eval", "bench")
DEVICES = ("auto", "cpu", "cuda")


@dataclass
class TrainSchema:
    epochs: int = 1
    batch_size: int = 8
    num_workers: int = 0
    amp: bool = False
    grad_clip: float = 0.0
    log_every: int = 10
    val_every: int = 0          # epochs between validations (0: none during training)
    val_images: int = 64        # images used by those validations
    max_time_s: float = 0.0     # stop training after this many seconds (0: no limit)
    augmentation: Optional[str] = None  # None: the detector's own policy
    shuffle: bool = True
    sync_batch_norm: Any = "auto"   # true | false | auto (SyncBatchNorm under DDP on CUDA)
    warmup_iterations: int = 0
    warmup_factor: float = 0.1
    optimizer: Any = None
    scheduler: Any = None


@dataclass
class EvalSchema:
    backend: str = "faster_coco_eval"
    batch_size: int = 8
    max_images: int = 0         # 0: the whole validation split
    samples: int = 4            # validation images saved for the report's detection grid


@dataclass
class RunSchema:
    stages: list[str] = field(default_factory=lambda: list(STAGES))
    seed: int = 0
    device: str = "auto"
    resume: bool = False
    deterministic: bool = False
    weights: Optional[str] = None


def check_config(cfg: DictConfig) -> None:
    """Raise (ValueError or OmegaConf's ValidationError) if the config is malformed."""
    run_part = {k: cfg[k] for k in RunSchema.__dataclass_fields__ if k in cfg}
    OmegaConf.merge(OmegaConf.structured(RunSchema), run_part)
    OmegaConf.merge(OmegaConf.structured(TrainSchema), cfg.train)
    eval_part = {k: cfg.eval[k] for k in EvalSchema.__dataclass_fields__ if k in cfg.eval}
    OmegaConf.merge(OmegaConf.structured(EvalSchema), eval_part)
    unknown = [s for s in cfg.stages if s not in STAGES]
    if unknown:
        raise ValueError(f"stages: unknown {unknown}; choose from {list(STAGES)}")
    if cfg.device not in DEVICES:
        raise ValueError(f"device: {cfg.device!r}; choose from {list(DEVICES)}")
    for key in ("name", "model"):
        if key not in cfg.detector:
            raise ValueError(f"detector config lacks '{key}' (see conf/detector/*.yaml)")
    for key in ("name", "val"):
        if key not in cfg.dataset:
            raise ValueError(f"dataset config lacks '{key}' (see conf/dataset/*.yaml)")
