"""Pre-flight: everything that can be checked before a run trains, checked in seconds.

``check_settings(cfg)``  values the typed schema accepts but a run cannot use: width <= 0 (which
    ``detectors.base.scale_width`` would silently clamp to 8 channels per layer), non-positive
    learning rate, epochs, batch sizes, no stage at all, lr milestones (iterations) past the end
    of ``train.iterations``.
``check_writable(out)``  the run folder, ``checkpoints/`` and the output files a run
    appends to or replaces are writable: a test file is written and removed in each folder,
    and each existing output is opened for appending (which changes nothing). Run as root,
    permissions never stop it; a read-only mount still does.
``check_batch_norm(model, ...)``  training BatchNorm on one image per step fails inside torch
    ("Expected more than 1 value per channel") as soon as a map reaches 1x1, and is noise before
    that: a model with BatchNorm layers in training needs batch size >= 2 per process, unless
    ``train.freeze_batch_norm=true`` (see :func:`freeze_batch_norm`).
``check_images(dataset, ...)``  decodes every image the evaluation will score, so that a corrupt
    validation image fails before training rather than after it; ``drop_undecodable`` does the
    same under ``bad_images: skip | repair`` and leaves such images out, counted.
The header scan of every split's images (``experiments/data/scan.py``, under the
``dataset.bad_images`` policy) runs in ``experiments.data.prepare.prepare_datasets``, as soon as
the datasets are built and before any training: it needs the datasets, this module does not.

Every check raises :class:`PreflightError` naming the setting or file and what is wrong.
"""
from __future__ import annotations

import logging
import math
import os
from pathlib import Path

from omegaconf import DictConfig
from torch import nn

from experiments.job.layout import CHECKPOINTS, LAST_CHECKPOINT, RUN_FOLDERS

log = logging.getLogger("detbench")

# Files and folders of a run that a later stage appends to or replaces.
OUTPUT_FILES = ("metrics.json", "train_log.csv", "val_log.csv", "detections.json",
                "ground_truth.json", "per_class.csv", "pr_curves.npz", "error.txt")
OUTPUT_FOLDERS = RUN_FOLDERS


class PreflightError(ValueError):
    """A setting, folder or file that would make the run fail later."""


def check_settings(cfg: DictConfig) -> None:
    """Values a run cannot use, with the key that holds them (the schema has checked types)."""
    problems = []
    if not cfg.stages:
        problems.append("stages: empty; choose any of train, eval, bench")
    model = cfg.detector.get("model") or {}
    for key in ("width", "hidden_features"):
        value = model.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not (math.isfinite(value) and value > 0)):
            problems.append(f"detector.model.{key}={value}: must be a number > 0"
                            + (" (scale_width would clamp every layer to 8 channels)"
                               if key == "width" else ""))
    positive = {"eval.batch_size": cfg.eval.batch_size}
    if "train" in cfg.stages:
        optimizer = cfg.train.get("optimizer") or {}
        positive.update({"train.batch_size": cfg.train.batch_size, "train.log_every": cfg.train.log_every})
        if cfg.train.get("epochs") is not None:
            positive["train.epochs"] = cfg.train.epochs
        if optimizer.get("lr") is not None:
            positive["train.optimizer.lr"] = optimizer.get("lr")
        for key in ("max_time_s", "val_every", "validations", "warmup_iterations", "num_workers", "grad_clip"):
            if cfg.train.get(key, 0) < 0:
                problems.append(f"train.{key}={cfg.train.get(key)}: must be >= 0")
        milestones = (cfg.train.get("scheduler") or {}).get("milestones")
        iterations = cfg.train.get("iterations", 0) or 0
        if iterations > 0 and milestones and any(m >= iterations for m in milestones):
            problems.append(f"train.scheduler.milestones={list(milestones)}: past the end of "
                            f"train.iterations={iterations}, so the lr never drops; give them as "
                            "fractions (experiments.training.schedules.multistep_at_fractions) or move them")
        if cfg.train.get("warmup_iterations", 0) and not 0 < cfg.train.warmup_factor <= 1:
            problems.append(f"train.warmup_factor={cfg.train.warmup_factor}: must be in (0, 1]")
    for key, value in positive.items():
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            problems.append(f"{key}={value}: must be > 0")
    if problems:
        raise PreflightError("settings: " + "; ".join(problems))


def _probe_folder(folder: Path) -> None:
    probe = folder / f".detbench_write_test_{os.getpid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"x")
        probe.unlink()
    except OSError as error:
        raise PreflightError(f"{folder} is not writable ({type(error).__name__}: {error}); "
                             "choose another hydra.run.dir or fix its permissions") from error


def check_writable(out: Path) -> None:
    """The run folder, ``checkpoints/`` and every existing output file or folder can be
    written (a resume appends to the logs; every run replaces metrics.json)."""
    out = Path(out)
    _probe_folder(out)
    _probe_folder(out / CHECKPOINTS)
    for name in OUTPUT_FOLDERS[1:]:
        if (out / name).is_dir():
            _probe_folder(out / name)
    for name in (*OUTPUT_FILES, str(LAST_CHECKPOINT)):
        path = out / name
        if path.is_file():
            try:
                with open(path, "ab"):
                    pass
            except OSError as error:
                raise PreflightError(f"{path} is not writable ({type(error).__name__}: {error})"
                                     ) from error


def has_training_batch_norm(model: nn.Module) -> bool:
    """Any torch BatchNorm layer (FrozenBatchNorm2d is not one) in ``model``."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def check_batch_norm(model: nn.Module, batch_size: int, train_images: int, world_size: int,
                     frozen: bool) -> None:
    """Refuse BatchNorm training on one image per step and process (see the module doc)."""
    per_step = min(batch_size, math.ceil(train_images / max(world_size, 1)))
    if frozen or per_step >= 2 or not has_training_batch_norm(model):
        return
    raise PreflightError(
        f"train.batch_size={batch_size} gives {per_step} image per step and process"
        f"{f' ({train_images} training images, {world_size} processes)' if per_step < batch_size else ''}"
        ", but the model trains BatchNorm layers, which need >= 2 (torch fails with 'Expected more "
        "than 1 value per channel' on 1x1 maps): use train.batch_size>=2, "
        "train.freeze_batch_norm=true, or the detector's batch_norm=false where it has one")


def freeze_batch_norm(model: nn.Module) -> int:
    """Keep every BatchNorm layer in eval mode during training: it normalises with its running
    statistics (for a model trained from scratch, their initial mean 0 / variance 1, so the
    layer is a learned per-channel scale and shift) and never updates them; its weight and bias
    still train. Works through ``model.train()`` (a forward pre-hook resets ``training``).
    Returns the number of layers frozen."""
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for layer in layers:
        layer.register_forward_pre_hook(_eval_mode)
    return len(layers)


def _eval_mode(module: nn.Module, args) -> None:
    module.training = False


def check_images(dataset, max_images: int, what: str) -> int:
    """Decode the first ``max_images`` (0: all) images of a file-backed ``dataset`` (one with
    ``records``, as ``experiments.data.annotated`` builds); returns how many were checked.
    Raises PreflightError naming the file. Datasets generated in memory have nothing to check."""
    from experiments.data.images import load_image

    records = getattr(dataset, "records", None)
    if records is None:
        return 0
    records = records[:max_images] if max_images else records
    for record in records:
        try:
            load_image(record.path)
        except (OSError, ValueError) as error:
            raise PreflightError(f"{what}: {error} (found before training; fix or remove the "
                                 "file, or set eval.check_images=false to skip this check)") from error
    log.info("pre-flight: %d %s images decode", len(records), what)
    return len(records)


def drop_undecodable(dataset, max_images: int, what: str) -> int:
    """Under ``bad_images: skip | repair``: decode the first ``max_images`` (0: all) images of a
    file-backed ``dataset`` before training and leave out (counted as ``image_decode_failed``)
    each that fails, so the evaluator never meets one (its loader would serve the next image in
    its place, twice under one id). Returns how many were left out."""
    from experiments.data.images import load_image

    records = getattr(dataset, "records", None)
    if records is None or not hasattr(dataset, "drop_records"):
        return 0
    repair = getattr(dataset, "bad_images", "error") == "repair"
    failed = {}
    for record in records[:max_images] if max_images else records:
        try:
            load_image(record.path, repair=repair)
        except (OSError, ValueError) as error:
            failed[record.path] = "decode_failed"
            log.warning("%s: %s: left out (bad_images=%s)", what, error, dataset.bad_images)
    if failed:
        dataset.drop_records(set(failed), failed)
    log.info("pre-flight: %d %s images decode, %d left out", len(records), what, len(failed))
    return len(failed)


def preflight(cfg: DictConfig, out: Path) -> None:
    """The checks that need no model or data: settings and folders."""
    check_settings(cfg)
    check_writable(out)
    log.info("pre-flight passed: settings, %s writable", out)

