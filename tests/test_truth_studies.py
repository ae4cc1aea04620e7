"""Issue 28, robustness row: its settings are checked before anything is built (images < 0 gave
nothing with status ok) and a corruption or severity listed twice is counted once in mPC."""
from __future__ import annotations

import pandas as pd
import pytest
import torch

from experiments.job.settings import check_config
from experiments.studies.robustness import robustness_stage
from tests.test_robustness import Rectangles, SaturationDetector, _stage_cfg


@pytest.mark.parametrize("override, message", [
    ("robustness.images=-3", r"robustness.images=-3: must be an integer >= 0"),
    ("robustness.num_workers=-1", r"robustness.num_workers=-1: must be an integer >= 0"),
    ("robustness.severities=[0]", r"robustness.severities=\[0\]: name at least one of 1-5"),
])
def test_robustness_settings_are_refused_before_the_run(compose_config, override, message):
    with pytest.raises(ValueError, match=message):
        check_config(compose_config(["stages=[robustness]", override]))


def test_a_corruption_or_severity_listed_twice_is_counted_once(tmp_path):
    twice = _stage_cfg(["gaussian_noise", "defocus_blur", "gaussian_noise"], [1, 1, 5], images=2)
    metrics = robustness_stage(twice, SaturationDetector(), Rectangles(3), torch.device("cpu"), tmp_path, True)
    rows = pd.read_csv(tmp_path / "robustness.csv")
    assert len(rows) == 1 + 2 * 2
    assert metrics["robust_corruptions"] == ["gaussian_noise", "defocus_blur"]
    assert metrics["robust_severities"] == [1, 5]
    benchmark = rows[rows["severity"] > 0]
    assert metrics["robust_mpc"] == pytest.approx(benchmark["map"].mean(), abs=1e-12)
