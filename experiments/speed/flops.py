"""Counting a model's arithmetic (the machine's peak rate is ``experiments.speed.peak``).

Units, stated once because published figures mix them up: ``torch.utils.flop_counter``
counts one multiply-add as 2 FLOPs, so MACs = FLOPs / 2. Torchvision's model cards
(``_ops``, e.g. 34.858 for ``ssd300_vgg16``) and most detection papers quote GMACs under the
name "GFLOPs"; detbench reports ``gmacs`` and says so. Only the operators FlopCounterMode
knows (convolutions, matrix products, attention) are counted: element-wise work, pooling,
RoIAlign and NMS are not, which is also what the published figures leave out.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

#: the benchmark's dtype names -> torch dtypes
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def count_flops(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[int, Any]:
    """Run ``fn(*args, **kwargs)`` once under FlopCounterMode.

    Returns (FLOPs counted, fn's result). FLOPs are 2 per multiply-add; divide by 2 for MACs.
    """
    with FlopCounterMode(display=False) as counter:
        result = fn(*args, **kwargs)
    return int(counter.get_total_flops()), result
