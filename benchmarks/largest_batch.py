"""End-to-end images/s (preprocess + network + decode + NMS) of one detector at the largest batch
that fits on the device, by the speed protocol (``experiments.speed.benchmark``).

    python benchmarks/largest_batch.py --device cuda --detector ssd300 --dtype bf16 --start 1024

Batch sizes are tried from ``--start`` down, halving on an out-of-memory error (each failure is
printed and recorded); the first that fits is timed. Writes a JSON of the benchmark's metrics
plus ``batch`` and ``tried`` to ``--out``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.speed_table import detector_of  # noqa: E402
from experiments.job.identity import device_name, model_facts  # noqa: E402
from experiments.speed.benchmark import benchmark  # noqa: E402


def is_out_of_memory(error: Exception) -> bool:
    return isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error).lower()


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--detector", default="ssd300")
    parser.add_argument("--dtype", default="bf16", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--start", type=int, default=1024)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--override", action="append", default=[], help="Hydra override of the detector")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    detector = detector_of(args.detector, args.override)
    tried, batch, metrics = [], args.start, None
    while batch >= 1:
        try:
            metrics = benchmark(detector, batch_sizes=(batch,), warmup=args.warmup, iterations=args.iterations,
                                device=args.device, dtype=args.dtype, compile=args.compile, channels_last=True)
            break
        except Exception as error:
            if not is_out_of_memory(error):
                raise
            tried.append(f"{batch}: out of memory")
            print(f"batch {batch}: out of memory, halving", file=sys.stderr)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            batch //= 2
    if metrics is None:
        raise SystemExit(f"largest_batch: not even batch 1 fits ({tried})")
    result = {"detector": args.detector, "device": device_name(args.device), "batch": batch, "tried": tried,
              "overrides": args.override, **model_facts(detector, tuple(detector.input_size)), **metrics}
    print(f"{args.detector} {args.dtype} compile={args.compile} batch {batch}: "
          f"{metrics[f'fps_b{batch}']:.0f} img/s end to end (post {metrics[f'postprocess_share_b{batch}']:.2f}%)")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2, default=str))
    return result


if __name__ == "__main__":
    main()
