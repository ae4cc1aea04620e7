"""experiment=tune: the same trials for every detector, refusals, and the report's tuning section."""
from __future__ import annotations

import json

import numpy as np
import pytest
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from analysis import tuning as tuning_report
from analysis.runs import load_runs
from experiments.studies.tuning import TuningError, all_settings, trial_setting

DETECTORS = ("ssd300_cpu", "yolov1_cpu", "faster_rcnn_vgg16_cpu")


def _tune_config(overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_module("conf", version_base="1.3"):
        return compose("config", ["experiment=tune", *overrides], return_hydra_config=True)


def _jobs(cfg) -> dict[str, list[int]]:
    """The sweep's jobs as Hydra's basic sweeper expands them: detector -> trials."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = cfg.hydra.sweeper.params
    parsed = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items() if k != "seed"])
    values = {o.key_or_group: list(o.sweep_iterator()) for o in parsed}
    return {d: [int(t) for t in values["tune.trial"]] for d in values["detector"]}


def test_every_detector_gets_the_same_trials_with_the_same_settings():
    cfg = _tune_config([])
    jobs = _jobs(cfg)
    assert set(jobs) == set(DETECTORS)
    assert all(trials == list(range(6)) for trials in jobs.values())           # 6 trials per detector
    settings = {}
    for detector in DETECTORS:
        for trial in range(6):
            one = _tune_config([f"detector={detector}", f"tune.trial={trial}"])
            optimizer = OmegaConf.to_container(one.train.optimizer, resolve=True)
            settings.setdefault(trial, set()).add((optimizer["lr"], optimizer["weight_decay"]))
    assert all(len(s) == 1 for s in settings.values())                         # trial t: one setting for all
    assert settings[0] == {(2e-3, 1e-4)}                                        # trial 0: compare's default
    assert len({next(iter(s)) for s in settings.values()}) == 6                 # six different settings


def test_random_trials_are_seeded_log_uniform_draws_in_range():
    tune = OmegaConf.create({"trials": 50, "mode": "random", "seed": 3, "default": {"lr": 2e-3, "weight_decay": 1e-4},
                             "lr": [1e-4, 1e-2], "weight_decay": [1e-5, 1e-1]})
    draws = all_settings(tune)[1:]
    assert draws == all_settings(tune)[1:]                                      # seeded
    lrs = np.log10([d["lr"] for d in draws])
    assert lrs.min() >= -4 and lrs.max() <= -2 and lrs.std() > 0.4             # spread over the decades
    tune.trials = 10
    assert all_settings(tune)[1:] == draws[:9]                                  # trial t depends on (seed, t) only


def test_a_grid_lists_its_product_after_the_default():
    tune = OmegaConf.create({"trials": 7, "mode": "grid", "seed": 0, "default": {"lr": 2e-3, "weight_decay": 1e-4},
                             "grid": {"lr": [1e-3, 2e-3, 4e-3], "weight_decay": [0.0001, 0.01]}})
    assert [tuple(s.values()) for s in all_settings(tune)] == [
        (2e-3, 1e-4), (1e-3, 1e-4), (1e-3, 1e-2), (2e-3, 1e-4), (2e-3, 1e-2), (4e-3, 1e-4), (4e-3, 1e-2)]


@pytest.mark.parametrize("change,named", [
    ({"trials": 0}, "tune.trials=0"), ({"lr": [1e-2, 1e-3]}, "tune.lr=[0.01, 0.001]: an empty range"),
    ({"weight_decay": [0.0, 1e-2]}, "tune.weight_decay=[0.0, 0.01]"), ({"mode": "bayes"}, "tune.mode='bayes'"),
    ({"mode": "grid", "trials": 9}, "the grid holds 6 settings"),
])
def test_bad_search_spaces_are_refused_naming_the_setting(change, named):
    tune = OmegaConf.create({"trials": 6, "mode": "random", "seed": 0, "default": {"lr": 2e-3, "weight_decay": 1e-4},
                             "lr": [3e-4, 1e-2], "weight_decay": [1e-5, 1e-1],
                             "grid": {"lr": [1e-3, 2e-3, 4e-3], "weight_decay": [1e-4, 1e-2]}, **change})
    with pytest.raises(TuningError, match=named.replace("[", r"\[").replace("]", r"\]")):
        all_settings(tune)


def test_a_trial_outside_the_count_is_refused():
    tune = OmegaConf.create({"trials": 6, "mode": "random", "seed": 0, "default": {"lr": 2e-3, "weight_decay": 1e-4},
                             "lr": [3e-4, 1e-2], "weight_decay": [1e-5, 1e-1]})
    with pytest.raises(TuningError, match="tune.trial=6: outside"):
        trial_setting(tune, 6)


def _fabricated_run(folder, detector: str, trial: int, ap: float, noise: np.ndarray) -> None:
    folder.mkdir(parents=True)
    setting = trial_setting(OmegaConf.create({"trials": 6, "mode": "random", "seed": 0,
                                              "default": {"lr": 2e-3, "weight_decay": 1e-4},
                                              "lr": [3e-4, 1e-2], "weight_decay": [1e-5, 1e-1]}), trial)
    (folder / "metrics.json").write_text(json.dumps({
        "status": "ok", "detector": detector, "dataset": "synthetic", "seed": 0, "map": ap, "tune_trial": trial,
        "tune_trials": 6, "train_lr": setting["lr"], "train_weight_decay": setting["weight_decay"]}))
    keys = np.arange(50)   # the images by file name + content hash: how runs are paired
    np.savez(folder / "bootstrap.npz", image_ids=np.sort(np.random.default_rng(1).integers(0, 50, (300, 50)), axis=1),
             key_ids=keys, image_keys=np.array([f"{i:06d}.png#{i:016x}" for i in keys]),
             category_ids=np.array([1]), map=ap + noise, point_map=ap)


def test_the_section_finds_the_best_trial_and_a_claim_that_changes(tmp_path):
    """SSD beats YOLO at the default setting; YOLO's best trial overtakes it: the claim changes."""
    noise = np.random.default_rng(0).normal(0, 0.01, 300)
    aps = {"ssd300_cpu": [0.30, 0.28, 0.31, 0.25, 0.29, 0.30], "yolov1_cpu": [0.10, 0.22, 0.36, 0.05, 0.15, 0.12]}
    for detector, values in aps.items():
        for trial, ap in enumerate(values):
            _fabricated_run(tmp_path / f"{detector}-{trial}", detector, trial, ap, noise)
    frame = tuning_report.effort(load_runs(tmp_path)).set_index("detector")
    assert frame.loc["yolov1_cpu", "best_trial"] == 2 and frame.loc["ssd300_cpu", "best_trial"] == 2
    assert (frame["trials"] == 6).all() and frame.loc["yolov1_cpu", "ap_max"] - frame.loc["yolov1_cpu", "ap_min"] \
        == pytest.approx(0.31)
    claims = tuning_report.claims_table(frame.reset_index()).data.iloc[0]
    assert claims["default settings"].startswith("ssd300_cpu more accurate")
    assert claims["tuned settings"].startswith("yolov1_cpu more accurate") and claims["claim changes"] == "yes"
    table = tuning_report.effort_table(frame.reset_index())
    assert "same trials" in table.note and "optimistic" in table.note
