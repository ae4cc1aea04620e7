"""Training precision and memory layout: which autocast dtype a step runs under, and whether the
convolutions see channels-last tensors.

``train.precision``: ``fp32`` (no autocast), ``bf16`` (``torch.autocast`` with bfloat16: on a CPU
with native bf16 instructions (AVX512-BF16 or AMX), or a CUDA GPU that supports bf16), ``fp16``
(CUDA only, with a GradScaler). Asked for where the hardware lacks it: a warning and fp32, or a
``ValueError`` with ``train.precision_strict=true``. Autocast keeps losses, softmax and the ops
without a bf16 kernel in fp32 by itself (torchvision registers RoIAlign / RoIPool / NMS for
autocast: they run in fp32 on fp32 copies of their inputs).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16", "fp16")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Precision:
    """What a training step runs in: ``used`` (one of ``PRECISIONS``), what was ``requested``,
    and ``note`` (why they differ; empty when they do not)."""
    used: str
    requested: str
    note: str = ""

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.used]

    @property
    def autocast(self) -> bool:
        return self.used != "fp32"

    def metrics(self) -> dict:
        """metrics.json entries: train_precision (used), train_precision_requested, its note."""
        return {"train_precision": self.used, "train_precision_requested": self.requested,
                "train_precision_note": self.note}


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX tiles (x86), as torch's CPU feature probe sees them. Without them
    oneDNN emulates bf16 and a bf16 step is slower than fp32."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def unsupported_reason(precision: str, device: torch.device) -> str:
    """Why ``precision`` cannot run on ``device`` ('' when it can)."""
    if precision == "fp32":
        return ""
    if device.type == "cuda":
        if precision == "bf16" and not torch.cuda.is_bf16_supported():
            return f"{torch.cuda.get_device_name(device)} has no bf16 support"
        return ""
    if device.type == "cpu":
        if precision == "fp16":
            return "fp16 training needs CUDA (a GradScaler); on CPU use bf16"
        if not cpu_has_native_bf16():
            return "this CPU has no native bf16 instructions (AVX512-BF16 or AMX): bf16 would be emulated"
        return ""
    return f"{precision} autocast is not supported on {device.type}"


def resolve_precision(requested: str, device: torch.device, strict: bool) -> Precision:
    """The precision a trainer on ``device`` uses when asked for ``requested``: itself where
    supported; else fp32 with a warning, or a ValueError when ``strict``."""
    if requested not in PRECISIONS:
        raise ValueError(f"train.precision: {requested!r}; choose from {list(PRECISIONS)}")
    reason = unsupported_reason(requested, device)
    if not reason:
        return Precision(requested, requested)
    if strict:
        raise ValueError(f"train.precision={requested} on {device.type}: {reason} "
                         "(train.precision_strict=true; set it false to fall back to fp32)")
    log.warning("train.precision=%s on %s: %s; training in fp32", requested, device.type, reason)
    return Precision("fp32", requested, reason)


def set_channels_last(model: nn.Module, enabled: bool) -> nn.Module:
    """Give ``model``'s 4-D parameters and buffers (convolution weights) the channels-last
    (NHWC) layout, or back to contiguous (NCHW) when not ``enabled``; in place, values unchanged.
    oneDNN / cuDNN convolutions follow the weight's layout, so activations become NHWC too."""
    return model.to(memory_format=torch.channels_last if enabled else torch.contiguous_format)


def uses_channels_last(model: nn.Module) -> bool:
    """Whether ``model``'s first 4-D parameter (a convolution weight) is stored NHWC."""
    weight = next((p for p in model.parameters() if p.dim() == 4), None)
    return weight is not None and weight.is_contiguous(memory_format=torch.channels_last) \
        and not weight.is_contiguous()
