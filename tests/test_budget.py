"""train.budget: resolution to iterations, the schedules sized to it, refusals, the training cost."""
from __future__ import annotations

import json

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from experiments.run import run
from experiments.training.budget import (
    Budget,
    BudgetError,
    BudgetSchedule,
    budget_of,
    check_budget,
    resolve_iterations,
)
from experiments.training.train_cost import measure_step, roi_align_flops, roi_pool_flops
from tests.conftest import TINY_RUN


def _lrs(schedule: BudgetSchedule, iterations: int, lr: float = 0.5) -> list[float]:
    """lr before each of ``iterations`` steps, then after the last: [iterations + 1]."""
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=lr)
    scheduler = schedule.build(optimizer, iterations)
    seen = [optimizer.param_groups[0]["lr"]]
    for _ in range(iterations):
        optimizer.step()
        scheduler.step()
        seen.append(optimizer.param_groups[0]["lr"])
    return seen


@pytest.mark.parametrize("iterations,warmup", [(150, 0.0), (37, 0.1), (1000, 0.05)])
def test_linear_decay_reaches_zero_exactly_at_the_budget(iterations, warmup):
    lrs = _lrs(BudgetSchedule("linear", warmup=warmup, warmup_factor=0.1), iterations)
    warm = round(warmup * iterations)
    assert lrs[-1] == 0.0 and all(lr > 0 for lr in lrs[:-1])      # zero at the budget, not before
    assert lrs[0] == pytest.approx(0.5 * (0.1 if warm else 1.0))    # the warm-up starts at 0.1 x lr
    assert lrs[warm] == pytest.approx(0.5)                          # peak at the warm-up's end
    decay = lrs[warm:]
    assert all(a > b for a, b in zip(decay, decay[1:]))             # strictly decreasing after it
    steps = [a - b for a, b in zip(decay, decay[1:])]
    assert max(steps) == pytest.approx(min(steps))                  # linear


def test_step_milestones_are_fractions_of_the_budget():
    lrs = _lrs(BudgetSchedule("step", milestones=[0.8], gamma=0.1), 150, lr=1.0)
    assert lrs[119] == 1.0 and lrs[120] == pytest.approx(0.1)      # compare's drop at iteration 120
    lrs = _lrs(BudgetSchedule("step", milestones=[0.8], gamma=0.1), 300, lr=1.0)
    assert lrs[239] == 1.0 and lrs[240] == pytest.approx(0.1)      # the same fraction of twice the budget


class Conv(nn.Module):
    """A stand-in detector whose training step costs ``width`` 3x3 convolutions of the image."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3, padding=1)

    def forward(self, images, targets=None):
        return {"loss": torch.stack([self.conv(im[None]).square().mean() for im in images]).sum()}


class Images(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 8

    def __getitem__(self, i):
        return torch.rand(3, 32, 32), {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}


def test_a_flops_budget_gives_iterations_inversely_proportional_to_the_cost():
    cheap = measure_step(Conv(4), Images(), 4, torch.device("cpu"))
    dear = measure_step(Conv(12), Images(), 4, torch.device("cpu"))
    assert dear.flops == 3 * cheap.flops > 0     # forward + backward of 3x the channels
    budget = Budget("flops", 600 * cheap.flops)
    n_cheap = resolve_iterations(budget, per_epoch=2, flops_per_iteration=cheap.flops)
    n_dear = resolve_iterations(budget, per_epoch=2, flops_per_iteration=dear.flops)
    assert (n_cheap, n_dear) == (600, 200)       # inversely proportional: 3x the cost, 1/3 the steps
    assert n_cheap * cheap.flops == n_dear * dear.flops == budget.value


def test_measuring_a_step_changes_nothing():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    wrapped = Conv(4)
    wrapped.conv = model
    before = {k: v.clone() for k, v in wrapped.state_dict().items()}
    rng = torch.get_rng_state()
    wrapped.eval()
    measure_step(wrapped, Images(), 4, torch.device("cpu"), timed=True)
    assert all(torch.equal(before[k], v) for k, v in wrapped.state_dict().items())   # BatchNorm stats too
    assert torch.equal(rng, torch.get_rng_state()) and not wrapped.training
    assert all(p.grad is None for p in wrapped.parameters())


def test_roi_estimates_count_each_roi():
    features = torch.zeros(1, 8, 20, 20)
    rois = torch.tensor([[0, 0, 0, 32, 32], [0, 0, 0, 64, 16]], dtype=torch.float32)   # pixels; scale 1/8
    # RoIPool: one comparison per covered cell per channel, at least 7 x 7 per RoI: (49 + 49) x 8
    assert roi_pool_flops(features, rois, 0.125, 7, 7) == (49 + 49) * 8
    # RoIAlign with 2 x 2 samples per bin: 8 FLOPs per sample, 2 RoIs x 49 bins x 4 samples x 8 channels
    assert roi_align_flops(features, rois, 0.125, 7, 7, 2, False) == 8 * 2 * 49 * 4 * 8


def _train(**values):
    base = {"budget": {"kind": "epochs", "value": 12}, "epochs": None, "iterations": 0, "max_time_s": 0,
            "scheduler": None, "warmup_iterations": 0}
    return OmegaConf.create({**base, **values})


def test_shorthands_are_expressed_through_the_budget():
    assert budget_of(_train()) == Budget("epochs", 12)
    assert budget_of(_train(epochs=3)) == Budget("epochs", 3, "train.epochs")
    shorthand = budget_of(_train(iterations=150))
    assert shorthand.kind == "iterations"
    assert resolve_iterations(shorthand, per_epoch=18) == 162      # whole epochs, the old rule
    assert resolve_iterations(Budget("iterations", 150), per_epoch=18) == 150   # the budget: exact
    assert resolve_iterations(Budget("epochs", 2), per_epoch=75) == 150


@pytest.mark.parametrize("values,named", [
    ({"budget": {"kind": "minutes", "value": 3}}, "train.budget.kind='minutes'"),
    ({"budget": {"kind": "iterations", "value": 0}}, "train.budget.value=0: must be"),
    ({"budget": {"kind": "flops", "value": 1e12}, "epochs": 3}, "train.epochs=3 beside train.budget.kind=flops"),
    ({"budget": {"kind": "seconds", "value": 60}, "max_time_s": 30}, "train.max_time_s=30 beside"),
    ({"epochs": 2, "iterations": 10}, "train.epochs=2 and train.iterations=10"),
    ({"scheduler": {"_target_": "experiments.training.budget.BudgetSchedule", "shape": "step",
                    "milestones": [0.9, 0.5]}}, "train.scheduler.milestones=[0.9, 0.5]"),
    ({"scheduler": {"_target_": "experiments.training.budget.BudgetSchedule", "shape": "linear",
                    "warmup": 0.1}, "warmup_iterations": 5}, "train.warmup_iterations=5 beside"),
])
def test_bad_budgets_are_refused_naming_the_setting(values, named):
    with pytest.raises(BudgetError, match=named.replace("[", r"\[").replace("]", r"\]")):
        check_budget(_train(**values), deterministic=False)


def test_a_seconds_budget_is_refused_under_deterministic():
    with pytest.raises(BudgetError, match="deterministic=true"):
        check_budget(_train(budget={"kind": "seconds", "value": 60}), deterministic=True)


def test_budgets_below_one_iteration_or_without_a_cost_are_refused():
    with pytest.raises(BudgetError, match="less than one"):
        resolve_iterations(Budget("flops", 1e9), per_epoch=10, flops_per_iteration=5e9)
    with pytest.raises(BudgetError, match="could not be measured"):
        resolve_iterations(Budget("flops", 1e12), per_epoch=10, flops_per_iteration=0)


def test_a_run_trains_its_budget_exactly_and_records_its_cost(compose_config, tmp_path, one_torch_thread):
    """8 images at batch 2: 4 iterations per epoch; a budget of 6 iterations stops inside epoch 2,
    with linear decay to 0 and 3 evenly spaced validations."""
    cfg = compose_config(["detector=yolov1_cpu", *TINY_RUN, "dataset.train.num_images=8", "train.epochs=null",
                          "train.budget.kind=iterations", "train.budget.value=6", "train.validations=3",
                          "train.val_images=4", "stages=[train]",
                          "+train.scheduler={_target_: experiments.training.budget.BudgetSchedule, shape: linear}"])
    metrics = run(cfg, tmp_path)
    assert metrics["status"] == "ok", metrics.get("error")
    assert metrics["train_iterations"] == metrics["train_iterations_planned"] == 6
    assert metrics["train_budget"] == "6 iterations" and metrics["train_budget_iterations"] == 6
    per_iteration = metrics["train_flops_per_iteration"]
    assert per_iteration > 0 and metrics["train_flops"] == 6 * per_iteration
    assert metrics["train_images_seen"] == 12 and metrics["train_validations"] == 3
    assert "still_improving" in metrics and "val_gain" in metrics
    rows = (tmp_path / "val_log.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows] == [2, 4, 6]
    log = (tmp_path / "train_log.csv").read_text().splitlines()
    lrs = [float(row.split(",")[3]) for row in log[1:]]               # logged after each step
    assert lrs[-1] == 0.0 and lrs[-2] == pytest.approx(2e-3 / 6)       # 0 at the budget, 1/6 of the peak before
    assert json.loads((tmp_path / "metrics.json").read_text())["train_budget_kind"] == "iterations"
