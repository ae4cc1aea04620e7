"""Typed schemas for the run-level parts of the config, checked before anything is built.

The schemas hold types only: every value has one home, the YAML under conf/.

``check_config`` merges the composed config into these dataclasses, so a value of the wrong
type (``train.epochs=ten``) or an unknown stage fails at once with OmegaConf's message, naming
the key, before any data is read or any training starts.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from omegaconf import MISSING, DictConfig, OmegaConf

from experiments.build import check_renamed_options
from experiments.stages import STAGES, SWEEP_STAGES
from experiments.training.budget import check_budget

DEVICES = ("auto", "cpu", "cuda")


@dataclass
class TrainSchema:
    """Types of ``train.*``; the values live in conf/train/*.yaml only (no defaults here)."""
    budget: Any = MISSING       # {kind: epochs|iterations|flops|seconds, value} (experiments.training.budget)
    epochs: Optional[int] = MISSING   # shorthand: budget {kind: epochs, value: N}
    iterations: int = MISSING   # > 0: shorthand for budget {kind: iterations}, as whole epochs
    batch_size: int = MISSING
    num_workers: int = MISSING
    precision: str = MISSING    # fp32 | bf16 | fp16 (experiments.training.precision)
    precision_strict: bool = MISSING  # an unsupported precision is an error, not fp32 with a warning
    channels_last: Optional[bool] = MISSING  # NHWC (true) / NCHW (false) while training; null: the model's own
    compile: bool = MISSING        # the trunk under torch.compile while training (eager on failure)
    grad_clip: float = MISSING
    log_every: int = MISSING
    val_every: int = MISSING    # epochs between validations (0: train.validations instead)
    validations: int = MISSING  # evenly spaced validations over the budget (experiments.studies.budget_convergence)
    val_images: int = MISSING   # images used by those validations
    max_time_s: float = MISSING  # stop training after this many seconds (0: no limit)
    augmentation: Optional[str] = MISSING  # None: the detector's own policy
    shuffle: bool = MISSING
    freeze_batch_norm: bool = MISSING  # BatchNorm layers keep eval mode (experiments.job.preflight)
    sync_batch_norm: Any = MISSING  # true | false | auto (SyncBatchNorm under DDP on CUDA)
    warmup_iterations: int = MISSING
    warmup_factor: float = MISSING
    optimizer: Any = MISSING
    scheduler: Any = MISSING


@dataclass
class EvalSchema:
    """Types of ``eval.*``; values in conf/eval/default.yaml."""
    backend: str = MISSING
    batch_size: int = MISSING
    max_images: int = MISSING   # 0: the whole validation split
    samples: int = MISSING      # validation images saved for the report's detection grid
    coverage_images: int = MISSING  # val images whose targets the coverage counts (0: all)
    check_images: bool = MISSING  # decode the scored images before training (experiments.job.preflight)
    bootstrap: int = MISSING    # image-bootstrap replicates for the metrics' intervals (0: off)
    bootstrap_seed: int = MISSING
    split: str = MISSING     # test: the held-out test split when the dataset has one (else val)
    interval_method: str = MISSING   # percentile | basic | bca | debiased (analysis.stats.INTERVAL_METHODS)


@dataclass
class RobustnessSchema:
    """Types of ``robustness.*``; values in conf/robustness/default.yaml."""
    corruptions: list[str] = MISSING
    severities: list[int] = MISSING
    images: int = MISSING             # 0: the whole validation split
    num_workers: int = MISSING        # DataLoader workers that corrupt the images
    source: Optional[str] = MISSING   # a sweep folder whose runs' checkpoints to load


@dataclass
class RunSchema:
    """Types of the run-level keys; values in conf/config.yaml."""
    stages: list[str] = MISSING
    seed: int = MISSING
    device: str = MISSING
    resume: bool = MISSING
    overwrite: bool = MISSING   # delete a previous run in the folder first (experiments.job.folder)
    break_lock: bool = MISSING  # take over a run folder another job's lock names (experiments.job.lock)
    resume_changes: str = MISSING  # refuse | allow: result-changing settings on resume (experiments.job.resume_check)
    deterministic: bool = MISSING
    sweep_stages: list[str] = MISSING  # sweep-level stages (experiments.stages.SWEEP_STAGES)
    weights: Optional[str] = MISSING
    bench_reuse: Optional[str] = MISSING  # bench results shared by a sweep's seeds (experiments.speed.bench_reuse)


def _checked(schema: type, values, where: str) -> None:
    """Merge ``values`` into ``schema`` (types checked by OmegaConf, naming the key) and fail
    on any key the schema declares that ``values`` does not set. A part of the composed config
    is resolved in its place first, so interpolations to other parts (``${detector.name}``) work."""
    if isinstance(values, DictConfig):
        values = OmegaConf.to_container(values, resolve=True)
    merged = OmegaConf.merge(OmegaConf.structured(schema), values)
    missing = sorted(OmegaConf.missing_keys(merged))
    if missing:
        raise ValueError(f"{where}: no value for {missing} (set them in the config)")


def check_config(cfg: DictConfig) -> None:
    """Raise (ValueError or OmegaConf's ValidationError) if the config is malformed."""
    run_part = {k: cfg[k] for k in RunSchema.__dataclass_fields__ if k in cfg}
    _checked(RunSchema, run_part, "config")
    if "amp" in cfg.train:
        raise ValueError("train.amp is now train.precision (fp32 | bf16 | fp16; amp=true was bf16 on CPU, "
                         "fp16 on CUDA)")
    _checked(TrainSchema, cfg.train, "train")
    check_budget(cfg.train, bool(cfg.get("deterministic")))
    eval_part = {k: cfg.eval[k] for k in EvalSchema.__dataclass_fields__ if k in cfg.eval}
    _checked(EvalSchema, eval_part, "eval")
    if "robustness" in cfg:
        _checked(RobustnessSchema, cfg.robustness, "robustness")
        from experiments.data.corrupted import robustness_plan

        robustness_plan(cfg.robustness.corruptions, cfg.robustness.severities, cfg.robustness.images,
                        cfg.robustness.num_workers)
    unknown = [s for s in cfg.stages if s not in STAGES]
    if unknown:
        raise ValueError(f"stages: unknown {unknown}; choose from {list(STAGES)}")
    unknown = [s for s in cfg.sweep_stages if s not in SWEEP_STAGES]
    if unknown:
        raise ValueError(f"sweep_stages: unknown {unknown}; choose from {sorted(SWEEP_STAGES)}")
    if cfg.device not in DEVICES:
        raise ValueError(f"device: {cfg.device!r}; choose from {list(DEVICES)}")
    for key in ("name", "model"):
        if key not in cfg.detector:
            raise ValueError(f"detector config lacks '{key}' (see conf/detector/*.yaml)")
    check_renamed_options(cfg.detector.model)
    for key in ("name", "val"):
        if key not in cfg.dataset:
            raise ValueError(f"dataset config lacks '{key}' (see conf/dataset/*.yaml)")
