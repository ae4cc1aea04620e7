"""The stages of one job, as a table: ``STAGES[name](cfg, ctx) -> dict`` of metrics.json entries.

``experiments.run`` builds the detector and the datasets once, then calls, in this order, every
stage of ``STAGES`` named in ``cfg.stages`` (``PREPARE`` first, for every job). A stage reads what
it needs from :class:`StageContext` and returns the named numbers it measured; the runner merges
them into metrics.json after each stage. A new study is one stage function here (or in
``experiments/studies/``, registered here), one report section in ``analysis/report.py`` and
one conf group (``docs/architecture.md``, "Adding a study").
"""
from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from experiments.evaluation import save_evaluation
from experiments.evaluation.bootstrap import bootstrap_evaluation
from experiments.evaluation.files import image_file_names, image_keys, save_samples
from experiments.evaluation.scoring import score
from experiments.job import preflight
from experiments.job.interrupts import InterruptGuard, sweep_dir
from experiments.job.layout import last_checkpoint
from experiments.job.process import world_size
from experiments.speed.bench_reuse import bench_once, reuse_key
from experiments.speed.benchmark import benchmark
from experiments.speed.busy_guard import fold_batch_marks, guarded, read_machine
from experiments.speed.runtime_rows import benchmark_runtimes
from experiments.studies import interleaved_latency, proposal_stage, robustness, tuning  # noqa: F401 (tuning registers the ${tune:...} resolver)
from experiments.studies.budget_convergence import ValidationKeeper, validation_points
from experiments.studies.coverage import run_coverage
from experiments.training.budget import BudgetSchedule, check_budget, iterations_per_epoch, resolve_iterations
from experiments.training.region_classifiers import second_training_phase
from experiments.training.train_cost import cost_metrics, measure_step
from experiments.training.trainer import Trainer, warmup_then

log = logging.getLogger("detbench")


@dataclass
class StageContext:
    """What the runner built once and every stage shares.

    model: the detector, on ``device``, with its weights loaded; train_set: the training split
    as scanned by ``prepare_datasets`` (None when no train stage runs); val_set: the validation
    split; out: the run folder; is_main: rank 0 (the one that writes files); guard: the job's
    interrupt guard (training defers a signal to the next iteration boundary); test_set: the held-out
    test split the eval stage scores (``eval.split: test``), None when the dataset has none."""
    model: torch.nn.Module
    train_set: object | None
    val_set: object
    device: torch.device
    out: Path
    is_main: bool
    guard: InterruptGuard | None = None
    test_set: object | None = None


def coverage_stage(cfg: DictConfig, ctx: StageContext) -> dict:
    """The recall ceiling of training (``experiments.studies.coverage``): which validation
    objects the detector's assignment rule can reach. Needs no training; rank 0 only."""
    if not ctx.is_main:
        return {}
    return run_coverage(ctx.model, ctx.val_set, ctx.out, cfg.eval.coverage_images)


def prepare_stage(cfg: DictConfig, ctx: StageContext) -> dict:
    """Every job, before the named stages: the proposals of a detector that takes external ones
    (``experiments.studies.proposal_stage``), then the coverage study."""
    return {**proposal_stage.stage(cfg, ctx, eval_split(cfg, ctx)), **coverage_stage(cfg, ctx)}


def train_stage(cfg: DictConfig, ctx: StageContext) -> dict:
    """Train ``ctx.model`` on ``ctx.train_set`` (``cfg.train``) for the budget ``train.budget``
    resolved to iterations (``experiments.training.budget``; the step's cost measured first on a real
    batch, ``experiments.training.train_cost``), validating on ``ctx.val_set``'s subset at
    ``train.validations`` evenly spaced iterations (``experiments.studies.budget_convergence``)."""
    model, guard, world = ctx.model, ctx.guard, world_size()
    budget = check_budget(cfg.train, cfg.deterministic)
    cost = measure_step(model, ctx.train_set, cfg.train.batch_size, ctx.device, timed=budget.kind == "seconds")
    per_epoch = iterations_per_epoch(math.ceil(len(ctx.train_set) / world), cfg.train.batch_size)
    iterations = resolve_iterations(budget, per_epoch=per_epoch, flops_per_iteration=cost.flops * world,
                                    seconds_per_iteration=cost.seconds)
    log.info("training budget %s (%s) -> %d iterations; %.1f training GFLOPs per iteration", budget.label(),
             budget.source, iterations, cost.flops * world / 1e9)
    optimizer = instantiate(cfg.train.optimizer)(model.parameters())
    schedule = instantiate(cfg.train.scheduler) if cfg.train.scheduler else None
    scheduler = schedule.build(optimizer, iterations) if isinstance(schedule, BudgetSchedule) else \
        warmup_then(schedule, optimizer, cfg.train.warmup_iterations, cfg.train.warmup_factor)
    validate = ValidationKeeper(lambda m: score(m, ctx.val_set, cfg.eval.batch_size, ctx.device, cfg.eval.backend,
                                                cfg.train.val_images))
    trainer = Trainer(model, ctx.train_set, optimizer, scheduler, device=ctx.device,
                      epochs=math.ceil(iterations / per_epoch), max_iterations=iterations,
                      batch_size=cfg.train.batch_size, out_dir=ctx.out,
                      seed=cfg.seed, num_workers=cfg.train.num_workers,
                      precision=cfg.train.precision, precision_strict=cfg.train.precision_strict,
                      channels_last=cfg.train.channels_last, compile=cfg.train.compile,
                      detector=cfg.detector.name,
                      grad_clip=cfg.train.grad_clip, log_every=cfg.train.log_every,
                      val_every=cfg.train.val_every, validate=validate,
                      validate_at=() if cfg.train.val_every else validation_points(iterations, cfg.train.validations),
                      max_time_s=cfg.train.max_time_s, shuffle=cfg.train.shuffle,
                      stop_requested=guard.requested if guard else None,
                      sync_batch_norm=cfg.train.sync_batch_norm)
    if cfg.train.freeze_batch_norm:
        log.info("train.freeze_batch_norm: %d BatchNorm layers kept in eval mode",
                 preflight.freeze_batch_norm(model))
    fresh = not (last_checkpoint(ctx.out).is_file() or (ctx.out / "train_log.csv").is_file())
    if cfg.resume and fresh and sweep_dir() is not None:   # detbench resume=SWEEP_DIR: a job that
        log.info("resume=true: %s holds no training yet; training from the start", ctx.out)  # never ran
    elif cfg.resume:   # a single run without a checkpoint: an error naming the file
        trainer.resume()
    if guard is not None:
        guard.deferring = True   # a signal now stops at the next iteration boundary
    before = read_machine() if ctx.is_main else None   # train_time_s is a timing too
    try:
        result = trainer.fit()
    finally:
        if guard is not None:
            guard.deferring = False
    busy = {}
    if before is not None:
        after = read_machine()
        busy = {"train_time_reliable": not (before.disturbed or after.disturbed)}
        if not busy["train_time_reliable"]:
            busy["train_time_note"] = (f"trained on a busy machine ({before.why or after.why}; before: "
                                       f"{before.text()}; after: {after.text()}): train_time_s is not a speed")
    log.info("trained %d iterations in %.0f s, final loss %.4f", result["iterations"],
             result["train_time_s"], result["final_loss"])
    second = second_training_phase(cfg, ctx, trainer) if hasattr(model, "fit_after_training") else {}
    return {**second, "train_time_s": result["train_time_s"],
            "train_time_total_s": result["train_time_s"] + second.get("rcnn_fit_s", 0.0),   # + R-CNN's SVMs
            "train_iterations": result["iterations"],
            "train_iterations_planned": result["planned_iterations"],
            "train_epochs": result["epochs"], "final_loss": result["final_loss"],
            "train_stopped_on_time": result["stopped_on_time"], "batch_norm": result["batch_norm"], **busy,
            "train_budget": budget.label(), "train_budget_kind": budget.kind, "train_budget_value": budget.value,
            "train_budget_source": budget.source, "train_budget_iterations": iterations,
            "train_budget_machine_dependent": budget.kind == "seconds",
            "train_lr": cfg.train.optimizer.get("lr"), "train_weight_decay": cfg.train.optimizer.get("weight_decay"),
            **({"tune_trial": int(cfg.tune.trial), "tune_trials": int(cfg.tune.trials)} if "tune" in cfg else {}),
            **cost_metrics(cost, result["iterations"], world), **validate.metrics(cfg.seed),
            **{k: v for k, v in result.items() if k.startswith("train_")}}


def eval_split(cfg: DictConfig, ctx: StageContext) -> tuple[str, object]:
    """(name, dataset) the eval stage scores: the held-out test split when ``eval.split`` is test and
    the dataset has one (no decision ever reads it), else the validation split."""
    if str(cfg.eval.get("split", "val")) == "test" and ctx.test_set is not None:
        return "test", ctx.test_set
    return "val", ctx.val_set


def eval_stage(cfg: DictConfig, ctx: StageContext) -> dict:
    """Score the eval split (``eval_split``; ``cfg.eval``): COCO metrics, their bootstrap intervals
    and the evaluator's files in the run folder; ``eval_split`` says which split."""
    start = time.perf_counter()
    split, dataset = eval_split(cfg, ctx)
    result = score(ctx.model, dataset, cfg.eval.batch_size, ctx.device, cfg.eval.backend, cfg.eval.max_images)
    if not ctx.is_main or result is None:
        return {}
    save_evaluation(result, ctx.out, image_file_names(dataset))
    save_samples(dataset, ctx.out / "samples", cfg.eval.samples)
    keys = image_keys(dataset) if cfg.eval.bootstrap else None   # pairing in the report
    intervals = bootstrap_evaluation(result, cfg.eval.bootstrap, cfg.eval.bootstrap_seed, ctx.out,
                                     image_keys=keys, method=cfg.eval.interval_method)
    log.info("AP %.1f%%  AP50 %.1f%%  APs %.1f%%  APm %.1f%%  APl %.1f%% (COCO, in %% like the report)",
             *(100 * result.metrics[k] for k in ("map", "map_50", "map_small", "map_medium", "map_large")))
    return {**result.metrics, **intervals, "eval_split": split, "eval_time_s": time.perf_counter() - start}


def bench_stage(cfg: DictConfig, ctx: StageContext) -> dict:
    """The speed protocol (``experiments.speed.benchmark``) with ``cfg.bench``, once per runtime of
    ``bench.runtimes`` (``experiments.speed.runtime_rows``), inside the busy-machine guard
    (``experiments.speed.busy_guard``: repeated once when disturbed, else marked
    ``speed_reliable: false`` with a ``speed_note``), and each batch size's timed set inside its own
    (``speed_reliable_b{b}``; one unreliable set marks the run); rank 0 only. With ``bench_reuse`` set, once
    per detector and settings in a sweep (``experiments.speed.bench_reuse``)."""
    if not ctx.is_main:
        return {}
    bench = OmegaConf.to_container(cfg.bench, resolve=True)
    key = reuse_key(cfg.detector.name, OmegaConf.to_container(cfg.detector.model, resolve=True),
                    ctx.model.num_classes, str(ctx.device), bench)
    runtimes = bench.pop("runtimes", None) or ["pytorch"]
    bench["guard"] = read_machine   # each batch size's timed set between two readings
    if list(runtimes) == ["pytorch"]:
        measure = lambda: fold_batch_marks(guarded(  # noqa: E731
            lambda: benchmark(ctx.model, device=ctx.device, **bench), "the speed stage"))
    else:
        measure = lambda: fold_batch_marks(guarded(lambda: benchmark_runtimes(  # noqa: E731
            ctx.model, runtimes, ctx.out, device=ctx.device, **bench), "the speed stage"))
    return bench_once(cfg.get("bench_reuse"), key, ctx.out, measure)


#: runs for every job, before the stages the config names (no training needed).
PREPARE: Callable[[DictConfig, StageContext], dict] = prepare_stage
#: the stages a config may name (``stages=[...]``), in the order they run.
STAGES: dict[str, Callable[[DictConfig, StageContext], dict]] = {
    "train": train_stage,
    "eval": eval_stage,
    "robustness": robustness.stage,
    "bench": bench_stage,
}

#: sweep-level stages: ``stage(cfg, sweep_dir) -> dict``, for work that needs several finished runs
#: at once (interleaved timing of two detectors, re-scoring a sweep). The sweep-end callback runs
#: each one named in ``sweep_stages`` over the sweep folder before the report, and writes what it
#: returns to ``<sweep>/sweep_stages/<name>.json``. Studies register theirs here.
SWEEP_STAGES: dict[str, Callable[[DictConfig, Path], dict]] = {"interleaved_latency": interleaved_latency.stage}


def run_sweep_stages(cfg: DictConfig, sweep_dir: Path) -> dict[str, str]:
    """Run the sweep-level stages ``cfg.sweep_stages`` names; returns name -> "ok" or the error
    (one failing stage never stops the others or the report)."""
    done = {}
    for name in cfg.get("sweep_stages") or []:
        if name not in SWEEP_STAGES:
            done[name] = f"unknown sweep stage (known: {sorted(SWEEP_STAGES)})"
            log.error("sweep stage %s: %s", name, done[name])
            continue
        try:
            result = SWEEP_STAGES[name](cfg, sweep_dir)
            (sweep_dir / "sweep_stages").mkdir(exist_ok=True)
            (sweep_dir / "sweep_stages" / f"{name}.json").write_text(json.dumps(result, indent=2, default=str))
            done[name] = "ok"
        except Exception as error:  # the runs' results stay; the report says what failed
            done[name] = f"{type(error).__name__}: {error}"
            log.error("sweep stage %s failed: %s", name, done[name])
    return done
