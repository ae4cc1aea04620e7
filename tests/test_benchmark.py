"""The speed protocol on a tiny detector (every field, options, errors) and on torchvision's SSD300."""
from __future__ import annotations

import inspect
import math
import statistics
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn
from torch.nn import functional as F
from torchvision.ops import batched_nms

from detectors.base import Batch, Detector
from experiments.job.identity import device_name, model_facts
from experiments.speed import benchmark as benchmark_module
from experiments.speed.benchmark import benchmark
from experiments.speed.flops import count_flops
from experiments.speed.peak import matmul_peak_gflops

CONF = Path(__file__).resolve().parents[1] / "conf"


class TinyDetector(Detector):
    """One box and C+1 class scores per cell of a stride-4 grid; checks the stages' hand-offs."""

    def __init__(self, num_classes: int = 3, input_size: tuple[int, int] = (32, 48)):
        super().__init__()
        self.num_classes, self.input_size = num_classes, input_size
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(),
                                  nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU())
        self.head = nn.Conv2d(16, 4 + num_classes + 1, 1)
        self.postprocess_dtypes: list[torch.dtype] = []

    def preprocess(self, images, targets=None):
        resized = [F.interpolate(im[None], size=self.input_size, mode="bilinear")[0] for im in images]
        return Batch(images=torch.stack(resized), original_sizes=[tuple(im.shape[-2:]) for im in images],
                     input_sizes=[self.input_size] * len(images))

    def network(self, batch):
        return self.head(self.body(batch.images))  # [B, 4 + C + 1, H/4, W/4]

    def postprocess(self, raw, batch):
        self.postprocess_dtypes.append(raw.dtype)
        b, _, gh, gw = raw.shape
        raw = raw.flatten(2).transpose(1, 2)  # [B, gh*gw, 4 + C + 1]
        ys, xs = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
        centres = torch.stack([xs, ys], -1).reshape(-1, 2).to(raw) * 4 + 2  # [gh*gw, 2]
        detections = []
        for i in range(b):
            half = 2 + 4 * raw[i, :, 2:4].sigmoid()
            xy = centres + raw[i, :, :2].tanh() * 2
            boxes = torch.cat([xy - half, xy + half], 1)
            scores, labels = raw[i, :, 4:].softmax(-1)[:, 1:].max(-1)
            keep = batched_nms(boxes, scores, labels, 0.5)[:20]
            sy, sx = (o / s for o, s in zip(batch.original_sizes[i], batch.input_sizes[i]))
            detections.append({"boxes": boxes[keep] * torch.tensor([sx, sy, sx, sy]),
                               "scores": scores[keep], "labels": labels[keep] + 1})
        return detections

    def num_candidates(self, image_size):
        return math.ceil(self.input_size[0] / 4) * math.ceil(self.input_size[1] / 4)


def tiny_macs(detector: TinyDetector) -> int:
    """Multiply-adds of the tiny network at its input size, by hand: positions x out x in x k²."""
    h, w = detector.input_size
    h1, w1, h2, w2 = h // 2, w // 2, h // 4, w // 4
    return h1 * w1 * 8 * 3 * 9 + h2 * w2 * 16 * 8 * 9 + h2 * w2 * (4 + detector.num_classes + 1) * 16


PER_BATCH = ["fps", "latency_ms_p50", "latency_ms_p95", "latency_ms_mean", "preprocess_ms",
             "network_ms", "postprocess_ms", "preprocess_share", "network_share",
             "postprocess_share", "boxes_kept", "peak_memory_mb", "network_gflops_per_s",
             "network_utilisation"]
SETTINGS = ["gmacs", "gmacs_network", "matmul_peak_gflops", "conv_peak_gflops", "measured_peak_gflops",
            "utilisation_against", "peak_assumption", "bench_threads", "bench_dtype",
            "bench_channels_last", "bench_compile", "bench_image_size", "bench_batch_sizes",
            "bench_warmup", "bench_iterations", "peak_memory_kind"]
RUNNER_OWNS = ["device", "bench_device", "bench_device_type", "params", "num_candidates",
               "weights_source", "torch_version", "torchvision_version", "python_version"]


def test_protocol_returns_every_field_with_known_counts():
    torch.manual_seed(0)
    detector = TinyDetector().train()
    metrics = benchmark(detector, batch_sizes=(1, 3), warmup=1, iterations=3)
    expected = SETTINGS + [f"{key}_b{b}" for key in PER_BATCH for b in (1, 3)]
    assert sorted(set(expected) - set(metrics)) == []
    assert sorted(set(RUNNER_OWNS) & set(metrics)) == []  # identity keys are written once, by the runner
    assert all(isinstance(v, (int, float, str, bool)) for v in metrics.values())  # flat, JSON-able
    facts = model_facts(detector, detector.input_size)
    assert facts["params"] == sum(p.numel() for p in detector.parameters())
    assert metrics["gmacs"] == pytest.approx(tiny_macs(detector) / 1e9, rel=1e-9)
    assert metrics["gmacs_network"] == metrics["gmacs"]  # pre/post-processing: no counted ops
    assert facts["num_candidates"] == 8 * 12
    assert metrics["bench_image_size"] == "32x48" and metrics["bench_batch_sizes"] == "1,3"
    assert metrics["bench_dtype"] == "fp32" and metrics["bench_compile"] == "off"
    for b in (1, 3):
        assert 0 < metrics[f"latency_ms_p50_b{b}"] <= metrics[f"latency_ms_p95_b{b}"]
        assert metrics[f"fps_b{b}"] > 0
        samples = [float(x) for x in metrics[f"latency_ms_samples_b{b}"].split()]
        assert len(samples) == 3
        assert statistics.median(samples) == pytest.approx(metrics[f"latency_ms_p50_b{b}"], abs=1e-3)
        assert 0 <= metrics[f"boxes_kept_b{b}"] <= 20
        shares = sum(metrics[f"{stage}_share_b{b}"] for stage in ("preprocess", "network", "postprocess"))
        assert shares == pytest.approx(100)
        assert metrics[f"peak_memory_mb_b{b}"] > 10  # a Python process with torch loaded
        assert metrics[f"network_utilisation_b{b}"] > 0
    # end to end is the sum of the stages, so images/s at batch 3 follows from the mean latency
    assert metrics["fps_b3"] == pytest.approx(3e3 / metrics["latency_ms_mean_b3"])
    assert detector.training  # mode restored


def test_bf16_autocast_and_channels_last_hand_fp32_to_postprocess():
    detector = TinyDetector()
    metrics = benchmark(detector, batch_sizes=(2,), warmup=0, iterations=2, dtype="bf16",
                        channels_last=True, measure_peak=False)
    assert metrics["bench_dtype"] == "bf16" and metrics["bench_channels_last"] is True
    assert metrics["gmacs"] == pytest.approx(tiny_macs(detector) / 1e9)  # counted in fp32
    assert "peak_memory_mb_b2" not in metrics
    assert set(detector.postprocess_dtypes) == {torch.float32}
    assert detector.body[0].weight.is_contiguous(memory_format=torch.channels_last)


def test_real_images_of_any_size_are_cycled_into_batches():
    detector = TinyDetector()
    images = [torch.rand(3, 40, 60), torch.rand(3, 50, 30)]
    metrics = benchmark(detector, batch_sizes=(3,), warmup=0, iterations=1, images=images)
    assert metrics["bench_image_size"] == "40x60"
    assert metrics["gmacs"] == pytest.approx(tiny_macs(detector) / 1e9)  # resized to input_size


def test_failed_compile_falls_back_to_eager_and_says_so(monkeypatch):
    def broken_compile(fn):
        def compiled(*args, **kwargs):
            raise RuntimeError("backend exploded")
        return compiled
    monkeypatch.setattr(benchmark_module.torch, "compile", broken_compile)
    metrics = benchmark(TinyDetector(), batch_sizes=(1,), warmup=0, iterations=1, compile=True)
    assert metrics["bench_compile"] == "failed (RuntimeError)"
    assert metrics["fps_b1"] > 0


@pytest.mark.slow
def test_compiled_network_is_timed():
    metrics = benchmark(TinyDetector(), batch_sizes=(1,), warmup=1, iterations=2, compile=True)
    assert metrics["bench_compile"] == "on"


@pytest.mark.parametrize("kwargs, message", [({"dtype": "int8"}, "dtype"),
                                             ({"batch_sizes": (0,)}, "batch_sizes"),
                                             ({"iterations": 0}, "iterations"),
                                             ({"images": []}, "empty")])
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        benchmark(TinyDetector(), **kwargs)


def test_flops_counter_counts_two_per_multiply_add():
    flops, out = count_flops(nn.Linear(10, 7), torch.zeros(5, 10))
    assert flops == 2 * 5 * 10 * 7 and out.shape == (5, 7)


def test_matmul_peak_is_measured():
    assert matmul_peak_gflops("cpu", "fp32", size=256, repeats=2) > 0.1
    with pytest.raises(ValueError, match="dtype"):
        matmul_peak_gflops("cpu", "fp64")


def test_bench_config_keys_are_benchmark_arguments():
    config = yaml.safe_load((CONF / "bench" / "default.yaml").read_text())
    parameters = inspect.signature(benchmark).parameters
    assert set(config) - {"runtimes"} <= set(parameters) - {"detector", "device", "images"}  # runtimes: the stage's
    assert config["batch_sizes"] == [1, 8]


class TorchvisionSSD300(Detector):
    """torchvision's ``ssd300_vgg16`` (random weights) run through the contract's three stages."""

    def __init__(self, num_classes: int):
        from torchvision.models.detection import ssd300_vgg16
        super().__init__()
        # score_thresh above random weights' ~1/91 class scores keeps post-processing cheap
        self.model = ssd300_vgg16(weights=None, weights_backbone=None, num_classes=num_classes + 1,
                                  score_thresh=0.05)
        self.num_classes, self.input_size = num_classes, (300, 300)

    def preprocess(self, images, targets=None):
        image_list, _ = self.model.transform(images)
        return Batch(images=image_list.tensors, original_sizes=[tuple(im.shape[-2:]) for im in images],
                     input_sizes=image_list.image_sizes)

    def network(self, batch):
        from torchvision.models.detection.image_list import ImageList
        features = list(self.model.backbone(batch.images).values())
        anchors = self.model.anchor_generator(ImageList(batch.images, batch.input_sizes), features)
        return self.model.head(features), anchors

    def postprocess(self, raw, batch):
        head_outputs, anchors = raw
        detections = self.model.postprocess_detections(head_outputs, anchors, batch.input_sizes)
        return self.model.transform.postprocess(detections, batch.input_sizes, batch.original_sizes)

    def num_candidates(self, image_size):
        with torch.inference_mode():
            _, anchors = self.network(self.preprocess([torch.zeros(3, *image_size)]))
        return len(anchors[0])


def test_torchvision_ssd300_gmacs_match_its_model_card():
    """torchvision's card gives 34.858 GMACs ("_ops") for the COCO model, 91 classes with
    background; the protocol counts 2 FLOPs per multiply-add and reports MACs."""
    torch.manual_seed(0)
    detector = TorchvisionSSD300(num_classes=90)
    metrics = benchmark(detector, batch_sizes=(1,), warmup=0, iterations=1, measure_peak=False)
    assert metrics["gmacs"] == pytest.approx(34.858, rel=0.02)
    assert model_facts(detector, (300, 300))["num_candidates"] == 8732
    assert 0 <= metrics["boxes_kept_b1"] <= 200  # torchvision keeps at most 200 per image


class ClockedDetector(TinyDetector):
    """TinyDetector whose stages advance a fake clock by known durations (ms per batch)."""

    def __init__(self, clock: list[float], durations: list[tuple[float, float, float]]):
        super().__init__()
        self.clock, self.durations, self.calls = clock, list(durations), 0

    def _advance(self, stage: int) -> None:
        self.clock[0] += self.durations[self.calls % len(self.durations)][stage] / 1e3

    def preprocess(self, images, targets=None):
        self._advance(0)
        return super().preprocess(images, targets)

    def network(self, batch):
        self._advance(1)
        return super().network(batch)

    def postprocess(self, raw, batch):
        self._advance(2)
        self.calls += 1
        return super().postprocess(raw, batch)


def test_timings_follow_a_known_clock(monkeypatch):
    """Stage times, percentiles, images/s and shares from a clock whose every tick is known."""
    from types import SimpleNamespace

    clock = [0.0]
    monkeypatch.setattr(benchmark_module, "time", SimpleNamespace(perf_counter=lambda: clock[0]))
    durations = [(1.0, 4.0, 2.0), (1.0, 6.0, 2.0), (3.0, 8.0, 4.0), (1.0, 30.0, 2.0)]   # 7, 9, 15, 33 ms
    detector = ClockedDetector(clock, durations)
    metrics = benchmark(detector, batch_sizes=(2,), warmup=0, iterations=4, measure_peak=False)
    assert metrics["latency_ms_mean_b2"] == pytest.approx(16.0)
    assert metrics["latency_ms_p50_b2"] == pytest.approx(12.0)                 # between 9 and 15
    assert metrics["latency_ms_p95_b2"] == pytest.approx(15 + 0.85 * 18)       # numpy's linear rule
    assert metrics["fps_b2"] == pytest.approx(2 * 4 / 0.064)                   # 8 images in 64 ms
    assert (metrics["preprocess_ms_b2"], metrics["network_ms_b2"], metrics["postprocess_ms_b2"]) \
        == pytest.approx((1.0, 7.0, 2.0))                                      # medians per stage
    assert metrics["network_share_b2"] == pytest.approx(70.0)
    assert metrics["candidates_scored_b2"] == 8 * 12                           # a fixed grid


def test_one_device_name_for_runner_and_benchmarks():
    name = device_name(torch.device("cpu"))
    assert name.startswith("cpu: ") and name.endswith(f"{torch.get_num_threads()} threads")
