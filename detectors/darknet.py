"""Darknet-style convolutional stacks of YOLO v1 (24 conv layers) and Fast YOLO (9 conv layers).

A stack is written as a list of layer specs, read top to bottom like Figure 3 of the YOLO paper:
``(kernel, out_channels, stride)`` for a convolution (padding ``kernel // 2``, then optional
BatchNorm, then leaky ReLU with slope 0.1) and ``"M"`` for a 2x2 max-pool with stride 2.

YOLO v1 (arXiv 1506.02640, Figure 3) splits its 24 conv layers in two:

- ``YOLO_BACKBONE``: the first 20 conv layers, the part the paper pretrains on ImageNet at
  224x224 (448x448 input -> 14x14x1024 features, stride 32);
- ``YOLO_DETECTION_CONVS``: the 4 conv layers added for detection (one of stride 2:
  14x14 -> 7x7x1024 at 448 input, total stride 64).

Fast YOLO has 9 conv layers with fewer filters (16 ... 1024, six max-pools: 448 -> 7x7x1024),
as in darknet's ``yolo-tiny.cfg`` of the paper's time (the paper gives only "9 instead of 24");
all 9 are its backbone and it adds no detection convs.

The width multiplier scales every conv's channels through ``scale_width`` (multiples of 8),
so that a reduced-width network keeps the paper's geometry (grid, strides) at a fraction of
the compute. ``batch_norm`` puts a BatchNorm after every conv (the paper has none; YOLO v2
added it); training from scratch on a CPU in minutes needs it (conf/detector/yolov1_cpu.yaml).
"""
from __future__ import annotations

from typing import Union

from torch import nn

from detectors.base import scale_width

#: (kernel, out_channels, stride) for a conv layer, "M" for a 2x2/2 max-pool.
LayerSpec = Union[tuple[int, int, int], str]

YOLO_BACKBONE: list[LayerSpec] = [
    (7, 64, 2), "M",                                       # 448 -> 224 -> 112
    (3, 192, 1), "M",                                      # -> 56
    (1, 128, 1), (3, 256, 1), (1, 256, 1), (3, 512, 1), "M",  # -> 28
    *[(1, 256, 1), (3, 512, 1)] * 4, (1, 512, 1), (3, 1024, 1), "M",  # -> 14
    *[(1, 512, 1), (3, 1024, 1)] * 2,                      # 20 conv layers so far
]
YOLO_DETECTION_CONVS: list[LayerSpec] = [
    (3, 1024, 1), (3, 1024, 2),                            # 14 -> 7
    (3, 1024, 1), (3, 1024, 1),                            # conv layers 21..24
]

FAST_YOLO_BACKBONE: list[LayerSpec] = [
    (3, 16, 1), "M", (3, 32, 1), "M", (3, 64, 1), "M",     # 448 -> 56
    (3, 128, 1), "M", (3, 256, 1), "M", (3, 512, 1), "M",  # -> 7
    (3, 1024, 1), (3, 1024, 1), (3, 1024, 1),              # conv layers 7..9
]
FAST_YOLO_DETECTION_CONVS: list[LayerSpec] = []

ARCHITECTURES: dict[str, tuple[list[LayerSpec], list[LayerSpec]]] = {
    "yolo": (YOLO_BACKBONE, YOLO_DETECTION_CONVS),
    "fast_yolo": (FAST_YOLO_BACKBONE, FAST_YOLO_DETECTION_CONVS),
}


def conv_layer(in_channels: int, out_channels: int, kernel: int, stride: int,
               batch_norm: bool) -> nn.Sequential:
    """Conv (padding kernel // 2) -> [BatchNorm] -> LeakyReLU(0.1). The conv has no bias
    when a BatchNorm follows (the BatchNorm's shift plays that part)."""
    layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, kernel, stride,
                                         padding=kernel // 2, bias=not batch_norm)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(out_channels))
    layers.append(nn.LeakyReLU(0.1, inplace=True))
    return nn.Sequential(*layers)


def make_layers(specs: list[LayerSpec], in_channels: int, width: float,
                batch_norm: bool) -> tuple[nn.Sequential, int]:
    """Build ``specs`` into an ``nn.Sequential``; returns it and its output channels."""
    layers: list[nn.Module] = []
    channels = in_channels
    for spec in specs:
        if spec == "M":
            layers.append(nn.MaxPool2d(2, 2))
            continue
        kernel, out_channels, stride = spec
        out_channels = scale_width(out_channels, width)
        layers.append(conv_layer(channels, out_channels, kernel, stride, batch_norm))
        channels = out_channels
    return nn.Sequential(*layers), channels


def output_size(specs: list[LayerSpec], input_size: tuple[int, int]) -> tuple[int, int]:
    """(H, W) of the feature map ``specs`` make of an ``input_size`` (H, W) input, by the
    conv / pool size formulas (no tensor is run)."""
    h, w = input_size
    for spec in specs:
        if spec == "M":
            h, w = h // 2, w // 2
        else:
            kernel, _, stride = spec
            pad = kernel // 2
            h = (h + 2 * pad - kernel) // stride + 1
            w = (w + 2 * pad - kernel) // stride + 1
        if h < 1 or w < 1:
            raise ValueError(f"input {input_size} is too small for this Darknet stack")
    return h, w


def count_convs(specs: list[LayerSpec]) -> int:
    return sum(1 for spec in specs if spec != "M")
