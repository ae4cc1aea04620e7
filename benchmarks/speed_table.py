"""Every detector in ``conf/detector/*.yaml`` through the speed protocol, printed as one table.

    python benchmarks/speed_table.py                                   # CPU, batch 1 and 8, fp32
    python benchmarks/speed_table.py --modes fp32 bf16 compile --width 0.125 --save
    python benchmarks/speed_table.py --device cuda --batch-sizes 1 8 32 128 --modes fp32 bf16 bf16-compile

Each detector is built the way the runner builds it (Hydra's compose API, then
``experiments.build.build_detector(cfg.detector.model, 20)``: Pascal VOC's 20 classes) with
random weights, and fed synthetic images at its own ``input_size``. One row per detector, mode
and batch size; the columns are ``experiments.speed.benchmark``'s metrics (ms are per batch).
Modes: ``fp32``; ``bf16`` / ``fp16`` (autocast around the network); ``compile`` and
``bf16-compile`` (``torch.compile`` of the network stage). ``x fp32`` is the row's img/s over
the fp32 row's of the same detector and batch, from the same run.
``--width W`` sets ``detector.model.width`` for every detector that has one and
``--override NAME:KEY=VALUE`` any other config key of one detector (both named in the header).
``--save`` writes ``benchmarks/results/speed_table_<device>.md`` (or ``--out``).
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
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from experiments.build import build_detector  # noqa: E402
from experiments.job.identity import device_name, model_facts  # noqa: E402
from experiments.speed.benchmark import benchmark  # noqa: E402

CONF = ROOT / "conf"
NUM_CLASSES = 20
MODES = {"fp32": ("fp32", False), "bf16": ("bf16", False), "fp16": ("fp16", False),
         "compile": ("fp32", True), "bf16-compile": ("bf16", True)}
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


def detector_of(name: str, overrides: list[str] = ()) -> torch.nn.Module:
    """The detector of ``conf/detector/<name>.yaml`` with ``NUM_CLASSES`` classes, random weights."""
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        cfg = compose(config_name=f"detector/{name}", overrides=list(overrides))
    return build_detector(cfg.detector.model, NUM_CLASSES)


def overrides_for(name: str, width: float | None, extra: list[str]) -> list[str]:
    """Hydra overrides for one detector: ``width`` where its config has the key, plus
    ``NAME:KEY=VALUE`` items of ``extra`` that name it."""
    config = OmegaConf.load(CONF / "detector" / f"{name}.yaml")
    found = [f"detector.model.width={width}"] if width is not None and "width" in config.get("model", {}) else []
    for item in extra:
        target, _, setting = item.partition(":")
        if not setting or "=" not in setting:
            raise SystemExit(f"speed_table: --override wants NAME:KEY=VALUE, got {item!r}")
        if target == name:
            found.append(setting)
    return found


def rows_of(name: str, mode: str, metrics: dict, batch_sizes: list[int]) -> list[dict]:
    """One table row per batch size from one benchmark() result."""
    rows = []
    for b in batch_sizes:
        row = {"detector": name, "mode": mode, "batch": b}
        for key, title in COLUMNS.items():
            if key == "params_m":
                row[title] = metrics["params"] / 1e6
            else:
                row[title] = metrics.get(f"{key}_b{b}", metrics.get(key))
        rows.append(row)
    return rows


def with_ratio_to_fp32(table: pd.DataFrame) -> pd.DataFrame:
    """Add ``x fp32``: img/s over the same detector and batch's fp32 img/s (blank without one)."""
    if table.empty:
        return table
    fp32 = table[table["mode"] == "fp32"].set_index(["detector", "batch"])["img/s"]
    ratio = [row["img/s"] / fp32[(row["detector"], row["batch"])] if (row["detector"], row["batch"]) in fp32
             else float("nan") for _, row in table.iterrows()]
    table.insert(table.columns.get_loc("img/s") + 1, "x fp32", ratio)
    return table


def peak_lines(peaks: dict[str, dict]) -> list[str]:
    """The header's account of the peak each dtype's utilisation is measured against."""
    lines = []
    for dtype, m in peaks.items():
        theory = (f"theoretical {m['theoretical_peak_gflops']:.0f} GFLOP/s" if "theoretical_peak_gflops" in m
                  else "theoretical unknown")
        clock = (f"; the measured peak implies {m['peak_implied_clock_ghz']:.2f} GHz under that assumption"
                 if "peak_implied_clock_ghz" in m else "")
        lines.append(f"- {dtype}: measured peak {m['measured_peak_gflops']:.0f} GFLOP/s (matmul "
                     f"{m['matmul_peak_gflops']:.0f}, 3x3 conv {m['conv_peak_gflops']:.0f}, the best over the "
                     f"calls); {theory} ({m['peak_assumption']}){clock}; net util % is against the "
                     f"{m['utilisation_against']} peak.")
    return lines


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--modes", nargs="+", default=["fp32"], choices=sorted(MODES))
    parser.add_argument("--detectors", nargs="+", default=None,
                        help="config names (default: every conf/detector/*.yaml)")
    parser.add_argument("--width", type=float, default=None, help="detector.model.width where a config has it")
    parser.add_argument("--override", action="append", default=[], help="NAME:KEY=VALUE, e.g. "
                        "faster_rcnn_r50_fpn:detector.model.min_size=320")
    parser.add_argument("--warmup", type=int, default=None, help="default: 1 on CPU, 5 on a GPU")
    parser.add_argument("--iterations", type=int, default=None, help="default: 3 on CPU, 30 on a GPU")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--save", action="store_true",
                        help="write benchmarks/results/speed_table_<device>.md")
    parser.add_argument("--out", default=None, help="with --save: this path instead")
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
    rows, failures, notes, peaks, applied = [], [], [], {}, {}
    for name in names:
        overrides = overrides_for(name, args.width, args.override)
        if overrides:
            applied[name] = overrides
        try:
            detector = detector_of(name, overrides)
        except Exception as error:
            failures.append(f"{name}: build failed: {type(error).__name__}: {error}")
            continue
        facts = model_facts(detector, tuple(detector.input_size))
        for mode in args.modes:
            dtype, compiled = MODES[mode]
            print(f"  {name} {mode} ...", file=sys.stderr, flush=True)
            try:
                metrics = benchmark(detector, batch_sizes=args.batch_sizes, warmup=warmup,
                                    iterations=iterations, device=device, dtype=dtype,
                                    channels_last=args.channels_last, compile=compiled)
            except Exception as error:
                traceback.print_exc()
                failures.append(f"{name} {mode}: {type(error).__name__}: {error}")
                continue
            metrics.update(facts)
            best = peaks.get(dtype)
            if best is None or metrics["measured_peak_gflops"] > best["measured_peak_gflops"]:
                peaks[dtype] = metrics
            rows.extend(rows_of(name, mode, metrics, args.batch_sizes))
            if "network_utilisation_note" in metrics:
                notes.append(f"{name} {mode}: {metrics['network_utilisation_note']}")
            if metrics.get("bench_compile", "off") not in ("off", "on"):
                failures.append(f"{name} {mode}: torch.compile {metrics['bench_compile']}, timed eager")
        del detector
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()

        if args.save:  # after every detector, so that a run cut short keeps what it measured
            write(args, device, render(args, device, names, rows, failures, notes, peaks, applied, warmup,
                                       iterations, load_before)[1] + f"\n\n(partial: {name} of {names} done)")
    table, text = render(args, device, names, rows, failures, notes, peaks, applied, warmup, iterations, load_before)
    print(text)
    if args.save:
        write(args, device, text)
    return table


def write(args, device, text: str) -> None:
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / f"speed_table_{device.type}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    print(f"wrote {out}", file=sys.stderr)


def render(args, device, names, rows, failures, notes, peaks, applied, warmup, iterations, load_before) -> tuple:
    """The table and its header as markdown: (DataFrame, text)."""
    table = with_ratio_to_fp32(pd.DataFrame(rows))
    load_after = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    reduced = "; ".join(f"{n}: {', '.join(o)}" for n, o in applied.items())
    header = [f"# Speed table: {device_name(device)} ({device.type})", ""]
    if reduced:
        header += [f"**Reduced models, not the papers' sizes**: {reduced}. GMACs, img/s and memory are "
                   "those of the reduced models.", ""]
    header += [f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, {os.cpu_count()} CPUs, "
               f"load average {load_before:.1f} at the start and {load_after:.1f} at the end (other jobs "
               "share the machine: read ratios within one run, not absolute figures); "
               f"warm-up {warmup}, {iterations} timed batches per batch size, stage times are medians; "
               "random weights (near-uniform class scores clear the score thresholds, so NMS sees the most "
               f"boxes and post-processing is at its slowest), {NUM_CLASSES} classes, synthetic images at "
               f"each detector's input size; channels_last {args.channels_last}. ms are per batch; GMACs "
               "per image (FlopCounterMode FLOPs / 2); x fp32 = img/s over the fp32 row's.", ""]
    header += peak_lines(peaks) + [""]
    if rows:
        align = ["left" if column in ("detector", "mode", "input") else "right" for column in table.columns]
        text = "\n".join(header) + "\n" + table.map(readable).to_markdown(
            index=False, disable_numparse=True, colalign=align)
    else:
        text = "\n".join(header) + "\n(no rows)"
    if notes:
        text += "\n\nUtilisation above 100%:\n" + "\n".join(f"- {n}" for n in notes)
    if failures:
        text += "\n\nFailures:\n" + "\n".join(f"- {f}" for f in failures)
    return table, text


if __name__ == "__main__":
    main()
