"""What each COCO-C corruption costs per image, beside what the detector itself costs.

    python benchmarks/corruption_cost.py [--repeats 3] [--sizes 300x300 480x640]

For each size (the synthetic val size 300x300 and a COCO-like 480x640) and each of the 19
corruptions, ``experiments.data.corrupted.corrupt_image`` (uint8 conversion included) runs on one
synthetic-shapes image per severity 1..5, ``--repeats`` times each (glass blur: once, it takes
seconds); printed: the mean over severities of the median time per image, in ms, and its ratio to
one batch-1 forward of SSD300 (1/8 width, ``ssd300_cpu``) on the same image in the same process:
the cost of corrupting an image relative to scoring it. One thread (OMP_NUM_THREADS=1).
Written to benchmarks/results/corruption_cost_cpu.json; the machine's load is printed with it.
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

from experiments.data.corrupted import CORRUPTIONS, HELD_OUT, SEVERITIES, corrupt_image
from experiments.data.synthetic import SyntheticShapes

SLOW = {"glass_blur"}


def median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", nargs="+", default=["300x300", "480x640"], help="HxW")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "corruption_cost_cpu.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    from hydra import compose, initialize_config_module

    from experiments.build import build_detector

    with initialize_config_module("conf", version_base="1.3"):
        model_cfg = compose("config", overrides=["detector=ssd300_cpu"]).detector.model
    model = build_detector(model_cfg, num_classes=5).eval()
    results = {"load_average": os.getloadavg(), "machine": platform.processor() or platform.machine(),
               "torch_threads": 1, "sizes": {}}
    print(f"load average at start: {results['load_average']}")
    for size in args.sizes:
        h, w = (int(v) for v in size.split("x"))
        images = [SyntheticShapes(5, (h, w), split="val")[i][0] for i in range(5)]
        with torch.inference_mode():
            model([images[0]])
            forward_ms = median_ms(lambda first=images[0]: model([first]), args.repeats)
        rows = {}
        print(f"\n{h}x{w}: SSD300 (1/8 width) forward, batch 1: {forward_ms:.1f} ms")
        print(f"{'corruption':18s} {'ms/image':>9s} {'x forward':>9s}  per severity 1..5 (ms)")
        for name in CORRUPTIONS:
            per_severity = [median_ms(lambda s=s, im=images, n=name: corrupt_image(im[s - 1], n, s, seed=s),
                                      1 if name in SLOW else args.repeats) for s in SEVERITIES]
            mean = statistics.fmean(per_severity)
            rows[name] = {"ms_per_image": mean, "ratio_to_forward": mean / forward_ms,
                          "per_severity_ms": per_severity, "held_out": name in HELD_OUT}
            print(f"{name:18s} {mean:9.1f} {mean / forward_ms:9.2f}  "
                  + " ".join(f"{v:.0f}" for v in per_severity), flush=True)
        results["sizes"][size] = {"forward_ms": forward_ms, "corruptions": rows}
    results["load_average_end"] = os.getloadavg()
    print(f"\nload average at end: {results['load_average_end']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
