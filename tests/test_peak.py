"""The machine's peak: FLOP/cycle assumptions, the measured matmul and convolution, the denominator."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from experiments.speed import benchmark as benchmark_module
from experiments.speed.benchmark import benchmark
from experiments.speed.flops import count_flops
from experiments.speed.peak import (
    conv_peak_gflops,
    cpu_flop_per_cycle,
    measured_peak_gflops,
    theoretical_peak,
    utilisation_denominator,
)
from tests.test_benchmark import TinyDetector

ZEN4 = {"avx2", "fma", "avx512f", "avx512_bf16"}


@pytest.mark.parametrize("vendor, family, flags, dtype, expected", [
    ("AuthenticAMD", 25, ZEN4, "fp32", 32),                 # 2 x 256-bit FMA x 8 lanes x 2
    ("AuthenticAMD", 25, ZEN4, "bf16", 64),                 # VDPBF16PS: twice the fp32 rate
    ("AuthenticAMD", 26, ZEN4, "fp32", 64),                 # Zen 5: 512-bit FMA pipes
    ("GenuineIntel", 6, {"avx2", "fma", "avx512f", "amx_bf16"}, "bf16", 1024),
    ("GenuineIntel", 6, {"avx2", "fma"}, "bf16", 32),       # no bf16 instructions: the fp32 rate
    ("GenuineIntel", 6, {"sse2"}, "fp32", None),
])
def test_flop_per_cycle_from_cpu_flags(vendor, family, flags, dtype, expected):
    value, assumption = cpu_flop_per_cycle(vendor, family, flags, dtype)
    assert value == expected and assumption


def test_theoretical_peak_is_cores_times_clock_times_flop_per_cycle_or_unknown():
    theory = theoretical_peak("cpu", "fp32")
    assert theory["cores"] == min(torch.get_num_threads(), len(__import__("os").sched_getaffinity(0)))
    if theory["clock_ghz"] is None or theory["flop_per_cycle"] is None:
        assert theory["gflops"] is None
    else:
        assert theory["gflops"] == pytest.approx(theory["cores"] * theory["clock_ghz"] * theory["flop_per_cycle"])


def test_denominator_is_theoretical_unless_a_measurement_beats_it():
    assert utilisation_denominator(150.0, 200.0) == (200.0, "theoretical")
    assert utilisation_denominator(216.0, 166.0) == (216.0, "measured")   # a nominal clock below boost
    assert utilisation_denominator(216.0, None) == (216.0, "measured")


def test_conv_peak_counts_flops_as_flop_counter_mode_does():
    x, w = torch.zeros(2, 16, 9, 9), torch.zeros(16, 16, 3, 3)
    flops, _ = count_flops(F.conv2d, x, w, padding=1)
    assert flops == 2 * 2 * 16 * 16 * 9 * 9 * 9
    assert 0 < conv_peak_gflops("cpu", "fp32", shape=(2, 16, 9), repeats=1) < float("inf")  # no timing bar
    peaks = measured_peak_gflops("cpu", "fp32")
    assert peaks["max"] == max(peaks["matmul"], peaks["conv"]) and peaks["matmul"] > 0 and peaks["conv"] > 0
    with pytest.raises(ValueError, match="dtype"):
        conv_peak_gflops("cpu", "int8")


def test_utilisation_above_100_percent_carries_a_note(monkeypatch):
    monkeypatch.setattr(benchmark_module, "measured_peak_gflops",
                        lambda device, dtype: {"matmul": 1e-6, "conv": 2e-6, "max": 2e-6})
    monkeypatch.setattr(benchmark_module, "theoretical_peak", lambda device, dtype: {
        "gflops": None, "flop_per_cycle": 32, "cores": 2, "clock_ghz": None, "assumption": "test"})
    metrics = benchmark(TinyDetector(), batch_sizes=(1,), warmup=0, iterations=1, measure_peak=False)
    assert metrics["utilisation_against"] == "measured" and metrics["measured_peak_gflops"] == 2e-6
    assert metrics["network_utilisation_b1"] > 100
    assert "above 100%" in metrics["network_utilisation_note"]
    assert metrics["peak_implied_clock_ghz"] == pytest.approx(2e-6 / 64)


def test_utilisation_within_the_peak_has_no_note():
    metrics = benchmark(TinyDetector(), batch_sizes=(1,), warmup=0, iterations=1, measure_peak=False)
    assert 0 < metrics["network_utilisation_b1"] <= 100
    assert "network_utilisation_note" not in metrics
    assert metrics["measured_peak_gflops"] >= metrics["matmul_peak_gflops"]
