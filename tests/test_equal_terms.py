"""Equal terms: every run trains its stated iterations, or says it did not and stays apart;
a run stopped by time resumes inside its epoch; the report shows every run's provenance."""
from __future__ import annotations

import json

import pytest
import torch
import yaml

from analysis import papers, provenance, summary
from analysis.report import build_report
from analysis.runs import load_runs
from experiments.run import run
from tests.conftest import TINY_RUN

RUN = ["detector=yolov1_cpu", "detector.model.dropout=0.0", *TINY_RUN,
       "dataset.train.num_images=8", "train.batch_size=4", "train.epochs=3",
       "stages=[train]", "deterministic=true", "train.augmentation=yolo"]


def test_compare_has_no_time_cap(compose_config):
    cfg = compose_config(["experiment=compare", "detector=ssd300_cpu"])
    assert not cfg.train.max_time_s


def test_time_stop_is_incomplete_and_resume_finishes_its_epoch(compose_config, tmp_path):
    straight = run(compose_config(RUN), tmp_path / "straight")
    assert straight["status"] == "ok" and straight["train_iterations"] == 6
    assert straight["train_iterations_planned"] == 6

    cut = run(compose_config([*RUN, "train.max_time_s=1e-9"]), tmp_path / "cut")
    assert cut["status"] == "incomplete" and cut["train_iterations"] == 1
    assert cut["train_iterations_planned"] == 6 and cut["train_stopped_on_time"] is True
    assert "1 of 6 iterations" in cut["status_reason"]
    on_disk = json.loads((tmp_path / "cut/metrics.json").read_text())
    assert on_disk["status"] == "incomplete"

    resumed = run(compose_config([*RUN, "resume=true"]), tmp_path / "cut")
    assert resumed["status"] == "ok", resumed.get("error")
    assert resumed["train_iterations"] == 6, "the rest of epoch 1 was trained, not skipped"
    a = torch.load(tmp_path / "straight/checkpoints/last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "cut/checkpoints/last.pt", weights_only=True)["model"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


def _job(folder, detector, metrics):
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump(
        {"detector": {"name": detector}, "dataset": {"name": "synthetic"}, "seed": 0}))
    (folder / "metrics.json").write_text(json.dumps(metrics))


def _metrics(detector, iterations, planned, **extra):
    return {"detector": detector, "dataset": "synthetic", "seed": 0, "status": "ok",
            "map": 0.5, "map_50": 0.7, "train_iterations": iterations,
            "train_iterations_planned": planned, "weights_source": "random", **extra}


@pytest.fixture
def mixed_runs(tmp_path):
    _job(tmp_path / "0", "ssd300_cpu", _metrics("ssd300_cpu", 200, 200))
    # an older metrics.json: status ok, but training stopped by time (no plan recorded)
    _job(tmp_path / "1", "faster_rcnn_vgg16_cpu",
         _metrics("faster_rcnn_vgg16_cpu", 156, None, train_stopped_on_time=True,
                  weights_source="torchvision VGG16_Weights.IMAGENET1K_V1"))
    _job(tmp_path / "2", "yolov1_cpu", _metrics("yolov1_cpu", 120, 300, map=0.9))
    return tmp_path


def test_incomplete_runs_are_never_ranked_with_finished_ones(mixed_runs):
    runs = load_runs(mixed_runs)
    status = dict(zip(runs["detector"], runs["status"]))
    assert status == {"ssd300_cpu": "ok", "faster_rcnn_vgg16_cpu": "incomplete",
                      "yolov1_cpu": "incomplete"}
    accuracy = summary.accuracy_table(runs).data.set_index("group")
    assert accuracy.at["ssd300_cpu", "seeds"] == 1
    assert accuracy.at["yolov1_cpu", "seeds"] == 0 and pd_isna(accuracy.at["yolov1_cpu", "map_mean"])
    apart = provenance.incomplete_table(runs).data.set_index("detector")
    assert set(apart.index) == {"faster_rcnn_vgg16_cpu", "yolov1_cpu"}
    assert apart.at["yolov1_cpu", "AP"] == "90.0" and apart.at["yolov1_cpu", "iterations run / planned"] == "120 / 300"
    assert "120 of 300" in apart.at["yolov1_cpu", "reason"]


def pd_isna(value) -> bool:
    import pandas as pd

    return bool(pd.isna(value))


def test_report_shows_every_runs_provenance(mixed_runs):
    shown = provenance.provenance_table(load_runs(mixed_runs)).shown.set_index("detector")
    assert shown.at["ssd300_cpu", "pretrained"] == "from scratch"
    assert shown.at["faster_rcnn_vgg16_cpu", "pretrained"] == "pretrained"
    assert shown.at["ssd300_cpu", "iterations run / planned"] == "200 / 200"
    assert shown.at["ssd300_cpu", "stopped early"] == "no"
    assert shown.at["faster_rcnn_vgg16_cpu", "stopped early"] == "yes"
    assert shown.at["yolov1_cpu", "stopped early"] == "yes"
    text = build_report(mixed_runs, print_tables=False).read_text()
    assert "## Appendix: Provenance" in text and "**Incomplete runs" in text and "120 / 300" in text


def test_ours_vs_paper_pairs_only_runs_in_the_papers_setting(tmp_path):
    paper_run = _metrics("ssd300", 120000, 120000, dataset="voc", voc07_map=0.75,
                         weights_source="torchvision VGG16_Weights.IMAGENET1K_V1", augmentation="ssd",
                         train_years=[2007, 2012], paper_name="SSD (Liu et al. 2016), Table 1")
    _job(tmp_path / "0", "ssd300", paper_run)
    _job(tmp_path / "1", "ssd300", paper_run | {"weights_source": "random", "voc07_map": 0.40})
    (tmp_path / "1" / "metrics.json").write_text(json.dumps(
        paper_run | {"weights_source": "random", "voc07_map": 0.40, "seed": 1, "overrides": ["seed=1", "x=1"]}))
    (tmp_path / "1" / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["seed=1", "x=1"]))
    table = papers.paper_table(load_runs(tmp_path))
    rows = table.data[table.data["metric"] == "voc07_map"]
    shown = table.shown[table.shown["metric"] == "voc07_map"]
    paired = rows[rows["setting"] == "as the paper"]
    assert list(paired["paper_train"]) == ["VOC07+12, expansion (SSD300*)"]    # 77.2
    assert shown.loc[paired.index, "ours − paper"].tolist() == [pytest.approx(75.0 - 77.2)]
    plain = rows[(rows["paper_train"] == "VOC07+12") & (rows["detector"] == "ssd300")].iloc[0]
    assert plain["setting"] == "differs: trained with expansion (this paper row: without)"
    scratch = rows[rows["detector"] != "ssd300"]
    assert scratch["setting"].str.contains("from scratch").all()
    assert shown.loc[scratch.index, "ours − paper"].isna().all()
