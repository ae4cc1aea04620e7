"""Data pipeline throughput: synthetic generation + augmentation policy at 300x300.

Measures images/s through a DataLoader with ONE worker process (torch uses one thread in a
worker), for: generation alone, + the ``ssd`` policy, + the ``ssd`` policy with torchvision's
sequential ``RandomIoUCrop`` search (the reference our batched search replaces), + ``yolo``.
The goal (issue 2) is >= 200 images/s for generation + ``ssd``, so that data never starves CPU
training. Also prints the CPU milliseconds per image of each stage, measured in-process.

    python benchmarks/data_throughput.py [--images 400] [--repeats 3] [--out benchmarks/results/data_throughput.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from experiments.data.base import collate
from experiments.data.synthetic import SyntheticShapes
from experiments.data.transforms import MEAN_RGB, DetectionAugmentation, build_policy


def reference_ssd_policy() -> DetectionAugmentation:
    """The ssd policy with torchvision's own RandomIoUCrop (sequential crop search)."""
    return DetectionAugmentation([
        v2.RandomPhotometricDistort(p=0.5), v2.RandomHorizontalFlip(p=0.5),
        v2.RandomZoomOut(fill=list(MEAN_RGB), side_range=(1.0, 4.0), p=0.5),
        v2.RandomIoUCrop(sampler_options=[0.1, 0.3, 0.5, 0.7, 0.9, 1.0])], name="ssd_reference")


def loader_rate(policy, images: int, batch_size: int = 16) -> float:
    """Images/s delivered by a one-worker DataLoader (worker start-up excluded)."""
    dataset = SyntheticShapes(images + batch_size, image_size=300, seed=0, transforms=policy)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=1, collate_fn=collate)
    it = iter(loader)
    next(it)  # start the worker, first batch
    start, n = time.perf_counter(), 0
    for images_batch, _ in it:
        n += len(images_batch)
    return n / (time.perf_counter() - start)


def cpu_ms_per_image(policy, images: int) -> float:
    """CPU milliseconds per image (generation + policy), in this process on one thread."""
    dataset = SyntheticShapes(images, image_size=300, seed=1, transforms=policy)
    start = time.process_time()
    for i in range(images):
        dataset[i]
    return (time.process_time() - start) / images * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs (shared machines are noisy)")
    parser.add_argument("--out", default=None, help="write the figures as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    policies = {"generation only": None, "generation + ssd": build_policy("ssd"),
                "generation + ssd (torchvision RandomIoUCrop)": reference_ssd_policy(),
                "generation + ssd, resized to 300": build_policy("ssd", output_size=300),
                "generation + yolo": build_policy("yolo")}
    results = {}
    print(f"{'pipeline':48s} {'img/s (1 worker)':>17s} {'CPU ms/img':>11s}")
    for name, policy in policies.items():
        rate = max(loader_rate(policy, args.images) for _ in range(args.repeats))
        ms = min(cpu_ms_per_image(policy, args.images // 4) for _ in range(args.repeats))
        results[name] = {"images_per_s_one_worker": round(rate, 1), "cpu_ms_per_image": round(ms, 2)}
        print(f"{name:48s} {rate:17.1f} {ms:11.2f}")
    ours = results["generation + ssd"]["images_per_s_one_worker"]
    ref = results["generation + ssd (torchvision RandomIoUCrop)"]["images_per_s_one_worker"]
    print(f"ssd policy: batched IoU-crop search / torchvision's sequential search = {ours / ref:.2f}x")
    print(f"goal >= 200 images/s for generation + ssd: {'met' if ours >= 200 else 'NOT met'} ({ours:.1f})")
    if args.out:
        results["machine"] = {"cpu_count": os.cpu_count(), "load_average_1min": os.getloadavg()[0],
                              "platform": platform.platform(), "torch": torch.__version__}
        Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
