"""The `detbench` entry point: one Hydra job trains, evaluates and benchmarks one detector on
one dataset and writes everything into its own folder (see README, "What a run writes").

``run(cfg, output_dir)`` is a plain function the tests call; ``main`` is a thin
``@hydra.main`` around it. A failing job writes ``status: failed`` and its error into its
``metrics.json`` (and ``error.txt``), so a sweep and its report go on without it. Before
anything trains, ``experiments.run_folder`` decides what the job may do to its folder (refuse a
rerun, say a resumed run is finished, protect finished results) and ``experiments.preflight``
checks settings, folders and images; ``experiments.interrupts`` turns SIGINT / SIGTERM into a
checkpoint and ``status: interrupted`` with the command that resumes.
"""
from __future__ import annotations

import json
import logging
import os
import random
import subprocess
import sys
import time
import traceback
from pathlib import Path

import hydra
import torch
import torch.distributed as dist
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from experiments import preflight
from experiments.budgets import detector_facts
from experiments.data.prepare import NoObjectsError, decode_failures, prepare_datasets
from experiments.identity import device_name, environment, model_facts
from experiments.interrupts import InterruptGuard, RunInterrupted, interrupted_record
from experiments.robustness import robustness_stage, robustness_weights
from experiments.run_folder import RunFolder, decide, describe_error
from experiments.settings import check_config
from experiments.weights import build_detector, load_run_weights

log = logging.getLogger("detbench")
PROJECT_ROOT = Path(__file__).resolve().parents[1]


def run(cfg: DictConfig, output_dir: str | Path | None = None) -> dict:
    """Run the stages ``cfg.stages`` and return the flat metrics dict written to metrics.json."""
    out = Path(output_dir or HydraConfig.get().runtime.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    metrics = identity(cfg)
    folder = RunFolder(out, bool(cfg.get("resume")), bool(cfg.get("overwrite")), _hydra_log(out))
    is_main = setup_distributed(cfg)   # first: rank 0 decides about the folder for all ranks
    verdict = decide(folder, cfg, is_main)
    if verdict:   # refused or already finished: nothing in the folder is touched
        (log.info if verdict.startswith("finished") else log.error)("%s", verdict)
        return {**metrics, "status": verdict.split(":")[0], "error": verdict}
    failure, guard = None, InterruptGuard()
    try:
        guard.__enter__()
        check_config(cfg)
        preflight.preflight(cfg, out)
        device = resolve_device(cfg.device)
        metrics["device"] = device_name(device)
        seed_everything(cfg.seed, cfg.deterministic)
        val_set = build_val_set(cfg)
        model = build_detector(cfg.detector.model, val_set.num_classes).to(device)
        model.learn_difficult = bool(cfg.detector.get("learn_difficult", True))   # as each paper
        metrics["learn_difficult"] = model.learn_difficult
        train_set = build_train_set(cfg, model.input_size if model.fixed_input_size else None) \
            if "train" in cfg.stages else None
        metrics.update(prepare_datasets(train_set, val_set, out))  # scan, class map, split.json
        metrics["params"] = sum(p.numel() for p in model.parameters())
        h, w = val_set[0][0].shape[-2:]
        metrics["num_candidates"] = model.num_candidates((int(h), int(w)))
        metrics.update(detector_facts(model))   # input size and box budgets, for the sweeps' plots
        if is_main:   # the recall ceiling of training (experiments/coverage.py); no training needed
            from experiments.coverage import run_coverage
            metrics.update(run_coverage(model, val_set, out, cfg.eval.get("coverage_images", 500)))
        weights = robustness_weights(cfg)   # cfg.weights, or robustness.source's checkpoint
        if weights:
            load_run_weights(model, weights)
            log.info("loaded weights from %s", weights)
        train_set = build_train_set(cfg, model.input_size) if "train" in cfg.stages else None
        metrics.update(model_facts(model, tuple(val_set[0][0].shape[-2:])))
        if cfg.weights:
            load_run_weights(model, cfg.weights)
            log.info("loaded weights from %s", cfg.weights)
        metrics["weights_source"] = model.weights_source
        if train_set is not None:
            preflight.check_batch_norm(model, cfg.train.batch_size, len(train_set),
                                       int(os.environ.get("WORLD_SIZE", 1)),
                                       bool(cfg.train.get("freeze_batch_norm")))
        # under dataset.bad_images=skip|repair a failing decode is skipped and counted instead
        if cfg.eval.get("check_images", True) and getattr(val_set, "bad_images", "error") == "error" \
                and ("eval" in cfg.stages or train_set is not None and cfg.train.val_every):
            scored = cfg.eval.max_images if "eval" in cfg.stages else cfg.train.val_images
            preflight.check_images(val_set, scored, "validation split")
        metrics["augmentation"] = cfg.train.augmentation or cfg.detector.get("augmentation") or "none"
        years = OmegaConf.select(cfg, "dataset.years", default=None)
        metrics["train_years"] = list(years) if OmegaConf.is_list(years) else years
        if "train" in cfg.stages:
            metrics.update(train_stage(cfg, model, train_set, val_set, device, out, guard))
            write_metrics(out, metrics, is_main and not folder.protected)
        if "eval" in cfg.stages:
            metrics.update(eval_stage(cfg, model, val_set, device, out, is_main))
            write_metrics(out, metrics, is_main and not folder.protected)
        if "robustness" in cfg.stages:
            metrics.update(robustness_stage(cfg, model, val_set, device, out, is_main))
            write_metrics(out, metrics, is_main and not folder.protected)
        if "bench" in cfg.stages and is_main:
            from experiments.benchmark import benchmark

            bench = OmegaConf.to_container(cfg.bench, resolve=True)
            metrics.update(benchmark(model, device=device, **bench))
        metrics["status"] = "ok"
        if metrics.get("train_iterations", 0) < metrics.get("train_iterations_planned", 0):
            metrics["status"] = "incomplete"    # never ranked beside finished runs
            metrics["status_reason"] = (f"training stopped by train.max_time_s="
                                        f"{cfg.train.max_time_s} after {metrics['train_iterations']}"
                                        f" of {metrics['train_iterations_planned']} iterations")
    except KeyboardInterrupt as stop:  # RunInterrupted, TrainingInterrupted or a bare Ctrl-C
        if not isinstance(stop, RunInterrupted):
            stop = RunInterrupted(guard.signum or 2, getattr(stop, "iteration", None))
        metrics.update(interrupted_record(stop, out, metrics["overrides"]))
        failure = metrics["error"] if folder.protected else None
        log.warning("%s", metrics["error"])
    except Exception as error:  # a failed job is recorded, never silently lost
        metrics["status"] = "no_objects" if isinstance(error, NoObjectsError) else "failed"
        metrics["error"] = describe_error(error)
        failure = traceback.format_exc()
        log.error("job failed: %s", metrics["error"])
    finally:
        guard.__exit__(None, None, None)
    metrics.update(decode_failures(out))
    finish(folder, metrics, failure, is_main)
    guard.hand_over()
    return metrics


def finish(folder: RunFolder, metrics: dict, failure: str | None, is_main: bool) -> None:
    """Write the job's record: metrics.json (+ error.txt), or, when this job must not replace a
    finished run's results, resume_error.txt alone. A folder that refuses writes is logged."""
    if not is_main:
        return
    try:
        if failure is not None:
            metrics["error_file"] = str(folder.write_failure(failure))
        if folder.protected and metrics["status"] != "ok":
            log.error("the finished run's results in %s are kept unchanged; this resume's "
                      "failure is in %s", folder.out, metrics.get("error_file", "the run's log"))
        else:
            write_metrics(folder.out, metrics, True)
    except OSError as error:
        log.error("could not write the results into %s: %s: %s", folder.out,
                  type(error).__name__, error)


def _hydra_log(out: Path) -> Path | None:
    """The Hydra job's log file when it lives in ``out`` (emptied by overwrite=true)."""
    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    path = Path(hydra_cfg.runtime.output_dir) / f"{hydra_cfg.job.name}.log"
    return path if path.parent.resolve() == out.resolve() else None


def identity(cfg: DictConfig) -> dict:
    """Who ran what, where: the identity columns of metrics.json."""
    overrides = []
    if HydraConfig.initialized():
        overrides = list(HydraConfig.get().overrides.task)
    return {"detector": OmegaConf.select(cfg, "detector.name", default="?"),
            "dataset": OmegaConf.select(cfg, "dataset.name", default="?"),
            "seed": OmegaConf.select(cfg, "seed", default=None), "status": "running",
            "overrides": overrides, "git_commit": git_commit(),
            **environment(),
            **{f"paper_{k}": v for k, v in (OmegaConf.select(cfg, "paper") or {}).items()}}


def check_dataset_root(cfg: DictConfig) -> None:
    """A missing or absent ``dataset.root`` is an error that names the path tried."""
    if OmegaConf.is_missing(cfg.dataset, "root"):
        raise ValueError(f"dataset '{cfg.dataset.name}' needs dataset.root=PATH (the folder "
                         "holding the data)")
    root = cfg.dataset.get("root")
    if root is not None and not Path(str(root)).exists():
        raise FileNotFoundError(f"dataset.root: {Path(str(root)).resolve()} does not exist")


def build_val_set(cfg: DictConfig):
    check_dataset_root(cfg)
    val_set = instantiate(cfg.dataset.val)
    if len(val_set) == 0:
        raise ValueError(f"dataset '{cfg.dataset.name}': the validation split is empty")
    return val_set


def build_train_set(cfg: DictConfig, input_size: tuple[int, int] | None):
    """The training split with its augmentation policy (``train.augmentation``, else the
    detector's own), resized to the detector's fixed input size inside the loader's workers;
    ``input_size`` None (a detector that keeps the aspect ratio): never resized there."""
    from experiments.data.transforms import build_policy

    policy_name = cfg.train.augmentation or cfg.detector.get("augmentation") or "none"
    train_set = instantiate(cfg.dataset.train,
                            transforms=build_policy(policy_name, output_size=input_size and tuple(input_size)))
    log.info("train: %d images, augmentation policy '%s'", len(train_set), policy_name)
    return train_set


def train_stage(cfg, model, train_set, val_set, device, out: Path, guard=None) -> dict:
    from experiments.predict import score
    from experiments.train import Trainer, epochs_for, warmup_then

    optimizer = instantiate(cfg.train.optimizer)(model.parameters())
    scheduler_factory = instantiate(cfg.train.scheduler) if cfg.train.scheduler else None
    scheduler = warmup_then(scheduler_factory, optimizer, cfg.train.warmup_iterations,
                            cfg.train.warmup_factor)

    def validate(m):
        result = score(m, val_set, cfg.eval.batch_size, device, cfg.eval.backend,
                       cfg.train.val_images)
        return result.metrics if result is not None else {}

    trainer = Trainer(model, train_set, optimizer, scheduler, device=device,
                      epochs=epochs_for(cfg.train.epochs, cfg.train.get("iterations", 0), len(train_set),
                                        cfg.train.batch_size), batch_size=cfg.train.batch_size, out_dir=out,
                      seed=cfg.seed, num_workers=cfg.train.num_workers, amp=cfg.train.amp,
                      grad_clip=cfg.train.grad_clip, log_every=cfg.train.log_every,
                      val_every=cfg.train.val_every, validate=validate,
                      max_time_s=cfg.train.max_time_s, shuffle=cfg.train.shuffle,
                      stop_requested=guard.requested if guard else None,
                      sync_batch_norm=cfg.train.get("sync_batch_norm", "auto"))
    if cfg.train.get("freeze_batch_norm"):
        log.info("train.freeze_batch_norm: %d BatchNorm layers kept in eval mode",
                 preflight.freeze_batch_norm(model))
    if cfg.resume:
        trainer.resume()
    if guard is not None:
        guard.deferring = True   # a signal now stops at the next iteration boundary
    try:
        result = trainer.fit()
    finally:
        if guard is not None:
            guard.deferring = False
    log.info("trained %d iterations in %.0f s, final loss %.4f", result["iterations"],
             result["train_time_s"], result["final_loss"])
    return {"train_time_s": result["train_time_s"], "train_iterations": result["iterations"],
            "train_iterations_planned": result["planned_iterations"],
            "train_epochs": result["epochs"], "final_loss": result["final_loss"],
            "train_stopped_on_time": result["stopped_on_time"], "batch_norm": result["batch_norm"]}


def eval_stage(cfg, model, val_set, device, out: Path, is_main: bool) -> dict:
    from experiments.evaluation import save_evaluation
    from experiments.evaluation.bootstrap import bootstrap_evaluation
    from experiments.predict import score

    start = time.perf_counter()
    result = score(model, val_set, cfg.eval.batch_size, device, cfg.eval.backend,
                   cfg.eval.max_images)
    if not is_main or result is None:
        return {}
    save_evaluation(result, out, image_file_names(val_set))
    save_samples(val_set, out / "samples", cfg.eval.samples)
    intervals = bootstrap_evaluation(result, cfg.eval.bootstrap, cfg.eval.bootstrap_seed, out)
    log.info("AP %.3f  AP50 %.3f  APs %.3f  APm %.3f  APl %.3f", result.metrics["map"],
             result.metrics["map_50"], result.metrics["map_small"],
             result.metrics["map_medium"], result.metrics["map_large"])
    return {**result.metrics, **intervals, "eval_time_s": time.perf_counter() - start}


def image_file_names(dataset) -> dict[int, str]:
    """image_id -> file path relative to the folder all of the dataset's images share, for
    datasets read from files (``records``); empty for generated ones (synthetic)."""
    records = getattr(dataset, "records", None) or []
    if not records:
        return {}
    paths = [Path(r.path) for r in records]
    root = Path(os.path.commonpath([p.parent for p in paths]))
    return {int(r.image_id): p.relative_to(root).as_posix() for r, p in zip(records, paths)}


def save_samples(dataset, folder: Path, count: int) -> None:
    """The first ``count`` validation images as PNG, for the report's detection grid."""
    from torchvision.utils import save_image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(min(count, len(dataset))):
        image, target = dataset[i]
        save_image(image, folder / f"{target['image_id']}.png")


def write_metrics(out: Path, metrics: dict, is_main: bool) -> None:
    if is_main:
        tmp = out / "metrics.json.tmp"
        tmp.write_text(json.dumps(metrics, indent=2, default=_json_default))
        os.replace(tmp, out / "metrics.json")


def _json_default(value):
    if torch.is_tensor(value):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("device=cuda but no CUDA device is visible")
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device(name)


def setup_distributed(cfg: DictConfig) -> bool:
    """Join the process group when launched by torchrun or by a multi-task SLURM job
    (submitit exports the environment); returns whether this is rank 0."""
    if int(os.environ.get("SLURM_NTASKS", 1)) > 1 and "WORLD_SIZE" not in os.environ:
        import submitit

        submitit.helpers.TorchDistributedEnvironment().export()
    if int(os.environ.get("WORLD_SIZE", 1)) > 1 and not dist.is_initialized():
        use_cuda = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return not dist.is_initialized() or dist.get_rank() == 0


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True,
                              text=True, timeout=5).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    metrics = run(cfg)
    status = metrics["status"]
    if status == "interrupted":   # stops a sweep too: the user asked to stop
        print(f"detbench: {metrics['error']}", file=sys.stderr)
        sys.exit(metrics["exit_code"])
    if status == "finished":
        print(f"detbench: {metrics['error']}", file=sys.stderr)
    elif status not in ("ok", "incomplete") and HydraConfig.get().mode != RunMode.MULTIRUN:
        where = f" (see {metrics['error_file']})" if "error_file" in metrics else ""
        what = "the job failed: " if status == "failed" else ""
        sys.exit(f"detbench: {what}{metrics['error']}{where}")
    return metrics.get("map_50")


if __name__ == "__main__":
    # Call the function through its importable module, not __main__, so that launchers which
    # pickle it (submitit) pickle a reference instead of this whole module's globals.
    from experiments.run import main as entry_point

    entry_point()
