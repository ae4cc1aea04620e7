"""The report on a folder of runs fabricated in the real schema (README "What a run writes"):
a Hydra sweep with two seeds of two detectors, a failed job and a job that never wrote
metrics.json, plus a single run nested elsewhere. Means and stds are computed by hand here."""
from __future__ import annotations

import json
import math
import struct

import numpy as np
import pandas as pd
import pytest
import yaml
from matplotlib.image import imsave

from analysis import papers, plot_runs, plots, summary
from analysis.report import build_report, main
from analysis.runs import load_runs
from analysis.table import MISSING, write_table

# detector -> seed -> (map, map_small, map_medium, map_large, fps_b1, fps_b8, num_candidates)
NUMBERS = {
    "ssd300": {0: (0.30, 0.10, 0.30, 0.50, 10.0, 14.0, 8732),
               1: (0.34, 0.14, 0.32, 0.56, 12.0, 16.0, 8732)},
    "yolov1": {0: (0.20, 0.02, 0.18, 0.40, 30.0, 50.0, 98),
               1: (0.24, 0.04, 0.22, 0.46, 34.0, 54.0, 98)},
}
GT_BOXES = [[4, 4, 20, 20], [30, 30, 28, 24]]   # x, y, w, h in a 64 x 64 image


def _write_job(folder, detector, seed, metrics, overrides=None):
    (folder / ".hydra").mkdir(parents=True)
    config = {"detector": {"name": detector, "model": {"_target_": "x"}},
              "dataset": {"name": "synthetic", "val_split": "val"}, "seed": seed}
    (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    (folder / ".hydra" / "overrides.yaml").write_text(
        yaml.safe_dump(overrides or [f"detector={detector}", f"seed={seed}"]))
    if metrics is not None:
        (folder / "metrics.json").write_text(json.dumps(metrics))


def _write_outputs(folder, detector, seed):
    """ground_truth.json, detections.json, per_class.csv, pr_curves.npz, logs, samples/."""
    images = [{"id": 1, "width": 64, "height": 64, "file_name": "1.png"}]
    anns = [{"id": i + 1, "image_id": 1, "category_id": i + 1, "bbox": b, "area": b[2] * b[3],
             "iscrowd": 0} for i, b in enumerate(GT_BOXES)]
    cats = [{"id": 1, "name": "circle"}, {"id": 2, "name": "square"}]
    (folder / "ground_truth.json").write_text(json.dumps(
        {"images": images, "annotations": anns, "categories": cats}))
    shift = 2 if detector == "ssd300" else 6
    dets = [{"image_id": 1, "category_id": 1, "bbox": [4 + shift, 4, 20, 20], "score": 0.9},
            {"image_id": 1, "category_id": 1, "bbox": [30, 30, 28, 24], "score": 0.6},
            {"image_id": 1, "category_id": 2, "bbox": [40, 2, 10, 10], "score": 0.5}]
    (folder / "detections.json").write_text(json.dumps(dets))
    (folder / "per_class.csv").write_text(
        "label,class_name,category_id,num_gt,ap,ap_50,voc07_ap,voc_ap\n"
        f"1,circle,1,1,{0.4 + 0.1 * seed},0.8,0.8,0.8\n2,square,2,1,0.2,0.5,0.5,0.5\n")
    recall = np.linspace(0, 1, 101)
    slope = 0.4 if detector == "ssd300" else 0.8
    precision = np.broadcast_to((1 - slope * recall ** 2)[None, :, None, None, None],
                                (10, 101, 2, 4, 3)).copy()
    precision[:, :, 1, 1, :] = -1            # no small square: undefined
    np.savez(folder / "pr_curves.npz", precision=precision, recall=np.ones((10, 2, 4, 3)),
             iou_thresholds=np.linspace(0.5, 0.95, 10), recall_thresholds=recall,
             class_names=np.array(["circle", "square"]),
             area_names=np.array(["all", "small", "medium", "large"]))
    times = np.arange(1, 11) * 5.0
    header = "iteration,epoch,time_s,lr,loss,loss_cls,loss_box\n"
    (folder / "train_log.csv").write_text(header + "".join(
        f"{10 * i},{i // 5},{t},0.001,{8 / (i + 1)},{5 / (i + 1)},{3 / (i + 1)}\n"
        for i, t in enumerate(times)))
    (folder / "val_log.csv").write_text("iteration,epoch,time_s,map,map_50\n" + "".join(
        f"{50 * i},{i},{25.0 * i},{0.1 * i},{0.2 * i}\n" for i in (1, 2)))
    (folder / "samples").mkdir()
    imsave(folder / "samples" / "1.png", np.full((64, 64, 3), 0.5))


def _metrics(detector, seed):
    m, s, md, lg, fps1, fps8, cand = NUMBERS[detector][seed]
    return {"detector": detector, "dataset": "synthetic", "seed": seed, "status": "ok",
            "error": None, "overrides": [f"detector={detector}", f"seed={seed}"],
            "device": "cpu", "map": m, "map_50": m + 0.3, "map_75": m - 0.05, "map_small": s,
            "map_medium": md, "map_large": lg, "mar_100": m + 0.1, "voc07_map": m + 0.25,
            "fps_b1": fps1, "fps_b8": fps8, "latency_ms_p50_b1": 1000 / fps1, "gmacs": 30.0,
            "params": 2.5e7, "num_candidates": cand, "boxes_kept_b1": 50.0, "train_time_s": 60.0}


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    sweep = root / "multirun" / "2024-05-01" / "12-00-00"
    sweep.mkdir(parents=True)
    (sweep / "multirun.yaml").write_text("hydra: {mode: MULTIRUN}\n")
    jobs = [("ssd300", 0), ("ssd300", 1), ("yolov1", 0)]
    for i, (detector, seed) in enumerate(jobs):
        _write_job(sweep / str(i), detector, seed, _metrics(detector, seed))
        _write_outputs(sweep / str(i), detector, seed)
    _write_job(sweep / "3", "faster_rcnn_vgg16", 0,
               {"status": "failed", "error": "Traceback ...\nRuntimeError: out of memory"})
    _write_job(sweep / "4", "fast_yolo", 0, None)                 # crashed before metrics.json
    nested = root / "later" / "outputs" / "2024-05-02" / "09-30-00"
    _write_job(nested, "yolov1", 1, _metrics("yolov1", 1))
    _write_outputs(nested, "yolov1", 1)
    return root


@pytest.fixture(scope="module")
def report(runs_dir):
    return build_report(runs_dir, print_tables=False)


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def test_load_runs_finds_every_run_with_identity(runs_dir):
    runs = load_runs(runs_dir)
    assert len(runs) == 6
    status = dict(zip(runs["detector"], runs["status"]))
    assert status["faster_rcnn_vgg16"] == "failed" and status["fast_yolo"] == "incomplete"
    failed = runs[runs["detector"] == "faster_rcnn_vgg16"].iloc[0]
    assert failed["seed"] == 0 and "out of memory" in failed["error"]   # seed from .hydra
    assert set(runs["variant"]) == {""} and set(runs["eval_split"].dropna()) == {"val"}
    assert sorted(runs.loc[runs["detector"] == "yolov1", "seed"]) == [0, 1]


def test_variant_separates_settings_that_differ(tmp_path):
    for i, width in enumerate((0.5, 1.0)):
        overrides = ["detector=ssd300", f"detector.model.width={width}", "seed=0"]
        _write_job(tmp_path / str(i), "ssd300", 0, _metrics("ssd300", 0) | {"overrides": overrides},
                   overrides=overrides)
    runs = load_runs(tmp_path)
    assert list(runs["group"]) == ["ssd300 [detector.model.width=0.5]",
                                   "ssd300 [detector.model.width=1.0]"]


def test_unreadable_metrics_is_a_failed_run_naming_the_file(tmp_path):
    _write_job(tmp_path / "0", "ssd300", 3, None)
    (tmp_path / "0" / "metrics.json").write_text("{not json")
    run = load_runs(tmp_path).iloc[0]
    assert (run["status"], run["detector"], run["seed"]) == ("failed", "ssd300", 3)
    assert "metrics.json: unreadable" in run["error"]


def test_several_datasets_are_told_apart_in_labels(tmp_path):
    for i, dataset in enumerate(("voc", "coco")):
        _write_job(tmp_path / str(i), "ssd300", 0, _metrics("ssd300", 0) | {"dataset": dataset})
    report = build_report(tmp_path, print_tables=False).read_text()
    assert "ssd300 (voc)" in report and "ssd300 (coco)" in report
    assert "VOC2007 test" in report and "COCO test-dev" in report    # ours vs paper rows


def test_accuracy_and_speed_tables_hold_mean_and_std_over_seeds(runs_dir):
    runs = load_runs(runs_dir)
    accuracy = summary.accuracy_table(runs).data.set_index("group")
    assert accuracy.at["ssd300", "map_mean"] == pytest.approx(0.32)
    assert accuracy.at["ssd300", "map_std"] == pytest.approx(math.sqrt(2 * 0.02 ** 2))
    assert accuracy.at["yolov1", "map_small_mean"] == pytest.approx(0.03)
    assert accuracy.at["yolov1", "map_small_std"] == pytest.approx(math.sqrt(2 * 0.01 ** 2))
    assert accuracy.at["ssd300", "seeds"] == 2 and accuracy.at["faster_rcnn_vgg16", "failed"] == 1
    shown = summary.accuracy_table(runs).shown.set_index("detector")
    assert shown.at["ssd300", "AP"] == "32.0 ± 2.8" and shown.at["yolov1", "APl"] == "43.0 ± 4.2"
    assert shown.at["faster_rcnn_vgg16", "AP"] == MISSING
    speed = summary.speed_table(runs)
    assert speed.data.set_index("group").at["yolov1", "fps_b1_mean"] == pytest.approx(32.0)
    assert speed.shown.set_index("detector").at["ssd300", "img/s b8"] == "15.0 ± 1.4"
    assert speed.shown.set_index("detector").at["ssd300", "params (M)"] == "25.00 ± 0.00"


def test_runs_table_lists_the_failed_run(runs_dir):
    table = summary.runs_table(load_runs(runs_dir))
    row = table.shown.set_index("detector").loc["faster_rcnn_vgg16"]
    assert row["status"] == "failed" and row["error"] == "RuntimeError: out of memory"
    assert "Traceback" in table.data.set_index("detector").at["faster_rcnn_vgg16", "error"]


def test_paper_table_matches_only_paper_settings(runs_dir):
    runs = load_runs(runs_dir)
    assert papers.paper_table(runs).data.empty          # synthetic: no paper setting
    voc = runs.assign(dataset="voc07")
    data = papers.paper_table(voc).data
    row = data[(data["detector"] == "ssd300") & (data["metric"] == "voc07_map")
               & (data["paper_train"] == "VOC07+12")].iloc[0]
    assert row["ours"] == pytest.approx(57.0) and row["paper"] == 74.3
    assert row["paper_split"] == "VOC2007 test" and row["our_split"] == "val"


def test_write_table_gives_markdown_csv_latex(runs_dir, tmp_path):
    paths = write_table(summary.accuracy_table(load_runs(runs_dir)), tmp_path)
    assert "32.0 ± 2.8" in paths["md"].read_text()
    tex = paths["tex"].read_text()
    assert r"32.0 $\pm$ 2.8" in tex and r"faster\_rcnn\_vgg16" in tex and r"\toprule" in tex
    assert "map_mean" in paths["csv"].read_text().splitlines()[0]


def test_report_writes_tables_plots_and_lists_failures(report, runs_dir):
    out = runs_dir / "report"
    assert report == out / "report.md"
    text = report.read_text()
    assert "faster_rcnn_vgg16" in text and "failed" in text and "out of memory" in text
    assert "32.0 ± 2.8" in text and "Problems while building" not in text, text[-800:]
    page = (out / "report.html").read_text()
    pngs = sorted(p.stem for p in (out / "plots").glob("*.png"))
    assert len(pngs) >= 11 and "src='plots/" not in page
    assert page.count("data:image/png;base64,") == len(pngs), pngs
    for name in ("runs", "accuracy", "speed", "per_class", "errors", "claims", "pairwise", "conditions"):
        for ext in ("md", "csv", "tex"):
            assert (out / "tables" / f"{name}.{ext}").is_file(), f"{name}.{ext}"


@pytest.mark.parametrize("name", ["speed_vs_accuracy", "ap_by_size", "candidates_vs_ap", "pr_curves",
                                  "top_detections", "detection_grid"])
def test_summary_plots_are_pngs_of_slide_size_and_pdfs(report, runs_dir, name):
    png = runs_dir / "report" / "plots" / f"{name}.png"
    expected = (plots.FIGSIZE if name != "detection_grid"
                else plot_runs.grid_size(num_images=1, num_columns=3))
    assert png_size(png) == tuple(round(v * plots.DPI) for v in expected)
    assert png.with_suffix(".pdf").read_bytes()[:5] == b"%PDF-"


@pytest.mark.parametrize("name", ["training", "error_breakdown", "confusion_matrix", "prf_confidence",
                                  "pr_curves_per_class", "failure_gallery"])
def test_plots_sized_by_their_content_are_pngs_and_pdfs(report, runs_dir, name):
    png = runs_dir / "report" / "plots" / f"{name}.png"
    width, height = png_size(png)
    assert width >= 400 and height >= 300
    assert png.with_suffix(".pdf").read_bytes()[:5] == b"%PDF-"


def test_error_table_counts_from_the_fabricated_detections(report, runs_dir):
    data = pd.read_csv(runs_dir / "report" / "tables" / "errors.csv").set_index(["group", "bucket"])
    # Per run: the circle found (shifted 2 or 6 px: IoU 0.82 / 0.54), a "circle" on the square
    # (cls), a square far from everything (bkg). AP50: circle 100, square 0 -> 50; fixing the
    # cls error makes the square found first -> 100.
    for group in ("ssd300", "yolov1"):
        row = data.loc[(group, "all")]
        assert (row["tp"], row["cls"], row["bkg"], row["loc"], row["missed"]) == (1, 1, 1, 0, 0)
        assert row["ap50"] == pytest.approx(50.0) and row["dap_cls"] == pytest.approx(50.0)
    # Everything is small (20 x 20, 28 x 24, 10 x 10 < 32²): the small bucket is the whole.
    assert data.loc[("ssd300", "small"), ["num_gt", "tp", "cls", "bkg"]].tolist() == [2, 1, 1, 1]
    assert ("ssd300", "medium") not in data.index            # empty buckets are left out


def test_main_prints_tables(runs_dir, capsys, monkeypatch):
    monkeypatch.setattr("sys.argv", ["detbench-report", str(runs_dir)])
    main()
    printed = capsys.readouterr().out
    assert "32.0 ± 2.8" in printed and "img/s b1" in printed and "failed" in printed


def test_empty_folder_still_gives_a_report(tmp_path):
    path = build_report(tmp_path, print_tables=False)
    assert "0 runs" in path.read_text()


def test_mean_precision_leaves_undefined_classes_out():
    precision = np.full((10, 101, 2, 4, 3), -1.0)       # [T, R, K, A, M]
    precision[:, :, 0] = 0.5
    precision[:, :, 1, 0] = 0.9                         # class 2 defined on "all" only
    mean = plot_runs.mean_precision(precision)          # [R, A]
    assert mean.shape == (101, 4)
    assert mean[0, 0] == pytest.approx(0.7) and mean[0, 1] == pytest.approx(0.5)


def test_a_failing_section_is_said_and_the_others_go_on(tmp_path, monkeypatch, caplog):
    from analysis import report

    def broken(ctx):
        raise RuntimeError("no such numbers")

    monkeypatch.setattr(report, "SECTIONS", [broken, *report.SECTIONS])
    _write_job(tmp_path / "0", "ssd300", 0, _metrics("ssd300", 0))
    text = build_report(tmp_path, print_tables=False).read_text()
    assert "section 'broken' failed: RuntimeError: no such numbers" in text
    assert text.index("## Speed") < text.index("## Appendix: Runs") < text.index("## Problems")
    assert "no such numbers" in caplog.text
