"""The training length's one home, ``train.budget: {kind, value}``, and the schedules sized to it.

Kinds (``value`` in the kind's unit):

* ``epochs``      passes over the training split (``value`` x iterations per epoch);
* ``iterations``  optimizer steps, exactly (no rounding to whole epochs);
* ``flops``       training FLOPs (forward + backward, 2 per multiply-add, counted on a real batch by
                  ``experiments.training.cost``): ``floor(value / FLOPs per iteration)`` iterations, so
                  two detectors of different cost get iteration counts inversely proportional to it;
* ``seconds``     wall seconds on this machine: ``floor(value / seconds per iteration)`` with the
                  seconds of one timed probe step (forward + backward of the first batch, after a warm
                  one; the optimizer step, data loading and validations are not in it, so a run trains
                  somewhat longer than its budget: ``train_time_s`` says how long); machine-dependent
                  (recorded as such) and refused beside ``deterministic=true``.

Every kind is resolved to a number of iterations before the scheduler is built
(:func:`resolve_iterations`). The shorthands ``train.epochs: N`` and ``train.iterations: N`` (the
latter as whole epochs, the old rule) express a budget of that kind and replace the default
``{kind: epochs}`` budget; beside a budget of another kind they are refused, naming both settings.
``train.max_time_s`` stays what it was, a safety cap that marks a run ``incomplete``; beside a
``seconds`` budget it is refused (one home for a time limit).

:class:`BudgetSchedule` is a learning-rate schedule whose milestones and warm-up are fractions of
the resolved iterations (``shape``: ``linear`` decays to exactly 0 at the budget, ``step``
multiplies by ``gamma`` at each milestone, ``constant``), one ``LambdaLR`` stepped per iteration.
Bad input raises :class:`BudgetError` naming the setting, before any training.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

KINDS = ("epochs", "iterations", "flops", "seconds")
SHAPES = ("linear", "step", "constant")


class BudgetError(ValueError):
    """A training budget or schedule a run cannot use; the message names the setting."""


@dataclass(frozen=True)
class Budget:
    """One training budget: ``kind`` (one of ``KINDS``) and ``value`` in its unit; ``source`` is the
    setting it came from (``train.budget``, ``train.epochs`` or ``train.iterations``)."""
    kind: str
    value: float
    source: str = "train.budget"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise BudgetError(f"{self.source}.kind={self.kind!r}: choose one of {list(KINDS)}")
        if isinstance(self.value, bool) or not isinstance(self.value, (int, float)) \
                or not math.isfinite(self.value) or self.value <= 0:
            key = "train.budget.value" if self.source == "train.budget" else self.source
            raise BudgetError(f"{key}={self.value!r}: must be a finite number > 0 ({self.kind})")

    def label(self) -> str:
        """'150 iterations', '7.8 TFLOPs', '120 s', '2 epochs'."""
        if self.kind == "flops":
            return f"{self.value / 1e12:.3g} TFLOPs"
        if self.kind == "seconds":
            return f"{self.value:.4g} s"
        return f"{self.value:.4g} {self.kind}"


def budget_of(train) -> Budget:
    """The budget ``train`` (the ``train.*`` config, any mapping) asks for, shorthands resolved;
    refuses contradictions naming both settings (module doc)."""
    spec = train.get("budget")
    epochs, iterations = train.get("epochs"), train.get("iterations") or 0
    max_time = train.get("max_time_s") or 0
    if epochs is not None and iterations > 0:
        raise BudgetError(f"train.epochs={epochs} and train.iterations={iterations}: one training length; "
                          "use train.budget={kind: iterations, value: N}")
    given = spec is not None and spec.get("kind") is not None
    budget = Budget(str(spec["kind"]), spec.get("value"), "train.budget") if given else None
    shorthands = (("train.epochs", epochs, "epochs"), ("train.iterations", iterations or None, "iterations"))
    for key, value, kind in shorthands:
        if value is None:
            continue
        if budget is not None and budget.kind != "epochs":
            raise BudgetError(f"{key}={value} beside train.budget.kind={budget.kind}: the budget is the one home "
                              f"for the training length; drop {key} (set it to null/0)")
        budget = Budget(kind, value, key)
    if budget is None:
        raise BudgetError("train.budget: no training length (set train.budget={kind: ..., value: ...})")
    if budget.kind == "seconds" and max_time > 0:
        raise BudgetError(f"train.max_time_s={max_time} beside train.budget.kind=seconds: one time limit; "
                          "drop train.max_time_s")
    return budget


def check_budget(train, deterministic: bool) -> Budget:
    """What can be refused before anything is built: the budget itself, a seconds budget under
    ``deterministic=true``, a :class:`BudgetSchedule` with bad fractions. Returns the budget."""
    budget = budget_of(train)
    if budget.kind == "seconds" and deterministic:
        raise BudgetError("train.budget.kind=seconds with deterministic=true: a budget in seconds gives a "
                          "machine-dependent iteration count; use kind iterations or flops")
    scheduler = train.get("scheduler")
    if scheduler is not None and str(scheduler.get("_target_", "")).endswith("BudgetSchedule"):
        BudgetSchedule(**{k: v for k, v in scheduler.items() if not k.startswith("_")})
        if train.get("warmup_iterations", 0):
            raise BudgetError(f"train.warmup_iterations={train.get('warmup_iterations')} beside "
                              "train.scheduler.warmup (a fraction of the budget): one warm-up; drop one")
    return budget


def iterations_per_epoch(num_images: int, batch_size: int) -> int:
    """Optimizer steps in one epoch: the loader drops the last partial batch when there is more
    than one batch (``Trainer.loader``)."""
    return num_images // batch_size if num_images > batch_size else 1


def resolve_iterations(budget: Budget, *, per_epoch: int, flops_per_iteration: float | None = None,
                       seconds_per_iteration: float | None = None) -> int:
    """Iterations the budget buys. ``per_epoch``: iterations per epoch; ``flops_per_iteration``
    (training FLOPs of one step) for ``flops``; ``seconds_per_iteration`` (one timed step) for
    ``seconds``. Raises BudgetError when the budget buys less than one iteration or its cost
    is unknown."""
    if budget.kind == "iterations" and budget.source == "train.iterations":
        return math.ceil(budget.value / per_epoch) * per_epoch   # the shorthand's whole epochs
    if budget.kind == "epochs":
        count = budget.value * per_epoch
    elif budget.kind == "iterations":
        count = budget.value
    else:
        cost = flops_per_iteration if budget.kind == "flops" else seconds_per_iteration
        if cost is None or not math.isfinite(cost) or cost <= 0:
            raise BudgetError(f"{budget.source}.kind={budget.kind}: this model's cost per iteration could not "
                              f"be measured ({cost!r}); use kind iterations")
        count = budget.value / cost
    iterations = math.floor(count + 1e-9)
    if iterations < 1:
        raise BudgetError(f"{budget.source}: {budget.label()} buys {count:.3g} iterations, less than one")
    return iterations


@dataclass
class BudgetSchedule:
    """A learning-rate factor per iteration, sized to the resolved budget of ``iterations``.

    shape: ``linear`` (1 -> 0 after the warm-up, exactly 0 at the last iteration's step),
    ``step`` (x ``gamma`` at each of ``milestones``) or ``constant``. milestones, warmup:
    fractions of the budget in [0, 1) (milestones: of the whole budget, warm-up included).
    warmup_factor: the factor at iteration 0, rising linearly to 1 at the end of the warm-up.
    """
    shape: str
    milestones: list[float] = field(default_factory=list)
    gamma: float = 0.1
    warmup: float = 0.0
    warmup_factor: float = 0.1

    def __post_init__(self) -> None:
        where = "train.scheduler"
        if self.shape not in SHAPES:
            raise BudgetError(f"{where}.shape={self.shape!r}: choose one of {list(SHAPES)}")
        if not 0 <= self.warmup < 1:
            raise BudgetError(f"{where}.warmup={self.warmup}: a fraction of the budget in [0, 1)")
        if not 0 < self.warmup_factor <= 1:
            raise BudgetError(f"{where}.warmup_factor={self.warmup_factor}: must be in (0, 1]")
        if any(not 0 < m < 1 for m in self.milestones) or list(self.milestones) != sorted(self.milestones):
            raise BudgetError(f"{where}.milestones={list(self.milestones)}: increasing fractions of the "
                              "budget in (0, 1)")
        if self.shape == "step" and not 0 < self.gamma < 1:
            raise BudgetError(f"{where}.gamma={self.gamma}: must be in (0, 1)")

    def factor(self, step: int, iterations: int) -> float:
        """The lr multiplier after ``step`` scheduler steps of a budget of ``iterations``."""
        warm = round(self.warmup * iterations)
        if step < warm:
            return self.warmup_factor + (1 - self.warmup_factor) * step / warm
        if self.shape == "linear":
            return max(0.0, (iterations - step) / max(iterations - warm, 1))
        if self.shape == "step":
            return self.gamma ** sum(step >= round(m * iterations) for m in self.milestones)
        return 1.0

    def build(self, optimizer: torch.optim.Optimizer, iterations: int) -> torch.optim.lr_scheduler.LambdaLR:
        """One ``LambdaLR`` over ``optimizer``, stepped once per iteration."""
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: self.factor(step, iterations))

    __call__ = build
