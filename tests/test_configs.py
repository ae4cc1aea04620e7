"""Every config composes, and every detector / dataset / experiment config builds its objects."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision
from hydra.utils import instantiate

from detectors.base import Detector
from detectors.ssd import SSD
from experiments.build import build_detector

CONF = Path(__file__).resolve().parents[1] / "conf"
DETECTORS = sorted(p.stem for p in (CONF / "detector").glob("*.yaml"))
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
LAUNCHERS = sorted(p.stem for p in (CONF / "hydra" / "launcher").glob("*.yaml"))


@pytest.mark.parametrize("name", DETECTORS)
def test_every_detector_config_builds_a_detector(compose_config, name):
    cfg = compose_config([f"detector={name}"])
    assert cfg.detector.name and cfg.detector.augmentation in ("none", "ssd", "yolo", "flip")
    model = build_detector(cfg.detector.model, 3)
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


@pytest.fixture(scope="module")
def fabricated_vgg16_file(tmp_path_factory):
    """A local torchvision-format vgg16 state_dict (random, seeded), standing in for the
    IMAGENET1K_V1 download that the paper experiments name."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "vgg16.pth"
    torch.save(torchvision.models.vgg16(weights=None).state_dict(), path)
    return path


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_composes_and_builds_its_detector(compose_config, name, fabricated_vgg16_file):
    cfg = compose_config([f"experiment={name}"], return_hydra_config=True)
    named = cfg.detector.model.get("backbone_weights")
    if named:  # the papers' ImageNet weights: a local file of the same format instead of a download
        assert named == "IMAGENET1K_V1"
        cfg.detector.model.backbone_weights = str(fabricated_vgg16_file)
    model = build_detector(cfg.detector.model, 20)
    assert isinstance(model, Detector)
    if named:  # fc6/fc7 come from VGG-16's classifier, as the papers did
        state = torch.load(fabricated_vgg16_file, weights_only=True)
        assert "fc6/fc7" in model.weights_source and "random" not in model.weights_source
        if isinstance(model, SSD):  # subsampled into the atrous fc6 and the 1x1 fc7
            fc6, fc7 = model.features.fc6_fc7()
            assert torch.equal(fc6.weight, state["classifier.0.weight"].view(4096, 512, 7, 7)[::4, :, ::3, ::3])
            assert torch.equal(fc7.bias, state["classifier.3.bias"][::4])
        else:  # Faster R-CNN, Fast R-CNN, R-CNN: the fully connected fc6/fc7 as they are; conv1-2 frozen
            assert torch.equal(model.fc_layers().fc6.weight, state["classifier.0.weight"])
            assert torch.equal(model.fc_layers().fc7.bias, state["classifier.3.bias"])
            trainable = [p.requires_grad for p in model.backbone.parameters()]
            assert trainable[:8] == [False] * 8 and all(trainable[8:])   # conv1_1..conv2_2: 4 convs
        trunk = model.features if isinstance(model, SSD) else model.backbone
        assert torch.equal(next(trunk.parameters()), state["features.0.weight"])
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


@pytest.mark.parametrize("detector", ["ssd300_cpu", "yolov1_cpu", "faster_rcnn_vgg16_cpu"])
def test_compare_passes_the_runners_checks_with_its_schedules(compose_config, detector):
    """experiment=compare's schedules interpolate ``${detector.name}``: the runner's checks
    resolve them in the whole config (the README's main command runs this path)."""
    from experiments.job.settings import check_config

    cfg = compose_config(["experiment=compare", f"detector={detector}"])
    check_config(cfg)
    planned = {"ssd300_cpu": 150, "yolov1_cpu": 150, "faster_rcnn_vgg16_cpu": 150}[detector]
    assert cfg.train.budget.kind == "iterations" and cfg.train.budget.value == planned
    assert cfg.train.max_time_s == 0 and cfg.train.epochs is None
    flops = compose_config(["experiment=compare", f"detector={detector}", "train.budget.kind=flops"])
    check_config(flops)
    assert flops.train.budget.value == 7.83e12   # SSD300's 150 iterations, the same for every detector
