"""The report's training curves on fabricated run folders: each loss term on its own axis, never
summed; iterations below and training FLOPs above; validation points marked; AP against FLOPs."""
from __future__ import annotations

import json

import numpy as np
import pytest

from analysis import training_curves

FLOPS_PER_ITERATION = {"ssd": 2e9, "yolo": 5e9}
TERMS = {"ssd": ["loss_conf", "loss_loc"], "yolo": ["loss_coord", "loss_conf_obj", "loss_conf_noobj"]}


def _run(folder, name):
    folder.mkdir(parents=True)
    iterations = np.arange(10, 110, 10)
    columns = {"iteration": iterations, "epoch": iterations // 50, "time_s": iterations * 0.5}
    for k, term in enumerate(TERMS[name]):
        columns[term] = (k + 1) * 10.0 / iterations
    columns["loss"] = sum(columns[t] for t in TERMS[name])
    header = list(columns)
    rows = [",".join(str(columns[h][i]) for h in header) for i in range(len(iterations))]
    (folder / "train_log.csv").write_text(",".join(header) + "\n" + "\n".join(rows) + "\n")
    (folder / "val_log.csv").write_text("iteration,epoch,time_s,map,map_50\n50,1,30,0.1,0.2\n100,2,60,0.2,0.4\n")
    (folder / "metrics.json").write_text(json.dumps({"train_flops_per_iteration": FLOPS_PER_ITERATION[name]}))
    return folder


@pytest.fixture
def drawn(tmp_path, monkeypatch):
    figures = []

    def keep(fig, out_dir, name):
        figures.append(fig)
        return [out_dir / f"{name}.png"]

    monkeypatch.setattr(training_curves, "save", keep)
    runs = {name: [_run(tmp_path / name, name)] for name in TERMS}
    assert training_curves.plot_training(runs, tmp_path / "plots")
    return figures[0]


def test_each_loss_term_has_its_own_axis_and_the_sum_is_not_drawn(drawn):
    visible = [ax for ax in drawn.axes if ax.get_visible()]
    titles = [ax.get_title() for ax in visible]
    expected = [f"{g}: {t.removeprefix('loss_')}" for g, terms in TERMS.items() for t in terms]
    assert titles[:len(expected)] == expected
    for ax, (group, term) in zip(visible, [(g, t) for g, terms in TERMS.items() for t in terms]):
        assert len(ax.lines) == 1 + 2, "one curve, two dotted validation marks"
        k = TERMS[group].index(term)
        np.testing.assert_allclose(ax.lines[0].get_ydata(), (k + 1) * 10.0 / np.arange(10, 110, 10))
        assert [line.get_xdata()[0] for line in ax.lines[1:]] == [50, 100], "validations marked"
        assert ax.get_yscale() == "log"


def test_iterations_below_training_flops_above_and_ap_against_both(drawn):
    visible = [ax for ax in drawn.axes if ax.get_visible()]
    ssd_conf = visible[0]
    assert ssd_conf.get_xlabel() == "iteration"
    (top,) = ssd_conf.child_axes
    assert top.get_xlabel() == "training GFLOP"
    assert top._functions[0](np.array([100.0]))[0] == pytest.approx(100 * 2e9 / 1e9)
    ap_iter, ap_flops = visible[-2:]
    assert ap_iter.get_xlabel() == "iteration" and ap_flops.get_xlabel() == "training GFLOP"
    by_label = {line.get_label(): line for line in ap_flops.lines}
    np.testing.assert_allclose(by_label["yolo"].get_xdata(), [50 * 5.0, 100 * 5.0])   # GFLOP
    np.testing.assert_allclose(by_label["yolo"].get_ydata(), [10.0, 20.0])            # AP in %
    assert all(line.get_marker() not in (None, "None", "") for line in ap_iter.lines), "validation points marked"


def test_flops_unit_picks_the_largest_reached():
    assert training_curves.flops_unit(8.4e12) == (1e12, "TFLOP")
    assert training_curves.flops_unit(3e9) == (1e9, "GFLOP")
