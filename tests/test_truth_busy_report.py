"""Issue 28, timings from a busy machine in the report: a run with ``speed_reliable: false`` is drawn
hollow in the speed plot (and off its Pareto front), kept out of claims (b), (e) and (f) (not testable,
naming the run), marked ‡ in the speed table, and the report says per run how to re-time it
(``stages=[bench]`` on a quiet machine); ``train_time_reliable: false`` marks training seconds and
takes the run out of claim (f) in training. The fabricated sweeps are test_claims'/test_ladder_report's."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import torch

from analysis import ladder, plots
from analysis.claims import NOT_TESTABLE, evaluate_claims
from analysis.report import build_report
from analysis.runs import load_runs
from analysis.summary import speed_table
from analysis.timing_trust import retime_sentences
from tests.test_claims import _ap, _sweep
from tests.test_ladder_report import DETECTORS, TRAIN_S, _ladder_sweep

NOTE = "the speed stage timed on a busy machine (load average 4.0 > 1 + 0.5 x 2 cores)"


def _mark(folder, **keys):
    path = folder / "metrics.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **keys}))


def _runs(folder):
    runs = load_runs(folder)
    runs["group"] = runs["detector"]
    return runs


def _busy_yolo_sweep(tmp_path):
    """SSD 50 ms, YOLO 20 ms (run '1', timed busy), Faster R-CNN 200 ms."""
    _sweep(tmp_path, _ap(0.30, 0.10, 0.45), _ap(0.20, 0.05, 0.35), _ap(0.40, 0.20, 0.50))
    _mark(tmp_path / "1", speed_reliable=False, speed_note=NOTE)
    return tmp_path


def test_speed_claims_that_need_a_busy_timing_are_not_testable_naming_the_run(tmp_path):
    claims = evaluate_claims(_runs(_busy_yolo_sweep(tmp_path)))
    b = claims[claims["claim"].str.startswith("(b)")].iloc[0]
    assert b["verdict"] == NOT_TESTABLE
    assert "speed of run 1 timed on a busy machine" in b["evidence"] and "stages=[bench]" in b["evidence"]
    e = claims[claims["claim"].str.startswith("(e)")].iloc[0]
    assert e["verdict"] == NOT_TESTABLE and "run 1" in e["evidence"] and "busy machine" in e["evidence"]


def test_a_quiet_seed_keeps_the_claim_testable(tmp_path):
    """Only the busy seed is left out: the group's quiet timing still decides the claim."""
    _busy_yolo_sweep(tmp_path)
    runs = _runs(tmp_path)
    quiet = runs[runs["run"] == "1"].assign(run="1b", seed=1, speed_reliable=True, speed_note=np.nan)
    claims = evaluate_claims(pd.concat([runs, quiet], ignore_index=True))
    assert claims[claims["claim"].str.startswith("(b)")].iloc[0]["verdict"] != NOT_TESTABLE


def test_busy_runs_are_marked_in_the_speed_table_and_hollow_in_the_plot(tmp_path, monkeypatch):
    runs = _runs(_busy_yolo_sweep(tmp_path))
    table = speed_table(runs)
    flags = dict(zip(table.data["group"], table.data["speed_busy"]))
    assert flags == {"faster_rcnn_vgg16_cpu": False, "ssd300_cpu": False, "yolov1_cpu": True}
    assert "yolov1_cpu ‡" in list(table.shown["detector"]) and "busy machine" in table.note

    drawn = {}
    monkeypatch.setattr(plots, "save", lambda fig, out, name: drawn.setdefault(name, fig) and [])
    summary = table.data.assign(map_mean=[0.4, 0.3, 0.2])
    plots.plot_speed_vs_accuracy(summary, tmp_path)
    ax = drawn["speed_vs_accuracy"].axes[0]
    faces = {}
    for line in ax.get_lines():
        if len(line.get_xdata()) == 1:
            faces[round(float(line.get_xdata()[0]), 3)] = line.get_markerfacecolor()
    assert faces[50.0] == "none", "YOLO (20 ms: 50 img/s), timed busy, is hollow"
    assert faces[20.0] != "none" and faces[5.0] != "none"
    front = [line for line in ax.get_lines() if line.get_label() == "Pareto front"][0]
    assert 50.0 not in list(front.get_xdata()), "a busy timing is not on the front"
    assert any("busy machine" in t.get_text() for t in ax.get_legend().get_texts())


def test_the_report_says_how_to_re_time_each_busy_run(tmp_path, capsys):
    _busy_yolo_sweep(tmp_path)
    report = build_report(tmp_path, print_tables=True).read_text()
    line = f"detbench detector=yolov1_cpu stages=[bench] weights={tmp_path / '1'}"
    assert line in report and "The speed of run 1" in report and NOTE in report
    assert line in capsys.readouterr().out
    assert "detbench detector=ssd300_cpu stages=[bench]" not in report


def test_training_time_from_a_busy_machine_is_marked_and_in_no_training_claim(tmp_path):
    aps = dict(zip(DETECTORS, (_ap(0.10, 0.05, 0.2), _ap(0.12, 0.05, 0.2), _ap(0.14, 0.05, 0.2),
                               _ap(0.30, 0.1, 0.4), _ap(0.25, 0.1, 0.4))))
    _ladder_sweep(tmp_path, aps, dict(zip(DETECTORS, (3000.0, 900.0, 400.0, 60.0, 20.0))), TRAIN_S)
    _mark(tmp_path / "3", train_time_reliable=False, train_time_note="trained on a busy machine (load 4.0)")
    _mark(tmp_path / "0", speed_reliable=False, speed_note=NOTE)
    runs = _runs(tmp_path)
    claims = ladder.ladder_claims(runs).data.set_index("claim")
    training = claims.loc["(f) proposal-based slower than single-shot in training"]
    assert training["verdict"] == NOT_TESTABLE and "training time of run 3" in training["evidence"]
    at_test = claims.loc["(f) proposal-based slower than single-shot at test (with proposals)"]
    assert at_test["verdict"] == NOT_TESTABLE and "speed of run 0" in at_test["evidence"]
    table = ladder.ladder_table(runs)
    shown = table.shown.set_index("detector")
    assert str(shown.loc["ssd300_cpu", "training s"]).endswith("‡")
    assert str(shown.loc["rcnn_vgg16_cpu", "end-to-end ms (b1, with proposals)"]).endswith("‡")
    assert not str(shown.loc["yolov1_cpu", "training s"]).endswith("‡")
    sentences = retime_sentences(runs.assign(label=runs["group"]))
    assert len(sentences) == 2 and any("training time of run 3" in s for s in sentences)


def test_provenance_marks_training_seconds_from_a_busy_machine(tmp_path):
    from analysis.provenance import provenance_table

    aps = dict(zip(DETECTORS[3:], (_ap(0.30, 0.1, 0.4), _ap(0.25, 0.1, 0.4))))
    _ladder_sweep(tmp_path, aps, {"ssd300_cpu": 60.0, "yolov1_cpu": 20.0}, TRAIN_S)
    _mark(tmp_path / "0", train_time_reliable=False)
    table = provenance_table(_runs(tmp_path))
    marked = dict(zip(table.shown["run"], table.shown["train s"]))
    assert marked["0"].endswith("‡") and not marked["1"].endswith("‡") and "busy machine" in table.note


def test_an_interleaved_timing_from_a_busy_machine_is_left_out(tmp_path):
    """The sweep-level interleaved timing is guarded too; a busy one falls back to the bench stages."""
    from analysis.significance import interleaved_samples

    _sweep(tmp_path, _ap(0.30, 0.10, 0.45), _ap(0.20, 0.05, 0.35), _ap(0.40, 0.20, 0.50))
    timed = {str(tmp_path / i): {"detector": d, "samples_ms": [40.0] * 30}
             for i, d in (("0", "ssd300_cpu"), ("1", "yolov1_cpu"))}
    (tmp_path / "sweep_stages").mkdir()
    stored = tmp_path / "sweep_stages" / "interleaved_latency.json"
    stored.write_text(json.dumps({"runs": timed, "speed_reliable": True}))
    assert len(interleaved_samples(_runs(tmp_path))) == 2
    stored.write_text(json.dumps({"runs": timed, "speed_reliable": False, "speed_note": NOTE}))
    assert interleaved_samples(_runs(tmp_path)) == {}
    row = evaluate_claims(_runs(tmp_path)).query("claim.str.startswith('(b)')").iloc[0]
    assert "separate bench stages" in row["evidence"]


def test_the_interleaved_stage_records_the_guard(monkeypatch, tmp_path):
    from experiments.studies import interleaved_latency as stage

    monkeypatch.setattr(stage, "finished_runs", lambda sweep: [tmp_path / "a", tmp_path / "b"])
    monkeypatch.setattr(stage, "build_split", lambda dataset, split: [(torch.zeros(3, 4, 4), {})])
    monkeypatch.setattr(stage, "load_detector", lambda run, device: type("D", (), {"model": None, "name": run.name}))
    monkeypatch.setattr(stage, "StageTimer", lambda *args: None)
    monkeypatch.setattr(stage, "time_interleaved", lambda timers, images: {r: [1.0] for r in timers})
    monkeypatch.setattr(stage, "guarded", lambda measure, what: {**measure(), "speed_reliable": False,
                                                                 "speed_note": NOTE, "speed_guard": "readings"})
    from omegaconf import OmegaConf

    out = stage.stage(OmegaConf.create({"device": "cpu", "dataset": {}}), tmp_path)
    assert out["speed_reliable"] is False and out["speed_note"] == NOTE and len(out["runs"]) == 2
