"""Counting a model's arithmetic and measuring the machine's own matrix-product peak.

Units, stated once because published figures mix them up: ``torch.utils.flop_counter``
counts one multiply-add as 2 FLOPs, so MACs = FLOPs / 2. Torchvision's model cards
(``_ops``, e.g. 34.858 for ``ssd300_vgg16``) and most detection papers quote GMACs under the
name "GFLOPs"; detbench reports ``gmacs`` and says so. Only the operators FlopCounterMode
knows (convolutions, matrix products, attention) are counted: element-wise work, pooling,
RoIAlign and NMS are not, which is also what the published figures leave out.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from experiments.identity import synchronize

#: the benchmark's dtype names -> torch dtypes
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def count_flops(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[int, Any]:
    """Run ``fn(*args, **kwargs)`` once under FlopCounterMode.

    Returns (FLOPs counted, fn's result). FLOPs are 2 per multiply-add; divide by 2 for MACs.
    """
    with FlopCounterMode(display=False) as counter:
        result = fn(*args, **kwargs)
    return int(counter.get_total_flops()), result


def matmul_peak_gflops(device: str | torch.device = "cpu", dtype: str = "fp32",
                       size: int | None = None, repeats: int = 3) -> float:
    """Achieved GFLOP/s (10⁹ FLOPs/s, 2 FLOPs per multiply-add) of a square matrix product.

    This is the machine's practical peak for dense arithmetic in ``dtype``, measured in the
    calling process so that a network's achieved FLOP/s can be read as a utilisation of what
    the same cores (or GPU), threads and libraries deliver at that moment. ``size`` defaults to
    2048 on CPU (about 0.1 s per product at 150 GFLOP/s; 4096 is no faster) and 8192 on a GPU.
    The best of ``repeats`` timed products is taken, after one untimed product.
    """
    device = torch.device(device)
    if dtype not in DTYPES:
        raise ValueError(f"matmul_peak_gflops: dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    n = size or (2048 if device.type == "cpu" else 8192)
    generator = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=generator).to(device=device, dtype=DTYPES[dtype])
    b = torch.randn(n, n, generator=generator).to(device=device, dtype=DTYPES[dtype])
    with torch.inference_mode():
        torch.mm(a, b)
        synchronize(device)
        best = float("inf")
        for _ in range(max(1, repeats)):
            start = time.perf_counter()
            torch.mm(a, b)
            synchronize(device)
            best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9
