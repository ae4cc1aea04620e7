"""detbench's evaluator against plain pycocotools on a generated COCO-sized split.

    python benchmarks/eval_speed.py [--images 5000] [--no-standard]

The split: 5000 images of 640x480, 80 classes, about 7 objects per image (Poisson), 1% crowd
regions, and 100 detections per image as a detector's top-100 looks: about 20% of them jittered
copies of an object of the image (its class 9 times in 10, high scores), the rest background
boxes of any class with low scores. Coordinates lie on a quarter-pixel grid, so the float32
tensors detbench reads and the JSON pycocotools reads hold the same numbers.

Each contender runs in its own fresh process (spawned, so memory does not carry over), from its
natural input: pycocotools from the COCO dicts (COCO, loadRes, COCOeval evaluate / accumulate /
summarize), detbench from the tensors (``experiments.evaluation.evaluate``, which also computes
VOC07 / VOC2010+ AP and the per-class table). Printed: wall time, peak memory (the process's
peak resident set above its size before the run), the largest difference between the 12 COCO
numbers, and the speed ratio. Also written to benchmarks/results/eval_speed.json.
Timings on a shared machine are noisy: the ratio, measured in one run, is what counts.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import multiprocessing
import resource
import time
from pathlib import Path

import numpy as np

HEIGHT, WIDTH, NUM_CLASSES = 480, 640, 80


def generate(num_images: int, seed: int = 0, objects_per_image: float = 7.0,
             detections_per_image: int = 100) -> dict[str, np.ndarray]:
    """Flat arrays of a generated split: objects ``gt_*`` and detections ``dt_*`` (x1 y1 x2 y2)."""
    rng = np.random.default_rng(seed)
    quarter = lambda x: np.round(np.asarray(x) * 4) / 4  # noqa: E731  exact in float32
    num_objects = rng.poisson(objects_per_image, num_images)
    n = int(num_objects.sum())
    gt_image = np.repeat(np.arange(num_images), num_objects)
    wh = quarter(np.exp(rng.uniform(np.log(6), np.log(360), (n, 2)))) + 0.25  # sides 6..360 px
    wh = np.minimum(wh, [WIDTH - 1, HEIGHT - 1])
    xy = quarter(rng.uniform(0, 1, (n, 2)) * ([WIDTH, HEIGHT] - wh))
    gt_boxes = np.concatenate([xy, xy + wh], axis=1)
    gt_labels = rng.integers(1, NUM_CLASSES + 1, n)
    gt_area = quarter(wh.prod(axis=1) * rng.uniform(0.5, 1.0, n))  # a segment is smaller than its box
    gt_crowd = rng.random(n) < 0.01

    k = num_images * detections_per_image
    dt_image = np.repeat(np.arange(num_images), detections_per_image)
    first_object = np.cumsum(num_objects) - num_objects
    is_true = (rng.random(k) < 0.2) & (num_objects[dt_image] > 0)
    source = first_object[dt_image] + (rng.random(k) * num_objects[dt_image]).astype(np.int64)
    source = np.where(is_true, source, 0)
    jitter_xy = quarter(xy[source] + rng.normal(0, 0.08, (k, 2)) * wh[source])
    jitter_wh = quarter(wh[source] * np.exp(rng.normal(0, 0.12, (k, 2)))) + 0.25
    random_wh = quarter(np.exp(rng.uniform(np.log(6), np.log(300), (k, 2))))
    random_xy = quarter(rng.uniform(0, 1, (k, 2)) * ([WIDTH, HEIGHT] - random_wh))
    dt_xy = np.where(is_true[:, None], jitter_xy, random_xy)
    dt_wh = np.where(is_true[:, None], jitter_wh, random_wh)
    keep_class = is_true & (rng.random(k) < 0.9)
    dt_labels = np.where(keep_class, gt_labels[source], rng.integers(1, NUM_CLASSES + 1, k))
    dt_scores = np.where(is_true, rng.beta(4, 2, k), rng.beta(1, 6, k)).astype(np.float32)
    return {"num_images": num_images, "gt_image": gt_image, "gt_boxes": gt_boxes, "gt_labels": gt_labels,
            "gt_area": gt_area, "gt_crowd": gt_crowd, "dt_image": dt_image,
            "dt_boxes": np.concatenate([dt_xy, dt_xy + dt_wh], axis=1), "dt_labels": dt_labels,
            "dt_scores": dt_scores}


def as_coco(split: dict) -> tuple[dict, list[dict]]:
    """The split as a COCO ground-truth dict and a COCO results list (image ids 1..I)."""
    images = [{"id": i + 1, "height": HEIGHT, "width": WIDTH} for i in range(split["num_images"])]
    gt_xywh = np.concatenate([split["gt_boxes"][:, :2], split["gt_boxes"][:, 2:] - split["gt_boxes"][:, :2]], 1)
    annotations = [{"id": n + 1, "image_id": i + 1, "category_id": c, "bbox": b, "area": a, "iscrowd": int(z)}
                   for n, (i, c, b, a, z) in enumerate(zip(
                       split["gt_image"].tolist(), split["gt_labels"].tolist(), gt_xywh.tolist(),
                       split["gt_area"].tolist(), split["gt_crowd"].tolist()))]
    dt_xywh = np.concatenate([split["dt_boxes"][:, :2], split["dt_boxes"][:, 2:] - split["dt_boxes"][:, :2]], 1)
    results = [{"image_id": i + 1, "category_id": c, "bbox": b, "score": s}
               for i, c, b, s in zip(split["dt_image"].tolist(), split["dt_labels"].tolist(),
                                     dt_xywh.tolist(), split["dt_scores"].astype(np.float64).tolist())]
    categories = [{"id": c, "name": f"class_{c}"} for c in range(1, NUM_CLASSES + 1)]
    return {"images": images, "annotations": annotations, "categories": categories}, results


def as_tensors(split: dict):
    """The split as detbench's lists of Target and Detection (one per image) and image sizes."""
    import torch

    gt_cut = np.cumsum(np.bincount(split["gt_image"], minlength=split["num_images"]))[:-1]
    dt_cut = np.cumsum(np.bincount(split["dt_image"], minlength=split["num_images"]))[:-1]
    pieces = lambda key, cut: np.split(split[key], cut)  # noqa: E731
    targets = [{"boxes": torch.from_numpy(b.astype(np.float32)), "labels": torch.from_numpy(lab),
                "image_id": i + 1, "area": torch.from_numpy(a.astype(np.float32)),
                "iscrowd": torch.from_numpy(z.astype(np.int64))}
               for i, (b, lab, a, z) in enumerate(zip(pieces("gt_boxes", gt_cut), pieces("gt_labels", gt_cut),
                                                    pieces("gt_area", gt_cut), pieces("gt_crowd", gt_cut)))]
    detections = [{"boxes": torch.from_numpy(b.astype(np.float32)), "scores": torch.from_numpy(s),
                   "labels": torch.from_numpy(lab)}
                  for b, s, lab in zip(pieces("dt_boxes", dt_cut), pieces("dt_scores", dt_cut),
                                     pieces("dt_labels", dt_cut))]
    return detections, targets, [(HEIGHT, WIDTH)] * split["num_images"]


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def run_contender(name: str, num_images: int, queue) -> None:
    """In a fresh process: build the inputs, then time one evaluation and report to ``queue``."""
    split = generate(num_images)
    if name == "detbench":
        from experiments.evaluation import COCO_METRICS, evaluate

        detections, targets, sizes = as_tensors(split)
        class_names = [f"class_{c}" for c in range(1, NUM_CLASSES + 1)]
        start_rss, start = _rss_bytes(), time.perf_counter()
        result = evaluate(detections, targets, class_names, sizes, backend="faster_coco_eval")
        seconds = time.perf_counter() - start
        stats = [result.metrics[m] for m in COCO_METRICS]
        extra = {"voc07_map": result.metrics["voc07_map"], "voc_map": result.metrics["voc_map"]}
    else:
        gt, results = as_coco(split)
        if name == "pycocotools":
            from pycocotools.coco import COCO
            from pycocotools.cocoeval import COCOeval
        else:  # faster-coco-eval used the standard way, for context
            from faster_coco_eval import COCO
            from faster_coco_eval import COCOeval_faster as COCOeval
        start_rss, start = _rss_bytes(), time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            coco_gt = COCO()
            coco_gt.dataset = gt
            coco_gt.createIndex()
            evaluator = COCOeval(coco_gt, coco_gt.loadRes(results), "bbox")
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
        seconds = time.perf_counter() - start
        stats = [float(s) if s > -1 else float("nan") for s in evaluator.stats[:12]]
        extra = {}
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - start_rss
    queue.put({"name": name, "seconds": seconds, "peak_mb": peak / 2**20, "stats": stats,
               "objects": len(split["gt_labels"]), "detections": len(split["dt_scores"]), **extra})


def measure(name: str, num_images: int) -> dict:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=run_contender, args=(name, num_images, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--no-standard", action="store_true",
                        help="skip the context row: faster-coco-eval used the standard way")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "eval_speed.json")
    args = parser.parse_args()

    names = ["pycocotools", "detbench"] + ([] if args.no_standard else ["faster_coco_eval_standard"])
    rows = {name: measure(name, args.images) for name in names}
    reference = np.array(rows["pycocotools"]["stats"])
    print(f"{args.images} images, {rows['detbench']['objects']} objects, "
          f"{rows['detbench']['detections']} detections, {NUM_CLASSES} classes")
    for name, row in rows.items():
        diff = np.abs(np.array(row["stats"]) - reference)
        same_undefined = bool(np.array_equal(np.isnan(row["stats"]), np.isnan(reference)))
        row["max_abs_diff_vs_pycocotools"] = float(np.nanmax(diff)) if np.isfinite(diff).any() else 0.0
        row["same_undefined_stats"] = same_undefined
        print(f"{name:>26}: {row['seconds']:7.2f} s, peak memory +{row['peak_mb']:7.1f} MiB, "
              f"max |stat - pycocotools| = {row['max_abs_diff_vs_pycocotools']:.1e}"
              f"{'' if same_undefined else ' (undefined stats differ!)'}")
    ratio = rows["pycocotools"]["seconds"] / rows["detbench"]["seconds"]
    print(f"AP {rows['detbench']['stats'][0]:.4f}, AP50 {rows['detbench']['stats'][1]:.4f}, "
          f"VOC07 mAP {rows['detbench']['voc07_map']:.4f}, VOC2010+ mAP {rows['detbench']['voc_map']:.4f}")
    print(f"speed ratio detbench / pycocotools: {ratio:.1f}x (same 12 COCO stats: "
          f"{rows['detbench']['max_abs_diff_vs_pycocotools'] <= 1e-12})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"images": args.images, "ratio": ratio, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
