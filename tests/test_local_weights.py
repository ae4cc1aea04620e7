"""Pretrained backbones without internet: a local torchvision-format state_dict file, or a torch
hub cache folder (``$TORCH_HOME/hub/checkpoints``) that torchvision's weights API reads instead
of downloading. The files here are fabricated (seeded random weights in torchvision's format);
the run records what it loaded in ``weights_source``."""
from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import torch
import torchvision
from omegaconf import OmegaConf

from experiments.build import build_detector

R50_FPN = {"_target_": "detectors.faster_rcnn_builders.faster_rcnn_resnet50_fpn", "min_size": 128, "max_size": 128,
           "input_size": [128, 128]}


def cache_file(torch_home: Path, weights) -> Path:
    """Where torchvision's weights API looks for ``weights`` under ``TORCH_HOME``."""
    folder = torch_home / "hub" / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / Path(urlparse(weights.url).path).name


def test_resnet50_from_a_local_file_and_from_the_hub_cache(tmp_path, monkeypatch):
    torch.manual_seed(0)
    resnet = torchvision.models.resnet50(weights=None).state_dict()
    local = tmp_path / "resnet50.pth"
    torch.save(resnet, local)
    model = build_detector(OmegaConf.create({**R50_FPN, "backbone_weights": str(local)}), 3)
    assert model.weights_source.startswith(f"file:{local}")
    assert torch.equal(model.backbone.body.layer4[2].conv3.weight, resnet["layer4.2.conv3.weight"])

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    weights = torchvision.models.ResNet50_Weights.IMAGENET1K_V1
    torch.save(resnet, cache_file(tmp_path / "torch_home", weights))   # no download: the cache has it
    cached = build_detector(OmegaConf.create({**R50_FPN, "backbone_weights": "IMAGENET1K_V1"}), 3)
    assert cached.weights_source.startswith("torchvision:ResNet50_Weights.IMAGENET1K_V1")
    assert torch.equal(cached.backbone.body.conv1.weight, resnet["conv1.weight"])
    assert cached.transform.image_mean == list(weights.transforms().mean)


def test_vgg16_features_from_the_cache_set_their_normalisation(tmp_path, monkeypatch):
    """IMAGENET1K_FEATURES (no classifier) expects [0, 255] pixels minus the mean: with
    image_mean/std left null the SSD's normalisation follows, and fc6/fc7 are said to be random."""
    torch.manual_seed(1)
    features = {k: v for k, v in torchvision.models.vgg16(weights=None).state_dict().items()
                if k.startswith("features.")}
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    weights = torchvision.models.VGG16_Weights.IMAGENET1K_FEATURES
    torch.save(features, cache_file(tmp_path, weights))
    model = build_detector(OmegaConf.create({"_target_": "detectors.ssd.SSD", "backbone_weights":
                                             "IMAGENET1K_FEATURES"}), 3)
    assert "VGG16_Weights.IMAGENET1K_FEATURES" in model.weights_source
    assert "fc6/fc7 random" in model.weights_source
    torch.testing.assert_close(model.image_std.flatten(), torch.full((3,), 1 / 255))
    torch.testing.assert_close(model.image_mean.flatten(), torch.tensor([0.48235, 0.45882, 0.40784]))
    assert torch.equal(model.features.to_conv4_3[0].weight, features["features.0.weight"])


def test_darknet_backbone_from_a_local_file(tmp_path, compose_config):
    cfg = compose_config(["detector=yolov1_cpu"])
    source = build_detector(cfg.detector.model, 3)
    path = tmp_path / "darknet.pt"
    torch.save(source.backbone.state_dict(), path)
    cfg.detector.model.backbone_weights = str(path)
    torch.manual_seed(5)
    model = build_detector(cfg.detector.model, 3)
    assert model.weights_source == f"file:{path}"
    for name, value in source.backbone.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[name], value), name
