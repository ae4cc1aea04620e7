"""detbench SSD300 against torchvision's ssd300_vgg16: same process, same weights, same inputs.

torchvision's model is built with seeded random weights (no download) and detbench's SSD300
loads them through ``detectors.ssd_convert``, so both run the same network and return the same
detections; what differs is the code around it (pre-processing, decoding, NMS, the loss).
Timings alternate between the two models, repeat, and report medians:

- inference end to end (list of [0, 1] images in, detections out), batch 1 and 8;
- the share of detbench's time spent in ``postprocess`` (softmax, decoding, NMS), and the same
  share for torchvision (``postprocess_detections`` + mapping boxes back);
- a training step (forward, loss, backward), batch 1 and 8.

Ratios are detbench images/s over torchvision images/s (> 1: detbench is faster).

    python benchmarks/ssd_vs_torchvision.py [--device cpu|cuda] [--repeats 5] [--threads N] [--contiguous] [--save]

``--save`` writes the printed report to benchmarks/results/ssd_vs_torchvision_<device>.txt
(``..._<device>_contiguous.txt`` with ``--contiguous``).
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch
import torchvision

from detectors.ssd_convert import ssd300_from_torchvision
from experiments.job.identity import device_name, synchronize

RESULTS = Path(__file__).resolve().parent / "results"


def timed(fn, device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def make_inputs(batch: int, device: torch.device, seed: int):
    """Images of mixed sizes (so both models resize) and one or two boxes per image."""
    g = torch.Generator().manual_seed(seed)
    sizes = [(300, 300), (375, 500), (480, 640), (333, 333)]
    images, targets = [], []
    for i in range(batch):
        h, w = sizes[i % len(sizes)]
        images.append(torch.rand(3, h, w, generator=g).to(device))
        n = 1 + i % 2
        xy = torch.rand(n, 2, generator=g) * torch.tensor([w / 2, h / 2])
        wh = 20 + torch.rand(n, 2, generator=g) * torch.tensor([w / 2 - 20, h / 2 - 20])
        targets.append({"boxes": torch.cat([xy, xy + wh], 1).to(device),
                        "labels": torch.randint(1, 21, (n,), generator=g).to(device),
                        "image_id": i, "area": (wh[:, 0] * wh[:, 1]).to(device),
                        "iscrowd": torch.zeros(n, dtype=torch.int64, device=device)})
    return images, targets


def torchvision_postprocess_seconds(model, images, device) -> tuple[float, float]:
    """(total, decode + NMS + map back) seconds of one torchvision eval forward, run stage by stage."""
    with torch.no_grad():
        original_sizes = [tuple(im.shape[-2:]) for im in images]
        start = time.perf_counter()
        image_list, _ = model.transform(images)
        features = list(model.backbone(image_list.tensors).values())
        head = model.head(features)
        anchors = model.anchor_generator(image_list, features)
        synchronize(device)
        middle = time.perf_counter()
        detections = model.postprocess_detections(head, anchors, image_list.image_sizes)
        model.transform.postprocess(detections, image_list.image_sizes, original_sizes)
        synchronize(device)
        end = time.perf_counter()
    return end - start, end - middle


def detbench_postprocess_seconds(model, images, device) -> tuple[float, float]:
    with torch.no_grad():
        synchronize(device)
        start = time.perf_counter()
        batch = model.preprocess(images)
        outputs = model.network(batch)
        synchronize(device)
        middle = time.perf_counter()
        model.postprocess(outputs, batch)
        synchronize(device)
        end = time.perf_counter()
    return end - start, end - middle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per model and setting (median)")
    parser.add_argument("--num-classes", type=int, default=21, help="torchvision's count, background included")
    parser.add_argument("--contiguous", action="store_true",
                        help="detbench in NCHW like torchvision (default: its channels_last setting)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--save", action="store_true", help="write the report to benchmarks/results/")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device visible")

    torch.manual_seed(0)
    reference = torchvision.models.detection.ssd300_vgg16(weights=None, weights_backbone=None,
                                                          num_classes=args.num_classes).to(device)
    ours = ssd300_from_torchvision(reference, channels_last=not args.contiguous).to(device)
    lines = [f"detbench SSD300 vs torchvision ssd300_vgg16 ({args.num_classes} classes incl. background, random "
             f"seeded weights shared through detectors.ssd_convert)",
             f"device: {args.device} ({device_name(device)}), torch {torch.__version__}, "
             f"torchvision {torchvision.__version__}, "
             f"detbench channels_last {ours.channels_last}, threads {torch.get_num_threads()}, "
             f"repeats {args.repeats} (median), inputs of mixed sizes, "
             f"load average at start {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs",
             ""]

    def report(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    for line in lines:
        print(line, flush=True)
    report(f"{'setting':<24}{'torchvision img/s':>18}{'detbench img/s':>16}{'ratio':>8}")
    for mode in ("inference", "training step"):
        for batch_size in (1, 8):
            images, targets = make_inputs(batch_size, device, seed=batch_size)
            if mode == "inference":
                reference.eval(), ours.eval()

                def run_reference(images=images):
                    with torch.no_grad():
                        reference(images)

                def run_ours(images=images):
                    with torch.no_grad():
                        ours(images)
            else:
                reference.train(), ours.train()

                def run_reference(images=images, targets=targets):
                    sum(reference(images, targets).values()).backward()

                def run_ours(images=images, targets=targets):
                    sum(ours(images, targets).values()).backward()
            run_reference(), run_ours()                                  # warm-up
            times = {"tv": [], "ours": []}
            for _ in range(args.repeats):
                times["tv"].append(timed(run_reference, device))
                times["ours"].append(timed(run_ours, device))
            reference.zero_grad(set_to_none=True), ours.zero_grad(set_to_none=True)
            tv_rate = batch_size / statistics.median(times["tv"])
            our_rate = batch_size / statistics.median(times["ours"])
            report(f"{mode + f', batch {batch_size}':<24}{tv_rate:>18.2f}{our_rate:>16.2f}{our_rate / tv_rate:>8.2f}")

    report("")
    report("share of inference time in decoding + NMS (+ mapping boxes back), median:")
    reference.eval(), ours.eval()
    for batch_size in (1, 8):
        images, _ = make_inputs(batch_size, device, seed=batch_size)
        shares = {"tv": [], "ours": [], "tv_ms": [], "ours_ms": []}
        for _ in range(args.repeats):
            total, post = torchvision_postprocess_seconds(reference, images, device)
            shares["tv"].append(post / total), shares["tv_ms"].append(1000 * post / batch_size)
            total, post = detbench_postprocess_seconds(ours, images, device)
            shares["ours"].append(post / total), shares["ours_ms"].append(1000 * post / batch_size)
        m = {k: statistics.median(v) for k, v in shares.items()}
        report(f"  batch {batch_size}: detbench {100 * m['ours']:.1f}% ({m['ours_ms']:.1f} ms/image), "
               f"torchvision {100 * m['tv']:.1f}% ({m['tv_ms']:.1f} ms/image)")

    if args.save:
        RESULTS.mkdir(parents=True, exist_ok=True)
        path = RESULTS / f"ssd_vs_torchvision_{args.device}{'_contiguous' if args.contiguous else ''}.txt"
        path.write_text("\n".join(lines) + "\n")
        print(f"written to {path}")


if __name__ == "__main__":
    main()
