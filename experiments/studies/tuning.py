"""Equal tuning effort: the learning rate and weight decay of each trial of ``experiment=tune``.

Every detector gets the same trials: trial ``t`` has the same setting for every detector (the sweep
is detector x trial with Hydra's own sweeper), so the effort is equal by construction and the
candidates are the same. Trial 0 is the default setting (``tune.default``: compare's lr and weight
decay), so the report can say whether a claim changes between the default and the tuned settings.
The other trials are

* ``random``: log-uniform draws from ``tune.lr`` and ``tune.weight_decay`` ([low, high] ranges),
  from a generator seeded with ``tune.seed`` (trial t's draw depends on (seed, t) only);
* ``grid``: the product of ``tune.grid.lr`` x ``tune.grid.weight_decay`` in order, trial 1 on.

The config reads them through the resolver ``${tune:lr}`` / ``${tune:weight_decay}`` and the sweep its
trials through ``${tune_trials:}`` (registered when this module is imported, which ``experiments.stages``
does); they refuse bad input naming the setting before any job starts: no trials, a range with
low >= high or a value <= 0, a grid too small for the trials, a trial outside ``[0, trials)``.
"""
from __future__ import annotations

import math

import numpy as np
from omegaconf import OmegaConf

NAMES = ("lr", "weight_decay")
MODES = ("random", "grid")


class TuningError(ValueError):
    """A tuning setting a sweep cannot use; the message names it."""


def _range(tune, name: str) -> tuple[float, float]:
    low, high = (float(v) for v in tune[name])
    if not (0 < low < high and math.isfinite(high)):
        raise TuningError(f"tune.{name}=[{low}, {high}]: an empty range; need 0 < low < high")
    return low, high


def trial_setting(tune, trial: int) -> dict[str, float]:
    """{lr, weight_decay} of ``trial`` under the ``tune`` settings (module doc)."""
    trials, mode = int(tune["trials"]), str(tune["mode"])
    if trials < 1:
        raise TuningError(f"tune.trials={trials}: at least one trial per detector")
    if mode not in MODES:
        raise TuningError(f"tune.mode={mode!r}: choose one of {list(MODES)}")
    if not 0 <= trial < trials:
        raise TuningError(f"tune.trial={trial}: outside [0, tune.trials={trials})")
    default = {name: float(tune["default"][name]) for name in NAMES}
    if trial == 0:
        return default
    if mode == "grid":
        grid = [(lr, wd) for lr in tune["grid"]["lr"] for wd in tune["grid"]["weight_decay"]]
        if trials - 1 > len(grid):
            raise TuningError(f"tune.trials={trials}: the grid holds {len(grid)} settings besides the default")
        lr, wd = grid[trial - 1]
        return {"lr": float(lr), "weight_decay": float(wd)}
    ranges = {name: _range(tune, name) for name in NAMES}
    rng = np.random.default_rng([int(tune["seed"]), trial])
    return {name: float(math.exp(rng.uniform(math.log(low), math.log(high)))) for name, (low, high) in ranges.items()}


def all_settings(tune) -> list[dict[str, float]]:
    """Every trial's setting, trial 0 first: what each detector of the sweep trains with."""
    if int(tune["trials"]) < 1:
        raise TuningError(f"tune.trials={tune['trials']}: at least one trial per detector")
    return [trial_setting(tune, t) for t in range(int(tune["trials"]))]


def _resolve(name: str, *, _root_) -> float:
    if name not in NAMES:
        raise TuningError(f"${{tune:{name}}}: choose one of {list(NAMES)}")
    tune = _root_.tune
    return trial_setting(tune, int(tune.trial))[name]


def _trials(*, _root_) -> int:
    """``tune.trials``, refused below 1 (the sweep's ``range(0,${tune_trials:})`` would launch nothing)."""
    all_settings(_root_.tune)   # every trial's setting is valid before the first job starts
    return int(_root_.tune.trials)


if not OmegaConf.has_resolver("tune"):
    OmegaConf.register_new_resolver("tune", _resolve)
    OmegaConf.register_new_resolver("tune_trials", _trials)
