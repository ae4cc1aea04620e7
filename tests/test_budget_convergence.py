"""The still-improving flag on fabricated validation curves, and evenly spaced validation points."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from experiments.evaluation import evaluate
from experiments.studies.budget_convergence import ValidationKeeper, improvement, still_improving, validation_points

IMAGES = 40


def _targets():
    return [{"boxes": torch.tensor([[10.0, 10.0, 50.0, 50.0]]), "labels": torch.tensor([1]), "image_id": i,
             "area": torch.tensor([1600.0]), "iscrowd": torch.tensor([0])} for i in range(IMAGES)]


def _validation(found: int):
    """A validation in which the detector finds the object of the first ``found`` images (a miss
    elsewhere: a box on the background)."""
    detections = []
    for i in range(IMAGES):
        box = [10.0, 10.0, 50.0, 50.0] if i < found else [60.0, 60.0, 90.0, 90.0]
        detections.append({"boxes": torch.tensor([box]), "scores": torch.tensor([0.9]), "labels": torch.tensor([1])})
    return evaluate(detections, _targets(), ["shape"], [(100, 100)] * IMAGES)


def _flag(curve: list[int]) -> dict:
    """Feed a fabricated validation curve (objects found at each validation) through the trainer's
    callback; its verdict from the last two."""
    results = iter([_validation(found) for found in curve])
    keeper = ValidationKeeper(lambda model: next(results))
    for _ in curve:
        keeper(None)
    return keeper.metrics(seed=0)


def test_a_curve_still_rising_at_its_end_is_still_improving():
    flag = _flag([4, 10, 16, 22, 34])
    assert flag["still_improving"] is True and flag["train_validations"] == 5
    assert flag["val_gain"] > 0 and flag["val_gain_low"] > 0


def test_a_curve_that_flattened_is_not():
    flag = _flag([4, 16, 28, 34, 34])
    assert flag["still_improving"] is False and flag["val_gain"] == 0.0


def test_a_gain_within_the_noise_of_the_images_is_not():
    flag = _flag([10, 20, 30, 33, 34])     # one more image found out of 40: below the 90% bound
    assert flag["val_gain"] > 0 and flag["still_improving"] is False


def test_a_falling_curve_is_not():
    assert _flag([10, 30, 34, 20])["still_improving"] is False


def test_one_validation_gives_no_verdict():
    flag = _flag([12])
    assert flag["still_improving"] is None and np.isnan(flag["val_gain"])


def test_validations_must_share_their_images():
    other = _validation(20)
    other.ground_truth.image_ids = other.ground_truth.image_ids + 100
    with pytest.raises(ValueError, match="same image ids"):
        still_improving(_validation(10), other)


def test_the_bound_is_one_sided_at_90_percent():
    gains = np.linspace(-0.1, 0.9, 1001)       # the 10% quantile is 0.0 exactly: not above 0
    assert improvement(gains, 0.4)["still_improving"] is False
    assert improvement(gains + 0.01, 0.41)["still_improving"] is True


@pytest.mark.parametrize("iterations,count,points", [(150, 5, (30, 60, 90, 120, 150)), (7, 5, (1, 3, 4, 6, 7)),
                                                     (3, 5, (1, 2, 3)), (100, 0, ())])
def test_validation_points_are_evenly_spaced_and_end_at_the_budget(iterations, count, points):
    assert validation_points(iterations, count) == points
