"""Every detector in ``conf/detector/*.yaml`` through the speed protocol, printed as one table.

    python benchmarks/speed_table.py                                   # CPU, batch 1 and 8, fp32
    python benchmarks/speed_table.py --device cuda --batch-sizes 1 8 32 --dtypes fp32 bf16 --save

Each detector is built the way the runner builds it (Hydra's compose API, then
``hydra.utils.instantiate(cfg.detector.model, num_classes=20)``: Pascal VOC's 20 classes) with
random weights, and fed synthetic images at its own ``input_size``. One row per detector,
dtype and batch size; the columns are ``experiments.benchmark``'s metrics (ms are per batch).
``--save`` writes ``benchmarks/results/speed_table_<device>.md``, headed by the device's name.
"""
from __future__ import annotations

import argparse
import gc
import os
import sys
import traceback
from pathlib import Path

import pandas as pd
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from experiments.benchmark import benchmark  # noqa: E402
from experiments.identity import device_name, model_facts  # noqa: E402

CONF = ROOT / "conf"
NUM_CLASSES = 20
COLUMNS = {  # metrics key (without _b{b}) -> column title
    "bench_image_size": "input", "params_m": "params M", "gmacs": "GMACs",
    "num_candidates": "candidates", "boxes_kept": "kept/img", "fps": "img/s",
    "latency_ms_p50": "p50 ms", "latency_ms_p95": "p95 ms", "preprocess_ms": "pre ms",
    "network_ms": "net ms", "postprocess_ms": "post ms", "postprocess_share": "post %",
    "network_gflops_per_s": "net GFLOP/s", "network_utilisation": "net util %",
    "peak_memory_mb": "peak MB",
}


def readable(value):
    """Numbers as a person reads them: no exponents, about three significant digits."""
    if isinstance(value, bool) or not isinstance(value, float):
        return value
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.3g}" if abs(value) >= 0.001 or value == 0 else f"{value:.1e}"


def detector_names() -> list[str]:
    return sorted(p.stem for p in (CONF / "detector").glob("*.yaml"))


def build_detector(name: str) -> torch.nn.Module:
    """The detector of ``conf/detector/<name>.yaml`` with ``NUM_CLASSES`` classes, random weights."""
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        cfg = compose(config_name=f"detector/{name}")
    return instantiate(cfg.detector.model, num_classes=NUM_CLASSES)


def rows_of(name: str, dtype: str, metrics: dict, batch_sizes: list[int]) -> list[dict]:
    """One table row per batch size from one benchmark() result."""
    rows = []
    for b in batch_sizes:
        row = {"detector": name, "dtype": dtype, "batch": b}
        for key, title in COLUMNS.items():
            if key == "params_m":
                row[title] = metrics["params"] / 1e6
            else:
                row[title] = metrics.get(f"{key}_b{b}", metrics.get(key))
        rows.append(row)
    return rows


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--dtypes", nargs="+", default=["fp32"], choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--detectors", nargs="+", default=None,
                        help="config names (default: every conf/detector/*.yaml)")
    parser.add_argument("--warmup", type=int, default=None, help="default: 1 on CPU, 5 on a GPU")
    parser.add_argument("--iterations", type=int, default=None, help="default: 3 on CPU, 30 on a GPU")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--save", action="store_true",
                        help="write benchmarks/results/speed_table_<device>.md")
    return parser.parse_args(argv)


def main(argv=None) -> pd.DataFrame:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    on_cpu = device.type == "cpu"
    warmup = args.warmup if args.warmup is not None else (1 if on_cpu else 5)
    iterations = args.iterations if args.iterations is not None else (3 if on_cpu else 30)
    names = args.detectors or detector_names()
    unknown = sorted(set(names) - set(detector_names()))
    if unknown:
        raise SystemExit(f"speed_table: no conf/detector/<name>.yaml for {unknown}; have {detector_names()}")

    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    rows, failures, peaks = [], [], {}
    for name in names:
        try:
            detector = build_detector(name)
        except Exception as error:
            failures.append(f"{name}: build failed: {type(error).__name__}: {error}")
            continue
        for dtype in args.dtypes:
            print(f"  {name} {dtype} ...", file=sys.stderr, flush=True)
            try:
                metrics = benchmark(detector, batch_sizes=args.batch_sizes, warmup=warmup,
                                    iterations=iterations, device=device, dtype=dtype,
                                    channels_last=args.channels_last, compile=args.compile)
                metrics.update(model_facts(detector, tuple(detector.input_size)))
            except Exception as error:
                traceback.print_exc()
                failures.append(f"{name} {dtype}: {type(error).__name__}: {error}")
                continue
            peaks.setdefault(dtype, []).append(metrics["matmul_peak_gflops"])
            rows.extend(rows_of(name, dtype, metrics, args.batch_sizes))
            if metrics.get("bench_compile", "off") not in ("off", "on"):
                failures.append(f"{name} {dtype}: torch.compile {metrics['bench_compile']}, timed eager")
        del detector
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()

    table = pd.DataFrame(rows)
    header = [f"# Speed table: {device_name(device)} ({device.type})", "",
              f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, {os.cpu_count()} CPUs, "
              f"load average {load_before:.1f} at the start and "
              f"{os.getloadavg()[0] if hasattr(os, 'getloadavg') else float('nan'):.1f} at the end; "
              f"warm-up {warmup}, {iterations} timed batches per batch size; random weights "
              "(near-uniform class scores clear the score thresholds, so NMS sees the most boxes "
              f"and post-processing is at its slowest), {NUM_CLASSES} classes, synthetic images "
              "at each detector's input size; "
              f"channels_last {args.channels_last}, compile {args.compile}. ms are per batch; "
              "GMACs per image (FlopCounterMode FLOPs / 2); net util = network FLOP/s over the "
              "matrix-product peak measured in the same call: "
              + ", ".join(f"{d} {min(p):.0f}-{max(p):.0f} GFLOP/s" for d, p in peaks.items()) + ".", ""]
    if rows:
        align = ["left" if column in ("detector", "dtype", "input") else "right" for column in table.columns]
        text = "\n".join(header) + "\n" + table.map(readable).to_markdown(
            index=False, disable_numparse=True, colalign=align)
    else:
        text = "\n".join(header) + "\n(no rows)"
    if failures:
        text += "\n\nFailures:\n" + "\n".join(f"- {f}" for f in failures)
    print(text)
    if args.save:
        out = ROOT / "benchmarks" / "results" / f"speed_table_{device.type}.md"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
        print(f"\nwrote {out}", file=sys.stderr)
    return table


if __name__ == "__main__":
    main()
