"""The report's pairwise tests and claim verdicts on fabricated sweeps (bootstrap.npz and
latency samples written by hand, so each verdict is known in advance)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from analysis.claims import CONTRADICTED, NOT_TESTABLE, ON_FRONT, PROVISIONAL, SUPPORTED, UNRESOLVED, evaluate_claims
from analysis.report import build_report
from analysis.runs import load_runs
from analysis.significance import pairwise
from analysis.significance_tables import claims_table
from analysis.stats import holm, latency_difference, paired_difference

B, N = 400, 50
METRICS = ("map", "map_50", "map_small", "map_large")


def _fabricate(folder, detector, seed, ap: dict, noise: float, latency_ms: float, rng, common, shared_ids=None,
               family=None):
    """A finished run: metrics.json with intervals and latency samples, bootstrap.npz whose
    replicates are ap + common image noise (shared by every run: paired) + its own noise."""
    folder.mkdir(parents=True)
    ids = shared_ids if shared_ids is not None else np.sort(np.random.default_rng(0).integers(0, N, (B, N)), axis=1)
    arrays = {"image_ids": ids, "category_ids": np.arange(1, 6), "key_ids": np.unique(ids),
              "image_keys": np.array([f"{i:06d}.jpg#{i:016x}" for i in np.unique(ids)])}
    metrics = {"detector": detector, "dataset": "synthetic", "seed": seed, "status": "ok", "error": None,
               "overrides": [f"detector={detector}", f"seed={seed}"], "device": "cpu",
               "fps_b1": 1000 / latency_ms,
               "latency_ms_samples_b1": " ".join(f"{x:.3f}" for x in latency_ms * (1 + 0.02 * rng.standard_normal(30)))}
    for name in METRICS:
        reps = ap[name] + common[name] + noise * rng.standard_normal(B)
        arrays[name], arrays[f"point_{name}"] = reps, np.float64(ap[name])
        metrics[name] = ap[name]
        metrics[f"{name}_ci_low"], metrics[f"{name}_ci_high"] = np.quantile(reps, [0.025, 0.975]).tolist()
    if family is not None:
        metrics["family"] = family
    np.savez(folder / "bootstrap.npz", **arrays)
    (folder / "metrics.json").write_text(json.dumps(metrics))


def _sweep(tmp_path, ssd, yolo, frcnn, latency=(50.0, 20.0, 200.0), noise=0.002):
    rng = np.random.default_rng(1)
    common = {name: 0.03 * rng.standard_normal(B) for name in METRICS}  # the images' own difficulty
    for i, (detector, ap, ms) in enumerate(zip(("ssd300_cpu", "yolov1_cpu", "faster_rcnn_vgg16_cpu"),
                                               (ssd, yolo, frcnn), latency)):
        _fabricate(tmp_path / str(i), detector, 0, ap, noise, ms, rng, common)
    return tmp_path


def _ap(ap, small, large):
    return {"map": ap, "map_50": ap + 0.2, "map_small": small, "map_large": large}


def _base(verdict: str) -> str:
    """'provisional: supported — one training seed, ...' -> 'supported'."""
    return verdict.split("provisional: ", 1)[1].split(" — ")[0] if verdict.startswith("provisional: ") else verdict


def _verdicts(runs_dir, provisional=True):
    """claim letter -> verdict of its first row (provisional wording removed, after checking it is there
    when every group ran one seed)."""
    runs = load_runs(runs_dir)
    runs["group"] = runs["detector"]
    claims = evaluate_claims(runs, pairwise(runs))
    for row in claims.itertuples():
        if provisional and not row.claim.startswith("(b)") and row.verdict != NOT_TESTABLE:
            assert row.verdict.startswith("provisional: "), row
    out = {}
    for row in claims.itertuples():
        out.setdefault(row.claim[:3], _base(row.verdict))
    return out, claims


def test_the_paper_story_is_supported(tmp_path):
    verdicts, claims = _verdicts(_sweep(tmp_path, _ap(0.30, 0.10, 0.45), _ap(0.20, 0.05, 0.35),
                                        _ap(0.40, 0.20, 0.50)))
    # (e): YOLO fastest, Faster R-CNN most accurate, SSD between: all on the front, not "better"
    assert verdicts == {"(a)": SUPPORTED, "(b)": SUPPORTED, "(c)": SUPPORTED, "(d)": SUPPORTED,
                        "(e)": ON_FRONT}, claims.to_string()
    assert "ΔAP (ssd300_cpu − yolov1_cpu) = +10.0" in claims["evidence"].iloc[0]
    assert claims["verdict"].iloc[0] == PROVISIONAL.format(SUPPORTED)
    assert set(claims[claims["claim"].str.startswith("(a)")]["metric"]) == {"AP", "AP50"}


def test_the_opposite_story_is_contradicted(tmp_path):
    # YOLO more accurate than SSD and still faster (so it dominates SSD); Faster R-CNN the least
    # accurate; SSD better on small objects than on large.
    verdicts, claims = _verdicts(_sweep(tmp_path, _ap(0.20, 0.30, 0.10), _ap(0.30, 0.25, 0.35),
                                        _ap(0.10, 0.05, 0.15), latency=(50.0, 30.0, 200.0)))
    assert verdicts["(a)"] == CONTRADICTED and verdicts["(c)"] == CONTRADICTED
    assert verdicts["(d)"] == CONTRADICTED and verdicts["(e)"] == CONTRADICTED, claims.to_string()
    assert verdicts["(b)"] == SUPPORTED  # YOLO still faster


def test_differences_within_noise_are_not_resolved(tmp_path):
    verdicts, claims = _verdicts(_sweep(tmp_path, _ap(0.300, 0.20, 0.201), _ap(0.299, 0.2, 0.2),
                                        _ap(0.301, 0.2, 0.2), latency=(50.0, 50.0, 50.0), noise=0.02))
    assert verdicts.pop("(e)") == ON_FRONT
    assert set(verdicts.values()) == {UNRESOLVED}, claims.to_string()


def test_runs_on_different_images_are_not_paired(tmp_path):
    rng = np.random.default_rng(0)
    common = {name: np.zeros(B) for name in METRICS}
    _fabricate(tmp_path / "0", "ssd300_cpu", 0, _ap(0.3, 0.1, 0.4), 0.01, 50.0, rng, common)
    other = np.sort(np.random.default_rng(5).integers(0, N, (B, N)), axis=1) + 1000
    _fabricate(tmp_path / "1", "yolov1_cpu", 0, _ap(0.2, 0.1, 0.4), 0.01, 20.0, rng, common, shared_ids=other)
    runs = load_runs(tmp_path)
    runs["group"] = runs["detector"]
    pairs = pairwise(runs)
    assert (pairs["verdict"] == "not testable").all()
    assert "different images (file name#content hash)" in pairs["problem"].iloc[0]


def test_holm_correction():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert np.isnan(holm([np.nan, 0.2])[0])


def test_report_shows_intervals_pairwise_and_claims(tmp_path):
    _sweep(tmp_path, _ap(0.30, 0.10, 0.45), _ap(0.20, 0.05, 0.35), _ap(0.40, 0.20, 0.50))
    text = build_report(tmp_path, print_tables=False).read_text()
    assert text.index("## The answer") < text.index("**Claims") < text.index("## Accuracy") < text.index("**Pairwise")
    assert "30.0 [" in text  # AP with its interval
    assert "supported" in text and "(significant, provisional: one seed)" in text


def test_variance_sentence_says_which_dominates(tmp_path):
    from analysis.significance_tables import variance_sentences

    rng = np.random.default_rng(2)
    common = {name: np.zeros(B) for name in METRICS}
    for seed, ap in enumerate((0.20, 0.30, 0.25)):  # seeds far apart, narrow intervals
        _fabricate(tmp_path / str(seed), "ssd300_cpu", seed, _ap(ap, 0.1, 0.3), 0.002, 50.0, rng, common)
    runs = load_runs(tmp_path)
    runs["group"] = runs["detector"]
    (sentence,) = variance_sentences(runs)
    assert "3 seeds" in sentence and "seed-to-seed variance dominates" in sentence


def test_families_come_from_metrics_json(tmp_path):
    # ssd_mobilenet_v1 is an SSD by class though the old name rule missed it; torchvision's SSD300
    # is built as TorchvisionSingleShot, though its name looked like an SSD's.
    rng = np.random.default_rng(1)
    common = {name: 0.03 * rng.standard_normal(B) for name in METRICS}
    for i, (detector, family, ap, ms) in enumerate((
            ("ssd_mobilenet_v1", "SSD", _ap(0.30, 0.10, 0.45), 50.0),
            ("tv_ssd300", "TorchvisionSingleShot", _ap(0.25, 0.10, 0.40), 40.0),
            ("yolov1_cpu", "YOLO", _ap(0.20, 0.05, 0.35), 20.0))):
        _fabricate(tmp_path / str(i), detector, 0, ap, 0.002, ms, rng, common, family=family)
    runs = load_runs(tmp_path)
    runs["group"] = runs["detector"]
    pairs = pairwise(runs)
    claims = evaluate_claims(runs, pairs)
    (a,) = claims[claims["claim"].str.startswith("(a)")]["detectors"].unique().tolist()
    assert a == "ssd_mobilenet_v1, yolov1_cpu"
    assert "told by detector name" not in claims_table(runs, pairs).note
    (tmp_path / "3").mkdir()                    # an older run folder without family: the name rule, said
    _fabricate(tmp_path / "3" / "old", "ssd300_cpu", 0, _ap(0.3, 0.1, 0.4), 0.002, 50.0, rng, common)
    runs = load_runs(tmp_path)
    runs["group"] = runs["detector"]
    pairs = pairwise(runs)
    assert "ssd300_cpu" in " ".join(evaluate_claims(runs, pairs)["detectors"])
    assert "told by detector name (the run folders' metrics.json has no 'family'): ssd300_cpu." \
        in claims_table(runs, pairs).note


def test_every_delta_is_a_minus_b(tmp_path):
    result = paired_difference([np.full(20, 0.3)], [np.full(20, 0.2)], [0.3], [0.2])
    assert result["delta"] == pytest.approx(0.1) and result["low"] == pytest.approx(0.1) and result["p"] < 0.1
    assert latency_difference(np.full(9, 50.0), np.full(9, 20.0)) == (30.0, 30.0, 30.0)
    verdicts, claims = _verdicts(_sweep(tmp_path, _ap(0.30, 0.10, 0.45), _ap(0.20, 0.05, 0.35),
                                        _ap(0.40, 0.20, 0.50)))
    (speed,) = claims[claims["claim"].str.startswith("(b)")]["evidence"]
    assert "yolov1_cpu − ssd300_cpu = -30" in speed and verdicts["(b)"] == SUPPORTED
