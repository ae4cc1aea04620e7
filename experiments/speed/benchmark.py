"""The speed protocol: one way of timing every detector, stated in full.

What is measured, per detector and batch size ``b`` (keys end in ``_b{b}``):

- The eval forward, split into the contract's three stages and timed one batch at a time:
  ``preprocess`` (resize, normalise, stack), ``network`` (the neural network) and
  ``postprocess`` (decode, NMS, map boxes back). Images are already on the device, as
  float [3, H, W] in [0, 1]: decoding files and the host-to-device copy are not timed. The
  device is synchronised at every stage boundary, so each stage's time is wall time that
  includes its queued GPU work. Eval mode, ``torch.inference_mode``, ``warmup`` untimed
  batches, then ``iterations`` timed batches.
- ``latency_ms_p50`` / ``latency_ms_p95`` / ``latency_ms_mean``: ms per batch of ``b``
  images, end to end (all three stages). ``fps``: images per second over the timed batches
  (``b * iterations / total seconds``). ``latency_ms_samples``: every timed batch's ms, space-separated
  (a string, so metrics.json stays flat; the report's latency intervals).
- A detector that classifies external proposals (R-CNN, Fast R-CNN: ``external_proposals``)
  has a fourth stage before the three, ``proposal`` (its ``propose(images, fresh=True)``:
  selective search computed now, never read from the cache): ``proposal_ms`` and
  ``proposal_share``; its latencies are end to end with the proposals, and
  ``latency_ms_p50_without_proposals`` leaves them out (the papers quote both). R-CNN's network
  time is the sum over its region batches. Faster R-CNN's RPN stays inside ``network``.
- ``preprocess_ms`` / ``network_ms`` / ``postprocess_ms``: median ms per batch of each stage;
  ``*_share``: each stage's median as a percentage (0-100) of the sum of the three medians.
- ``boxes_kept``: mean detections per image after NMS (a property of the weights as much as
  of the model: random weights may keep many boxes, trained ones few).
- ``peak_memory_mb``: on CUDA the allocator's peak (``max_memory_allocated``) during the
  timed batches; on CPU the process's peak resident set size (VmHWM, reset before the timed
  batches where Linux allows it), which includes the weights and Python itself.
  ``peak_memory_kind`` says which.
- ``network_gflops_per_s``: the network stage's FLOPs over its median time, and
  ``network_utilisation``: that as a percentage of the machine's peak (``experiments.speed.peak``):
  ``theoretical_peak_gflops`` (cores x clock x FLOP/cycle) when the hardware says enough and it
  is not below what was measured, else ``measured_peak_gflops``, the best of a matrix product
  (``matmul_peak_gflops``) and a 3x3 convolution (``conv_peak_gflops``) in the same dtype,
  measured before each batch size and once at the end, so that a moment of contention on a
  shared machine depresses the peak less. ``utilisation_against`` says which; ``peak_assumption``
  states the FLOP/cycle and clock assumptions; ``peak_implied_clock_ghz`` is the clock the
  measured peak implies under them. A utilisation above 100% (the network did fewer multiplies
  than FlopCounterMode counts, or the peak was measured in a moment of contention) comes with
  ``network_utilisation_note`` saying so; ``bench_mkldnn_fp32_precision`` records whether
  oneDNN may run fp32 convolutions in reduced precision.

Per detector: ``gmacs`` (10⁹ multiply-adds per image over all three stages, FlopCounterMode's
FLOPs / 2, counted once at batch 1 in fp32) and ``gmacs_network``; ``candidates_scored_b{b}``,
the mean count of boxes the timed forwards actually scored before NMS (Faster R-CNN: the
proposals its RPN kept, at most its ``num_candidates``); and the settings of the measurement:
``bench_threads``, ``bench_dtype``, ``bench_channels_last``, ``bench_compile``,
``bench_image_size``, ``bench_warmup``, ``bench_iterations``. Only speed keys: the identity keys
(``device``, ``params``, ``num_candidates``, versions) are the runner's, from
``experiments.job.identity``, written once.

Options: ``dtype`` fp32, or bf16 / fp16 autocast around the network stage (its floating
outputs are cast back to fp32 inside the network's time, so that decoding and NMS always run
in fp32); ``channels_last`` (weights and the network's input); ``compile`` (``torch.compile``
of the network stage; if compiling fails, the eager network is timed and ``bench_compile``
says ``failed (<error type>)``).
"""
from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils._pytree import tree_map

from detectors.base import Detector
from experiments.job.identity import synchronize
from experiments.speed.busy_guard import Reading, batch_marks, guarded
from experiments.speed.flops import DTYPES, count_flops
from experiments.speed.peak import measured_peak_gflops, theoretical_peak, utilisation_denominator


def synthetic_images(count: int, image_size: tuple[int, int], device: str | torch.device = "cpu",
                     seed: int = 0) -> list[Tensor]:
    """``count`` images float [3, H, W] of uniform noise in [0, 1], seeded, on ``device``."""
    generator = torch.Generator().manual_seed(seed)
    h, w = image_size
    return [torch.rand(3, h, w, generator=generator).to(device) for _ in range(count)]


def _reset_peak_memory(device: torch.device) -> str:
    """Reset the peak-memory counter; return the kind of peak that will be read."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return "cuda_max_allocated"
    try:  # Linux >= 4.0: writing 5 resets the process's peak RSS (VmHWM)
        Path("/proc/self/clear_refs").write_text("5")
        return "process_peak_rss"
    except OSError:
        return "process_lifetime_peak_rss"


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB -> MB
    import resource  # no /proc: the lifetime peak, in kB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _to_float32(outputs):
    """Cast every half/bfloat16 tensor in a nested structure of outputs back to float32."""
    return tree_map(lambda t: t.float() if isinstance(t, Tensor) and t.dtype in (torch.float16, torch.bfloat16)
                    else t, outputs)


class StageTimer:
    """One eval forward, stage by stage, with the device synchronised at each boundary."""

    def __init__(self, detector: Detector, device: torch.device, dtype: str, channels_last: bool,
                 compile: bool, network=None):
        self.detector, self.device, self.channels_last = detector, device, channels_last
        self.autocast_dtype = None if dtype == "fp32" else DTYPES[dtype]
        network = network or detector.network
        self.network = torch.compile(network) if compile else network
        self.compile_status = "on" if compile else "off"

    def fall_back_to_eager(self, error: Exception) -> None:
        self.network = self.detector.network
        self.compile_status = f"failed ({type(error).__name__})"
        torch._dynamo.reset()

    def _synchronize(self) -> None:
        synchronize(self.device)

    def __call__(self, images: list[Tensor]) -> tuple[tuple[float, float, float, float], list]:
        """Returns ((proposal s, preprocess s, network s, postprocess s), detections). The
        proposal stage is timed only for a detector that takes external proposals (R-CNN, Fast
        R-CNN: computed afresh, never read from a cache); it is 0 for every other detector."""
        sync = self._synchronize
        sync()
        start = time.perf_counter()
        external = getattr(self.detector, "external_proposals", False)
        proposals = self.detector.propose(images, fresh=True) if external else None
        sync()
        t0 = time.perf_counter()
        batch = self.detector.preprocess(images, proposals=proposals) if external else self.detector.preprocess(images)
        if self.channels_last:
            batch.images = batch.images.contiguous(memory_format=torch.channels_last)
        sync()
        t1 = time.perf_counter()
        if self.autocast_dtype is None:
            raw = self.network(batch)
        else:
            with torch.autocast(self.device.type, dtype=self.autocast_dtype):
                raw = self.network(batch)
            raw = _to_float32(raw)
        sync()
        t2 = time.perf_counter()
        detections = self.detector.postprocess(raw, batch)
        sync()
        t3 = time.perf_counter()
        self.candidates = self.detector.candidates_scored(raw, batch)   # per image, not timed
        return (t0 - start if external else 0.0, t1 - t0, t2 - t1, t3 - t2), detections


def count_forward_flops(detector: Detector, images: list[Tensor]) -> tuple[int, int]:
    """(FLOPs of the whole eval forward, FLOPs of the network stage) for ``images``, eager,
    in the detector's own dtype; call under ``torch.inference_mode``. MACs = FLOPs / 2."""
    pre_flops, batch = count_flops(detector.preprocess, images)
    net_flops, raw = count_flops(detector.network, batch)
    post_flops, _ = count_flops(detector.postprocess, raw, batch)
    return pre_flops + net_flops + post_flops, net_flops


@contextlib.contextmanager
def _matmul_like_convolutions(device: torch.device):
    """On CUDA, let fp32 matrix products use TF32 exactly when cuDNN's convolutions may, so
    the measured peak is in the same arithmetic as the network's convolutions."""
    if device.type != "cuda":
        yield
        return
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


def _check_arguments(batch_sizes, warmup, iterations, dtype) -> list[int]:
    if dtype not in DTYPES:
        raise ValueError(f"benchmark: dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    sizes = [int(b) for b in batch_sizes]
    if not sizes or any(b < 1 for b in sizes):
        raise ValueError(f"benchmark: batch_sizes must be positive integers, got {list(batch_sizes)}")
    if int(iterations) < 1 or int(warmup) < 0:
        raise ValueError(f"benchmark: need iterations >= 1 and warmup >= 0, got {iterations}, {warmup}")
    return sizes


def _batch_metrics(b: int, stage_times: list[tuple[float, float, float, float]], kept: list[int],
                   net_flops_per_image: int, peak_gflops: float) -> dict:
    """Metrics of one batch size from its timed batches (seconds per stage per batch: proposal,
    preprocess, network, postprocess). The latencies are end to end, proposals included."""
    latencies_ms = np.array([sum(t) for t in stage_times]) * 1e3
    proposal, pre, net, post = (statistics.median(t[i] for t in stage_times) * 1e3 for i in range(4))
    net_gflops = net_flops_per_image * b / (net / 1e3) / 1e9 if net > 0 else float("nan")
    total = proposal + pre + net + post
    proposal_keys = {} if not any(t[0] for t in stage_times) else {
        f"proposal_ms_b{b}": proposal, f"proposal_share_b{b}": 100 * proposal / total,
        f"latency_ms_p50_without_proposals_b{b}": float(np.percentile(
            np.array([sum(t[1:]) for t in stage_times]) * 1e3, 50))}
    return {**proposal_keys,
        f"fps_b{b}": float(b * len(stage_times) / (latencies_ms.sum() / 1e3)),
        f"latency_ms_p50_b{b}": float(np.percentile(latencies_ms, 50)),
        f"latency_ms_p95_b{b}": float(np.percentile(latencies_ms, 95)),
        f"latency_ms_mean_b{b}": float(latencies_ms.mean()),
        f"latency_ms_samples_b{b}": " ".join(f"{x:.4f}" for x in latencies_ms),  # every timed batch
        f"preprocess_ms_b{b}": pre,
        f"network_ms_b{b}": net,
        f"postprocess_ms_b{b}": post,
        f"preprocess_share_b{b}": 100 * pre / total,
        f"network_share_b{b}": 100 * net / total,
        f"postprocess_share_b{b}": 100 * post / total,
        f"boxes_kept_b{b}": sum(kept) / len(kept),
        f"network_gflops_per_s_b{b}": net_gflops,
        f"network_utilisation_b{b}": 100 * net_gflops / peak_gflops,
    }


def _peak_metrics(peaks: list[dict[str, float]], device: torch.device, dtype: str) -> dict:
    """The peak keys from the measurements taken during one call, and the denominator."""
    best = {kind: max(p[kind] for p in peaks) for kind in ("matmul", "conv", "max")}
    theory = theoretical_peak(device, dtype)
    denominator, against = utilisation_denominator(best["max"], theory["gflops"])
    metrics = {"matmul_peak_gflops": best["matmul"], "conv_peak_gflops": best["conv"],
               "measured_peak_gflops": best["max"], "utilisation_against": against,
               "peak_assumption": theory["assumption"], "_denominator": denominator}
    if theory["gflops"]:
        metrics["theoretical_peak_gflops"] = theory["gflops"]
    if theory["flop_per_cycle"] and theory["cores"]:
        metrics["peak_implied_clock_ghz"] = best["max"] / (theory["cores"] * theory["flop_per_cycle"])
    return metrics


def benchmark(detector: Detector, batch_sizes: Sequence[int] = (1, 8), warmup: int = 1,
              iterations: int = 3, device: str | torch.device = "cpu", dtype: str = "fp32",
              channels_last: bool = False, compile: bool = False, images: list[Tensor] | None = None,
              image_size: tuple[int, int] | None = None,
              measure_peak: bool = True, network=None,
              guard: Callable[[], Reading] | None = None) -> dict[str, float | int | str]:
    """Time ``detector``'s eval forward by the speed protocol (module docstring); flat metrics.

    detector:    moved to ``device`` (and to channels_last if asked) and put in eval mode;
                 its training mode is restored afterwards.
    batch_sizes: each is timed on its own; keys end in ``_b{b}``.
    images:      real images float [3, H, W] in [0, 1] (any sizes), cycled to fill a batch;
                 default: synthetic noise at ``image_size``, default ``detector.input_size``.
    measure_peak: False skips the peak-memory reading (``peak_memory_mb_b*`` are absent).
    network:     times this callable (batch -> raw outputs, e.g. ``experiments.speed.runtimes.ExportedNetwork``)
                 as the network stage instead of ``detector.network``; FLOPs are still counted on
                 ``detector.network`` (the same network).
    guard:       reads the machine (``busy_guard.read_machine``) before and after each batch size's
                 timed batches: disturbed -> that set is timed once more; still disturbed -> kept
                 with ``speed_reliable_b{b}: false`` and ``speed_note_b{b}`` (``busy_guard.batch_marks``).
                 None: no readings (``speed_reliable_b*`` absent).
    """
    sizes = _check_arguments(batch_sizes, warmup, iterations, dtype)
    device = torch.device(device)
    was_training = detector.training
    detector.eval().to(device)
    if channels_last:
        detector.to(memory_format=torch.channels_last)
    if images is None:
        size = tuple(int(s) for s in (image_size or detector.input_size))
        images = synthetic_images(max(sizes), size, device)
    else:
        if not images:
            raise ValueError("benchmark: images is an empty list")
        images = [image.to(device) for image in images]
    first_size = tuple(images[0].shape[-2:])

    metrics: dict[str, float | int | str] = {
        "bench_threads": torch.get_num_threads(), "bench_dtype": dtype,
        "bench_channels_last": bool(channels_last),
        "bench_image_size": f"{first_size[0]}x{first_size[1]}",
        "bench_batch_sizes": ",".join(map(str, sizes)),
        "bench_warmup": int(warmup), "bench_iterations": int(iterations),
    }
    if device.type == "cuda":
        metrics["bench_tf32"] = bool(torch.backends.cudnn.allow_tf32)
    conv_backend = getattr(torch.backends.mkldnn, "conv", None)
    metrics["bench_mkldnn_fp32_precision"] = str(getattr(conv_backend, "fp32_precision", "unknown"))
    try:
        with torch.inference_mode():
            total_flops, net_flops = count_forward_flops(detector, images[:1])
            metrics["gmacs"] = total_flops / 2 / 1e9
            metrics["gmacs_network"] = net_flops / 2 / 1e9
            peaks = []  # the measured peaks before each batch size and at the end: the best counts

            def measure_peak_rate():
                with _matmul_like_convolutions(device):
                    peaks.append(measured_peak_gflops(device, dtype))

            forward = StageTimer(detector, device, dtype, channels_last, compile)
            timed = {}  # batch size -> (stage times per batch, boxes kept per image)
            for b in sizes:
                measure_peak_rate()
                batch_images = [images[i % len(images)] for i in range(b)]
                for _ in range(int(warmup) if not compile else max(1, int(warmup))):
                    try:
                        forward(batch_images)
                    except Exception as error:  # torch.compile's failures surface on first call
                        if forward.compile_status != "on":
                            raise
                        forward.fall_back_to_eager(error)
                if measure_peak:
                    metrics["peak_memory_kind"] = _reset_peak_memory(device)

                def timed_set(batch_images=batch_images):
                    stage_times, kept, scored = [], [], []
                    for _ in range(int(iterations)):
                        times, detections = forward(batch_images)
                        stage_times.append(times)
                        kept.extend(len(d["boxes"]) for d in detections)
                        scored.extend(forward.candidates)
                    return {"set": (stage_times, kept, scored)}

                if guard is None:
                    stage_times, kept, scored = timed_set()["set"]
                else:   # between two readings of the machine; disturbed: timed again, then marked
                    checked = guarded(timed_set, f"the timed batches at batch size {b}", read=guard)
                    stage_times, kept, scored = checked.pop("set")
                    metrics.update(batch_marks(checked, b))
                metrics[f"candidates_scored_b{b}"] = sum(scored) / len(scored)
                if measure_peak:
                    metrics[f"peak_memory_mb_b{b}"] = _peak_memory_mb(device)
                timed[b] = stage_times, kept
            measure_peak_rate()
            metrics.update(_peak_metrics(peaks, device, dtype))
            denominator = metrics.pop("_denominator")
            for b, (stage_times, kept) in timed.items():
                metrics.update(_batch_metrics(b, stage_times, kept, net_flops, denominator))
            over = [b for b in sizes if metrics[f"network_utilisation_b{b}"] > 100]
            if over:
                metrics["network_utilisation_note"] = (
                    f"above 100% of the {metrics['utilisation_against']} peak at batch "
                    f"{','.join(map(str, over))}: the network did fewer multiplies than FlopCounterMode "
                    "counts (Winograd/FFT convolutions, zero-padding taps a direct convolution skips, fp32 "
                    f"math in reduced precision: mkldnn fp32_precision {metrics['bench_mkldnn_fp32_precision']}) "
                    "or the peak was measured in a moment of contention")
            metrics["bench_compile"] = forward.compile_status
    finally:
        detector.train(was_training)
    return metrics
