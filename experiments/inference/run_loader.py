"""A run folder, or a checkpoint inside one, -> the trained detector and its class names.

A run folder is what ``detbench`` writes: ``.hydra/config.yaml`` (the composed config Hydra
saved), ``checkpoints/last.pt``, ``metrics.json`` (with ``status``) and, after an eval stage,
``per_class.csv``. The detector is rebuilt from the saved ``detector.model`` exactly as the run
built it (``experiments.build.build_detector(detector.model, C)``) and its weights loaded strictly, so
the user never repeats the detector's settings.

Class names and their category ids (for predictions.json) come, in this order, from

1. the run's ``per_class.csv`` (label, class_name, category_id: written by the eval stage);
2. else the run's validation dataset, rebuilt from the saved ``dataset.val`` (needs its files).

The saved model's ``backbone_weights`` and ``weights`` are not loaded: the checkpoint replaces
every parameter, and predicting must never download a backbone only to overwrite it. What they
decide besides the parameters is kept: with ``image_mean``/``image_std`` null, a torchvision
weights name sets the input normalisation (``experiments.build.build_detector``), which is not
part of a checkpoint; it is read from the weights enum's metadata, without fetching anything.
"""
from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from detectors.base import Detector
from experiments.build import build_detector, check_renamed_options, load_run_weights, normalization_of
from experiments.data.split_builder import build_split
from experiments.job.layout import LAST_CHECKPOINT, SAVED_CONFIG

log = logging.getLogger(__name__)



class WeightsError(ValueError):
    """Weights that cannot be used: no run folder, a failed run, no checkpoint, unknown classes."""


@dataclass
class LoadedDetector:
    """A trained detector ready for inference (eval mode, on ``device``).

    name:        the run's detector name (``detector.name``), e.g. "ssd300_cpu".
    class_names: index i is label i + 1.
    label_to_category_id: label -> the dataset's category id (what predictions.json writes).
    run_dir, checkpoint: where it came from; run_status: metrics.json's status ("ok", "running",
    or "unknown" without a metrics.json).
    """

    name: str
    model: Detector
    class_names: list[str]
    label_to_category_id: dict[int, int]
    run_dir: Path
    checkpoint: Path
    run_status: str

    def labels_of(self, names: list[str] | None) -> set[int] | None:
        """The labels of the class ``names`` (None: every class); an unknown name is an error
        listing this checkpoint's classes."""
        if names is None:
            return None
        if not names:
            raise WeightsError("classes=[] selects no class: give class names, or null for all")
        unknown = [n for n in names if n not in self.class_names]
        if unknown:
            raise WeightsError(f"classes={list(names)}: {unknown} not among the classes of {self.checkpoint} "
                               f"({self.class_names})")
        return {self.class_names.index(n) + 1 for n in names}


def find_run(weights: str | Path) -> tuple[Path, Path]:
    """(run folder, checkpoint) for a run folder or a checkpoint file inside one (its parents
    are searched for ``.hydra/config.yaml``)."""
    path = Path(weights).expanduser()
    if not path.exists():
        raise WeightsError(f"weights: {path} does not exist (give a run folder or a checkpoint in one)")
    if path.is_dir():
        if not (path / SAVED_CONFIG).is_file():
            raise WeightsError(f"weights: {path} is not a detbench run folder (no {SAVED_CONFIG})")
        checkpoint = path / LAST_CHECKPOINT
        if not checkpoint.is_file():
            saved = OmegaConf.load(path / SAVED_CONFIG).get("weights")
            if not saved:
                raise WeightsError(f"weights: run folder {path} has no {LAST_CHECKPOINT} (was it trained?)")
            checkpoint = Path(str(saved))  # an eval-only run: the checkpoint it evaluated
        return path, checkpoint
    for parent in path.resolve().parents:
        if (parent / SAVED_CONFIG).is_file():
            return parent, path
    raise WeightsError(f"weights: no run folder ({SAVED_CONFIG}) above {path}: detbench-predict rebuilds "
                       "the detector from the run's saved config")


def run_status(run_dir: Path) -> str:
    """metrics.json's status; a failed run is an error quoting the run's own error."""
    metrics_path = run_dir / "metrics.json"
    if not metrics_path.is_file():
        log.warning("%s has no metrics.json: the run's outcome is unknown", run_dir)
        return "unknown"
    try:
        metrics = json.loads(metrics_path.read_text())
    except json.JSONDecodeError as error:
        raise WeightsError(f"weights: {metrics_path} is not valid JSON: {error}") from None
    status = str(metrics.get("status", "unknown"))
    if status == "failed":
        raise WeightsError(f"weights: the run {run_dir} failed ({metrics.get('error', 'no error recorded')}); "
                           "its checkpoint is not a finished model")
    if status != "ok":
        log.warning("run %s has status '%s' (interrupted or still running): using its last checkpoint",
                    run_dir, status)
    return status


def class_names_of_run(run_dir: Path, cfg: DictConfig) -> tuple[list[str], dict[int, int]]:
    """(class names in label order, label -> category id): per_class.csv, else the dataset."""
    table = run_dir / "per_class.csv"
    if table.is_file():
        with open(table, newline="") as f:
            rows = sorted(csv.DictReader(f), key=lambda r: int(r["label"]))
        if [int(r["label"]) for r in rows] != list(range(1, len(rows) + 1)):
            raise WeightsError(f"{table}: labels are not 1..{len(rows)}")
        return [r["class_name"] for r in rows], {int(r["label"]): int(r["category_id"]) for r in rows}
    try:
        dataset = build_split(cfg.dataset, "val")
    except Exception as error:  # the data may not be on this machine
        raise WeightsError(f"{run_dir}: no per_class.csv (the run had no eval stage) and its validation set "
                           f"cannot be rebuilt for the class names: {type(error).__name__}: {error}") from error
    return list(dataset.class_names), dict(dataset.label_to_category_id)


def rebuild_detector(model_cfg: DictConfig, num_classes: int) -> Detector:
    """The run's detector with random parameters and the run's input normalisation (module
    docstring); nothing is read or downloaded."""
    spec = OmegaConf.to_container(model_cfg, resolve=True)
    spec.pop("weights", None)   # an older run's detector.model.weights: the checkpoint replaces them anyway
    check_renamed_options(spec)
    backbone_weights = spec.get("backbone_weights")
    spec["backbone_weights"] = None
    model = build_detector(OmegaConf.create(spec), num_classes)
    if backbone_weights and not Path(str(backbone_weights)).expanduser().is_file() \
            and spec.get("image_mean") is None and spec.get("image_std") is None:
        enum = model.backbone_weights_enum()
        if enum is not None and str(backbone_weights) in enum.__members__:
            normalization = normalization_of(enum[str(backbone_weights)])
            if normalization:
                model.set_normalization(*normalization)
    return model


def load_detector(weights: str | Path, device) -> LoadedDetector:
    """Rebuild the run's detector, load the checkpoint's weights (strict), eval mode on ``device``."""
    run_dir, checkpoint = find_run(weights)
    status = run_status(run_dir)
    cfg = OmegaConf.load(run_dir / SAVED_CONFIG)
    if OmegaConf.select(cfg, "detector.model") is None:
        raise WeightsError(f"{run_dir / SAVED_CONFIG} has no detector.model")
    class_names, label_to_category_id = class_names_of_run(run_dir, cfg)
    try:
        model = rebuild_detector(cfg.detector.model, len(class_names))
    except Exception as error:  # e.g. a config saved by another version of detbench
        raise WeightsError(f"the detector of {run_dir / SAVED_CONFIG} cannot be rebuilt: {error}") from error
    try:
        load_run_weights(model, checkpoint)
    except ValueError as error:
        raise WeightsError(f"checkpoint {checkpoint} does not fit the detector of {run_dir / SAVED_CONFIG} "
                           f"with {len(class_names)} classes: {error}") from error
    model.eval().to(device)
    log.info("loaded %s (%d classes) from %s", cfg.detector.get("name", "?"), len(class_names), checkpoint)
    return LoadedDetector(name=str(cfg.detector.get("name", run_dir.name)), model=model,
                          class_names=class_names, label_to_category_id=label_to_category_id,
                          run_dir=run_dir, checkpoint=checkpoint, run_status=status)
