"""The evaluator against pycocotools itself: generated splits with seeded perturbations, the
ground truth scored against itself, real COCO data (coco_tiny, when present), edge cases."""
from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from experiments.evaluation import BACKENDS, COCO_METRICS, METRICS, PER_CLASS_COLUMNS, evaluate, score_tables
from experiments.evaluation.coco_backends import _faster_coco_eval_standard
from experiments.evaluation.scoring import gather_to_rank0
from experiments.evaluation.tables import tables_from_coco

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
HEIGHT, WIDTH = 480, 640
CLASS_NAMES = ["cat", "dog", "car", "bus", "cup"]
LABEL_TO_CATEGORY = {1: 11, 2: 3, 3: 42, 4: 7, 5: 20}  # label order differs from id order


def quarter(x):
    """Round to a quarter pixel: exact in float32, so tensors and JSON hold the same numbers."""
    return np.round(np.asarray(x, dtype=np.float64) * 4) / 4


def make_split(seed: int, num_images: int = 30, with_detections: bool = True):
    """A generated split and seeded perturbations of it, as detbench tensors and as COCO JSON.

    Objects: 0-9 per image, sides 3-400 px (all three size buckets), 5% crowd, 10% difficult.
    Detections: each object dropped (15%) or found with box jitter, sometimes twice (a
    duplicate), sometimes with a wrong class; plus background boxes; random scores on a coarse
    grid, so that ties occur. Returns (targets, detections, sizes, gt_json, results_json).
    """
    rng = np.random.default_rng(seed)
    targets, detections, images, annotations, results = [], [], [], [], []
    for i in range(num_images):
        image_id = 5 + 7 * i
        images.append({"id": image_id, "height": HEIGHT, "width": WIDTH})
        n = int(rng.integers(0, 10)) if i % 10 else 0  # every tenth image has no objects
        wh = quarter(np.exp(rng.uniform(np.log(3), np.log(400), (n, 2))))
        wh = np.minimum(wh, [WIDTH - 1, HEIGHT - 1])
        xy = quarter(rng.uniform(0, 1, (n, 2)) * ([WIDTH, HEIGHT] - wh))
        labels = rng.integers(1, 6, n)
        area = quarter(wh.prod(axis=1) * rng.uniform(0.6, 1.0, n))
        crowd, difficult = rng.random(n) < 0.05, rng.random(n) < 0.1
        targets.append({"boxes": torch.tensor(np.c_[xy, xy + wh], dtype=torch.float32).reshape(n, 4),
                        "labels": torch.tensor(labels, dtype=torch.int64), "image_id": image_id,
                        "area": torch.tensor(area, dtype=torch.float32),
                        "iscrowd": torch.tensor(crowd, dtype=torch.int64),
                        "difficult": torch.tensor(difficult)})
        for k in range(n):
            annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                "category_id": LABEL_TO_CATEGORY[int(labels[k])],
                                "bbox": [*xy[k].tolist(), *wh[k].tolist()], "area": float(area[k]),
                                "iscrowd": int(crowd[k])})
        boxes, det_labels = [], []
        for k in range(n if with_detections else 0):
            if rng.random() < 0.15:
                continue  # dropped
            for _ in range(2 if rng.random() < 0.2 else 1):  # duplicated
                jxy = quarter(xy[k] + rng.normal(0, 0.1, 2) * wh[k])
                jwh = np.maximum(quarter(wh[k] * np.exp(rng.normal(0, 0.15, 2))), 0.25)
                boxes.append(np.r_[jxy, jxy + jwh])
                det_labels.append(int(rng.integers(1, 6)) if rng.random() < 0.15 else int(labels[k]))
        for _ in range(int(rng.integers(0, 6)) if with_detections else 0):  # background
            bwh = quarter(rng.uniform(2, 200, 2))
            bxy = quarter(rng.uniform(0, 1, 2) * ([WIDTH, HEIGHT] - bwh))
            boxes.append(np.r_[bxy, bxy + bwh])
            det_labels.append(int(rng.integers(1, 6)))
        scores = rng.integers(0, 33, len(boxes)) / 32  # coarse: ties
        boxes = np.array(boxes, dtype=np.float64).reshape(-1, 4)
        detections.append({"boxes": torch.tensor(boxes, dtype=torch.float32),
                           "scores": torch.tensor(scores, dtype=torch.float32),
                           "labels": torch.tensor(det_labels, dtype=torch.int64)})
        for b, s, label in zip(boxes, scores, det_labels):
            results.append({"image_id": image_id, "category_id": LABEL_TO_CATEGORY[label],
                            "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "score": float(s)})
    categories = [{"id": c, "name": CLASS_NAMES[label - 1]} for label, c in LABEL_TO_CATEGORY.items()]
    gt_json = {"images": images, "annotations": annotations, "categories": categories}
    return targets, detections, [(HEIGHT, WIDTH)] * num_images, gt_json, results


def pycocotools_reference(gt_json: dict, results: list[dict]) -> COCOeval:
    """Plain pycocotools on the JSON (copies: it annotates the dicts in place)."""
    gt_json = json.loads(json.dumps(gt_json))
    results = json.loads(json.dumps(results))
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt_json
        coco_gt.createIndex()
        if results:
            coco_dt = coco_gt.loadRes(results)
        else:
            coco_dt = COCO()
            coco_dt.dataset = {**gt_json, "annotations": []}
            coco_dt.createIndex()
        evaluator = COCOeval(coco_gt, coco_dt, "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator


def assert_same_as_pycocotools(result, reference: COCOeval, category_ids_in_label_order) -> None:
    ours = np.array([result.metrics[name] for name in COCO_METRICS])
    theirs = np.where(reference.stats > -1, reference.stats, np.nan)
    assert np.array_equal(np.isnan(ours), np.isnan(theirs)), (ours, theirs)
    assert np.nanmax(np.abs(ours - theirs), initial=0.0) <= 1e-12
    to_label_order = np.argsort(np.argsort(category_ids_in_label_order))
    assert np.abs(result.precision - reference.eval["precision"][:, :, to_label_order]).max() <= 1e-12
    assert np.abs(result.recall - reference.eval["recall"][:, to_label_order]).max() <= 1e-12


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_perturbed_detections_give_pycocotools_numbers(backend, seed):
    targets, detections, sizes, gt_json, results = make_split(seed)
    result = evaluate(detections, targets, CLASS_NAMES, sizes, LABEL_TO_CATEGORY, backend=backend)
    reference = pycocotools_reference(gt_json, results)
    assert_same_as_pycocotools(result, reference, list(LABEL_TO_CATEGORY.values()))
    assert 0.05 < result.metrics["map"] < 0.95  # a real mix of hits and misses, not a corner
    # per-class AP is pycocotools' precision averaged over one class, in label order
    precision = reference.eval["precision"]
    for row in result.per_class.itertuples():
        k = sorted(LABEL_TO_CATEGORY.values()).index(row.category_id)
        defined = precision[:, :, k, 0, -1][precision[:, :, k, 0, -1] > -1]
        assert row.ap == pytest.approx(defined.mean(), abs=1e-12)
        assert row.class_name == CLASS_NAMES[row.label - 1]


def test_faster_coco_eval_standard_path_matches():
    """The fallback (faster-coco-eval used the usual way) agrees too."""
    targets, detections, sizes, gt_json, results = make_split(3)
    reference = pycocotools_reference(gt_json, results)
    precision, recall, stats = _faster_coco_eval_standard(json.loads(json.dumps(gt_json)),
                                                          json.loads(json.dumps(results)))
    assert np.abs(stats - reference.stats).max() <= 1e-12
    assert np.abs(precision - reference.eval["precision"]).max() <= 1e-12


@pytest.mark.parametrize("backend", BACKENDS)
def test_ground_truth_scored_against_itself_is_perfect(backend):
    targets, _, sizes, _, _ = make_split(4)
    detections = [{"boxes": t["boxes"][t["iscrowd"] == 0], "labels": t["labels"][t["iscrowd"] == 0],
                   "scores": torch.ones(int((t["iscrowd"] == 0).sum()))} for t in targets]
    result = evaluate(detections, targets, CLASS_NAMES, sizes, LABEL_TO_CATEGORY, backend=backend)
    for name in METRICS:
        if name != "mar_1":  # one detection per image and class cannot recall two objects
            assert result.metrics[name] == pytest.approx(1.0, abs=1e-12), name
    assert 0.5 < result.metrics["mar_1"] < 1.0
    assert np.allclose(result.per_class[["ap", "ap_50", "voc07_ap", "voc_ap"]].to_numpy(), 1.0)


def test_real_coco_tiny_val_matches_pycocotools():
    annotation_file = DATA / "coco_tiny" / "annotations" / "instances_val2017.json"
    if not annotation_file.exists():
        pytest.skip(f"real data not found at {annotation_file}")
    gt_json = json.loads(annotation_file.read_text())
    rng = np.random.default_rng(0)
    results = []
    for ann in gt_json["annotations"]:
        if rng.random() < 0.2:
            continue
        x, y, w, h = ann["bbox"]
        results.append({"image_id": ann["image_id"], "score": float(np.float32(rng.random())),
                        "category_id": ann["category_id"] if rng.random() > 0.1
                        else int(rng.choice([c["id"] for c in gt_json["categories"]])),
                        "bbox": [x + rng.normal(0, 0.1) * w, y + rng.normal(0, 0.1) * h,
                                 w * np.exp(rng.normal(0, 0.2)), h * np.exp(rng.normal(0, 0.2))]})
    reference = pycocotools_reference(gt_json, results)
    assert 0.1 < reference.stats[0] < 0.9
    # from the JSON files (detbench-eval's path): the very same numbers
    gt, dt, categories = tables_from_coco(gt_json, results)
    for backend in BACKENDS:
        result = score_tables(gt, dt, categories, backend)
        assert_same_as_pycocotools(result, reference, [c for c, _ in categories])

    # from tensors (a dataset's float32 targets): labels 1..80 in category-id order
    label_of = {c["id"]: i + 1 for i, c in enumerate(sorted(gt_json["categories"], key=lambda c: c["id"]))}
    by_image = {im["id"]: ([], []) for im in gt_json["images"]}
    for ann in gt_json["annotations"]:
        by_image[ann["image_id"]][0].append(ann)
    for r in results:
        by_image[r["image_id"]][1].append(r)
    targets, detections = [], []
    xyxy = lambda b: [b[0], b[1], b[0] + b[2], b[1] + b[3]]  # noqa: E731
    for image_id, (anns, dets) in by_image.items():
        targets.append({"boxes": torch.tensor([xyxy(a["bbox"]) for a in anns], dtype=torch.float32).reshape(-1, 4),
                        "labels": torch.tensor([label_of[a["category_id"]] for a in anns], dtype=torch.int64),
                        "image_id": image_id, "area": torch.tensor([a["area"] for a in anns], dtype=torch.float32),
                        "iscrowd": torch.tensor([a["iscrowd"] for a in anns], dtype=torch.int64)})
        detections.append({"boxes": torch.tensor([xyxy(d["bbox"]) for d in dets], dtype=torch.float32).reshape(-1, 4),
                           "labels": torch.tensor([label_of[d["category_id"]] for d in dets], dtype=torch.int64),
                           "scores": torch.tensor([d["score"] for d in dets], dtype=torch.float32)})
    sizes = [(im["height"], im["width"]) for im in gt_json["images"]]
    names = [c["name"] for c in sorted(gt_json["categories"], key=lambda c: c["id"])]
    result = evaluate(detections, targets, names, sizes, {v: k for k, v in label_of.items()})
    assert_same_as_pycocotools(result, reference, sorted(label_of))  # float32 boxes: same matches


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_detections_and_images_without_objects(backend):
    targets, detections, sizes, gt_json, results = make_split(5, num_images=12, with_detections=False)
    assert all(len(d["scores"]) == 0 for d in detections) and not results
    result = evaluate(detections, targets, CLASS_NAMES, sizes, LABEL_TO_CATEGORY, backend=backend)
    assert_same_as_pycocotools(result, pycocotools_reference(gt_json, results), list(LABEL_TO_CATEGORY.values()))
    assert result.metrics["map"] == 0.0 and result.metrics["voc_map"] == 0.0


def test_class_without_objects_is_nan_and_never_averaged():
    targets, detections, sizes, gt_json, results = make_split(6)
    for t in targets:  # remove every "bus" (label 4) object, keep detections of it
        keep = t["labels"] != 4
        for key in ("boxes", "labels", "area", "iscrowd", "difficult"):
            t[key] = t[key][keep]
    gt_json["annotations"] = [a for a in gt_json["annotations"] if a["category_id"] != LABEL_TO_CATEGORY[4]]
    for backend in BACKENDS:
        result = evaluate(detections, targets, CLASS_NAMES, sizes, LABEL_TO_CATEGORY, backend=backend)
        assert_same_as_pycocotools(result, pycocotools_reference(gt_json, results), list(LABEL_TO_CATEGORY.values()))
        bus = result.per_class.set_index("class_name").loc["bus"]
        assert bus.num_gt == 0 and all(math.isnan(bus[c]) for c in ("ap", "ap_50", "voc07_ap", "voc_ap"))
        others = result.per_class[result.per_class.class_name != "bus"]
        assert result.metrics["voc_map"] == pytest.approx(others.voc_ap.mean(), abs=1e-15)
        assert result.metrics["map"] == pytest.approx(others.ap.mean(), abs=1e-12)


def test_no_images_gives_undefined_metrics():
    result = evaluate([], [], CLASS_NAMES, [], LABEL_TO_CATEGORY)
    assert all(math.isnan(result.metrics[name]) for name in METRICS)
    assert result.precision.shape == (10, 101, 5, 4, 3) and (result.precision == -1).all()
    assert list(result.per_class.columns) == list(PER_CLASS_COLUMNS)


@pytest.mark.parametrize("breakage, message", [
    ("nan_box", r"detections\[2\] \(image_id 19\): box 1 has NaN"),
    ("inverted_box", r"detections\[2\] \(image_id 19\): box 0 is inverted"),
    ("unknown_label", r"detections\[2\] \(image_id 19\): box 1 has label 9, not a known class"),
    ("score_above_one", r"detections\[2\] \(image_id 19\): box 0 has score 1.5 outside \[0, 1\]"),
    ("negative_score", r"detections\[2\] \(image_id 19\): box 1 has score -0.25"),
    ("target_unknown_label", r"targets\[1\] \(image_id 12\): box 0 has label 0, not a known class"),
    ("target_nan_area", r"targets\[1\] \(image_id 12\): box 0 has area nan"),
    ("repeated_image", r"targets\[3\]: image_id 19 repeats targets\[2\]"),
    ("missing_scores", r"detections\[2\] \(image_id 19\): missing key 'scores'"),
    ("scores_shape", r"detections\[2\] \(image_id 19\): scores must be \[2\]"),
    ("too_few_sizes", r"4 detections, 4 targets and 3 image sizes"),
    ("missing_image_id", r"targets\[0\]: image_id must be an int, got None"),
    ("inverted_target", r"targets\[1\] \(image_id 12\): box 0 is inverted \(x2 < x1 or y2 < y1\): "
                        r"x1 y1 x2 y2 = \[1.0, 2.0, 0.5, 40.0\]"),
])
def test_bad_input_names_the_entry(breakage, message):
    targets, detections, sizes, _, _ = make_split(7, num_images=4)
    targets[1] = {**targets[1], "boxes": torch.tensor([[1.0, 2.0, 30.0, 40.0]]), "labels": torch.tensor([1]),
                  "area": torch.tensor([1000.0]), "iscrowd": torch.tensor([0]), "difficult": torch.tensor([False])}
    detections[2] = {"boxes": torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]]),
                     "scores": torch.tensor([0.5, 0.25]), "labels": torch.tensor([1, 2])}
    d, t = detections[2], targets[1]
    if breakage == "nan_box":
        d["boxes"][1, 2] = float("nan")
    elif breakage == "inverted_box":
        d["boxes"][0] = torch.tensor([10.0, 2.0, 3.0, 4.0])
    elif breakage == "unknown_label":
        d["labels"][1] = 9
    elif breakage == "score_above_one":
        d["scores"][0] = 1.5
    elif breakage == "negative_score":
        d["scores"][1] = -0.25
    elif breakage == "target_unknown_label":
        t["labels"][0] = 0
    elif breakage == "target_nan_area":
        t["area"][0] = float("nan")
    elif breakage == "repeated_image":
        targets[3]["image_id"] = targets[2]["image_id"]
    elif breakage == "missing_scores":
        del d["scores"]
    elif breakage == "scores_shape":
        d["scores"] = torch.tensor([0.5])
    elif breakage == "too_few_sizes":
        sizes = sizes[:3]
    elif breakage == "missing_image_id":
        del targets[0]["image_id"]
    elif breakage == "inverted_target":
        t["boxes"][0, 2] = 0.5
    with pytest.raises(ValueError, match=message):
        evaluate(detections, targets, CLASS_NAMES, sizes, LABEL_TO_CATEGORY)


def test_label_map_must_cover_the_classes():
    targets, detections, sizes, _, _ = make_split(8, num_images=2)
    with pytest.raises(ValueError, match="must map exactly the labels 1..5"):
        evaluate(detections, targets, CLASS_NAMES, sizes, {1: 1, 2: 2})
    with pytest.raises(ValueError, match="unknown eval backend 'fast'"):
        evaluate(detections, targets, CLASS_NAMES, sizes, LABEL_TO_CATEGORY, backend="fast")


def test_gather_to_rank0_without_and_with_a_process_group(tmp_path):
    items = [{"boxes": torch.zeros(1, 4)}, 3]
    assert gather_to_rank0(items) == items  # not distributed: unchanged
    import torch.distributed as dist
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        gathered = gather_to_rank0(items)
    finally:
        dist.destroy_process_group()
    assert gathered[1] == 3 and torch.equal(gathered[0]["boxes"], items[0]["boxes"])


def _ddp_rank(rank: int, world_size: int, store: str, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world_size)
    try:
        targets, detections, sizes, _, _ = make_split(9)
        mine = list(zip(detections, targets, sizes))[rank::world_size]  # a DistributedSampler's share
        gathered = gather_to_rank0(mine)
        if rank == 0:
            d, t, s = zip(*gathered)
            result = evaluate(list(d), list(t), CLASS_NAMES, list(s), LABEL_TO_CATEGORY)
            Path(out).write_text(json.dumps(result.metrics))
        else:
            assert gathered is None
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_predictions_from_two_ranks_score_like_one_process(tmp_path):
    torch.multiprocessing.spawn(_ddp_rank, args=(2, str(tmp_path / "store"), str(tmp_path / "m.json")), nprocs=2)
    targets, detections, sizes, _, _ = make_split(9)
    single = evaluate(detections, targets, CLASS_NAMES, sizes, LABEL_TO_CATEGORY).metrics
    gathered = json.loads((tmp_path / "m.json").read_text())
    assert json.dumps(gathered) == json.dumps(single)  # another image order, the same numbers


@pytest.mark.parametrize("backend", BACKENDS)
def test_numbers_do_not_depend_on_the_image_order(backend):
    targets, detections, sizes, _, _ = make_split(10)
    metrics = evaluate(detections, targets, CLASS_NAMES, sizes, LABEL_TO_CATEGORY, backend=backend).metrics
    shuffled = np.random.default_rng(0).permutation(len(targets))
    again = evaluate([detections[i] for i in shuffled], [targets[i] for i in shuffled], CLASS_NAMES,
                     [sizes[i] for i in shuffled], LABEL_TO_CATEGORY, backend=backend).metrics
    assert json.dumps(again) == json.dumps(metrics)
