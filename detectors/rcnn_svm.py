"""R-CNN's per-class linear SVMs (with hard-negative mining) and ridge box regressors, in torch.

The paper trained its SVMs with liblinear; detectors import only torch, so ``linear_svm``
minimises liblinear's own primal (scikit-learn ``LinearSVC``'s default: L2-regularised squared
hinge, dual or primal give the same optimum) with L-BFGS in float64::

    min_w  1/2 |w|^2 + C * sum_i c_i * max(0, 1 - y_i (w . [x_i, B]))^2

where the bias is the last weight times the *bias multiplier* B (liblinear's ``-B``, sklearn's
``intercept_scaling``; R-CNN: 10) and c_i is ``positive_weight`` (R-CNN: 2) for positives, 1
for negatives; R-CNN's C is 1e-3 on features scaled to a mean norm of 20. ``tests/test_rcnn.py``
checks the decision values against ``LinearSVC``.

``hard_negative_svm`` is R-CNN's mining loop: start from the first ``initial_negatives``, then
repeatedly add every negative the current SVM scores above -1 (inside the margin: "hard"),
drop those below -1.2 (R-CNN's eviction threshold), retrain; stop when no hard negative is
left outside the working set.

``ridge_regression``: closed-form ridge (R-CNN: lambda 1000) from pool5 features to box deltas,
in the primal or dual form, whichever solves the smaller system.
"""
from __future__ import annotations

import torch
from torch import Tensor


def linear_svm(features: Tensor, labels: Tensor, c: float = 1e-3, bias_multiplier: float = 10.0,
               positive_weight: float = 2.0, max_iter: int = 150) -> tuple[Tensor, float]:
    """features [N, D], labels [N] (+1 / -1) -> (weight [D], bias): score = x . weight + bias."""
    x = torch.cat([features.double(), features.new_full((len(features), 1), bias_multiplier).double()], 1)
    y = labels.double()
    cost = torch.where(y > 0, positive_weight * c, c)                       # [N]
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([w], lr=1, max_iter=max_iter, tolerance_grad=1e-7, tolerance_change=1e-12,
                                  history_size=20, line_search_fn="strong_wolfe")

    def objective():
        optimizer.zero_grad()
        margin = (1 - y * (x @ w)).clamp(min=0)                              # [N]
        loss = 0.5 * w.dot(w) + (cost * margin * margin).sum()
        loss.backward()
        return loss

    optimizer.step(objective)
    w = w.detach()
    return w[:-1].float(), float(w[-1] * bias_multiplier)


def hard_negative_svm(positives: Tensor, negatives: Tensor, initial_negatives: int = 5000,
                      max_rounds: int = 10, **svm) -> tuple[Tensor, float, dict]:
    """positives [P, D], negatives [M, D] -> (weight [D], bias, {"rounds", "negatives_used"}).
    ``svm``: ``linear_svm``'s settings."""
    working = torch.arange(min(initial_negatives, len(negatives)))
    rounds = 0
    for rounds in range(1, max_rounds + 1):                                  # noqa: B007 (reported)
        x = torch.cat([positives, negatives[working]])
        y = torch.cat([torch.ones(len(positives)), -torch.ones(len(working))])
        weight, bias = linear_svm(x, y, **svm)
        scores = negatives.float() @ weight + bias                           # [M]
        hard = torch.zeros(len(negatives), dtype=torch.bool)
        hard[scores > -1] = True
        hard[working] = False
        if not hard.any():
            break
        keep = working[scores[working] >= -1.2]                              # evict the easy ones
        working = torch.cat([keep, hard.nonzero()[:, 0]])
    return weight, bias, {"rounds": rounds, "negatives_used": int(len(working))}


def ridge_regression(features: Tensor, targets: Tensor, lam: float = 1000.0) -> Tensor:
    """features [N, D], targets [N, K] -> weight [D + 1, K] (last row: the bias) minimising
    |[X, 1] W - T|^2 + lam |W|^2 (the bias regularised too, as R-CNN's)."""
    x = torch.cat([features.double(), torch.ones(len(features), 1, dtype=torch.float64)], 1)
    t = targets.double()
    n, d = x.shape
    if n < d:   # dual: W = X^T (X X^T + lam I)^-1 T, an N x N system
        return (x.T @ torch.linalg.solve(x @ x.T + lam * torch.eye(n, dtype=x.dtype), t)).float()
    return torch.linalg.solve(x.T @ x + lam * torch.eye(d, dtype=x.dtype), x.T @ t).float()
