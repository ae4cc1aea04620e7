"""Bootstrap intervals of the robustness figures: one resampling shared by every cell, mPC and
rPC per replicate, agreement with the evaluator's own bootstrap, mismatched cells refused."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from experiments.evaluation.bootstrap import bootstrap
from experiments.evaluation.scoring import score
from experiments.studies.robustness import robustness_stage, summarise
from experiments.studies.robustness_intervals import CellReplicates, summary_arrays
from tests.test_robustness import Rectangles, SaturationDetector, _stage_cfg


def _rows(cells):
    return pd.DataFrame({"corruption": [c for c, _, _ in cells], "severity": [s for _, s, _ in cells],
                         "held_out": [h for _, _, h in cells]})


def test_summary_arrays_compute_mpc_and_rpc_per_replicate():
    rows = _rows([("clean", 0, False), ("fog", 1, False), ("fog", 3, False), ("spatter", 1, True)])
    values = {k: np.array([[0.5, 0.4], [0.3, 0.2], [0.1, np.nan], [0.25, 0.1]]) for k in
              ("map", "map_50", "map_small", "map_medium", "map_large")}
    out = summary_arrays(rows, values)
    assert out["robust_p"].tolist() == [0.5, 0.4]
    assert out["robust_mpc"].tolist() == pytest.approx([0.2, 0.2])         # a NaN cell is left out
    assert out["robust_rpc"].tolist() == pytest.approx([0.4, 0.5])          # per replicate, not a ratio of means
    assert out["robust_mpc_heldout"].tolist() == [0.25, 0.1]
    assert out["robust_mpc_fog"].tolist() == pytest.approx([0.2, 0.2])
    zero = {k: np.where(np.arange(4)[:, None] == 0, 0.0, v) for k, v in values.items()}
    assert np.isnan(summary_arrays(rows, zero)["robust_rpc"]).all()      # P = 0: rPC undefined
    # the point figures are the same function at B = 1
    table = rows.assign(**{k: v[:, 0] for k, v in values.items()})
    point = summarise(table)
    assert point["robust_rpc"] == pytest.approx(0.4) and point["robust_map_fog_3"] == pytest.approx(0.1)
    assert point["robust_cells"] == 2 and point["robust_cells_heldout"] == 1


def test_cells_share_one_resampling_and_agree_with_the_evaluators_bootstrap():
    dataset, model = Rectangles(6), SaturationDetector()
    clean = score(model, dataset, 2, torch.device("cpu"), "faster_coco_eval")
    replicates = CellReplicates(200, seed=4)
    first = replicates.add(clean)
    again = replicates.add(clean)        # a "corruption" that changes nothing: the same images, the same AP
    reference = bootstrap(clean.ground_truth, clean.detections, [c for c, _ in clean.categories], 200, seed=4,
                          method="percentile")   # robustness intervals are percentile ones
    assert np.array_equal(first["map"], reference.replicates["map"], equal_nan=True)
    assert np.array_equal(first["map"], again["map"], equal_nan=True)
    rows = _rows([("clean", 0, False), ("fog", 1, False)])
    intervals = replicates.intervals(rows)
    assert intervals["robust_p_ci_low"] == pytest.approx(reference.low["map"])
    assert intervals["robust_p_ci_high"] == pytest.approx(reference.high["map"])
    assert intervals["robust_rpc_ci_low"] == intervals["robust_rpc_ci_high"] == pytest.approx(1.0)
    assert intervals["robust_bootstrap_replicates"] == 200 and intervals["robust_bootstrap_seed"] == 4
    with pytest.raises(ValueError, match="3 robustness rows but 2 cells"):
        replicates.intervals(_rows([("clean", 0, False), ("fog", 1, False), ("fog", 2, False)]))


def test_a_cell_on_other_images_is_refused_by_name():
    model = SaturationDetector()
    replicates = CellReplicates(10, seed=0)
    replicates.add(score(model, Rectangles(4), 2, torch.device("cpu"), "faster_coco_eval"))
    with pytest.raises(ValueError, match="the clean cell and this cell were not scored on the same image ids"):
        replicates.add(score(model, Rectangles(3), 2, torch.device("cpu"), "faster_coco_eval"))


def test_stage_writes_intervals_that_hold_the_point(tmp_path):
    cfg = _stage_cfg(["gaussian_noise", "speckle_noise"], [2, 5], bootstrap=100)
    metrics = robustness_stage(cfg, SaturationDetector(), Rectangles(5), torch.device("cpu"), tmp_path, True)
    for name in ("robust_p", "robust_mpc", "robust_rpc", "robust_mpc_small", "robust_rpc_small",
                 "robust_mpc_heldout", "robust_mpc_gaussian_noise"):
        assert metrics[f"{name}_ci_low"] <= metrics[name] <= metrics[f"{name}_ci_high"], name
    assert metrics["robust_mpc_ci_high"] > metrics["robust_mpc_ci_low"]   # 5 images: a real spread
    rows = pd.read_csv(tmp_path / "robustness.csv")
    assert (rows["map_ci_low"] <= rows["map"]).all() and (rows["map"] <= rows["map_ci_high"]).all()
    off = tmp_path / "off"
    off.mkdir()
    without = robustness_stage(_stage_cfg(["gaussian_noise"], [2]), SaturationDetector(), Rectangles(5),
                               torch.device("cpu"), off, True)
    assert "robust_p_ci_low" not in without and pd.read_csv(off / "robustness.csv")["map_ci_low"].isna().all()
