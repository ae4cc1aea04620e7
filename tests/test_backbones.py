"""VGG-16 trunk and MobileNetV1: layout, strides, channels, weight loading."""
import torch
import torchvision

from detectors.backbones import MobileNetV1, load_vgg16_trunk_state, pool_index, vgg16_trunk
from experiments.build import read_state_dict


def features_only(vgg) -> dict:
    """A torchvision VGG state_dict without its (large) classifier: what the trunk loads."""
    return {k: v for k, v in vgg.state_dict().items() if k.startswith("features.")}


def test_vgg16_trunk_matches_torchvision_layout_and_loads_its_weights(tmp_path):
    torch.manual_seed(0)
    reference = torchvision.models.vgg16(weights=None)
    path = tmp_path / "vgg16.pt"
    torch.save(features_only(reference), path)
    trunk = vgg16_trunk()
    assert len(trunk) == len(reference.features) - 1  # everything but pool5
    assert load_vgg16_trunk_state(trunk, read_state_dict(path), f"file:{path}") == f"file:{path}"
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(trunk(x), reference.features[:-1](x))
    assert pool_index(trunk, 4) == 23


def test_vgg16_bn_trunk_loads_vgg16_bn_state_dict(tmp_path):
    reference = torchvision.models.vgg16_bn(weights=None)
    path = tmp_path / "vgg16_bn.pt"
    torch.save(features_only(reference), path)
    trunk = vgg16_trunk(batch_norm=True)
    load_vgg16_trunk_state(trunk, read_state_dict(path), f"file:{path}", batch_norm=True)
    assert torch.equal(trunk[0].weight, reference.features[0].weight)
    assert pool_index(trunk, 4) == 33


def test_vgg16_trunk_width_strides_and_ceil_mode():
    trunk = vgg16_trunk(width=0.25, ceil_mode_pool3=True)
    assert trunk.out_channels == 128
    out = trunk(torch.rand(1, 3, 300, 300))
    assert out.shape == (1, 128, 19, 19)  # 300 -> 150 -> 75 -> 38 (ceil) -> 19
    conv4_3 = trunk[:pool_index(trunk, 4)](torch.rand(1, 3, 300, 300))
    assert conv4_3.shape[-2:] == (38, 38)


def test_vgg16_weights_mismatch_is_a_clear_error(tmp_path):
    path = tmp_path / "vgg16.pt"
    torch.save(features_only(torchvision.models.vgg16(weights=None)), path)
    try:
        load_vgg16_trunk_state(vgg16_trunk(width=0.5), read_state_dict(path), f"file:{path}")
    except ValueError as error:
        assert str(path) in str(error)
    else:
        raise AssertionError("a half-width trunk accepted full-width weights")


def test_mobilenet_v1_maps_and_channels():
    net = MobileNetV1(width=0.25)
    s16, s32 = net(torch.rand(2, 3, 300, 300))
    assert s16.shape == (2, 128, 19, 19)
    assert s32.shape == (2, 256, 10, 10)
    assert net.out_channels == [128, 256]
    full = MobileNetV1()
    params = sum(p.numel() for p in full.parameters())
    assert 3.1e6 < params < 3.3e6  # the paper's 4.2M includes the 1000-way classifier (1.025M)


def test_ssd_vgg_loads_trunk_and_subsamples_fc6_fc7_from_a_vgg16_state_dict(tmp_path):
    from detectors.ssd_features import VGGSourceMaps

    torch.manual_seed(0)
    reference = torchvision.models.vgg16(weights=None)
    path = tmp_path / "vgg16.pt"
    torch.save(reference.state_dict(), path)
    maps = VGGSourceMaps()
    source = maps.load_base_state(read_state_dict(path), f"file:{path}")
    assert source == f"file:{path} (+ fc6/fc7 subsampled from its classifier)"
    assert torch.equal(maps.to_conv4_3[0].weight, reference.features[0].weight)
    assert torch.equal(maps.to_fc7[5].weight, reference.features[28].weight)         # conv5_3
    fc6 = reference.classifier[0].weight.view(4096, 512, 7, 7)
    assert torch.equal(maps.to_fc7[8].weight[5, :, 1, 2], fc6[20, :, 3, 6])         # filter 4*5, tap (3, 6)
    assert torch.equal(maps.to_fc7[10].weight[7, 9, 0, 0], reference.classifier[3].weight[28, 36])
    assert maps.to_fc7[8].dilation == (6, 6)


def test_ssd_mobilenet_loads_a_local_state_dict_and_refuses_torchvision_names(tmp_path):
    import pytest

    from detectors.ssd_features import MobileNetSourceMaps

    torch.manual_seed(1)
    source = MobileNetV1(width=0.25)
    path = tmp_path / "mobilenet_v1.pt"
    torch.save(source.state_dict(), path)
    maps = MobileNetSourceMaps(width=0.25)
    assert maps.load_base_state(read_state_dict(path), f"file:{path}") == f"file:{path}"
    assert torch.equal(maps.base.features[13][3].weight, source.features[13][3].weight)
    with pytest.raises(ValueError, match=str(path)):
        MobileNetSourceMaps(width=0.5).load_base_state(read_state_dict(path), f"file:{path}")


def test_backbone_weights_by_name_or_file_through_the_one_loader(tmp_path):
    """``backbone_weights``: a file path, else a name of the detector's torchvision enum; a
    backbone torchvision has no weights for takes files only."""
    import pytest
    from omegaconf import OmegaConf

    from experiments.build import build_detector, load_run_weights

    torch.manual_seed(2)
    source = MobileNetV1(width=0.25)
    path = tmp_path / "mobilenet_v1.pt"
    torch.save(source.state_dict(), path)
    spec = {"_target_": "detectors.ssd.SSD", "backbone": "mobilenet_v1", "width": 0.25,
            "extra_layers": "mobilenet300", "scales": "mobilenet300", "aspect_ratios": [[2, 3]] * 6,
            "steps": [16, 32, 64, 100, 150, 300]}
    model = build_detector(OmegaConf.create({**spec, "backbone_weights": str(path)}), 3)
    assert model.weights_source == f"file:{path}"
    assert torch.equal(model.features.base.features[0][0].weight, source.features[0][0].weight)
    with pytest.raises(ValueError, match="IMAGENET1K_V1 is not a file"):
        build_detector(OmegaConf.create({**spec, "backbone_weights": "IMAGENET1K_V1"}), 3)
    vgg = {"_target_": "detectors.ssd.SSD", "width": 0.125}
    with pytest.raises(ValueError, match="unknown VGG16_Weights 'IMAGENET9K'.*IMAGENET1K_V1"):
        build_detector(OmegaConf.create({**vgg, "backbone_weights": "IMAGENET9K"}), 3)
    with pytest.raises(ValueError, match="missing.pt is not a file"):
        build_detector(OmegaConf.create({**vgg, "backbone_weights": str(tmp_path / "missing.pt")}), 3)
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="junk.pt is corrupt or not a torch file"):
        load_run_weights(build_detector(OmegaConf.create(vgg), 3), tmp_path / "junk.pt")
    with pytest.raises(ValueError, match=r"detector.model.top_k is now max_detections"):
        build_detector(OmegaConf.create({**vgg, "top_k": 100}), 3)
