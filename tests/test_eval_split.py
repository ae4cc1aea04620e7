"""The eval stage scores the held-out test split when the dataset has one (issue 27): the final
numbers never come from the images that chose, and metrics.json says which split they came from."""
from __future__ import annotations

import json

from experiments.data.synthetic import SyntheticShapes
from experiments.run import run
from tests.conftest import TINY_RUN

TEST_SPLIT = ("+dataset.test={_target_:experiments.data.synthetic.SyntheticShapes,num_images:6,"
              "image_size:128,seed:27,split:test}")


def test_eval_scores_the_test_split_and_says_so(compose_config, tmp_path):
    cfg = compose_config(["detector=yolov1_cpu", *TINY_RUN, TEST_SPLIT, "stages=[eval]", "eval.bootstrap=200"])
    metrics = run(cfg, tmp_path)
    assert metrics["status"] == "ok", metrics.get("error")
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk["eval_split"] == "test" and on_disk["eval_images"] == 6 and on_disk["test_images"] == 6
    ground_truth = json.loads((tmp_path / "ground_truth.json").read_text())
    assert len(ground_truth["images"]) == 6            # the 6 test images, not the 4 validation ones


def test_compare_test_split_shares_no_image_with_train_or_val():
    seeds = {split: {SyntheticShapes(n, seed=s, split=split).image_seed(i) for i in range(n)}
             for split, s, n in (("train", 0, 1200), ("val", 0, 400), ("test", 27, 400))}
    assert not seeds["test"] & (seeds["train"] | seeds["val"])
