"""The image bootstrap: exactly pycocotools' (and the VOC devkit's) numbers per replicate, paired
comparisons, intervals that shrink with more images, and bad input."""
from __future__ import annotations

import copy

import numpy as np
import pytest

from experiments.evaluation import COCO_METRICS, METRICS, score_tables
from experiments.evaluation.bootstrap import (
    ReplicateScorer,
    bootstrap,
    check_same_images,
    copies,
    paired_bootstrap,
    resample,
)
from experiments.evaluation.tables import tables_from_coco
from tests.test_evaluation import make_split, pycocotools_reference


def split_tables(seed: int, num_images: int = 30, distinct_scores: bool = False):
    """make_split's COCO JSON (coarse scores: ties) -> (gt_json, results, gt, dt, category ids)."""
    *_, gt_json, results = make_split(seed, num_images)
    if distinct_scores:  # no two detections tie: a duplicated image orders them as COCOeval does
        rng = np.random.default_rng(seed + 100)
        for r, s in zip(results, rng.permutation(len(results))):
            r["score"] = float((s + 1) / (len(results) + 1))
    gt, dt, categories = tables_from_coco(gt_json, results)
    return gt_json, results, gt, dt, [c for c, _ in categories]


def replicate_dataset(gt_json: dict, results: list[dict], image_ids: np.ndarray):
    """The dataset made of the replicate's images (ids sorted), each copy renumbered 1..N in that order."""
    by_id = {im["id"]: im for im in gt_json["images"]}
    images, annotations, dets = [], [], []
    for new_id, old_id in enumerate(image_ids.tolist(), start=1):
        images.append({**by_id[old_id], "id": new_id})
        annotations += [{**a, "id": len(annotations) + n + 1, "image_id": new_id}
                        for n, a in enumerate(a for a in gt_json["annotations"] if a["image_id"] == old_id)]
        dets += [{**r, "image_id": new_id} for r in results if r["image_id"] == old_id]
    return {**gt_json, "images": images, "annotations": annotations}, dets


def assert_metrics_equal(ours: dict, theirs: dict, names=METRICS, tol=1e-12):
    for name in names:
        a, b = ours[name], theirs[name]
        assert (np.isnan(a) and np.isnan(b)) or abs(a - b) <= tol, (name, a, b)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_identity_replicate_is_pycocotools_exactly(seed):
    gt_json, results, gt, dt, category_ids = split_tables(seed, num_images=40)  # coarse scores: ties
    scorer = ReplicateScorer(gt, dt, category_ids)
    ours = {k: float(v[0]) for k, v in scorer(np.ones((1, len(gt.image_ids)))).items()}
    reference = pycocotools_reference(gt_json, results).stats
    assert_metrics_equal(ours, {n: (v if v > -1 else np.nan) for n, v in zip(COCO_METRICS, reference)},
                         COCO_METRICS)
    categories = [(c, str(c)) for c in category_ids]
    assert_metrics_equal(ours, score_tables(gt, dt, categories, "pycocotools").metrics)  # VOC too


def test_replicates_equal_pycocotools_on_the_resampled_dataset():
    gt_json, results, gt, dt, category_ids = split_tables(3, num_images=25, distinct_scores=True)
    scorer = ReplicateScorer(gt, dt, category_ids)
    indices = resample(len(gt.image_ids), 4, seed=7)
    assert (np.diff(indices, axis=1) >= 0).all() and len(np.unique(indices[0])) < indices.shape[1]
    values = scorer(copies(indices, len(gt.image_ids)))
    for b in range(4):
        new_gt, new_dt = replicate_dataset(gt_json, results, scorer.image_ids[indices[b]])
        g, d, cats = tables_from_coco(new_gt, new_dt)
        reference = score_tables(g, d, cats, "pycocotools").metrics  # pycocotools + the VOC code
        assert_metrics_equal({k: float(v[b]) for k, v in values.items()}, reference)


def test_identical_pair_gives_zero_delta_and_p_one():
    _, _, gt, dt, category_ids = split_tables(4)
    a, b, deltas = paired_bootstrap(gt, dt, copy.deepcopy(dt), category_ids, replicates=200, seed=0)
    for name in ("map", "map_50", "map_small", "voc_map"):
        assert deltas[f"delta_{name}"] == 0.0
        assert (deltas[f"delta_{name}_ci_low"], deltas[f"delta_{name}_ci_high"]) == (0.0, 0.0)
        assert deltas[f"p_{name}"] == 1.0
    assert a.low["map"] < a.point["map"] < a.high["map"]


def test_strictly_better_detector_is_significant():
    gt_json, results, gt, dt, category_ids = split_tables(5, num_images=40)
    # B: A's detections plus the ground truth itself at top score -> better on every image with objects
    perfect = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
               for a in gt_json["annotations"] if not a["iscrowd"]]
    _, dt_b, _ = tables_from_coco(gt_json, perfect + [{**r, "score": r["score"] * 0.5} for r in results])
    _, _, deltas = paired_bootstrap(gt, dt, dt_b, category_ids, replicates=300, seed=1)
    for name in ("map", "map_50", "voc_map"):
        assert deltas[f"delta_{name}"] > 0 and deltas[f"delta_{name}_ci_low"] > 0
        assert deltas[f"p_{name}"] < 0.05


def test_interval_shrinks_like_one_over_sqrt_n():
    gt_json, results, gt, dt, category_ids = split_tables(6, num_images=30, distinct_scores=True)
    big_gt, big_dt = copy.deepcopy(gt_json), []
    big_gt["images"], big_gt["annotations"] = [], []
    for copy_number in range(4):  # the same images 4 times, renumbered
        shift = 10_000 * copy_number
        big_gt["images"] += [{**im, "id": im["id"] + shift} for im in gt_json["images"]]
        big_gt["annotations"] += [{**a, "id": a["id"] + shift, "image_id": a["image_id"] + shift}
                                  for a in gt_json["annotations"]]
        big_dt += [{**r, "image_id": r["image_id"] + shift} for r in results]
    g4, d4, cats4 = tables_from_coco(big_gt, big_dt)
    small = bootstrap(gt, dt, category_ids, replicates=400, seed=0)
    big = bootstrap(g4, d4, [c for c, _ in cats4], replicates=400, seed=0)
    assert big.point["map"] == pytest.approx(small.point["map"], abs=1e-12)
    for name in ("map", "map_50"):
        ratio = (small.high[name] - small.low[name]) / (big.high[name] - big.low[name])
        assert 1.6 < ratio < 2.5, (name, ratio)  # sqrt(4) = 2


def test_bca_interval_brackets_the_point():
    _, _, gt, dt, category_ids = split_tables(8, num_images=20)
    result = bootstrap(gt, dt, category_ids, replicates=200, seed=0, method="bca")
    assert result.low["map"] < result.point["map"] < result.high["map"]


def test_empty_detections_give_zero_with_zero_interval():
    gt_json, _, _, _, _ = split_tables(9, num_images=10)
    gt, dt, categories = tables_from_coco(gt_json, [])
    result = bootstrap(gt, dt, [c for c, _ in categories], replicates=50, seed=0)
    assert result.point["map"] == 0.0 and (result.low["map"], result.high["map"]) == (0.0, 0.0)


@pytest.mark.parametrize("replicates, seed, message", [(0, 0, "replicates must be an integer >= 1"),
                                                       (1.5, 0, "replicates"), (10, 0.5, "seed must be"),
                                                       (10, -1, "seed must be"), (True, 0, "replicates")])
def test_bad_bootstrap_arguments(replicates, seed, message):
    _, _, gt, dt, category_ids = split_tables(0, num_images=5)
    with pytest.raises(ValueError, match=message):
        bootstrap(gt, dt, category_ids, replicates=replicates, seed=seed)


def test_different_images_are_named():
    with pytest.raises(ValueError, match=r"only in A: \[3\].*only in B: \[4, 5\]"):
        check_same_images([1, 2, 3], [1, 2, 4, 5], [1], [1])
    with pytest.raises(ValueError, match="category ids"):
        check_same_images([1], [1], [1, 2], [1])
