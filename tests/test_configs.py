"""Every config composes, and every detector / dataset / experiment config builds its objects."""
from __future__ import annotations

from pathlib import Path

import pytest
from hydra.utils import instantiate

from detectors.base import Detector

CONF = Path(__file__).resolve().parents[1] / "conf"
DETECTORS = sorted(p.stem for p in (CONF / "detector").glob("*.yaml"))
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
LAUNCHERS = sorted(p.stem for p in (CONF / "hydra" / "launcher").glob("*.yaml"))


@pytest.mark.parametrize("name", DETECTORS)
def test_every_detector_config_builds_a_detector(compose_config, name):
    cfg = compose_config([f"detector={name}"])
    assert cfg.detector.name and cfg.detector.augmentation in ("none", "ssd", "yolo")
    model = instantiate(cfg.detector.model, num_classes=3)
    assert isinstance(model, Detector) and model.num_classes == 3
    assert len(model.input_size) == 2 and model.num_candidates(tuple(model.input_size)) > 0


@pytest.mark.parametrize("name", ["synthetic", "voc", "coco", "yolo_txt"])
def test_every_dataset_config_composes(compose_config, name):
    cfg = compose_config([f"dataset={name}"])
    assert cfg.dataset.name and "_target_" in cfg.dataset.train and "_target_" in cfg.dataset.val


def test_synthetic_dataset_config_instantiates(compose_config):
    cfg = compose_config(["dataset.train.num_images=2"])
    train, val = instantiate(cfg.dataset.train), instantiate(cfg.dataset.val)
    assert len(train) == 2 and len(val) > 0 and train.class_names == val.class_names


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_composes_and_builds_its_detector(compose_config, name):
    cfg = compose_config([f"experiment={name}"], return_hydra_config=True)
    if "weights" in cfg.detector.model:  # the papers' ImageNet weights would be downloaded
        cfg.detector.model.weights = None
    model = instantiate(cfg.detector.model, num_classes=20)
    assert isinstance(model, Detector)
    instantiate(cfg.train.optimizer)(model.parameters())
    if cfg.train.scheduler:
        assert callable(instantiate(cfg.train.scheduler))


@pytest.mark.parametrize("name", LAUNCHERS)
def test_launcher_presets_compose(compose_config, name):
    cfg = compose_config([f"hydra/launcher={name}"], return_hydra_config=True)
    assert "_target_" in cfg.hydra.launcher


def test_the_primary_config_runs_every_stage_by_default(compose_config):
    cfg = compose_config([])
    assert list(cfg.stages) == ["train", "eval", "bench"] and cfg.device == "auto"
    assert cfg.dataset.name == "synthetic"
