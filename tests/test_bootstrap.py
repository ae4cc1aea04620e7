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
        assert deltas[f"delta_{name}"] < 0 and deltas[f"delta_{name}_ci_high"] < 0   # A - B: B is better
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


def _write(tmp_path, gt_json, results, name="dt.json"):
    import json

    (tmp_path / "gt.json").write_text(json.dumps(gt_json))
    (tmp_path / name).write_text(json.dumps(results))


def test_cli_intervals_pair_and_replicates_file(tmp_path, capsys):
    import json

    from experiments.evaluation.eval_cli import main

    gt_json, results, gt, dt, category_ids = split_tables(10, num_images=20, distinct_scores=True)
    _write(tmp_path, gt_json, results)
    _write(tmp_path, gt_json, results, "same.json")
    code = main(["--gt", str(tmp_path / "gt.json"), "--dt", str(tmp_path / "dt.json"), "--dt2",
                 str(tmp_path / "same.json"), "--bootstrap", "50", "--seed", "3", "--out", str(tmp_path / "m.json"),
                 "--save-replicates", str(tmp_path / "r.npz")])
    assert code == 0, capsys.readouterr().err
    out = json.loads((tmp_path / "m.json").read_text())
    # debiased (the default): the interval may lie below the point, which over-estimates AP (20 images)
    assert out["map_ci_low"] < min(out["map"], out["map_ci_high"]) and out["interval_method"] == "debiased"
    assert out["delta_map"] == 0 and out["p_map"] == 1.0 and out["delta_map_50_ci_high"] == 0
    saved = np.load(tmp_path / "r.npz")
    assert saved["image_ids"].shape == (50, 20) and saved["map"].shape == (50,)
    assert int(saved["half_size"]) == 10 and saved["half_map"].ndim == 1     # the debiased interval's halves
    # replicate 0 re-scored by pycocotools from the saved image ids
    new_gt, new_dt = replicate_dataset(gt_json, results, saved["image_ids"][0])
    g, d, cats = tables_from_coco(new_gt, new_dt)
    reference = score_tables(g, d, cats, "pycocotools").metrics
    assert abs(reference["map"] - saved["map"][0]) <= 1e-12


@pytest.mark.parametrize("args, message", [(["--bootstrap", "0"], "replicates must be an integer >= 1"),
                                           (["--bootstrap", "5", "--seed", "0.5"], "invalid int value"),
                                           (["--dt2", "x.json"], "--dt2 needs --bootstrap")])
def test_cli_bad_bootstrap_arguments(tmp_path, capsys, args, message):
    from experiments.evaluation.eval_cli import main

    gt_json, results, *_ = split_tables(11, num_images=5)
    _write(tmp_path, gt_json, results)
    try:
        code = main(["--gt", str(tmp_path / "gt.json"), "--dt", str(tmp_path / "dt.json"), *args])
    except SystemExit as exit_:
        code = exit_.code
    assert code == 2 and message in capsys.readouterr().err


def test_cli_nan_score_and_unknown_category_are_named(tmp_path, capsys):
    from experiments.evaluation.eval_cli import main

    gt_json, results, *_ = split_tables(12, num_images=5)
    for edit, message in [(lambda r: r[1].update(score=float("nan")), "results[1] has score nan"),
                          (lambda r: r[0].update(bbox=[0, 0, float("inf"), 3]), "results[0]: bbox has NaN or inf"),
                          (lambda r: r[2].update(category_id=999), "results[2]: category_id 999"),
                          (lambda r: r[0].update(image_id=-4), "results[0]: image_id -4")]:
        broken = copy.deepcopy(results)
        edit(broken)
        _write(tmp_path, gt_json, broken)
        assert main(["--gt", str(tmp_path / "gt.json"), "--dt", str(tmp_path / "dt.json"), "--bootstrap", "5"]) == 2
        assert message in capsys.readouterr().err
