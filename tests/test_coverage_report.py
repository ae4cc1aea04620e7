"""The report's Coverage table and plot, on run folders whose coverage.json the real
``run_coverage`` wrote (hand-made boxes with known answers) and a reference run without one."""
import json

from analysis.report import build_report
from detectors.ssd import SSD
from detectors.yolo import YOLO
from experiments.studies.coverage import run_coverage
from tests.test_coverage import Boxes

BOXES = [[[20.0, 20.0, 40.0, 40.0], [0.0, 0.0, 120.0, 100.0], [200.0, 200.0, 230.0, 230.0],
          [250.0, 100.0, 400.0, 300.0]]]        # small, large (same YOLO cell), small, large


def test_report_has_a_coverage_table_and_plot(tmp_path, one_torch_thread):
    for name, model in (("ssd300", SSD(num_classes=2, width=0.125)),
                        ("yolov1", YOLO(num_classes=2, width=0.125, head="conv"))):
        run = tmp_path / name
        run.mkdir()
        metrics = run_coverage(model, Boxes(BOXES, size=(448, 448)), run)
        (run / "metrics.json").write_text(json.dumps({
            "detector": name, "dataset": "synthetic", "seed": 0, "status": "ok", **metrics,
            "map": 0.3, "map_small": 0.1, "map_medium": 0.3, "map_large": 0.5}))
    assert json.loads((tmp_path / "yolov1" / "metrics.json").read_text())["coverage_small"] == 0.5
    reference = tmp_path / "tv_ssd300"
    reference.mkdir()
    (reference / "metrics.json").write_text(json.dumps({
        "detector": "tv_ssd300", "dataset": "synthetic", "seed": 0, "status": "ok", "map": 0.2,
        "coverage_note": "coverage not defined"}))
    report = build_report(tmp_path, print_tables=False).read_text()
    table = (tmp_path / "report" / "tables" / "coverage.md").read_text()
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in table.splitlines() if line.startswith("| ") and "detector" not in line}
    # columns: dataset, stage, all, small, large, objects, kept by best rule, lost x2, IoU (no medium
    # object anywhere: the report leaves the empty column out)
    assert rows["yolov1"][1:5] == ["grid_cells", "75.0", "50.0", "100.0"]
    assert rows["yolov1"][8] == "1"                                           # the collision
    assert rows["ssd300"][1:5] == ["default_boxes", "100.0", "100.0", "100.0"]
    assert rows["tv_ssd300"][2] == "coverage not defined"
    assert (tmp_path / "report" / "plots" / "coverage_vs_size.png").is_file()
    assert "coverage_vs_size" in report and "plot 'coverage vs size' not drawn" not in report
