"""Training images/s per detector and mode, in one process, modes interleaved.

A training step is the Trainer's: forward with the losses, backward, gradient clipping at 10, an
AdamW step, on a batch of compare's synthetic training images (batch 16, compare's setting).
Modes: ``fp32``; ``fp32+nhwc`` (channels-last convolutions); ``bf16`` (autocast) and
``bf16+nhwc``; for Faster R-CNN ``fp32 serial ops`` (torchvision's one-core RoIAlign backward and
RPN filtering instead of ``detectors.faster_rcnn_threads``); with ``--compile``, ``compile`` (fp32,
the convolutional trunk under ``torch.compile``; its first-step compile time printed apart) and
``bf16+nhwc+compile``. Each mode has its own copy of the same initial weights; every repeat runs
one step of each mode in turn, and the table gives the median. Training GFLOP/s counts forward +
backward with FlopCounterMode (2 per multiply-add) and divides by the median step; utilisation is
against the peak measured here (3x3 convolution or matrix product, the larger) in the mode's dtype.

``--full``: the paper-width SSD300 and Faster R-CNN R50-FPN beside torchvision's own
``ssd300_vgg16`` and ``fasterrcnn_resnet50_fpn`` (random weights, the same classes and input
size, batch ``--full-batch``), fp32 and bf16: the like-for-like pairs.

    python benchmarks/train_speed.py [--detectors ...] [--repeats 5] [--compile] [--full] [--save]

On a shared machine only the ratios inside one run mean anything; the header states the load.
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_module
from hydra.utils import instantiate

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from detectors.faster_rcnn_threads import ThreadedRPN, with_serial_ops  # noqa: E402
from experiments.build import build_detector  # noqa: E402
from experiments.data.collate import collate  # noqa: E402
from experiments.speed.flops import count_flops  # noqa: E402
from experiments.speed.peak import measured_peak_gflops  # noqa: E402
from experiments.training.precision import set_channels_last  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
COMPARE = ["ssd300_cpu", "yolov1_cpu", "faster_rcnn_vgg16_cpu"]
#: mode -> (precision, channels-last, compiled trunk)
MODES = {"fp32": ("fp32", False, False), "fp32+nhwc": ("fp32", True, False),
         "bf16": ("bf16", False, False), "bf16+nhwc": ("bf16", True, False),
         "compile": ("fp32", False, True), "bf16+nhwc+compile": ("bf16", True, True)}
TRUNKS = ("features", "backbone")   # SSD's VGG trunk; YOLO's darknet and Faster R-CNN's backbone


def compare_config(detector: str, overrides: list[str] = ()):
    with initialize_config_module("conf", version_base="1.3"):
        return compose("config", overrides=["experiment=compare", f"detector={detector}", *overrides])


def batch_of(cfg, size: int):
    """The first ``size`` images and targets of the config's training split."""
    dataset = instantiate(cfg.dataset.train)
    return dataset, collate([dataset[i] for i in range(size)])


def set_layout(model: torch.nn.Module, nhwc: bool) -> None:
    """NHWC or NCHW weights; SSD's own input conversion follows (``SSD.channels_last``)."""
    set_channels_last(model, nhwc)
    if hasattr(model, "channels_last"):
        model.channels_last = nhwc


class Step:
    """One mode's training step on its own copy of ``model`` (and AdamW); call -> seconds."""

    def __init__(self, model, images, targets, precision: str, nhwc: bool, compiled: bool) -> None:
        self.model = copy.deepcopy(model).train()
        set_layout(self.model, nhwc)
        if compiled:
            name = next(n for n in TRUNKS if hasattr(self.model, n))
            setattr(self.model, name, torch.compile(getattr(self.model, name)))
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=2e-3)
        self.images, self.targets, self.bf16 = images, targets, precision == "bf16"

    def __call__(self) -> float:
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            losses = self.model(self.images, self.targets)
        total = sum(losses.values())
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 10.0)
        self.optimizer.step()
        return time.perf_counter() - start


def training_flops(model, images, targets) -> int:
    """FLOPs of one fp32 forward + backward (FlopCounterMode: convolutions and matrix products)."""
    model = copy.deepcopy(model).train()

    def step():
        sum(model(images, targets).values()).backward()

    return count_flops(step)[0]


def interleaved(steps: dict[str, Step], repeats: int) -> tuple[dict[str, float], dict[str, float]]:
    """(first-step seconds, median seconds of ``repeats`` later steps) per mode, modes in turn."""
    first = {name: step() for name, step in steps.items()}
    times = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            times[name].append(step())
    return first, {name: statistics.median(t) for name, t in times.items()}


def detector_rows(detector: str, modes: list[str], batch: int, repeats: int, peaks: dict) -> list[str]:
    cfg = compare_config(detector)
    dataset, (images, targets) = batch_of(cfg, batch)
    torch.manual_seed(0)
    model = build_detector(cfg.detector.model, dataset.num_classes)
    flops = training_flops(model, images, targets)
    steps = {m: Step(model, images, targets, *MODES[m]) for m in modes}
    if isinstance(getattr(model, "rpn", None), ThreadedRPN):   # Faster R-CNN: torchvision's serial kernels too
        steps["fp32 serial ops"] = Step(with_serial_ops(model), images, targets, "fp32", False, False)
    first, median = interleaved(steps, repeats)
    rows = []
    for m in steps:
        precision, _, compiled = MODES.get(m, MODES["fp32"])
        gflops = flops / median[m] / 1e9
        compile_s = f"{first[m] - median[m]:.1f}" if compiled else ""
        rows.append(f"| {detector} | {m} | {batch} | {median[m]:.3f} | {batch / median[m]:.1f} | "
                    f"{median['fp32'] / median[m]:.2f} | {flops / 1e9:.0f} | {gflops:.0f} | "
                    f"{100 * gflops / peaks[precision]:.0f}% | {compile_s} |")
        print(rows[-1], flush=True)
    return rows


def reference_pairs(batch: int, repeats: int) -> list[str]:
    """Paper-width SSD300 and Faster R-CNN R50-FPN, detbench vs torchvision, fp32 and bf16."""
    from torchvision.models.detection import fasterrcnn_resnet50_fpn, ssd300_vgg16

    rows = []
    pairs = {"ssd300": (["detector.model.backbone_weights=null"],
                        lambda c: ssd300_vgg16(weights=None, weights_backbone=None, num_classes=c + 1)),
             "faster_rcnn_r50_fpn": (["detector.model.min_size=512", "detector.model.max_size=512",
                                      "detector.model.input_size=[512,512]"],
                                     lambda c: fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None,
                                                                       num_classes=c + 1, min_size=512,
                                                                       max_size=512, trainable_backbone_layers=5))}
    for detector, (overrides, torchvision_model) in pairs.items():
        cfg = compare_config(detector, overrides)
        dataset, (images, targets) = batch_of(cfg, batch)
        torch.manual_seed(0)
        ours, theirs = build_detector(cfg.detector.model, dataset.num_classes), torchvision_model(dataset.num_classes)
        steps = {f"{who} {p}": Step(m, images, targets, p, False, False)
                 for p in ("fp32", "bf16") for who, m in (("detbench", ours), ("torchvision", theirs))}
        _, median = interleaved(steps, repeats)
        for p in ("fp32", "bf16"):
            a, b = median[f"detbench {p}"], median[f"torchvision {p}"]
            rows.append(f"| {detector} | {p} | {batch} | {batch / a:.2f} | {batch / b:.2f} | {b / a:.2f} |")
            print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--detectors", nargs="+", default=COMPARE)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--full", action="store_true")
    parser.add_argument("--full-batch", type=int, default=2)
    parser.add_argument("--save", action="store_true")
    args = parser.parse_args()
    modes = [m for m, (_, _, compiled) in MODES.items() if args.compile or not compiled]
    load = os.getloadavg()
    peaks = {p: measured_peak_gflops("cpu", p)["max"] for p in ("fp32", "bf16")}
    lines = [f"# Training speed on CPU ({torch.get_num_threads()} threads, torch {torch.__version__})", "",
             f"Load average at start {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1/5/15 min) on "
             f"{os.cpu_count()} cores; measured peaks now: fp32 {peaks['fp32']:.0f}, bf16 {peaks['bf16']:.0f} "
             f"GFLOP/s. Medians of {args.repeats} interleaved steps; 'x fp32' is the ratio of medians.", "",
             "| detector | mode | batch | s/step | images/s | x fp32 | GFLOP/step | GFLOP/s | of peak | compile s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    for detector in args.detectors:
        lines += detector_rows(detector, modes, args.batch, args.repeats, peaks)
    if args.full:
        lines += ["", f"Paper-width models, batch {args.full_batch}, images/s (torchvision / detbench: x)", "",
                  "| detector | precision | batch | detbench | torchvision | detbench speed-up |",
                  "|---|---|---|---|---|---|"]
        lines += reference_pairs(args.full_batch, args.repeats)
    load = os.getloadavg()
    lines += ["", f"Load average at end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}."]
    if args.save:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "train_speed_cpu.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
