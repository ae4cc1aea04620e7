"""SSD300's post-processing: the one-call NMS (``detectors.topk_nms``) against the class-by-class
NMS it replaced, side by side in one process, and its share of the eval forward at batch 8.

    python benchmarks/ssd_postprocess_speed.py [--batch 8] [--repeats 7] [--clock wall|thread]
        [--weights RUN_DIR] [--save]

``--clock thread`` times with the calling thread's CPU time (``time.thread_time``) and runs torch
on that one thread: on a machine shared with other jobs it counts the work done, not the time
spent waiting for a core (wall-clock shares there are mostly the scheduler's). All three stages
use the same clock, so the shares stay comparable.

Two kinds of network output, both for SSD300 (8732 default boxes, VOC's 20 classes):
``random``: the full-width network with random weights on noise images (near-uniform class
scores: every class keeps 400 candidates above 0.01, NMS at its slowest); ``trained-like``:
logits where background wins almost everywhere and 40 boxes per image score one class highly
(a stand-in with VOC's 20 classes); ``5 classes``: compare's 5 classes, every box regressed onto one
of 6 objects per image, so NMS keeps few of many candidates (the case where a growing fused prefix
was 3-4x slower than class by class; one round then class by class now); with ``--weights RUN_DIR``
a fourth row, ``trained``: the outputs of a trained SSD run (e.g. experiment=compare's ssd300_cpu:
1/8 width, 5 classes, its own score threshold and NMS settings) on synthetic validation images,
post-processed by that model.
Post-processing depends on the outputs only (8732 boxes x classes), so every share is against the
full-width network timed in this run; the trained row also gives its share of its own (reduced)
network. The share is post-processing over preprocess + network + post-processing.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision.ops import nms

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from detectors.boxes import decode, encode  # noqa: E402
from detectors.ssd import SSD  # noqa: E402
from experiments.data.synthetic import SyntheticShapes  # noqa: E402
from experiments.inference.run_loader import load_detector  # noqa: E402
from experiments.job.identity import device_name  # noqa: E402


def reference_postprocess(model: SSD, loc, conf, original_sizes):
    """SSD's post-processing before ``topk_nms``: per image, NMS class by class on each class's
    sorted candidates above the threshold, then the best ``max_detections`` over all classes."""
    h, w = model.input_size
    scores = F.softmax(conf, dim=-1)[..., 1:].transpose(1, 2)
    boxes = (decode(loc, model.priors, model.variances) * loc.new_tensor([w, h, w, h])).clamp(min=0)
    boxes = torch.minimum(boxes, boxes.new_tensor([w, h, w, h]))
    k = min(model.candidates_before_nms or scores.shape[2], scores.shape[2])
    top_scores, top_index = scores.topk(k, dim=2)
    counts = (top_scores > model.score_thresh).sum(dim=2).tolist()
    detections = []
    for i, (oh, ow) in enumerate(original_sizes):
        candidates = boxes[i].index_select(0, top_index[i].reshape(-1))
        flat_scores = top_scores[i].reshape(-1)
        kept = [c * k + nms(candidates[c * k: c * k + n], flat_scores[c * k: c * k + n], model.nms_thresh)
                for c, n in enumerate(counts[i]) if n > 0]
        kept = torch.cat(kept) if kept else top_index.new_zeros(0)
        kept_scores = flat_scores.index_select(0, kept)
        order = kept_scores.argsort(descending=True)[: model.max_detections]
        kept, kept_scores = kept[order], kept_scores[order]
        scale = boxes.new_tensor([ow / w, oh / h, ow / w, oh / h])
        detections.append({"boxes": candidates[kept] * scale, "scores": kept_scores, "labels": kept // k + 1})
    return detections


def trained_like_logits(num_images: int, num_priors: int, num_classes: int, generator):
    """Background wins almost everywhere; 40 boxes per image score one class highly."""
    conf = torch.randn(num_images, num_priors, num_classes + 1, generator=generator)
    conf[..., 0] += 9
    for i in range(num_images):
        hot = torch.randint(0, num_priors, (40,), generator=generator)
        conf[i, hot, torch.randint(1, num_classes + 1, (40,), generator=generator)] += 10
    return conf


def few_classes_outputs(num_images: int, generator):
    """(model, offsets, logits) like compare's trained SSD300: 5 classes, every box regressed
    onto one of 6 objects per image (NMS keeps about 30 of 2000 candidates), 1 in 3 boxes or more
    above the score threshold in every class."""
    model = SSD(5).eval()
    corner = torch.rand(num_images, 6, 2, generator=generator) * 0.6
    objects = torch.cat([corner, corner + 0.1 + torch.rand(num_images, 6, 2, generator=generator) * 0.3], -1)
    owner = torch.randint(0, 6, (num_images, model.priors.shape[0]), generator=generator)
    target = objects[torch.arange(num_images)[:, None], owner]
    target = target + torch.randn(target.shape, generator=generator) * 0.01
    offsets = torch.stack([encode(t, model.priors, model.variances) for t in target])
    logits = torch.randn(num_images, model.priors.shape[0], 6, generator=generator)
    logits[..., 0] += 5
    return model, offsets, logits


def trained_outputs(weights: str, num_images: int, repeats: int):
    """(model, batch, sizes, offsets, logits, network ms) of a trained SSD run on the first
    ``num_images`` synthetic validation images at its input size."""
    loaded = load_detector(weights, torch.device("cpu"))
    model = loaded.model
    if not isinstance(model, SSD):
        raise SystemExit(f"--weights {weights}: a {type(model).__name__} run, not an SSD")
    images = [image for image, _ in SyntheticShapes(num_images, split="val")]
    batch = model.preprocess(images)
    net_ms = median_ms(lambda: model.network(batch), max(1, repeats // 2))
    offsets, logits = model.network(batch)
    return model, batch, [tuple(image.shape[1:]) for image in images], offsets, logits, net_ms


CLOCK = {"wall": time.perf_counter, "thread": time.thread_time}
clock = time.perf_counter


def median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = clock()
        fn()
        times.append(clock() - start)
    return statistics.median(times) * 1e3


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=7, help="timed calls per variant (median)")
    parser.add_argument("--clock", choices=sorted(CLOCK), default="wall")
    parser.add_argument("--weights", help="a trained SSD run folder or checkpoint: adds the 'trained' row")
    parser.add_argument("--save", action="store_true", help="write benchmarks/results/ssd_postprocess_cpu_<clock>.txt")
    args = parser.parse_args(argv)
    global clock
    clock = CLOCK[args.clock]
    if args.clock == "thread":
        torch.set_num_threads(1)
    torch.manual_seed(0)
    model = SSD(20).eval()
    images = [torch.rand(3, 300, 300) for _ in range(args.batch)]
    sizes = [(300, 300)] * args.batch
    load_start = os.getloadavg()[0]
    with torch.inference_mode():
        batch = model.preprocess(images)
        pre_ms = median_ms(lambda: model.preprocess(images), args.repeats)
        net_ms = median_ms(lambda: model.network(batch), max(1, args.repeats // 2))
        loc, conf = model.network(batch)
        outputs = {"random": (model, batch, sizes, loc, conf, None),
                   "trained-like": (model, batch, sizes, loc, trained_like_logits(
                       args.batch, loc.shape[1], 20, torch.Generator().manual_seed(1)), None)}
        few_model, few_offsets, few_logits = few_classes_outputs(args.batch, torch.Generator().manual_seed(2))
        outputs["5 classes"] = (few_model, few_model.preprocess(images), sizes, few_offsets, few_logits, None)
        if args.weights:
            outputs["trained"] = trained_outputs(args.weights, args.batch, args.repeats)
        lines = [f"SSD300 post-processing, batch {args.batch}, {device_name('cpu')}, torch {torch.__version__}; "
                 f"{args.clock} clock, median of {args.repeats} calls; load average {load_start:.1f} at the start and "
                 f"{os.getloadavg()[0]:.1f} at the end on {os.cpu_count()} CPUs",
                 f"preprocess {pre_ms:.2f} ms, network {net_ms:.1f} ms (random full-width weights)", "",
                 f"{'outputs':<13} {'kept/img':>8} {'old ms':>8} {'new ms':>8} {'new/old':>8} "
                 f"{'old %':>7} {'new %':>7}"]
        for kind, (model, batch, sizes, offsets, logits, own_net_ms) in outputs.items():
            new = model.postprocess((offsets, logits), batch)
            old = reference_postprocess(model, offsets, logits, sizes)
            same = all(torch.equal(a["boxes"], b["boxes"]) and torch.equal(a["scores"], b["scores"])
                       and torch.equal(a["labels"], b["labels"]) for a, b in zip(new, old))
            old_ms, new_ms = [], []
            for _ in range(args.repeats):  # alternate, so contention hits both alike
                old_ms.append(median_ms(lambda m=model, o=offsets, c=logits, s=sizes: reference_postprocess(m, o, c, s),
                                        1))
                new_ms.append(median_ms(lambda m=model, o=offsets, c=logits, b=batch: m.postprocess((o, c), b), 1))
            o, n = statistics.median(old_ms), statistics.median(new_ms)
            kept = sum(len(d["scores"]) for d in new) / len(new)
            lines.append(f"{kind:<13} {kept:>8.1f} {o:>8.2f} {n:>8.2f} {n / o:>8.3f} "
                         f"{100 * o / (pre_ms + net_ms + o):>7.2f} {100 * n / (pre_ms + net_ms + n):>7.2f}"
                         f"{'' if same else '  DETECTIONS DIFFER'}"
                         + ("" if own_net_ms is None else
                            f"   (of its own {own_net_ms:.1f} ms network: old {100 * o / (pre_ms + own_net_ms + o):.2f}"
                            f" %, new {100 * n / (pre_ms + own_net_ms + n):.2f} %)"))
    lines.append(f"(load average {os.getloadavg()[0]:.1f} at the end)")
    text = "\n".join(lines)
    print(text)
    if args.save:
        (ROOT / "benchmarks" / "results" / f"ssd_postprocess_cpu_{args.clock}.txt").write_text(text + "\n")
    return text


if __name__ == "__main__":
    main()
