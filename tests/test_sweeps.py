"""Resolution and box-budget sweeps: geometry errors that name the size and the constraint,
the facts every run records, and the report's sweep plots on fabricated run folders."""
import json

import numpy as np
import pytest

from analysis import sweeps
from analysis.runs import load_runs
from detectors.faster_rcnn_builders import faster_rcnn_vgg16
from detectors.ssd import SSD
from detectors.yolo import YOLO
from experiments.job.detector_facts import detector_facts


def test_ssd_input_sizes_that_break_its_geometry_are_named():
    with pytest.raises(ValueError, match=r"input 256x256: source map 6 of 6 would be 0x0"):
        SSD(num_classes=2, width=0.125, input_size=(256, 256))
    with pytest.raises(ValueError, match=r"input 400x400: map 6 has 3x3 cells at step 300 px.*steps=null"):
        SSD(num_classes=2, width=0.125, input_size=(400, 400))
    assert SSD(num_classes=2, width=0.125, input_size=(400, 400), steps=None).num_candidates() == 15194
    assert SSD(num_classes=2, width=0.125).num_candidates() == 8732      # the paper's steps still fit 300


def test_yolo_conv_head_grid_follows_the_input():
    assert YOLO(num_classes=2, width=0.125, head="conv", input_size=576, grid_size=None).grid_size == 9
    with pytest.raises(ValueError, match=r"input \(576, 576\) gives 9x9, S=7"):
        YOLO(num_classes=2, width=0.125, head="conv", input_size=576)
    with pytest.raises(ValueError, match="grid_size=null needs head='conv'"):
        YOLO(num_classes=2, width=0.125, input_size=576, grid_size=None)


def test_detector_facts_read_the_built_models():
    assert detector_facts(SSD(num_classes=2, width=0.125, candidates_before_nms=50, max_detections=20)) == {
        "family": "SSD", "input_h": 300, "input_w": 300, "max_detections": 20, "candidates_before_nms": 50}
    assert detector_facts(YOLO(num_classes=2, width=0.125, head="conv", max_detections=7,
                               candidates_before_nms=30)) == {
        "family": "YOLO", "input_h": 448, "input_w": 448, "max_detections": 7, "candidates_before_nms": 30}
    frcnn = faster_rcnn_vgg16(num_classes=2, width=0.125, min_size=300, max_size=300,
                              candidates_before_nms=50, max_detections=30)
    assert detector_facts(frcnn) == {"family": "FasterRCNN", "input_h": 600, "input_w": 1000,
                                     "max_detections": 30, "proposals": 50}


def _run(folder, **metrics):
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({"dataset": "synthetic", "seed": 0, "status": "ok", **metrics}))


def test_sweep_plots_from_run_folders(tmp_path):
    for i, size in enumerate((300, 512)):
        _run(tmp_path / f"res{i}", detector=f"ssd{size}_cpu", family="SSD", input_h=size, train_iterations=40,
             map=0.1 * (i + 1), map_small=0.05 * (i + 1), map_medium=0.1, map_large=0.2, fps_b1=20.0 / (i + 1))
    for proposals, ap in ((10, 0.05), (100, 0.15), (1000, 0.2)):
        _run(tmp_path / f"budget{proposals}", detector="faster_rcnn_vgg16_cpu", family="FasterRCNN",
             input_h=300, proposals=proposals, max_detections=100, map=ap, mar_100=ap + 0.1,
             latency_ms_p50_b1=50 + proposals / 10)
    runs = load_runs(tmp_path)
    series = sweeps.resolution_series(runs)
    assert list(series) == ["SSD trained (synthetic)"]
    assert series["SSD trained (synthetic)"]["map_small"].tolist() == pytest.approx([0.05, 0.1])
    budget = sweeps.budget_series(runs)
    assert list(budget) == ["faster_rcnn_vgg16_cpu (synthetic): proposals"]
    points = budget["faster_rcnn_vgg16_cpu (synthetic): proposals"]
    assert points["budget"].tolist() == [10, 100, 1000] and points["map"].tolist() == pytest.approx([0.05, 0.15, 0.2])
    assert [p.name for p in sweeps.plot_resolution(runs, tmp_path / "plots")] == ["resolution_sweep.png",
                                                                                   "resolution_sweep.pdf"]
    assert sweeps.plot_box_budget(runs, tmp_path / "plots")[0].name == "box_budget.png"
    assert sweeps.plot_resolution(runs[runs["detector"] == "ssd300_cpu"], tmp_path) == []   # one size: no line


def test_sweep_tables_and_plots_carry_the_bootstrap_intervals(tmp_path, monkeypatch):
    for i, size in enumerate((300, 512)):
        _run(tmp_path / f"res{i}", detector=f"ssd{size}_cpu", family="SSD", input_h=size, train_iterations=40,
             map=0.1 * (i + 1), map_ci_low=0.08 * (i + 1), map_ci_high=0.12 * (i + 1),
             map_small=0.05, map_small_ci_low=0.04, map_small_ci_high=0.07, map_medium=0.1, map_large=0.2,
             fps_b1=20.0)
    for proposals, ap in ((10, 0.05), (1000, 0.2)):
        _run(tmp_path / f"budget{proposals}", detector="faster_rcnn_vgg16_cpu", family="FasterRCNN",
             input_h=300, proposals=proposals, map=ap, map_ci_low=ap - 0.01, map_ci_high=ap + 0.02,
             mar_100=ap + 0.1, latency_ms_p50_b1=50 + proposals / 10)
    runs = load_runs(tmp_path)
    points = sweeps.resolution_series(runs)["SSD trained (synthetic)"]
    np.testing.assert_allclose(sweeps.error_bars(points, "map"), [[2.0, 4.0], [2.0, 4.0]])
    assert sweeps.error_bars(points, "map_medium") is None            # no interval: no error bar
    resolution = sweeps.resolution_table(runs)
    assert resolution.shown["AP"].tolist() == ["10.0 [8.0, 12.0]", "20.0 [16.0, 24.0]"]
    assert resolution.shown["APs"].tolist() == ["5.0 [4.0, 7.0]"] * 2
    assert resolution.shown["APm"].tolist() == ["10.0", "10.0"]
    budget = sweeps.budget_table(runs)
    assert budget.shown["AP"].tolist() == ["5.0 [4.0, 7.0]", "20.0 [19.0, 22.0]"]
    assert budget.shown["budget"].iat[1].endswith("= 1000")
    assert [t.name for t in sweeps.report_tables(runs)] == ["resolution_sweep", "box_budget"]
    assert sweeps.report_tables(runs[runs["detector"] == "ssd300_cpu"]) == []
    # the plots draw one error bar per point (matplotlib keeps them as LineCollections)
    import matplotlib.pyplot as plt
    drawn = []
    original = plt.Axes.errorbar

    def spy(self, x, y, yerr=None, **kwargs):
        drawn.append(yerr)
        return original(self, x, y, yerr=yerr, **kwargs)

    monkeypatch.setattr(plt.Axes, "errorbar", spy)
    sweeps.plot_resolution(runs, tmp_path / "plots")
    sweeps.plot_box_budget(runs, tmp_path / "plots")
    with_bars = [y for y in drawn if y is not None]
    assert len(with_bars) == 3   # APs vs size (AP itself is not a panel), AP vs budget, AP vs latency
    np.testing.assert_allclose(with_bars[1], [[1.0, 1.0], [2.0, 2.0]])
