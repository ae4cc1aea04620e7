"""The paper detectors x PyTorch fp32 / bf16 / ONNX Runtime / OpenVINO on the CPU, and delta AP after export.

    python benchmarks/runtime_speed.py --width 0.25 --save
    python benchmarks/runtime_speed.py --detectors ssd300 yolov1 --iterations 5
    python benchmarks/runtime_speed.py --runs runs/compare/<sweep>/0-ssd300_cpu-seed0 ... --save
    python benchmarks/runtime_speed.py --device cuda --runtimes tensorrt --save     # benchmarks/gpu_suite.sh

Speed: each detector built as ``benchmarks/speed_table.py`` builds it (its config, ``--width``,
Pascal VOC's 20 classes, random weights, synthetic images at its input size) and timed by the
speed protocol once per runtime (``experiments.speed.runtime_rows``: the same images, warm-up,
timed batches and pre/network/post split; only the network differs). ``img/s`` is the batch over
the median end-to-end latency; ``x fp32`` its ratio to the PyTorch fp32 row of the same detector
and batch, from the same process. ``raw rel`` is the exported network's largest raw-output
difference over the output's scale (ONNX Runtime / OpenVINO vs PyTorch fp32).

R-CNN and Fast R-CNN (``external_proposals``): selective search (their config's settings) runs
once per synthetic image before any timing, one core per image; every row then serves those boxes
(``FixedProposals``), so the rows differ in the network alone. ``prop ms`` is that selective
search per batch (the sum over its images, as the speed protocol's ``proposal`` stage computes
them); ``p50 ms`` and the stage columns leave it out: end to end is ``p50 ms`` + ``prop ms``.
``--proposals N`` caps their proposals per image (default: the configs' 2000).

``--device cuda --runtimes tensorrt``: PyTorch fp32 / bf16 on the GPU beside the exported
networks in ONNX Runtime's TensorRT provider (fp32 engines), written to
``benchmarks/results/gpu/speed_table_cuda_runtimes.md`` with ``--save``.

Accuracy (``--runs``): each trained run folder's network exported and checked by
``detbench-export``'s code (``experiments.speed.export_check``): AP of PyTorch and of each runtime
on the run's validation images, delta AP with its paired image-bootstrap interval.
``--save`` writes ``benchmarks/results/speed_table_cpu_runtimes.md`` (or ``--out``).
"""
from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import traceback
from pathlib import Path

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from speed_table import detector_of, overrides_for, readable  # noqa: E402

from detectors.region_proposals import FixedProposals  # noqa: E402
from experiments.job.identity import device_name  # noqa: E402
from experiments.speed.benchmark import benchmark, synthetic_images  # noqa: E402
from experiments.speed.runtime_rows import benchmark_runtimes  # noqa: E402
from experiments.speed.runtimes import missing_runtimes, runtime_errors, runtime_settings  # noqa: E402

PAPER_DETECTORS = ["ssd300", "ssd512", "yolov1", "fast_yolo", "faster_rcnn_vgg16", "fast_rcnn_vgg16", "rcnn_vgg16"]
RUNTIMES = {"cpu": ["onnxruntime", "openvino"], "cuda": ["tensorrt"]}


def takes_proposals(name: str) -> bool:
    """R-CNN, Fast R-CNN: their config has a ``proposals`` (selective search) section."""
    return "proposals" in OmegaConf.load(ROOT / "conf" / "detector" / f"{name}.yaml")


def proposal_overrides(name: str, proposals: int | None) -> list[str]:
    """``--proposals N``: at most N selective-search boxes per image, all of them scored."""
    if proposals is None or not takes_proposals(name):
        return []
    return [f"detector.model.candidates_before_nms={proposals}", f"detector.proposals.max_proposals={proposals}"]


def fixed_selective_search(detector, name: str, overrides: list[str], images: list[torch.Tensor]) -> list[float]:
    """Selective search with the config's settings on each image, once, before any timing; the
    detector then serves these boxes by position in the batch (``FixedProposals``). Returns the
    seconds each image took (one core)."""
    from dataclasses import fields

    from experiments.studies.proposals import SelectiveSearchSettings, selective_search, to_uint8

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        spec = compose(config_name=f"detector/{name}", overrides=list(overrides)).detector.proposals
    known = {f.name for f in fields(SelectiveSearchSettings)}
    settings = SelectiveSearchSettings(**{k: v for k, v in OmegaConf.to_container(spec).items() if k in known})
    found = [selective_search(to_uint8(image.cpu()), settings) for image in images]
    detector.proposal_source = FixedProposals([torch.from_numpy(boxes) for boxes, _ in found])
    return [seconds for _, seconds in found]


def speed_rows(name: str, overrides: list[str], batch_sizes: list[int], warmup: int, iterations: int,
               runtimes: list[str], device: str = "cpu") -> list[dict]:
    """One row per (mode, batch) for one detector."""
    detector = detector_of(name, overrides)
    bench = {"batch_sizes": batch_sizes, "warmup": warmup, "iterations": iterations, "measure_peak": False}
    proposal_ms = {}
    if getattr(detector, "external_proposals", False):   # the same images benchmark() synthesises
        seconds = fixed_selective_search(detector, name, overrides,
                                         synthetic_images(max(batch_sizes), detector.input_size))
        proposal_ms = {b: 1000 * sum(seconds[:b]) for b in batch_sizes}
    with tempfile.TemporaryDirectory() as folder:
        metrics = benchmark_runtimes(detector, ["pytorch", *runtimes], Path(folder), device=device, **bench)
    skipped = [f"{name} {r}: {metrics[f'{r}_skipped']}" for r in runtimes if f"{r}_skipped" in metrics]
    if skipped:
        raise RuntimeError("; ".join(skipped))
    bf16 = benchmark(detector, dtype="bf16", device=device, **bench)
    modes = [("pytorch fp32", metrics, ""), ("pytorch bf16", bf16, "")] + [(r, metrics, f"{r}_") for r in runtimes]
    rows = []
    for mode, source, prefix in modes:
        for b in batch_sizes:
            p50 = source[f"{prefix}latency_ms_p50_b{b}"]
            rows.append({"detector": name, "mode": mode, "batch": b, "input": metrics["bench_image_size"],
                         "img/s": b * 1000 / p50, "p50 ms": p50, "p95 ms": source[f"{prefix}latency_ms_p95_b{b}"],
                         "prop ms": proposal_ms.get(b, "–"),
                         "pre ms": source[f"{prefix}preprocess_ms_b{b}"],
                         "net ms": source[f"{prefix}network_ms_b{b}"],
                         "post ms": source[f"{prefix}postprocess_ms_b{b}"],
                         "raw rel": source.get(f"{prefix}raw_relative") if prefix else "–"})
    del detector
    gc.collect()
    return rows


def with_ratio(table: pd.DataFrame) -> pd.DataFrame:
    fp32 = table[table["mode"] == "pytorch fp32"].set_index(["detector", "batch"])["img/s"]
    table.insert(table.columns.get_loc("img/s") + 1, "x fp32",
                 [row["img/s"] / fp32[(row["detector"], row["batch"])] for _, row in table.iterrows()])
    return table


def accuracy_rows(run: str, runtimes: list[str], replicates: int) -> list[dict]:
    """delta AP of each runtime for one trained run folder (every validation image)."""
    from omegaconf import OmegaConf

    from experiments.data.split_builder import build_split
    from experiments.inference.run_loader import SAVED_CONFIG, load_detector
    from experiments.speed.export import export_network
    from experiments.speed.export_check import delta_ap, largest_relative, raw_differences
    from experiments.speed.runtimes import ExportedNetwork

    loaded = load_detector(run, "cpu")
    dataset = build_split(OmegaConf.load(loaded.run_dir / SAVED_CONFIG).dataset, "val")
    rows = []
    for runtime in runtimes:
        with tempfile.TemporaryDirectory() as folder:
            records = export_network(loaded.model, Path(folder), loaded.name, [8], dynamic_batch=True,
                                     format="onnx" if runtime == "onnxruntime" else "openvino")
            network = ExportedNetwork(loaded.model, records, Path(folder), runtime)
            with torch.no_grad():
                batch = loaded.model.preprocess([dataset[i][0] for i in range(8)])
                raw = largest_relative(raw_differences(loaded.model, network, batch))
            acc = delta_ap(loaded.model, network, dataset, 8, 0, replicates, 0)
        rows.append({"detector": loaded.name, "runtime": runtime, "images": acc["images"],
                     "AP PyTorch": acc["pytorch_map"] * 100, "AP runtime": acc["exported_map"] * 100,
                     "ΔAP (points)": f"{acc['delta_map'] * 100:+.3f} [{acc['delta_map_ci_low'] * 100:+.3f}, "
                                     f"{acc['delta_map_ci_high'] * 100:+.3f}]",
                     "ΔAP50": f"{acc['delta_map_50'] * 100:+.3f}",
                     "detections": f"{acc['exported_detections']} / {acc['pytorch_detections']}",
                     "largest raw diff": f"{raw[1]['max_abs']:.2e} ({raw[1]['relative']:.1e} of scale, {raw[0]})"})
    return rows


def markdown(table: pd.DataFrame) -> str:
    align = ["left" if c in ("detector", "mode", "runtime", "input") else "right" for c in table.columns]
    return table.map(readable).to_markdown(index=False, disable_numparse=True, colalign=align)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--detectors", nargs="*", default=PAPER_DETECTORS, help="none: only the delta AP table")
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu", choices=sorted(RUNTIMES))
    parser.add_argument("--runtimes", nargs="+", default=None, help="default: onnxruntime openvino on the CPU, "
                        "tensorrt on CUDA")
    parser.add_argument("--proposals", type=int, default=None, help="R-CNN / Fast R-CNN: at most this many "
                        "selective-search proposals per image (default: their configs' 2000)")
    parser.add_argument("--runs", nargs="*", default=[], help="trained run folders for the delta AP table")
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--save", action="store_true")
    parser.add_argument("--out", default=None, help="default: benchmarks/results/speed_table_cpu_runtimes.md, "
                        "on CUDA benchmarks/results/gpu/speed_table_cuda_runtimes.md")
    args = parser.parse_args(argv)
    args.runtimes = args.runtimes or RUNTIMES[args.device]
    args.out = args.out or str(ROOT / "benchmarks" / "results" / ("speed_table_cpu_runtimes.md" if args.device == "cpu"
                                                                   else "gpu/speed_table_cuda_runtimes.md"))
    return args


def main(argv=None) -> str:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    runtimes = args.runtimes
    missing = missing_runtimes(runtimes)
    if missing:
        reasons = "; ".join(str(error) for error in runtime_errors(missing))
        raise SystemExit(f"runtime_speed: {missing} not available: {reasons}")
    load_before = os.getloadavg()[0]
    rows, accuracy, failures = [], [], []
    for name in args.detectors:
        print(f"  {name} ...", file=sys.stderr, flush=True)
        try:
            overrides = overrides_for(name, args.width, []) + proposal_overrides(name, args.proposals)
            rows += speed_rows(name, overrides, args.batch_sizes, args.warmup, args.iterations, runtimes,
                               args.device)
        except Exception as error:
            traceback.print_exc()
            failures.append(f"{name}: {type(error).__name__}: {error}")
    for run in args.runs:
        print(f"  delta AP {run} ...", file=sys.stderr, flush=True)
        accuracy += accuracy_rows(run, runtimes, args.bootstrap)
    load_after = os.getloadavg()[0]
    threads = torch.get_num_threads()
    device = torch.device(args.device)
    ladder = [n for n in args.detectors if takes_proposals(n)]
    text = "\n".join([
        f"# Speed by runtime: {device_name(device)} ({device.type})", "",
        f"**Reduced models, not the papers' sizes**: width {args.width} (detector.model.width) for every detector "
        "that has one; random weights, 20 classes, synthetic images at each detector's input size"
        + (f"; {', '.join(ladder)}: at most {args.proposals or 'the config’s'} selective-search proposals per "
           "image" if ladder else "") + ".", "",
        f"torch {torch.__version__}; {threads} CPU threads for every runtime ({os.cpu_count()} CPUs); load average "
        f"{load_before:.1f} at the start and {load_after:.1f} at the end (other jobs share the machine: read ratios "
        f"within one detector, not absolute figures); warm-up {args.warmup}, {args.iterations} timed batches per "
        "batch size; img/s = batch / median latency; stage times are medians; x fp32 = img/s over the PyTorch fp32 "
        "row's. Runtimes: " + "; ".join(runtime_settings(r, threads) for r in ["pytorch", *runtimes]) + ". bf16: "
        "autocast around the network. The exported network is the detector's network stage only (ONNX opset 18, "
        "torch's dynamo exporter, fixed batch; RoI / region graphs with a dynamic axis); pre- and post-processing "
        "run in PyTorch in every row."
        + (" prop ms: selective search per batch (one core per image), computed once before the timing and "
           "served to every row, so p50 ms and the stage columns leave it out; end to end = p50 ms + prop ms."
           if ladder else ""), "",
        markdown(with_ratio(pd.DataFrame(rows))) if rows else "(no rows)"])
    if accuracy:
        text += ("\n\n## Accuracy after export (compare's detectors, trained)\n\nAP on each run's validation "
                 "images (COCO AP@[.5:.95], %), PyTorch fp32 vs the exported network in the runtime; ΔAP = runtime "
                 f"- PyTorch with its 95% paired image-bootstrap interval ({args.bootstrap} replicates); largest raw "
                 "diff on the first 8 validation images.\n\n" + markdown(pd.DataFrame(accuracy)))
    if failures:
        text += "\n\nFailures:\n" + "\n".join(f"- {f}" for f in failures)
    print(text)
    if args.save:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
        print(f"wrote {args.out}", file=sys.stderr)
    return text


if __name__ == "__main__":
    main()
