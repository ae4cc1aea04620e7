"""Learning-rate schedules stated as fractions of the run's length, so a shorter or longer
``train.iterations`` keeps its drops where the experiment meant them (compare: x0.1 at 80%)."""
from __future__ import annotations

import torch


def multistep_at_fractions(optimizer: torch.optim.Optimizer, fractions: list[float], iterations: int,
                           gamma: float) -> torch.optim.lr_scheduler.MultiStepLR:
    """MultiStepLR (stepped once per iteration) with a drop by ``gamma`` at round(f x iterations)
    for each f in ``fractions`` (each in (0, 1)); ``iterations``: ``train.iterations`` (> 0)."""
    if iterations <= 0:
        raise ValueError(f"multistep_at_fractions: iterations={iterations}: set train.iterations > 0")
    bad = [f for f in fractions if not 0 < f < 1]
    if bad:
        raise ValueError(f"train.scheduler.fractions: {bad} are not fractions of the run in (0, 1)")
    milestones = sorted({max(1, round(f * iterations)) for f in fractions})
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=gamma)
