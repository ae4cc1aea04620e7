"""Issue 28, sweeps: ``detbench-rescore SWEEP score_thresh=...`` re-scores every finished run from
its checkpoint on the same images, into its own folder, the originals untouched."""
from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from experiments.run import run
from experiments.studies.rescore_cli import main
from tests.conftest import TINY_RUN


@pytest.mark.slow
def test_rescore_a_sweep_at_another_score_threshold(compose_config, tmp_path):
    job = tmp_path / "0-yolov1_cpu-seed0"
    first = run(compose_config(["detector=yolov1_cpu", *TINY_RUN, "stages=[train,eval]", "eval.bootstrap=0"]), job)
    assert first["status"] == "ok", first.get("error")
    before = (job / "metrics.json").read_bytes()
    assert main([str(tmp_path), "score_thresh=0.99"]) == 0
    again = tmp_path / "rescore_score_thresh=0.99" / job.name
    metrics = json.loads((again / "metrics.json").read_text())
    assert metrics["status"] == "ok" and metrics["split_id"] == first["split_id"]   # the same images
    assert OmegaConf.load(again / ".hydra/config.yaml").detector.model.score_thresh == 0.99
    assert metrics["weights_source"].endswith("last.pt") and "train_iterations" not in metrics
    assert (job / "metrics.json").read_bytes() == before


def test_rescore_refuses_what_it_cannot_use(tmp_path, capsys):
    assert main([str(tmp_path), "score_thresh"]) == 2 and "not key=value" in capsys.readouterr().err
    assert main([str(tmp_path), "score_thresh=0.5"]) == 2 and "no finished run" in capsys.readouterr().err
