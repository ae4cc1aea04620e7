"""The speed protocol once per runtime: ``bench.runtimes: [pytorch, onnxruntime, openvino]``.

Every runtime is timed by ``experiments.speed.benchmark`` on the same images, batch sizes,
warm-up and timed batches, with the same pre/network/post split: only the network stage differs
(the detector's network exported by ``experiments.speed.export`` at each batch size, run by
``experiments.speed.runtimes``; preprocess and postprocess are the detector's PyTorch code).

Keys: ``pytorch`` keeps the protocol's own keys (unprefixed, in ``bench.dtype``); another
runtime's speed keys carry its name as prefix (``onnxruntime_fps_b1``, ``openvino_network_ms_b8``),
always fp32, with ``<runtime>_threads`` (= torch's intra-op threads, those of the PyTorch rows),
``<runtime>_settings`` (version, threads, precision), ``<runtime>_opset``, ``<runtime>_exporter`` and
``<runtime>_raw_relative`` (the largest raw-output difference over the output's scale on the
first timed batch). A runtime that is not installed, or on the wrong device (ONNX Runtime's CPU
provider and OpenVINO: the CPU; ``tensorrt``: CUDA), gives ``<runtime>_skipped`` with the reason
(and one log line) instead of its rows. Graphs are exported from the detector on the CPU.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path

import torch

from detectors.base import Detector
from experiments.speed.benchmark import benchmark, synthetic_images
from experiments.speed.export import export_network
from experiments.speed.export_check import largest_relative, raw_differences
from experiments.speed.runtimes import (
    INSTALL_HINT,
    RUNTIMES,
    ExportedNetwork,
    RuntimeMissing,
    require,
    runtime_settings,
)

log = logging.getLogger("detbench")

#: the protocol's keys a runtime row repeats under its prefix
SPEED_KEY = re.compile(r"^(fps|latency_ms_p50|latency_ms_p95|latency_ms_mean|latency_ms_samples|preprocess_ms|"
                       r"network_ms|postprocess_ms|preprocess_share|network_share|postprocess_share|boxes_kept|"
                       r"network_gflops_per_s|network_utilisation|candidates_scored|peak_memory_mb)_b\d+$")
RUNTIME_FORMAT = {"onnxruntime": "onnx", "openvino": "openvino", "tensorrt": "onnx"}
RUNTIME_DEVICE = {"onnxruntime": "cpu", "openvino": "cpu", "tensorrt": "cuda"}


def check_runtimes(runtimes) -> list[str]:
    runtimes = [str(r) for r in runtimes]
    unknown = [r for r in runtimes if r not in RUNTIMES]
    if unknown or not runtimes:
        raise ValueError(f"bench.runtimes: {unknown or runtimes} not among {list(RUNTIMES)}")
    return runtimes


def benchmark_runtimes(detector: Detector, runtimes, folder: Path, device: str | torch.device = "cpu",
                       **bench) -> dict:
    """The speed protocol for each of ``runtimes`` (module docstring); exported graphs go to
    ``folder/export``. ``bench``: ``experiments.speed.benchmark.benchmark``'s keywords."""
    runtimes, device = check_runtimes(runtimes), torch.device(device)
    metrics: dict = {"bench_runtimes": ",".join(runtimes)}
    if "pytorch" in runtimes:
        metrics.update(benchmark(detector, device=device, **bench))
    sizes = [int(b) for b in bench.get("batch_sizes", (1, 8))]
    image_size = tuple(bench.get("image_size") or detector.input_size)
    images = synthetic_images(max(sizes), image_size, device)
    for runtime in [r for r in runtimes if r != "pytorch"]:
        try:
            require(runtime)
            if device.type != RUNTIME_DEVICE[runtime]:
                raise RuntimeMissing(f"runs on {RUNTIME_DEVICE[runtime]} only (bench device {device}); TensorRT "
                                     "rows: benchmarks/gpu_suite.sh")
        except RuntimeMissing as error:
            metrics[f"{runtime}_skipped"] = str(error)
            log.warning("bench: %s rows skipped: %s", runtime, error)
            continue
        threads = torch.get_num_threads()
        was_training = detector.training
        detector.eval().to("cpu")
        records = export_network(detector, Path(folder) / "export", runtime, sizes, dynamic_batch=False,
                                 format=RUNTIME_FORMAT[runtime])
        detector.to(device)
        network = ExportedNetwork(detector, records, Path(folder) / "export", runtime, threads)
        with torch.no_grad():
            batch = detector.preprocess(images[:sizes[0]])
            worst = largest_relative(raw_differences(detector, network, batch))[1]["relative"]
        detector.train(was_training)
        timed = benchmark(detector, device=device, network=network,
                          **{**bench, "dtype": "fp32", "compile": False, "images": images})
        metrics.update({f"{runtime}_{k}": v for k, v in timed.items() if SPEED_KEY.match(k)})
        metrics.update({f"{runtime}_threads": threads, f"{runtime}_settings": runtime_settings(runtime, threads),
                        f"{runtime}_opset": records[0]["opset"], f"{runtime}_exporter": records[0]["exporter"],
                        f"{runtime}_raw_relative": worst})
        log.info("bench %s: %s", runtime, ", ".join(f"b{b} {timed[f'fps_b{b}']:.1f} img/s" for b in sizes))
    return metrics


__all__ = ["INSTALL_HINT", "benchmark_runtimes", "check_runtimes"]
