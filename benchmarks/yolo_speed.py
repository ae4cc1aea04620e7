"""YOLO v1 and Fast YOLO speed: images/s at batch 1 and 8, and the share of decoding + NMS.

Both models are timed in the same process by the speed protocol (``experiments.speed.benchmark``:
preprocess / network / postprocess timed apart, eval mode, inference mode), at the paper's
448x448 input and width 1 unless told otherwise, with random weights. Printed side by side
with the paper's figures (45 and 155 FPS on a Titan X, batch 1), as the Fast YOLO / YOLO ratio.

Random weights make few boxes pass a score threshold, which would flatter the decoding time,
so the postprocess stage is also timed at its worst: score threshold 0, every one of the
S*S*B x C (box, class) pairs decoded and sent to per-class NMS.

    python benchmarks/yolo_speed.py --device cpu [--width 1.0] [--save]

``--save`` writes the printed table to ``benchmarks/results/yolo_speed_<device>.txt``.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from detectors.yolo import YOLO  # noqa: E402
from experiments.job.identity import model_facts, synchronize  # noqa: E402
from experiments.speed.benchmark import benchmark, synthetic_images  # noqa: E402

PAPER_FPS = {"yolo": 45.0, "fast_yolo": 155.0}  # Titan X, batch 1, VOC 2007 (Table 1)
NUM_CLASSES = 20  # VOC, as the paper


def worst_case_postprocess_ms(model: YOLO, batch_size: int, device: torch.device,
                              repeats: int) -> float:
    """Median ms of ``postprocess`` on one batch's raw outputs with score threshold 0."""
    images = synthetic_images(batch_size, model.input_size, device)
    threshold = model.score_thresh
    model.score_thresh = 0.0
    try:
        with torch.inference_mode():
            batch = model.preprocess(images)
            outputs = model.network(batch)
            times = []
            for _ in range(repeats + 1):
                synchronize(device)
                start = time.perf_counter()
                model.postprocess(outputs, batch)
                synchronize(device)
                times.append(time.perf_counter() - start)
    finally:
        model.score_thresh = threshold
    return 1000 * statistics.median(times[1:])


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--input-size", type=int, default=448)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--save", action="store_true",
                        help="write the output to benchmarks/results/yolo_speed_<device>.txt")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(0)

    lines = [f"YOLO v1 / Fast YOLO speed: device {args.device}, threads "
             f"{torch.get_num_threads()}, input {args.input_size}x{args.input_size}, width "
             f"{args.width}, {NUM_CLASSES} classes, random weights, fp32, warm-up "
             f"{args.warmup}, {args.iterations} timed batches, torch {torch.__version__}",
             f"machine load average (1 min) at the start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs "
             "(a shared machine gives lower images/s; the ratios hold better)",
             ""]
    header = (f"{'model':<10} {'params M':>9} {'GMACs':>7} {'img/s b1':>9} {'img/s b8':>9} "
              f"{'post % b1':>9} {'post % b8':>9} {'worst post % b1':>15} {'worst post % b8':>15}"
              f" {'paper FPS':>9}")
    lines += [header, "-" * len(header)]
    fps = {}
    for architecture in ("yolo", "fast_yolo"):
        model = YOLO(NUM_CLASSES, architecture=architecture, width=args.width,
                     input_size=args.input_size).to(device).eval()
        m = benchmark(model, batch_sizes=(1, 8), warmup=args.warmup,
                      iterations=args.iterations, device=device, measure_peak=False)
        worst = {}
        for b in (1, 8):
            post_ms = worst_case_postprocess_ms(model, b, device, args.iterations)
            stages = m[f"preprocess_ms_b{b}"] + m[f"network_ms_b{b}"] + post_ms
            worst[b] = 100 * post_ms / stages
        fps[architecture] = (m["fps_b1"], m["fps_b8"])
        params = model_facts(model, model.input_size)["params"]
        lines.append(f"{architecture:<10} {params / 1e6:>9.1f} {m['gmacs']:>7.2f} "
                     f"{m['fps_b1']:>9.2f} {m['fps_b8']:>9.2f} {m['postprocess_share_b1']:>9.2f} "
                     f"{m['postprocess_share_b8']:>9.2f} {worst[1]:>15.2f} {worst[8]:>15.2f} "
                     f"{PAPER_FPS[architecture]:>9.0f}")
        del model
    ratio_b1 = fps["fast_yolo"][0] / fps["yolo"][0]
    ratio_b8 = fps["fast_yolo"][1] / fps["yolo"][1]
    lines += ["", f"Fast YOLO / YOLO images/s: batch 1 {ratio_b1:.2f}x, batch 8 {ratio_b8:.2f}x "
              f"(paper, Titan X, batch 1: {PAPER_FPS['fast_yolo'] / PAPER_FPS['yolo']:.2f}x)",
              "post %: the decode + NMS stage's share of the three stages' median times "
              "(goal <= 5%); worst: at score threshold 0."]
    text = "\n".join(lines)
    print(text)
    if args.save:
        out = Path(__file__).resolve().parent / "results" / f"yolo_speed_{args.device}.txt"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
        print(f"\nwritten to {out}")
    return text


if __name__ == "__main__":
    main()
