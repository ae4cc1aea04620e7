"""The `detbench` entry point: one Hydra job trains, evaluates and benchmarks one detector on
one dataset and writes everything into its own folder (see README, "What a run writes").

``run(cfg, output_dir)`` is a plain function the tests call; ``main`` is a thin
``@hydra.main`` around it. A failing job writes ``status: failed`` and its error into its
``metrics.json`` (and ``error.txt``), so a sweep and its report go on without it. Before
anything trains, ``experiments.job.folder`` decides what the job may do to its folder (refuse a
rerun, say a resumed run is finished, protect finished results) and ``experiments.job.preflight``
checks settings, folders and images; ``experiments.job.interrupts`` turns SIGINT / SIGTERM into a
checkpoint and ``status: interrupted`` with the command that resumes.
"""
from __future__ import annotations

import logging
import sys
import traceback
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from experiments.build import build_detector, load_run_weights
from experiments.data.prepare import NoObjectsError, decode_failures, prepare_datasets
from experiments.data.split_builder import build_split
from experiments.data.transforms import build_policy
from experiments.job import preflight
from experiments.job.detector_facts import detector_facts
from experiments.job.folder import SCHEMA_VERSION, RunFolder, decide, describe_error, write_metrics
from experiments.job.identity import device_name, model_facts, run_identity
from experiments.job.interrupts import InterruptGuard, RunInterrupted, interrupted_record
from experiments.job.layout import SAVED_CONFIG
from experiments.job.lock import RunLock
from experiments.job.process import resolve_device, seed_everything, setup_distributed, world_size
from experiments.job.settings import check_config
from experiments.job.sweep import sweep_resume_argv
from experiments.stages import PREPARE, STAGES, StageContext
from experiments.studies import proposal_stage
from experiments.studies.robustness import robustness_weights

log = logging.getLogger("detbench")


def run(cfg: DictConfig, output_dir: str | Path | None = None) -> dict:
    """Run the stages ``cfg.stages`` and return the flat metrics dict written to metrics.json.

    One pass: the folder's verdict, the checks, the detector and its weights (once), the
    datasets (once: the training set that ``prepare_datasets`` scans is the one trained on),
    then ``PREPARE`` and each stage of ``STAGES`` that ``cfg.stages`` names, metrics.json
    rewritten after each."""
    out = Path(output_dir or HydraConfig.get().runtime.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    metrics = {"schema_version": SCHEMA_VERSION, **run_identity(cfg)}
    folder = RunFolder(out, bool(cfg.get("resume")), bool(cfg.get("overwrite")), _hydra_log(out))
    is_main = setup_distributed(cfg.device)   # first: rank 0 decides about the folder for all ranks
    lock = RunLock(out, bool(cfg.get("break_lock")))
    verdict = decide(folder, cfg, is_main, lock)
    if verdict:   # refused or already finished: nothing in the folder is touched
        folder.leave_untouched()
        (log.info if verdict.startswith("finished") else log.error)("%s", verdict)
        return {**metrics, "status": verdict.split(":")[0], "error": verdict}
    try:
        if folder.resume_changes:
            metrics["resume_changes"] = folder.resume_changes
            log.warning("resume_changes=allow: continuing with %s", "; ".join(folder.resume_changes))
        return _run_owned(cfg, out, folder, is_main, metrics)
    finally:
        lock.release()


def _run_owned(cfg: DictConfig, out: Path, folder: RunFolder, is_main: bool, metrics: dict) -> dict:
    """The job in a folder it owns (locked, verdict given): build, stages, finish."""
    failure = None
    with InterruptGuard() as guard:
        try:
            ctx = build(cfg, out, is_main, guard, metrics)
            write = is_main and not folder.protected
            for name in ["prepare", *(s for s in STAGES if s in cfg.stages)]:
                metrics.update((PREPARE if name == "prepare" else STAGES[name])(cfg, ctx))
                if name not in ("prepare", "bench"):
                    write_metrics(out, metrics, write)
            metrics.update(completion(cfg, metrics))
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
    metrics.update(decode_failures(out))
    finish(folder, metrics, failure, is_main)
    guard.hand_over()
    return metrics


def save_config(cfg: DictConfig, out: Path) -> None:
    """The job's settings as ``.hydra/config.yaml`` (what predict, resume and the report read),
    with Hydra's ``hydra.yaml`` and ``overrides.yaml`` beside it under Hydra: written here, once
    the job owns the folder, never by a refused command (``conf/config.yaml`` turns Hydra's own
    copy off with ``hydra.output_subdir: null``)."""
    folder = out / SAVED_CONFIG.parent
    folder.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, folder / SAVED_CONFIG.name)
    if HydraConfig.initialized():
        hydra_cfg = HydraConfig.get()
        OmegaConf.save(OmegaConf.create({"hydra": hydra_cfg}), folder / "hydra.yaml")
        OmegaConf.save(hydra_cfg.overrides.task, folder / "overrides.yaml")


def build(cfg: DictConfig, out: Path, is_main: bool, guard: InterruptGuard, metrics: dict) -> StageContext:
    """Everything the stages share, each built once: checks, device, seeds, the validation and
    training splits (scanned, class map applied), the detector with its weights. Adds the
    run's facts (device, data, params, weights) to ``metrics``."""
    check_config(cfg)
    preflight.preflight(cfg, out)
    if is_main:
        save_config(cfg, out)   # the folder is this job's and writable
    device = resolve_device(cfg.device)
    metrics["device"] = device_name(device)
    seed_everything(cfg.seed, cfg.deterministic)
    val_set = build_split(cfg.dataset, "val")
    model = build_detector(cfg.detector.model, val_set.num_classes).to(device)
    metrics.update(proposal_stage.attach(model, cfg))   # R-CNN, Fast R-CNN: their proposal source
    model.learn_difficult = bool(cfg.detector.get("learn_difficult", True))   # as each paper
    metrics["learn_difficult"] = model.learn_difficult
    train_set = build_train_set(cfg, model.input_size if model.fixed_input_size else None) \
        if "train" in cfg.stages else None
    given = OmegaConf.select(cfg, "dataset.class_names", default=None) is not None
    metrics.update(prepare_datasets(train_set, val_set, out, given))  # scan, class map, split.json
    # under dataset.bad_images=skip|repair a failing decode is left out and counted instead
    if cfg.eval.check_images and ("eval" in cfg.stages or train_set is not None and cfg.train.val_every):
        scored = cfg.eval.max_images if "eval" in cfg.stages else cfg.train.val_images
        if getattr(val_set, "bad_images", "error") == "error":
            preflight.check_images(val_set, scored, "validation split")
        else:   # after the header scan (which left out what it found): full decodes, counted
            left_out = preflight.drop_undecodable(val_set, scored, "validation split")
            if left_out:
                metrics.update(val_images=len(val_set), val_decode_failed_before_training=left_out)
    image_size = tuple(val_set[0][0].shape[-2:])
    metrics.update(model_facts(model, image_size))
    metrics.update(detector_facts(model))   # input size and box budgets, for the sweeps' plots
    weights = robustness_weights(cfg)   # cfg.weights, or robustness.source's checkpoint
    if weights:
        load_run_weights(model, weights)
        log.info("loaded weights from %s", weights)
    metrics["weights_source"] = model.weights_source
    if train_set is not None:
        preflight.check_batch_norm(model, cfg.train.batch_size, len(train_set), world_size(),
                                   bool(cfg.train.freeze_batch_norm))
    metrics["augmentation"] = cfg.train.augmentation or cfg.detector.get("augmentation") or "none"
    years = OmegaConf.select(cfg, "dataset.years", default=None)
    metrics["train_years"] = list(years) if OmegaConf.is_list(years) else years
    test_set = None
    if "eval" in cfg.stages and str(cfg.eval.get("split", "val")) == "test":
        if "test" in cfg.dataset:
            test_set = build_split(cfg.dataset, "test")
            metrics["test_images"] = len(test_set)
        else:
            log.warning("eval.split=test but dataset '%s' has no test split: scoring the validation split, "
                        "which also served the choices (the report says so)", cfg.dataset.get("name"))
    return StageContext(model, train_set, val_set, device, out, is_main, guard, test_set)


def build_train_set(cfg: DictConfig, input_size: tuple[int, int] | None):
    """The training split with its augmentation policy (``train.augmentation``, else the
    detector's own), resized to the detector's fixed input size inside the loader's workers;
    ``input_size`` None (a detector that keeps the aspect ratio): never resized there."""
    policy_name = cfg.train.augmentation or cfg.detector.get("augmentation") or "none"
    train_set = build_split(cfg.dataset, "train",
                            transforms=build_policy(policy_name, output_size=input_size and tuple(input_size)))
    log.info("train: %d images, augmentation policy '%s'", len(train_set), policy_name)
    return train_set


def completion(cfg: DictConfig, metrics: dict) -> dict:
    """``status`` ok, or incomplete (never ranked beside finished runs) when training stopped on
    ``train.max_time_s`` before its planned iterations."""
    if metrics.get("train_iterations", 0) < metrics.get("train_iterations_planned", 0):
        return {"status": "incomplete",
                "status_reason": (f"training stopped by train.max_time_s={cfg.train.max_time_s} after "
                                  f"{metrics['train_iterations']} of {metrics['train_iterations_planned']} "
                                  "iterations")}
    return {"status": "ok"}


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


def main() -> None:
    """The ``detbench`` command: ``resume=SWEEP_DIR`` becomes that sweep's own command, resumed
    in place (``experiments.job.sweep``); everything else goes to Hydra as typed."""
    sys.argv[1:] = sweep_resume_argv(sys.argv[1:])
    hydra_main()


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def hydra_main(cfg: DictConfig) -> float | None:
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
