"""Issue 27's verdict rules on fabricated run folders (replicates written by hand, so each verdict
is known): unrelated runs never change a claim, seeds that disagree leave it open, (e) is
dominance, (d) an interaction, p-values are printed as measured, bad input is not testable."""
from __future__ import annotations

import numpy as np

from analysis.claims import CONTRADICTED, NOT_TESTABLE, ON_FRONT, PROVISIONAL, SUPPORTED, UNRESOLVED, evaluate_claims
from analysis.runs import load_runs
from analysis.stats import CALIBRATED_FROM_IMAGES, p_text
from tests.test_claims import METRICS, B, _ap, _fabricate


def _claims(folder):
    runs = load_runs(folder)
    runs["group"] = runs["detector"]
    return evaluate_claims(runs)


def _verdict(claims, prefix, metric=None):
    rows = claims[claims["claim"].str.startswith(prefix)]
    if metric is not None:
        rows = rows[rows["metric"] == metric]
    return rows["verdict"].iloc[0]


def _runs(folder, spec, seeds=(0,), noise=0.002):
    """spec: detector -> (ap dict or {seed: ap dict}, latency ms, family)."""
    rng = np.random.default_rng(1)
    common = {name: 0.03 * rng.standard_normal(B) for name in METRICS}
    for i, (detector, (ap, ms, family)) in enumerate(spec.items()):
        for seed in seeds:
            _fabricate(folder / f"{i}_{seed}", detector, seed, ap.get(seed, ap) if 0 in ap else ap, noise, ms, rng,
                       common, family=family)


def test_ten_groups_keep_a_large_difference_significant(tmp_path):
    spec = {"ssd300_cpu": (_ap(0.30, 0.1, 0.4), 50.0, "SSD"), "yolov1_cpu": (_ap(0.16, 0.1, 0.4), 20.0, "YOLO")}
    _runs(tmp_path / "two", spec)
    alone = _claims(tmp_path / "two")
    spec.update({f"custom{k}": (_ap(0.2 + 0.01 * k, 0.1, 0.4), 30.0 + k, "Custom") for k in range(8)})
    _runs(tmp_path / "ten", spec)
    crowded = _claims(tmp_path / "ten")
    for metric in ("AP", "AP50"):
        assert _verdict(alone, "(a)", metric) == _verdict(crowded, "(a)", metric) == PROVISIONAL.format(SUPPORTED)
    rows = crowded[crowded["claim"].str.startswith("(a)")]
    assert rows["holm"].str.contains("Holm over this claim's 2").all()


def test_two_seeds_that_disagree_leave_the_claim_not_resolved(tmp_path):
    ssd = {0: _ap(0.338, 0.1, 0.4), 1: _ap(0.20, 0.1, 0.4)}        # +13.8 and 0 against YOLO
    yolo = {0: _ap(0.20, 0.1, 0.4), 1: _ap(0.20, 0.1, 0.4)}
    _runs(tmp_path, {"ssd300_cpu": (ssd, 50.0, "SSD"), "yolov1_cpu": (yolo, 20.0, "YOLO")}, seeds=(0, 1))
    claims = _claims(tmp_path)
    assert _verdict(claims, "(a)", "AP") == UNRESOLVED, claims.to_string()
    row = claims[(claims["claim"].str.startswith("(a)")) & (claims["metric"] == "AP")].iloc[0]
    assert row["low"] < 0 < row["high"] and "t, df" in row["p"]


def test_two_seeds_that_agree_support_the_claim_plainly(tmp_path):
    ssd = {0: _ap(0.30, 0.1, 0.4), 1: _ap(0.31, 0.1, 0.4)}
    yolo = {0: _ap(0.20, 0.1, 0.4), 1: _ap(0.205, 0.1, 0.4)}
    _runs(tmp_path, {"ssd300_cpu": (ssd, 50.0, "SSD"), "yolov1_cpu": (yolo, 20.0, "YOLO")}, seeds=(0, 1))
    assert _verdict(_claims(tmp_path), "(a)", "AP") == SUPPORTED


def test_e_is_dominance(tmp_path):
    # SSD between YOLO (fast) and Faster R-CNN (accurate): dominates nobody -> all on the front
    _runs(tmp_path / "front", {"ssd300_cpu": (_ap(0.30, 0.1, 0.4), 50.0, "SSD"),
                               "yolov1_cpu": (_ap(0.20, 0.1, 0.4), 20.0, "YOLO"),
                               "faster_rcnn_vgg16_cpu": (_ap(0.40, 0.1, 0.4), 200.0, "FasterRCNN")})
    assert _verdict(_claims(tmp_path / "front"), "(e)") == PROVISIONAL.format(ON_FRONT)
    # SSD more accurate and as fast as YOLO (dominates it), Faster R-CNN more accurate but slower
    _runs(tmp_path / "dom", {"ssd300_cpu": (_ap(0.30, 0.1, 0.4), 50.0, "SSD"),
                             "yolov1_cpu": (_ap(0.20, 0.1, 0.4), 50.0, "YOLO"),
                             "faster_rcnn_vgg16_cpu": (_ap(0.40, 0.1, 0.4), 200.0, "FasterRCNN")})
    claims = _claims(tmp_path / "dom")
    assert _verdict(claims, "(e)") == PROVISIONAL.format(SUPPORTED), claims.to_string()
    assert "SSD dominates: yolov1_cpu; dominated by: none" in claims[claims["claim"].str.startswith("(e)")][
        "evidence"].iloc[0]
    # YOLO as accurate and faster: it dominates SSD
    _runs(tmp_path / "worse", {"ssd300_cpu": (_ap(0.30, 0.1, 0.4), 50.0, "SSD"),
                               "yolov1_cpu": (_ap(0.30, 0.1, 0.4), 20.0, "YOLO")})
    assert _verdict(_claims(tmp_path / "worse"), "(e)") == PROVISIONAL.format(CONTRADICTED)


def test_d_is_an_interaction(tmp_path):
    # every detector is worse on small than on large; SSD's gap is no larger than the others'
    _runs(tmp_path / "same", {"ssd300_cpu": (_ap(0.30, 0.10, 0.40), 50.0, "SSD"),
                              "yolov1_cpu": (_ap(0.25, 0.05, 0.35), 20.0, "YOLO")})
    assert _verdict(_claims(tmp_path / "same"), "(d)") == PROVISIONAL.format(UNRESOLVED)
    # SSD's gap 35 points against YOLO's 10: the interaction holds
    _runs(tmp_path / "gap", {"ssd300_cpu": (_ap(0.30, 0.05, 0.40), 50.0, "SSD"),
                             "yolov1_cpu": (_ap(0.25, 0.20, 0.30), 20.0, "YOLO")})
    claims = _claims(tmp_path / "gap")
    assert _verdict(claims, "(d)") == PROVISIONAL.format(SUPPORTED)
    row = claims[claims["claim"].str.startswith("(d)")].iloc[0]
    assert abs(row["effect"] - 0.25) < 1e-9 and "ΔAPs (ssd300_cpu − yolov1_cpu) = -15.0" in row["evidence"]


def test_p_at_the_floor_is_printed_as_measured():
    assert p_text({"p": 2 / 10001, "seeds": 1, "replicates": 10000, "crossed": 0}) == \
        "p < 0.0002 (0 of 10000 crossed 0)"
    assert p_text({"p": 0.0126, "seeds": 1, "replicates": 10000, "crossed": 62}) == "p = 0.013 (62 of 10000 crossed 0)"


def test_too_few_replicates_or_a_missing_metric_is_not_testable(tmp_path):
    rng = np.random.default_rng(0)
    common = {name: np.zeros(B) for name in METRICS}
    _fabricate(tmp_path / "0", "ssd300_cpu", 0, _ap(0.3, 0.1, 0.4), 0.01, 50.0, rng, common, family="SSD")
    _fabricate(tmp_path / "1", "yolov1_cpu", 0, _ap(0.2, 0.1, 0.4), 0.01, 20.0, rng, common, family="YOLO")
    data = dict(np.load(tmp_path / "1" / "bootstrap.npz"))
    del data["map_50"]
    np.savez(tmp_path / "1" / "bootstrap.npz", **data)
    claims = _claims(tmp_path)
    assert _verdict(claims, "(a)", "AP50") == NOT_TESTABLE
    assert "has no replicates of map_50" in claims[claims["metric"] == "AP50"]["evidence"].iloc[0]
    data = {k: (v[:50] if v.ndim and len(v) == B else v) for k, v in np.load(tmp_path / "0" / "bootstrap.npz").items()}
    np.savez(tmp_path / "0" / "bootstrap.npz", **data)
    data = {k: (v[:50] if v.ndim and len(v) == B else v) for k, v in np.load(tmp_path / "1" / "bootstrap.npz").items()}
    np.savez(tmp_path / "1" / "bootstrap.npz", **data)
    claims = _claims(tmp_path)
    assert _verdict(claims, "(a)", "AP") == NOT_TESTABLE
    assert "50 bootstrap replicates" in claims[claims["metric"] == "AP"]["evidence"].iloc[0]


def test_accuracy_interval_of_a_seed_mean_holds_the_seed_spread(tmp_path):
    from analysis.summary import accuracy_table

    spec = {"ssd300_cpu": ({0: _ap(0.20, 0.1, 0.4), 1: _ap(0.30, 0.1, 0.4)}, 50.0, "SSD")}
    _runs(tmp_path, spec, seeds=(0, 1))
    runs = load_runs(tmp_path)
    runs["group"] = runs["detector"]
    row = accuracy_table(runs).data.iloc[0]
    # two seeds 10 points apart: t(1) x ~5 points; the seeds' averaged bounds would be ~±6 around 25
    assert row["map_ci_low"] < 0.0 and row["map_ci_high"] > 0.5


def test_intervals_below_the_calibrated_image_count_are_marked(tmp_path):
    import json

    from analysis.summary import accuracy_table

    _runs(tmp_path, {"ssd300_cpu": (_ap(0.30, 0.1, 0.4), 50.0, "SSD")})
    path = next(tmp_path.rglob("metrics.json"))
    metrics = json.loads(path.read_text())
    path.write_text(json.dumps({**metrics, "eval_images": 50, "interval_method": "basic"}))
    runs = load_runs(tmp_path)
    runs["group"] = runs["detector"]
    table = accuracy_table(runs)
    assert "]†" in table.shown["AP"].iloc[0]
    assert f"†: scored on fewer than {CALIBRATED_FROM_IMAGES} images" in table.note
    assert "Interval method: basic." in table.note


def test_an_old_run_folder_is_read_and_what_it_lacks_is_said(tmp_path):
    import shutil
    from pathlib import Path

    from analysis.report import build_report

    shutil.copytree(Path(__file__).parent / "fixtures" / "old_runs", tmp_path / "runs")
    text = build_report(tmp_path / "runs", print_tables=False).read_text()
    assert text.index("## The answer") < text.index("## Conditions") < text.index("## Appendix: Runs")
    assert "written before issue 27" in text and "do not record which split" in text
    assert "split ? (not recorded)" in text and "Interval method: percentile." in text
    claims = _claims(tmp_path / "runs")
    # written before runs were paired by image file name + content hash (issue 28): their pairs
    # cannot be checked, so the claim is not testable rather than a guess by image id
    assert _verdict(claims, "(a)", "AP") == NOT_TESTABLE
    assert "without image file names and hashes" in claims[claims["claim"].str.startswith("(a)")]["evidence"].iloc[0]
    assert _verdict(claims, "(c)") == NOT_TESTABLE
