"""The machine's peak arithmetic rate, measured and (where the hardware says enough) theoretical.

A network's achieved FLOP/s means little without a denominator. The speed protocol uses two:

- **measured** (``measured_peak_gflops``): the best of a large square matrix product and a
  3x3 convolution, both in the benchmark's dtype, timed in the same process and threads as the
  network. On this project's CPUs oneDNN runs every 3x3 convolution as ``convolution_direct``
  (brgemm kernels; checked with ``ONEDNN_VERBOSE=1``), so the convolution is a direct one; on
  a GPU cuDNN chooses its own algorithm (Winograd and FFT are allowed there).
- **theoretical** (``theoretical_peak``): cores x clock x FLOP per cycle per core.
  CPU: FLOP/cycle = FMA units x vector lanes x 2, from /proc/cpuinfo's vendor, family and
  flags. Assumed (stated, not measured):

  * AMD family 25 (Zen 3/4) with ``avx512f``: Zen 4, two 256-bit FMA pipes (512-bit ops are
    split in two) -> 2 x 8 x 2 = 32 fp32 FLOP/cycle; ``avx512_bf16`` (VDPBF16PS, two bf16
    products per fp32 lane) -> 64 bf16 FLOP/cycle.
  * AMD family 26 (Zen 5): two 512-bit FMA pipes -> 64 fp32, 128 bf16.
  * Intel with ``avx512f``: two 512-bit FMA units (Xeon Gold/Platinum; Silver/Bronze have one,
    which halves the figure) -> 64 fp32; ``amx_bf16``: 1024 bf16 FLOP/cycle (Intel's figure for
    AMX); else ``avx512_bf16`` -> 128.
  * AVX2 + FMA only: two 256-bit FMA units -> 32 fp32, and bf16 no faster than fp32.

  The clock is the maximum (boost) frequency from ``/sys/devices/system/cpu/cpu0/cpufreq/
  cpuinfo_max_freq``. In a VM that file is usually absent and /proc/cpuinfo's "cpu MHz" is the
  nominal (TSC) rate, not the running boost clock, so the clock, and with it the theoretical
  peak, is **unknown**; ``implied_clock_ghz`` = measured peak / (cores x FLOP/cycle) is then
  reported instead, as a check of the FLOP/cycle assumption.
  GPU: NVIDIA's datasheet figures (dense, no sparsity) for the few GPUs in ``GPU_PEAK_TFLOPS``;
  fp32 means TF32 where cuDNN may use it (``torch.backends.cudnn.allow_tf32``).

``utilisation_denominator`` picks the theoretical figure when it is known and not below the
measured one, else the measured maximum, and says which.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from experiments.job.identity import synchronize
from experiments.speed.flops import DTYPES

#: dense TFLOP/s from NVIDIA datasheets: name substring -> {fp32, tf32, bf16, fp16}
GPU_PEAK_TFLOPS = {
    "H200": {"fp32": 67.0, "tf32": 494.7, "bf16": 989.4, "fp16": 989.4},
    "H100 80GB HBM3": {"fp32": 67.0, "tf32": 494.7, "bf16": 989.4, "fp16": 989.4},  # SXM
    "H100 PCIe": {"fp32": 51.2, "tf32": 378.0, "bf16": 756.0, "fp16": 756.0},
    "A100": {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0, "fp16": 312.0},
    "L40S": {"fp32": 91.6, "tf32": 183.0, "bf16": 362.1, "fp16": 362.1},
}


def _timed_best(fn, device: torch.device, repeats: int) -> float:
    fn()
    synchronize(device)
    best = float("inf")
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        fn()
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best


def _check_dtype(dtype: str) -> torch.dtype:
    if dtype not in DTYPES:
        raise ValueError(f"peak: dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    return DTYPES[dtype]


def matmul_peak_gflops(device: str | torch.device = "cpu", dtype: str = "fp32",
                       size: int | None = None, repeats: int = 3) -> float:
    """Achieved GFLOP/s (2 FLOPs per multiply-add) of an n x n matrix product, the best of
    ``repeats`` after one untimed; n defaults to 2048 on CPU, 8192 on a GPU."""
    device, torch_dtype = torch.device(device), _check_dtype(dtype)
    n = size or (2048 if device.type == "cpu" else 8192)
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=generator).to(device=device, dtype=torch_dtype)
    b = torch.randn(n, n, generator=generator).to(device=device, dtype=torch_dtype)
    with torch.inference_mode():
        seconds = _timed_best(lambda: torch.mm(a, b), device, repeats)
    return 2 * n**3 / seconds / 1e9


def conv_peak_gflops(device: str | torch.device = "cpu", dtype: str = "fp32",
                     shape: tuple[int, int, int] | None = None, repeats: int = 3) -> float:
    """Achieved GFLOP/s of a 3x3, stride 1, padding 1 convolution in channels_last, counted as
    FlopCounterMode counts it (2 x batch x C_in x C_out x 9 x H x W). ``shape`` = (batch,
    channels, side): default (8, 512, 19) on CPU (VGG's conv5 at SSD300's scale), (64, 512, 38)
    on a GPU."""
    device, torch_dtype = torch.device(device), _check_dtype(dtype)
    batch, channels, side = shape or ((8, 512, 19) if device.type == "cpu" else (64, 512, 38))
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, channels, side, side, generator=generator)
    w = torch.randn(channels, channels, 3, 3, generator=generator) / (3 * channels ** 0.5)
    x = x.to(device=device, dtype=torch_dtype).contiguous(memory_format=torch.channels_last)
    w = w.to(device=device, dtype=torch_dtype).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        seconds = _timed_best(lambda: F.conv2d(x, w, padding=1), device, repeats)
    return 2 * batch * channels * channels * 9 * side * side / seconds / 1e9


def measured_peak_gflops(device: str | torch.device = "cpu", dtype: str = "fp32") -> dict[str, float]:
    """{"matmul": GFLOP/s, "conv": GFLOP/s, "max": the larger} measured now."""
    matmul, conv = matmul_peak_gflops(device, dtype), conv_peak_gflops(device, dtype)
    return {"matmul": matmul, "conv": conv, "max": max(matmul, conv)}


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo ({} where there is none)."""
    path = Path("/proc/cpuinfo")
    fields: dict[str, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if not line.strip():
                break
            if ":" in line:
                key, value = line.split(":", 1)
                fields[key.strip()] = value.strip()
    return fields


def cpu_flop_per_cycle(vendor: str, family: int, flags: set[str], dtype: str) -> tuple[int | None, str]:
    """(FLOP per cycle per core for ``dtype``, the assumption behind it) from cpuinfo fields;
    None where the CPU is not one this table knows."""
    fp32_rules = [
        (vendor == "AuthenticAMD" and family == 26 and "avx512f" in flags, 64, "Zen 5: 2 x 512-bit FMA"),
        (vendor == "AuthenticAMD" and family == 25 and "avx512f" in flags, 32,
         "Zen 4: 2 x 256-bit FMA pipes (AVX-512 split in two halves)"),
        (vendor == "GenuineIntel" and "avx512f" in flags, 64, "Intel AVX-512, 2 FMA units assumed"),
        ("avx2" in flags and "fma" in flags, 32, "AVX2: 2 x 256-bit FMA units"),
    ]
    fp32 = next(((value, why) for applies, value, why in fp32_rules if applies), (None, "unknown CPU"))
    if dtype == "fp32" or fp32[0] is None:
        return fp32
    if dtype == "bf16":
        if "amx_bf16" in flags:
            return 1024, "AMX-BF16: 1024 FLOP/cycle (Intel's figure)"
        if "avx512_bf16" in flags:
            return 2 * fp32[0], f"{fp32[1]}; AVX512-BF16 dot products: 2 x fp32"
    return fp32[0], f"{fp32[1]}; {dtype} no faster than fp32 assumed"


def theoretical_peak(device: str | torch.device = "cpu", dtype: str = "fp32") -> dict[str, object]:
    """{"gflops": float or None, "flop_per_cycle", "cores", "clock_ghz", "assumption"}.

    CPU: cores are the threads torch uses (capped by the CPUs this process may run on); clock
    from cpufreq's maximum, None when unknown (then gflops is None too). GPU: the datasheet
    table, None for other GPUs."""
    device = torch.device(device)
    _check_dtype(dtype)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        arithmetic = "tf32" if dtype == "fp32" and torch.backends.cudnn.allow_tf32 else dtype
        figures = next((v for k, v in GPU_PEAK_TFLOPS.items() if k in name), None)
        return {"gflops": figures[arithmetic] * 1e3 if figures else None, "flop_per_cycle": None,
                "cores": None, "clock_ghz": None,
                "assumption": f"{name} datasheet, dense {arithmetic}" if figures else f"{name}: no datasheet figure"}
    info = _cpuinfo()
    flags = set(info.get("flags", "").split())
    per_cycle, why = cpu_flop_per_cycle(info.get("vendor_id", ""), int(info.get("cpu family", 0) or 0), flags, dtype)
    cores = min(torch.get_num_threads(), len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                else os.cpu_count() or 1)
    max_freq = Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
    clock = int(max_freq.read_text()) / 1e6 if max_freq.exists() else None  # kHz -> GHz
    if clock is None:
        why += ("; clock unknown (no cpufreq; /proc/cpuinfo's " f"{info.get('cpu MHz', '?')} MHz"
                f"{' in a VM' if 'hypervisor' in flags else ''} is the nominal rate, not the boost clock)")
    gflops = cores * clock * per_cycle if clock and per_cycle else None
    return {"gflops": gflops, "flop_per_cycle": per_cycle, "cores": cores, "clock_ghz": clock, "assumption": why}


def utilisation_denominator(measured_max: float, theoretical: float | None) -> tuple[float, str]:
    """(GFLOP/s to divide by, "theoretical" | "measured"): the theoretical figure when known and
    not below what was measured (a theoretical figure below a measurement is a wrong clock or
    FLOP/cycle assumption), else the measured maximum."""
    if theoretical and theoretical >= measured_max:
        return theoretical, "theoretical"
    return measured_max, "measured"
