"""Backbones shared by the detectors: VGG-16 (the SSD / Faster R-CNN trunk) and MobileNetV1.

Every builder takes a ``width`` multiplier (channels go through ``detectors.base.scale_width``)
so that CPU experiments keep the paper's geometry (strides, map sizes, box counts) at a fraction
of the compute.

Weights: detectors read no files. ``experiments.build`` fetches a state_dict (torchvision's
weights API or a local file) and hands it over; the functions here map its keys onto a trunk and
return the short string saying what was loaded (``"torchvision:VGG16_Weights.IMAGENET1K_V1"``,
``"file:/path/to.pt"``), which detectors keep as ``weights_source`` so that a run records it.
"""
from __future__ import annotations

import logging

import torch
import torchvision
from torch import nn

from detectors.base import scale_width

log = logging.getLogger(__name__)

#: VGG-16 ("configuration D"): output channels of conv1_1 .. conv5_3; "M" is a 2x2 max pool.
#: pool5 is left out: SSD replaces it (3x3 stride 1) and Faster R-CNN uses conv5_3 directly.
VGG16_LAYOUT = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]


def vgg16_trunk(width: float = 1.0, batch_norm: bool = False, ceil_mode_pool3: bool = False) -> nn.Sequential:
    """VGG-16 from conv1_1 to conv5_3 (+ReLU), with pools 1-4 and no pool5.

    Input float [B, 3, H, W]; output [B, C5, H/16, W/16] with C5 = scale_width(512, width).

    | stage            | stride | channels (width 1) | indices (batch_norm False / True) |
    |------------------|--------|--------------------|-----------------------------------|
    | conv1_1..conv1_2 | 1      | 64                 | 0-3 / 0-5                         |
    | pool1, conv2_x   | 2      | 128                | 4-8 / 6-12                        |
    | pool2, conv3_x   | 4      | 256                | 9-15 / 13-22                      |
    | pool3, conv4_x   | 8      | 512                | 16-22 / 23-32 (conv4_3's ReLU last)|
    | pool4, conv5_x   | 16     | 512                | 23-29 / 33-42                     |

    The layer indices are torchvision's ``vgg16().features`` / ``vgg16_bn().features`` (which
    end with pool5 at 30 / 43), so its state_dicts load key for key. With ``batch_norm`` each
    convolution is followed by BatchNorm2d (as in ``vgg16_bn``). ``ceil_mode_pool3`` makes
    pool3 round up, as SSD does (300 -> conv4_3 38x38 instead of 37x37).
    ``pool_index(trunk, 4)`` finds pool4, e.g. to tap conv4_3.
    """
    layers: list[nn.Module] = []
    in_channels = 3
    pools_seen = 0
    for item in VGG16_LAYOUT:
        if item == "M":
            pools_seen += 1
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=ceil_mode_pool3 and pools_seen == 3))
            continue
        out_channels = scale_width(int(item), width)
        layers.append(nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1))
        if batch_norm:
            layers.append(nn.BatchNorm2d(out_channels))
        layers.append(nn.ReLU(inplace=True))
        in_channels = out_channels
    trunk = nn.Sequential(*layers)
    trunk.out_channels = in_channels  # type: ignore[attr-defined]
    kaiming_init(trunk)
    return trunk


def kaiming_init(module: nn.Module) -> None:
    """He-normal (fan out) convolutions, zero biases, unit BatchNorm: torchvision's VGG init."""
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        elif isinstance(layer, nn.BatchNorm2d):
            nn.init.ones_(layer.weight)
            nn.init.zeros_(layer.bias)


def pool_index(trunk: nn.Sequential, which: int) -> int:
    """Index in ``trunk`` of its ``which``-th max pool (1-based): pool4 -> 23 in plain VGG-16."""
    pools = [i for i, layer in enumerate(trunk) if isinstance(layer, nn.MaxPool2d)]
    if not 1 <= which <= len(pools):
        raise ValueError(f"the trunk has {len(pools)} max pools, asked for pool{which}")
    return pools[which - 1]


def vgg16_weights_enum(batch_norm: bool):
    """torchvision's weights enum for this trunk: ``VGG16_BN_Weights`` with BatchNorm, else
    ``VGG16_Weights`` (IMAGENET1K_V1: ImageNet mean/std input, with its classifier;
    IMAGENET1K_FEATURES: no classifier, [0, 255] pixels minus the mean)."""
    return torchvision.models.VGG16_BN_Weights if batch_norm else torchvision.models.VGG16_Weights


def load_vgg16_trunk_state(trunk: nn.Sequential, state: dict[str, torch.Tensor], source: str,
                           batch_norm: bool = False) -> str:
    """Load a torchvision ``vgg16``/``vgg16_bn`` state_dict (keys ``features.N.*``,
    ``classifier.*``) or a ``vgg16_trunk``'s own (keys ``N.*``) into ``trunk`` in place; return
    ``source``. Raises ValueError naming ``source`` when it does not fit (width 1 needed)."""
    try:
        trunk.load_state_dict(_trunk_keys(state), strict=True)
    except RuntimeError as error:
        raise ValueError(f"{source}: does not fit this VGG-16 trunk (width 1.0 and batch_norm="
                         f"{batch_norm} needed): {error}") from None
    log.info("VGG-16 trunk weights: %s", source)
    return source


def vgg16_classifier(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
    """VGG-16's fc6 [4096, 512*7*7] and fc7 [4096, 4096] (weights and biases, keys fc6.weight,
    fc6.bias, fc7.weight, fc7.bias) from a torchvision state_dict, or None when it has no usable
    classifier (IMAGENET1K_FEATURES has none)."""
    keys = ("classifier.0.weight", "classifier.0.bias", "classifier.3.weight", "classifier.3.bias")
    if not all(k in state for k in keys) or not all(torch.isfinite(state[k]).all() for k in keys):
        return None
    return {"fc6.weight": state["classifier.0.weight"], "fc6.bias": state["classifier.0.bias"],
            "fc7.weight": state["classifier.3.weight"], "fc7.bias": state["classifier.3.bias"]}


def subsampled_fc6_fc7(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
    """SSD's (and DeepLab-LargeFOV's) fc6/fc7 from VGG-16's fully connected layers, or None
    when ``state`` has no usable classifier (IMAGENET1K_FEATURES has none).

    fc6 [4096, 512*7*7] -> [1024, 512, 3, 3]: every 4th filter and every 3rd tap of the 7x7
    kernel (hence the dilation of the atrous 3x3 convolution); fc7 [4096, 4096] -> [1024, 1024, 1, 1]:
    every 4th filter and every 4th input. Keys: fc6.weight/bias, fc7.weight/bias.
    """
    fc = vgg16_classifier(state)
    if fc is None:
        return None
    fc6 = fc["fc6.weight"].view(4096, 512, 7, 7)[::4, :, ::3, ::3]     # [1024, 512, 3, 3]
    fc7 = fc["fc7.weight"][::4, ::4]                                   # [1024, 1024]
    return {"fc6.weight": fc6.contiguous(), "fc6.bias": fc["fc6.bias"][::4].contiguous(),
            "fc7.weight": fc7.reshape(1024, 1024, 1, 1).contiguous(),
            "fc7.bias": fc["fc7.bias"][::4].contiguous()}


def _trunk_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keep the trunk's entries of a VGG state_dict: 'features.N.x' -> 'N.x' (pool5 has no
    parameters, so every one belongs to conv1_1 .. conv5_3); 'classifier.*' dropped."""
    if any(k.startswith("features.") for k in state):
        return {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
    return state


def load_module_state(module: nn.Module, state: dict[str, torch.Tensor], source: str, prefix: str = "") -> str:
    """Load ``state`` (keys starting with ``prefix``, which is stripped) into ``module``
    strictly; return ``source``. Raises ValueError naming ``source`` when it does not fit."""
    if prefix:
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise ValueError(f"{source}: does not fit {type(module).__name__}: {error}") from None
    log.info("%s weights: %s", type(module).__name__, source)
    return source


# --------------------------------------------------------------------------------------------
# MobileNetV1 (Howard et al. 2017): a 3x3 convolution then 13 depthwise-separable blocks.
# --------------------------------------------------------------------------------------------

#: (output channels, stride) of the 13 depthwise-separable blocks.
MOBILENET_V1_BLOCKS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
                       (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1)]


def _conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int, stride: int,
                  groups: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2,
                      groups=groups, bias=False),
            nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)]


class MobileNetV1(nn.Module):
    """MobileNetV1 feature extractor (no classifier), with the paper's width multiplier.

    Input float [B, 3, H, W]. ``features`` is an ``nn.Sequential`` of 14 stages: stage 0 is a
    3x3 stride-2 convolution (32 channels), stages 1..13 are depthwise-separable blocks
    (3x3 depthwise + BN + ReLU, 1x1 pointwise + BN + ReLU). Strides and channels (width 1):

    | stage | stride | channels | at 300x300 |
    |-------|--------|----------|------------|
    | 0     | 2      | 32       | 150        |
    | 1     | 2      | 64       | 150        |
    | 2-3   | 4      | 128      | 75         |
    | 4-5   | 8      | 256      | 38         |
    | 6-11  | 16     | 512      | 19 ("conv11", SSD's first source map) |
    | 12-13 | 32     | 1024     | 10 ("conv13", SSD's second source map) |

    ``forward`` returns the stride-16 and stride-32 maps: ([B, C11, H/16, W/16], [B, C13, H/32, W/32]).
    torchvision has no MobileNetV1, so weights come from a local file only.
    """

    def __init__(self, width: float = 1.0):
        super().__init__()
        channels = scale_width(32, width)
        stages: list[nn.Module] = [nn.Sequential(*_conv_bn_relu(3, channels, 3, 2))]
        for out, stride in MOBILENET_V1_BLOCKS:
            out = scale_width(out, width)
            stages.append(nn.Sequential(*_conv_bn_relu(channels, channels, 3, stride, groups=channels),
                                        *_conv_bn_relu(channels, out, 1, 1)))
            channels = out
        self.features = nn.Sequential(*stages)
        kaiming_init(self.features)
        #: channels of the stride-16 (stage 11) and stride-32 (stage 13) maps.
        self.out_channels = [scale_width(512, width), channels]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for stage in self.features[:12]:
            x = stage(x)
        stride16 = x                                 # [B, C11, H/16, W/16]
        for stage in self.features[12:]:
            x = stage(x)
        return stride16, x                           # x: [B, C13, H/32, W/32]
