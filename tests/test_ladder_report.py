"""The ladder table and claims (f), (g) on fabricated sweeps whose verdicts are known in advance
(analysis/ladder.py; the run fabricator is test_claims')."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np

from analysis import ladder
from analysis.claims import CONTRADICTED, PROVISIONAL, SUPPORTED
from analysis.runs import load_runs
from tests.test_claims import METRICS, _ap, _fabricate

B = 400


def _ladder_sweep(tmp_path, aps: dict, latency: dict, train_s: dict):
    rng = np.random.default_rng(1)
    common = {name: 0.03 * rng.standard_normal(B) for name in METRICS}
    for i, detector in enumerate(aps):
        _fabricate(tmp_path / str(i), detector, 0, aps[detector], 0.002, latency[detector], rng, common)
        path = tmp_path / str(i) / "metrics.json"
        metrics = json.loads(path.read_text())
        metrics.update({"train_time_s": train_s[detector], "latency_ms_p50_b1": latency[detector]})
        if detector.startswith(("rcnn", "fast_rcnn")):
            metrics.update({"proposal_ms_b1": 0.5 * latency[detector], "proposal_seconds_per_image": 0.6,
                            "proposals_per_image": 150.0, "proposal_images_short": 200})
        path.write_text(json.dumps(metrics))
    runs = load_runs(tmp_path)
    runs["group"] = runs["detector"]
    return runs


DETECTORS = ("rcnn_vgg16_cpu", "fast_rcnn_vgg16_cpu", "faster_rcnn_vgg16_cpu", "ssd300_cpu", "yolov1_cpu")
TRAIN_S = dict(zip(DETECTORS, (300.0, 200.0, 240.0, 130.0, 90.0)))


def test_the_seed_articles_story_is_supported(tmp_path):
    aps = dict(zip(DETECTORS, (_ap(0.10, 0.05, 0.2), _ap(0.12, 0.05, 0.2), _ap(0.14, 0.05, 0.2),
                               _ap(0.30, 0.1, 0.4), _ap(0.25, 0.1, 0.4))))
    runs = _ladder_sweep(tmp_path, aps, dict(zip(DETECTORS, (3000.0, 900.0, 400.0, 60.0, 20.0))), TRAIN_S)
    claims = ladder.ladder_claims(runs).data.set_index("claim")["verdict"]
    assert claims.iloc[0] == SUPPORTED and claims.iloc[2] == PROVISIONAL.format(SUPPORTED)   # (g): one seed
    assert claims.iloc[1].startswith("holds")
    table = ladder.ladder_table(runs).data
    assert list(table["rung"]) == ["R-CNN", "Fast R-CNN", "Faster R-CNN", "SSD", "YOLO v1"]
    assert table.loc[table["rung"] == "R-CNN", "proposal ms (bench)"].item() == 1500.0
    # a single-shot detector's latency has no proposal stage: with and without are the same
    ssd = table[table["rung"] == "SSD"].iloc[0]
    assert ssd["ms without proposals"] == ssd["end-to-end ms (b1, with proposals)"] == 60.0


def test_the_section_carries_both_tables(tmp_path):
    aps = dict(zip(DETECTORS, [_ap(0.2, 0.1, 0.3)] * 5))
    runs = _ladder_sweep(tmp_path, aps, dict(zip(DETECTORS, (3000.0, 900.0, 400.0, 60.0, 20.0))), TRAIN_S)
    section = ladder.section(SimpleNamespace(labelled=runs))
    assert [t.name for t in section.tables] == ["ladder", "ladder_claims"]


def test_a_faster_more_accurate_proposal_detector_contradicts_both(tmp_path):
    aps = dict(zip(DETECTORS, (_ap(0.10, 0.05, 0.2), _ap(0.12, 0.05, 0.2), _ap(0.40, 0.2, 0.5),
                               _ap(0.30, 0.1, 0.4), _ap(0.25, 0.1, 0.4))))
    runs = _ladder_sweep(tmp_path, aps, dict(zip(DETECTORS, (3000.0, 900.0, 10.0, 60.0, 20.0))), TRAIN_S)
    claims = ladder.ladder_claims(runs).data
    assert list(claims["verdict"].iloc[[0, 2]]) == [CONTRADICTED, PROVISIONAL.format(CONTRADICTED)]


def test_sweeps_without_rcnn_or_fast_rcnn_get_no_ladder_tables(tmp_path):
    aps = {"ssd300_cpu": _ap(0.3, 0.1, 0.4), "yolov1_cpu": _ap(0.2, 0.1, 0.4)}
    runs = _ladder_sweep(tmp_path, aps, {"ssd300_cpu": 60.0, "yolov1_cpu": 20.0},
                         {"ssd300_cpu": 1.0, "yolov1_cpu": 1.0})
    assert ladder.section(SimpleNamespace(labelled=runs)) is None
