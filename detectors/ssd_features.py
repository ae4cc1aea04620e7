"""SSD's source maps: a base network cut short, then extra layers that halve the map each time.

``VGGSourceMaps`` (the paper's Fig. 2): VGG-16 with ceil-mode pool3; conv4_3 passes an L2
normalisation with a learned per-channel scale (initially 20); pool5 becomes 3x3 stride 1;
fc6 a 3x3 convolution with dilation 6 (atrous) and fc7 a 1x1 convolution, 1024 channels each;
then the extra layers, each a 1x1 convolution to ``mid`` channels and a ``kernel`` convolution
to ``out`` channels (``extra_layers`` rows are [mid, out, kernel, stride, padding]).

| input | maps (conv4_3, fc7, conv8_2, conv9_2, conv10_2, conv11_2[, conv12_2]) |
|-------|------------------------------------------------------------------------|
| 300   | 38, 19, 10, 5, 3, 1                                                   |
| 512   | 64, 32, 16, 8, 4, 2, 1                                                |

``MobileNetSourceMaps``: MobileNetV1's stride-16 ("conv11", 512 ch) and stride-32 ("conv13",
1024 ch) maps, then four extra layers: 19, 10, 5, 3, 2, 1 at 300x300.

Each ``forward`` returns the list of source maps [B, C_k, h_k, w_k]; ``out_channels`` lists
C_k and ``map_sizes(image_size)`` computes (h_k, w_k) without running the network.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detectors.backbones import (
    MobileNetV1,
    load_module_state,
    load_vgg16_trunk_state,
    pool_index,
    subsampled_fc6_fc7,
    vgg16_trunk,
    vgg16_weights_enum,
)
from detectors.base import scale_width

#: [mid, out, kernel, stride, padding] of the extra layers (Caffe's SSD300 / SSD512 / MobileNet).
EXTRA_LAYERS = {
    "ssd300": [[256, 512, 3, 2, 1], [128, 256, 3, 2, 1], [128, 256, 3, 1, 0], [128, 256, 3, 1, 0]],
    "ssd512": [[256, 512, 3, 2, 1], [128, 256, 3, 2, 1], [128, 256, 3, 2, 1], [128, 256, 3, 2, 1],
               [128, 256, 4, 1, 1]],
    "mobilenet300": [[256, 512, 3, 2, 1], [128, 256, 3, 2, 1], [128, 256, 3, 2, 1], [128, 256, 3, 2, 1]],
}


def _conv(in_channels: int, out_channels: int, batch_norm: bool, **conv_args) -> list[nn.Module]:
    """Conv2d (+ BatchNorm2d) + ReLU."""
    layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, bias=not batch_norm, **conv_args)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(out_channels))
    return layers + [nn.ReLU(inplace=True)]


def xavier_init(module: nn.Module) -> None:
    """Xavier-uniform weights and zero biases for every convolution (the SSD code's choice)."""
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            nn.init.xavier_uniform_(layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


def build_extra_layers(in_channels: int, rows: list[list[int]], width: float,
                       batch_norm: bool) -> tuple[nn.ModuleList, list[int]]:
    """The extra feature layers; returns (blocks, their output channels)."""
    blocks, channels = nn.ModuleList(), []
    for mid, out, kernel, stride, padding in rows:
        mid, out = scale_width(mid, width), scale_width(out, width)
        blocks.append(nn.Sequential(*_conv(in_channels, mid, batch_norm, kernel_size=1),
                                    *_conv(mid, out, batch_norm, kernel_size=kernel, stride=stride,
                                           padding=padding)))
        channels.append(out)
        in_channels = out
    xavier_init(blocks)
    return blocks, channels


def _walk_size(size: tuple[int, int], module: nn.Module) -> tuple[int, int]:
    """Spatial size after ``module`` (convolutions and max pools; other layers keep the size)."""
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.MaxPool2d)):
            pair = lambda v: v if isinstance(v, tuple) else (v, v)  # noqa: E731
            k, s, p, d = (pair(layer.kernel_size), pair(layer.stride), pair(layer.padding), pair(layer.dilation))
            rnd = math.ceil if getattr(layer, "ceil_mode", False) else math.floor
            size = tuple(int(rnd((n + 2 * p[i] - d[i] * (k[i] - 1) - 1) / s[i])) + 1
                         for i, n in enumerate(size))
    return size


class L2Norm(nn.Module):
    """x / ||x||_2 over channels, times a learned per-channel scale (ParseNet; SSD's conv4_3)."""

    def __init__(self, channels: int, initial_scale: float = 20.0):
        super().__init__()
        self.scale = nn.Parameter(torch.full((channels,), initial_scale))

    def forward(self, x: Tensor) -> Tensor:                       # [B, C, H, W]
        return self.scale.view(1, -1, 1, 1) * F.normalize(x)


class VGGSourceMaps(nn.Module):
    """SSD's VGG-16 base + extra layers (see the module docstring); random weights until
    ``load_base_state`` hands it torchvision's VGG-16 ImageNet weights."""

    def __init__(self, width: float = 1.0, batch_norm: bool = False, extra_layers: list[list[int]] | None = None):
        super().__init__()
        self.batch_norm = batch_norm
        trunk = vgg16_trunk(width, batch_norm, ceil_mode_pool3=True)
        pool4 = pool_index(trunk, 4)
        conv4_3_channels = scale_width(512, width)
        fc_channels = scale_width(1024, width)
        self.to_conv4_3 = trunk[:pool4]                          # conv1_1 .. conv4_3 + ReLU, stride 8
        self.l2norm = L2Norm(conv4_3_channels, 20.0)
        fc = nn.Sequential(
            nn.MaxPool2d(kernel_size=3, stride=1, padding=1),     # pool5, 3x3 stride 1
            *_conv(trunk.out_channels, fc_channels, batch_norm, kernel_size=3, padding=6, dilation=6),  # fc6
            *_conv(fc_channels, fc_channels, batch_norm, kernel_size=1))                                # fc7
        xavier_init(fc)
        self.to_fc7 = nn.Sequential(*trunk[pool4:], *fc)         # pool4 .. conv5_3, pool5, fc6, fc7
        self.extras, extra_channels = build_extra_layers(fc_channels, extra_layers or EXTRA_LAYERS["ssd300"],
                                                         width, batch_norm)
        self.out_channels = [conv4_3_channels, fc_channels, *extra_channels]

    def weights_enum(self) -> type:
        return vgg16_weights_enum(self.batch_norm)

    def load_base_state(self, state: dict[str, Tensor], source: str) -> str:
        """Load torchvision's VGG-16 weights (full width): conv1_1 .. conv5_3 as they are, and,
        as the paper did, fc6/fc7 subsampled from its classifier (every 4th filter, every 3rd
        tap: ``subsampled_fc6_fc7``) when the state has one. Returns what was loaded."""
        # the same modules, indexed as torchvision's vgg16().features (conv1_1 .. conv5_3)
        trunk = nn.Sequential(*self.to_conv4_3, *self.to_fc7[: len(self.to_fc7) - len(self._fc_layers())])
        load_vgg16_trunk_state(trunk, state, source, self.batch_norm)
        fc_weights = subsampled_fc6_fc7(state)
        if fc_weights is None:
            return f"{source} (fc6/fc7 random: no classifier in these weights)"
        fc6, fc7 = self.fc6_fc7()
        fc6.load_state_dict({"weight": fc_weights["fc6.weight"], "bias": fc_weights["fc6.bias"]})
        fc7.load_state_dict({"weight": fc_weights["fc7.weight"], "bias": fc_weights["fc7.bias"]})
        return f"{source} (+ fc6/fc7 subsampled from its classifier)"

    def fc6_fc7(self) -> tuple[nn.Conv2d, nn.Conv2d]:
        """The atrous 3x3 fc6 and the 1x1 fc7 convolutions."""
        fc6, fc7 = [m for m in self._fc_layers() if isinstance(m, nn.Conv2d)]
        return fc6, fc7

    def _fc_layers(self) -> list[nn.Module]:
        """pool5, fc6 (+BN) + ReLU, fc7 (+BN) + ReLU: the tail of ``to_fc7`` after conv5_3."""
        per_conv = 3 if self.batch_norm else 2
        return list(self.to_fc7)[-(1 + 2 * per_conv):]

    def forward(self, x: Tensor) -> list[Tensor]:
        conv4_3 = self.to_conv4_3(x)                              # [B, 512w, H/8, W/8]
        x = self.to_fc7(conv4_3)                                  # [B, 1024w, H/16, W/16]
        maps = [self.l2norm(conv4_3), x]
        for block in self.extras:
            x = block(x)
            maps.append(x)
        return maps

    def map_sizes(self, image_size: tuple[int, int]) -> list[tuple[int, int]]:
        sizes = [_walk_size(image_size, self.to_conv4_3)]
        sizes.append(_walk_size(sizes[-1], self.to_fc7))
        for block in self.extras:
            sizes.append(_walk_size(sizes[-1], block))
        return sizes


class MobileNetSourceMaps(nn.Module):
    """MobileNetV1's stride-16 and stride-32 maps + extra layers (see the module docstring).
    torchvision has no MobileNetV1: trained weights come from a local ``MobileNetV1`` state_dict
    (``load_base_state``)."""

    def __init__(self, width: float = 1.0, batch_norm: bool = False, extra_layers: list[list[int]] | None = None):
        super().__init__()
        self.base = MobileNetV1(width)
        self.extras, extra_channels = build_extra_layers(self.base.out_channels[1],
                                                         extra_layers or EXTRA_LAYERS["mobilenet300"],
                                                         width, batch_norm)
        self.out_channels = [*self.base.out_channels, *extra_channels]

    def weights_enum(self) -> None:
        return None

    def load_base_state(self, state: dict[str, Tensor], source: str) -> str:
        """Load a ``MobileNetV1`` state_dict (its own keys, or ``base.``-prefixed) strictly."""
        prefix = "base." if state and all(k.startswith("base.") for k in state) else ""
        return load_module_state(self.base, state, source, prefix)

    def forward(self, x: Tensor) -> list[Tensor]:
        stride16, x = self.base(x)                                # [B, 512w, H/16, W/16], [B, 1024w, H/32, W/32]
        maps = [stride16, x]
        for block in self.extras:
            x = block(x)
            maps.append(x)
        return maps

    def map_sizes(self, image_size: tuple[int, int]) -> list[tuple[int, int]]:
        sizes = [_walk_size(image_size, self.base.features[:12])]
        sizes.append(_walk_size(sizes[-1], self.base.features[12:]))
        for block in self.extras:
            sizes.append(_walk_size(sizes[-1], block))
        return sizes
