"""The report's robustness section, built from run folders written by the robustness stage."""
from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from analysis import robustness as report_robustness
from analysis.report import build_report
from analysis.runs import load_runs
from experiments.studies.robustness import robustness_stage
from tests.test_robustness import Rectangles, SaturationDetector, _stage_cfg


@pytest.fixture(scope="module")
def robustness_runs(tmp_path_factory):
    """Two finished runs ('oracle-a' on 4 images, 'oracle-b' on 3) with robustness.csv."""
    root = tmp_path_factory.mktemp("runs")
    cfg = _stage_cfg(["gaussian_noise", "motion_blur", "fog", "pixelate", "saturate"], [1, 3], bootstrap=50)
    for name, images in (("oracle-a", 4), ("oracle-b", 3)):
        out = root / name
        out.mkdir()
        metrics = robustness_stage(cfg, SaturationDetector(), Rectangles(images), torch.device("cpu"), out, True)
        (out / "metrics.json").write_text(json.dumps({"detector": name, "dataset": "synthetic", "seed": 0,
                                                       "status": "ok", **metrics}))
    return root


def test_table_holds_ours_and_the_published_figures(robustness_runs):
    runs = load_runs(robustness_runs)
    runs["label"] = runs["group"]
    table = report_robustness.robustness_table(runs)
    ours = table.data[table.data["source"] == "ours"].set_index("detector")
    assert list(ours.index) == ["oracle-a", "oracle-b"]
    for _, row in ours.iterrows():
        assert row["robust_rpc"] == pytest.approx(row["robust_mpc"] / row["robust_p"])
        assert row["robust_mpc_ci_low"] <= row["robust_mpc"] <= row["robust_mpc_ci_high"]
    shown = table.shown.set_index("detector")
    a = ours.loc["oracle-a"]
    assert shown.loc["oracle-a", "mPC"] == (f"{100 * a['robust_mpc']:.1f} [{100 * a['robust_mpc_ci_low']:.1f}, "
                                           f"{100 * a['robust_mpc_ci_high']:.1f}]")
    assert "[" not in shown.loc["faster_rcnn_r50_fpn (paper)", "P"].iloc[0]   # published: no interval
    published = table.data[table.data["detector"] == "faster_rcnn_r50_fpn (paper)"].set_index("dataset")
    coco, voc = published.filter(like="COCO-C", axis=0).iloc[0], published.filter(like="Pascal-C", axis=0).iloc[0]
    assert (coco["robust_p"], coco["robust_mpc"], coco["robust_rpc"]) == pytest.approx((0.363, 0.182, 0.502))
    assert (voc["robust_p_50"], voc["robust_mpc_50"], voc["robust_rpc_50"]) == pytest.approx((0.805, 0.486, 0.604))
    assert "4 corruptions" not in table.note and "5 corruptions" in table.note


def test_severity_curves_average_the_family(robustness_runs):
    runs = load_runs(robustness_runs)
    runs["label"] = runs["group"]
    rows = report_robustness.robustness_rows(runs)
    curves = report_robustness.severity_curves(rows).set_index(["label", "panel", "severity"])["map"]
    a = pd.read_csv(robustness_runs / "oracle-a" / "robustness.csv")
    weather_3 = a[(a["family"] == "weather") & (a["severity"] == 3)]["map"].mean()  # fog only
    assert curves["oracle-a", "weather", 3] == pytest.approx(weather_3)
    assert curves["oracle-a", "digital", 0] == pytest.approx(a.loc[a["severity"] == 0, "map"].item())
    assert curves["oracle-a", "held-out", 1] == pytest.approx(
        a[(a["corruption"] == "saturate") & (a["severity"] == 1)]["map"].item())


def test_report_has_the_robustness_table_and_plots(robustness_runs):
    report = build_report(robustness_runs, print_tables=False)
    text = report.read_text()
    assert "Robustness to corruptions" in text and "50.2" in text
    plots = report.parent / "plots"
    assert (plots / "robustness_ap_vs_severity.png").is_file()
    assert (plots / "robustness_rpc_by_size.png").is_file()
    assert (report.parent / "tables" / "robustness.csv").is_file()
