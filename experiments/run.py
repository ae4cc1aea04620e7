"""The `detbench` entry point: one Hydra job trains, evaluates and benchmarks one detector on
one dataset and writes everything into its own folder (see README, "What a run writes").

``run(cfg, output_dir)`` is a plain function the tests call; ``main`` is a thin
``@hydra.main`` around it. A failing job writes ``status: failed`` and its error into its
``metrics.json`` (and ``error.txt``), so a sweep and its report go on without it.
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

from experiments.identity import device_name, environment, model_facts
from experiments.settings import check_config
from experiments.weights import build_detector, load_run_weights

log = logging.getLogger("detbench")
PROJECT_ROOT = Path(__file__).resolve().parents[1]


def run(cfg: DictConfig, output_dir: str | Path | None = None) -> dict:
    """Run the stages ``cfg.stages`` and return the flat metrics dict written to metrics.json."""
    out = Path(output_dir or HydraConfig.get().runtime.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    metrics = identity(cfg)
    is_main = True
    try:
        check_config(cfg)
        is_main = setup_distributed(cfg)
        device = resolve_device(cfg.device)
        metrics["device"] = device_name(device)
        seed_everything(cfg.seed, cfg.deterministic)
        val_set = build_val_set(cfg)
        model = build_detector(cfg.detector.model, val_set.num_classes).to(device)
        train_set = build_train_set(cfg, model.input_size) if "train" in cfg.stages else None
        metrics.update(model_facts(model, tuple(val_set[0][0].shape[-2:])))
        if cfg.weights:
            load_run_weights(model, cfg.weights)
            log.info("loaded weights from %s", cfg.weights)
        metrics["weights_source"] = model.weights_source
        if "train" in cfg.stages:
            metrics.update(train_stage(cfg, model, train_set, val_set, device, out))
            write_metrics(out, metrics, is_main)
        if "eval" in cfg.stages:
            metrics.update(eval_stage(cfg, model, val_set, device, out, is_main))
            write_metrics(out, metrics, is_main)
        if "bench" in cfg.stages and is_main:
            from experiments.benchmark import benchmark

            bench = OmegaConf.to_container(cfg.bench, resolve=True)
            metrics.update(benchmark(model, device=device, **bench))
        metrics["status"] = "ok"
    except Exception as error:  # a failed job is recorded, never silently lost
        metrics["status"] = "failed"
        metrics["error"] = f"{type(error).__name__}: {error}"
        if is_main:
            (out / "error.txt").write_text(traceback.format_exc())
        log.error("job failed: %s", metrics["error"])
    write_metrics(out, metrics, is_main)
    return metrics


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


def build_train_set(cfg: DictConfig, input_size: tuple[int, int]):
    """The training split with its augmentation policy (``train.augmentation``, else the
    detector's own), resized to the detector's input size inside the loader's workers."""
    from experiments.data.transforms import build_policy

    policy_name = cfg.train.augmentation or cfg.detector.get("augmentation") or "none"
    train_set = instantiate(cfg.dataset.train,
                            transforms=build_policy(policy_name, output_size=tuple(input_size)))
    log.info("train: %d images, augmentation policy '%s'", len(train_set), policy_name)
    return train_set


def train_stage(cfg, model, train_set, val_set, device, out: Path) -> dict:
    from experiments.predict import score
    from experiments.train import Trainer, warmup_then

    optimizer = instantiate(cfg.train.optimizer)(model.parameters())
    scheduler_factory = instantiate(cfg.train.scheduler) if cfg.train.scheduler else None
    scheduler = warmup_then(scheduler_factory, optimizer, cfg.train.warmup_iterations,
                            cfg.train.warmup_factor)

    def validate(m):
        result = score(m, val_set, cfg.eval.batch_size, device, cfg.eval.backend,
                       cfg.train.val_images)
        return result.metrics if result is not None else {}

    trainer = Trainer(model, train_set, optimizer, scheduler, device=device,
                      epochs=cfg.train.epochs, batch_size=cfg.train.batch_size, out_dir=out,
                      seed=cfg.seed, num_workers=cfg.train.num_workers, amp=cfg.train.amp,
                      grad_clip=cfg.train.grad_clip, log_every=cfg.train.log_every,
                      val_every=cfg.train.val_every, validate=validate,
                      max_time_s=cfg.train.max_time_s, shuffle=cfg.train.shuffle)
    if cfg.resume:
        trainer.resume()
    result = trainer.fit()
    log.info("trained %d iterations in %.0f s, final loss %.4f", result["iterations"],
             result["train_time_s"], result["final_loss"])
    return {"train_time_s": result["train_time_s"], "train_iterations": result["iterations"],
            "train_epochs": result["epochs"], "final_loss": result["final_loss"],
            "train_stopped_on_time": result["stopped_on_time"]}


def eval_stage(cfg, model, val_set, device, out: Path, is_main: bool) -> dict:
    from experiments.evaluation import save_evaluation
    from experiments.predict import score

    start = time.perf_counter()
    result = score(model, val_set, cfg.eval.batch_size, device, cfg.eval.backend,
                   cfg.eval.max_images)
    if not is_main or result is None:
        return {}
    save_evaluation(result, out)
    save_samples(val_set, out / "samples", cfg.eval.samples)
    log.info("AP %.3f  AP50 %.3f  APs %.3f  APm %.3f  APl %.3f", result.metrics["map"],
             result.metrics["map_50"], result.metrics["map_small"],
             result.metrics["map_medium"], result.metrics["map_large"])
    return {**result.metrics, "eval_time_s": time.perf_counter() - start}


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
    if metrics["status"] != "ok" and HydraConfig.get().mode != RunMode.MULTIRUN:
        sys.exit(f"detbench: the job failed: {metrics['error']} "
                 f"(see {HydraConfig.get().runtime.output_dir}/error.txt)")
    return metrics.get("map_50")


if __name__ == "__main__":
    # Call the function through its importable module, not __main__, so that launchers which
    # pickle it (submitit) pickle a reference instead of this whole module's globals.
    from experiments.run import main as entry_point

    entry_point()
