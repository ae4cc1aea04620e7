"""Faster R-CNN speed: images/s at batch 1 and 8 for the paper's VGG-16 setting (600x1000) and
the ResNet-50-FPN setting (800x1333), with the time split into preprocessing, backbone, RPN
(proposals and their NMS), RoI head (pooling, fc layers, predictor) and postprocessing (decode,
per-class NMS, map back). Side by side, torchvision's own ``fasterrcnn_resnet50_fpn`` forward on
the same images, as a ratio.

    python benchmarks/faster_rcnn_speed.py --device cpu --save
    python benchmarks/faster_rcnn_speed.py --device cuda --batch-sizes 1 8 --iterations 10 --save

Random weights: the RPN's and the final NMS's work depends on the scores, so these timings
describe the network's cost more faithfully than the NMS's. The median over ``--iterations``
timed passes (after ``--warmup``) is reported.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch
from torchvision.models.detection import fasterrcnn_resnet50_fpn

from detectors.faster_rcnn import FasterRCNN
from detectors.faster_rcnn_builders import faster_rcnn_resnet50_fpn, faster_rcnn_vgg16
from experiments.job.identity import device_name, synchronize

STAGES = ("preprocess", "backbone", "rpn", "roi_head", "postprocess")
RESULTS = Path(__file__).resolve().parent / "results"


def time_stages(model: FasterRCNN, images: list[torch.Tensor], device: torch.device) -> dict[str, float]:
    """Seconds per stage for one eval pass over ``images`` (one batch)."""
    seconds = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        synchronize(device)
        now = time.perf_counter()
        seconds[name] = now - clock
        clock = now

    batch = model.preprocess(images)
    lap("preprocess")
    features = model.features(batch.images)
    lap("backbone")
    proposals, _ = model.propose(batch, features)
    lap("rpn")
    class_logits, box_regression = model.classify_regions(features, proposals, batch.input_sizes)
    lap("roi_head")
    model.postprocess({"class_logits": class_logits, "box_regression": box_regression,
                       "proposals": proposals}, batch)
    lap("postprocess")
    return seconds


def median_stages(model: FasterRCNN, images, device, warmup: int, iterations: int) -> dict[str, float]:
    for _ in range(warmup):
        time_stages(model, images, device)
    runs = [time_stages(model, images, device) for _ in range(iterations)]
    per_stage = {name: statistics.median(r[name] for r in runs) for name in STAGES}
    per_stage["total"] = statistics.median(sum(r.values()) for r in runs)
    return per_stage


def median_forward(model: torch.nn.Module, images, device, warmup: int, iterations: int) -> float:
    times = []
    for i in range(warmup + iterations):
        synchronize(device)
        start = time.perf_counter()
        model(images)
        synchronize(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--width", type=float, default=1.0, help="VGG-16 width multiplier")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--no-reference", action="store_true", help="skip torchvision's own model")
    parser.add_argument("--save", action="store_true",
                        help="write the table to benchmarks/results/faster_rcnn_speed_<device>.txt")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    settings = {
        f"vgg16 w={args.width:g}": faster_rcnn_vgg16(20, width=args.width),  # VOC: 20 classes
        "r50_fpn": faster_rcnn_resnet50_fpn(90),                              # COCO ids: 90 classes
    }
    reference = None if args.no_reference else fasterrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=91)
    if reference is not None:  # the same weights as ours: the ratio is pure overhead
        reference.load_state_dict(settings["r50_fpn"].state_dict())
        reference.eval().to(device)

    lines = [f"# Faster R-CNN speed, {args.device} ({device_name(device)}), torch {torch.__version__}, "
             f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}",
             f"# random weights, eval, fp32, median of {args.iterations} passes after {args.warmup} warm-up; "
             "ms per batch by stage",
             f"{'setting':<12} {'input':>9} {'batch':>5} {'img/s':>7} " + " ".join(f"{s:>11}" for s in STAGES)
             + f" {'tv img/s':>9} {'ours/tv':>7}"]
    print("\n".join(lines), flush=True)
    for name, model in settings.items():
        model.eval().to(device)
        h, w = model.input_size
        for batch_size in args.batch_sizes:
            images = [torch.rand(3, h, w, device=device) for _ in range(batch_size)]
            with torch.inference_mode():
                stages = median_stages(model, images, device, args.warmup, args.iterations)
                tv_fps = None
                if name == "r50_fpn" and reference is not None:
                    tv_fps = batch_size / median_forward(reference, images, device, args.warmup, args.iterations)
            fps = batch_size / stages["total"]
            shares = " ".join(f"{1000 * stages[s]:>7.0f} {100 * stages[s] / stages['total']:>2.0f}%"
                              for s in STAGES)
            tv = f" {tv_fps:>9.2f} {fps / tv_fps:>7.2f}" if tv_fps else f" {'-':>9} {'-':>7}"
            line = f"{name:<12} {h:>4}x{w:<4} {batch_size:>5} {fps:>7.2f} {shares}{tv}"
            lines.append(line)
            print(line, flush=True)
        model.to("cpu")
    text = "\n".join(lines) + "\n"
    if args.save:
        RESULTS.mkdir(parents=True, exist_ok=True)
        path = RESULTS / f"faster_rcnn_speed_{args.device}.txt"
        path.write_text(text)
        print(f"wrote {path}")
    return text


if __name__ == "__main__":
    main()
