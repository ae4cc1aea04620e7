"""Data pipeline throughput: synthetic generation + augmentation policy at 300x300.

Measures images/s through a DataLoader with ONE worker process (torch uses one thread in a
worker), for: generation alone; + the ``ssd`` policy at 300x300 as training builds it (fused
zoom-out/crop/resize, YIQ hue); + the same policy from torchvision's own steps
(``RandomPhotometricDistort``, ``RandomZoomOut``, sequential ``RandomIoUCrop``, ``Resize``), the
reference it replaces; + the ``ssd`` policy without a resize (variable-size crops of the
zoom-out canvas); + ``yolo`` at 300x300. The goal (issue 2) is >= 200 images/s for
generation + ``ssd`` at 300x300, so that data never starves CPU training. Also prints the CPU
milliseconds per image of each pipeline, measured in-process on one thread. Each figure is
the median of `--repeats` runs.

    python benchmarks/data_throughput.py [--images 400] [--repeats 5] [--out benchmarks/results/data_throughput.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from experiments.data.collate import collate
from experiments.data.synthetic import SyntheticShapes
from experiments.data.transforms import MEAN_RGB, DetectionAugmentation, build_policy


def torchvision_ssd_policy(size: int) -> DetectionAugmentation:
    """The ssd policy from torchvision's steps only, resized to size x size at the end."""
    return DetectionAugmentation([
        v2.RandomPhotometricDistort(p=0.5), v2.RandomHorizontalFlip(p=0.5),
        v2.RandomZoomOut(fill=list(MEAN_RGB), side_range=(1.0, 4.0), p=0.5),
        v2.RandomIoUCrop(sampler_options=[0.1, 0.3, 0.5, 0.7, 0.9, 1.0]),
        v2.Resize((size, size), antialias=True)], name="ssd_torchvision")


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
    parser.add_argument("--repeats", type=int, default=5,
                        help="the median of this many runs is printed (shared machines are noisy)")
    parser.add_argument("--out", default=None, help="write the figures as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    goal, reference = "generation + ssd at 300", "generation + ssd at 300 (torchvision's steps)"
    policies = {"generation only": None, goal: build_policy("ssd", output_size=300),
                reference: torchvision_ssd_policy(300),
                "generation + ssd, no resize": build_policy("ssd"),
                "generation + yolo at 300": build_policy("yolo", output_size=300)}
    results = {}
    print(f"{'pipeline':50s} {'img/s (1 worker)':>17s} {'CPU ms/img':>11s}")
    for name, policy in policies.items():
        rate = statistics.median(loader_rate(policy, args.images) for _ in range(args.repeats))
        ms = statistics.median(cpu_ms_per_image(policy, args.images // 4) for _ in range(args.repeats))
        results[name] = {"repeats": args.repeats, "images_per_s_one_worker": round(rate, 1),
                         "cpu_ms_per_image": round(ms, 2)}
        print(f"{name:50s} {rate:17.1f} {ms:11.2f}")
    ours, ref = results[goal]["images_per_s_one_worker"], results[reference]["images_per_s_one_worker"]
    print(f"ssd policy at 300: detbench's / torchvision's steps = {ours / ref:.2f}x images/s, "
          f"{results[reference]['cpu_ms_per_image'] / results[goal]['cpu_ms_per_image']:.2f}x less CPU")
    print(f"goal >= 200 images/s for generation + ssd at 300: {'met' if ours >= 200 else 'NOT met'} ({ours:.1f})")
    if args.out:
        results["machine"] = {"cpu_count": os.cpu_count(), "load_average_1min": os.getloadavg()[0],
                              "platform": platform.platform(), "torch": torch.__version__}
        Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
