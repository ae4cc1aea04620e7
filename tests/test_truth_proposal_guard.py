"""Issue 28, the busy guard over proposal times: selective search's seconds per image (the
proposal stage) are read between two readings of the machine; disturbed -> kept, marked
``proposal_time_reliable: false`` with a ``proposal_time_note``; images from the cache -> no mark."""
from __future__ import annotations

import sys

import pytest
from omegaconf import OmegaConf

pytest.importorskip("cv2")
from experiments.speed.busy_guard import Reading  # noqa: E402
from experiments.studies import proposal_stage  # noqa: E402
from experiments.studies import proposals as ss  # noqa: E402
from tests.test_proposals import SMALL, blocks  # noqa: E402

pytestmark = pytest.mark.skipif(not hasattr(sys.modules["cv2"], "ximgproc"), reason=ss.INSTALL_HINT)
QUIET = Reading(2.0, 1.0, 0.5, 2, False, "")
BUSY = Reading(30.0, 15.0, 4.0, 2, True, "load average 4.0 > 1 + 1.0 x 2 cores")


class _Model:
    external_proposals = True

    def __init__(self, source):
        self.proposal_source = source

    def num_candidates(self, image_size):
        return 10


def _stage(tmp_path, readings):
    source = ss.SelectiveSearchProposals(SMALL, cache_dir=tmp_path, progress=False)
    val = [(blocks(1), {}), (blocks(2), {})]
    ctx = type("Ctx", (), {"model": _Model(source), "val_set": val, "train_set": [(blocks(3), {})]})()
    seen = []

    def read(**kwargs):
        seen.append(kwargs)
        return readings.pop(0)

    return proposal_stage, ctx, read, seen


def _cfg(validations: int = 0):
    return OmegaConf.create({"eval": {"max_images": 0}, "stages": ["train", "eval"],
                             "train": {"val_every": 0, "validations": validations, "val_images": 1}})


def test_proposal_seconds_on_a_busy_machine_are_marked(tmp_path, monkeypatch):
    stage, ctx, read, seen = _stage(tmp_path, [QUIET, BUSY])
    monkeypatch.setattr(stage, "read_machine", read)
    metrics = stage.stage(_cfg(), ctx, ("val", ctx.val_set))
    assert metrics["proposal_images_computed"] == 3 and metrics["proposal_seconds_per_image"] > 0
    assert metrics["proposal_time_reliable"] is False
    assert "busy machine" in metrics["proposal_time_note"] and "load average 4.0" in metrics["proposal_time_note"]
    assert seen[1] == {"own": 2}, "the job's own selective-search worker is not counted as other work"


def test_quiet_proposal_seconds_are_reliable_and_cached_ones_unmarked(tmp_path, monkeypatch):
    stage, ctx, read, _ = _stage(tmp_path, [QUIET, QUIET, QUIET])
    monkeypatch.setattr(stage, "read_machine", read)
    cfg = _cfg()
    assert stage.stage(cfg, ctx, ("val", ctx.val_set))["proposal_time_reliable"] is True
    again = stage.stage(cfg, ctx, ("val", ctx.val_set))   # every image now from the cache: nothing timed here
    assert again["proposal_images_computed"] == 0 and "proposal_time_reliable" not in again


def test_the_held_out_images_eval_scores_are_computed_before_it_and_counted(tmp_path, monkeypatch):
    """Under eval.split=test the eval stage scores the test split: its proposals are computed in the
    stage's worker processes (not one by one during evaluation) with the validation images training
    scores (train.val_images of them), and the counts describe the test images."""
    stage, ctx, read, _ = _stage(tmp_path, [QUIET] * 6)
    monkeypatch.setattr(stage, "read_machine", read)
    test = [(blocks(4), {}), (blocks(5), {}), (blocks(6), {})]
    metrics = stage.stage(_cfg(validations=5), ctx, ("test", test))
    assert metrics["proposal_images_computed"] == 1 + 1 + 3, "train 1 + validated 1 of 2 + test 3"
    again = stage.stage(_cfg(validations=5), ctx, ("test", test))
    assert again["proposal_images_computed"] == 0, "every scored image was cached by the first call"
    without_validation = stage.stage(_cfg(validations=0), ctx, ("test", test + [(blocks(7), {})]))
    assert without_validation["proposal_images_computed"] == 1, "only the new test image; no validation read"
