"""Paper settings: Faster R-CNN's flip-only policy that keeps the aspect ratio, the SSD crop's
random-patch option, and the README's "paper setting vs detbench" table against the configs."""
from __future__ import annotations

import torch

from experiments.data.transforms import build_policy


def _target(boxes):
    boxes = torch.tensor(boxes, dtype=torch.float32)
    return {"boxes": boxes, "labels": torch.ones(len(boxes), dtype=torch.int64), "image_id": 0,
            "area": (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]),
            "iscrowd": torch.zeros(len(boxes), dtype=torch.int64)}


def test_flip_policy_flips_half_the_time_and_never_resizes():
    policy = build_policy("flip", output_size=(300, 300))
    image = torch.zeros(3, 60, 100)
    image[:, :, :10] = 1.0                                   # a bright left edge
    flipped = 0
    torch.manual_seed(0)
    for _ in range(200):
        out, target = policy(image, _target([[0.0, 5.0, 10.0, 20.0]]))
        assert out.shape == (3, 60, 100)                     # no warp to 300x300
        if out[0, 0, -1] == 1.0:
            flipped += 1
            assert target["boxes"].tolist() == [[90.0, 5.0, 100.0, 20.0]]
        else:
            assert target["boxes"].tolist() == [[0.0, 5.0, 10.0, 20.0]]
    assert 70 < flipped < 130


def test_faster_rcnn_trains_on_unwarped_images(compose_config, tmp_path, monkeypatch):
    """Through ``run()``: the training set the trainer gets keeps each image's own size (the
    detector's transform resizes keeping the aspect ratio), never the nominal 600x1000."""
    from experiments import stages
    from experiments.build import build_detector
    from experiments.run import run
    from tests.test_run_one_pass import RecordingTrainer

    monkeypatch.setattr(stages, "Trainer", RecordingTrainer)
    RecordingTrainer.seen = []
    cfg = compose_config(["device=cpu", "detector=faster_rcnn_vgg16", "detector.model.width=0.0625",
                          "dataset.train.num_images=2", "dataset.val.num_images=2", "dataset.image_size=96",
                          "stages=[train]", "train.num_workers=0", "eval.coverage_images=1"])
    assert cfg.detector.augmentation == "flip"
    model = build_detector(cfg.detector.model, 3)
    assert not model.fixed_input_size and model.input_size == (600, 1000)
    metrics = run(cfg, tmp_path / "run")
    assert metrics["status"] == "ok", metrics.get("error")
    assert RecordingTrainer.seen[0][0][0].shape[-2:] == (96, 96), "the detector's transform resizes, keeping aspect"
    ssd = compose_config(["detector=ssd300_cpu"])
    assert build_detector(ssd.detector.model, 3).fixed_input_size
    experiment = compose_config(["experiment=paper_voc_faster_rcnn_vgg16", "dataset.root=."])
    assert experiment.train.augmentation == "flip"


def test_readme_table_matches_the_configs():
    from analysis import fidelity

    assert fidelity.readme_table(fidelity.README.read_text()) == fidelity.fidelity_markdown(), \
        "README's paper-vs-detbench table is stale: run python -m analysis.fidelity --write"
    frame = fidelity.fidelity_frame()
    assert set(frame["experiment"]) == set(fidelity.experiments()) and len(fidelity.experiments()) == 9
    row = frame.set_index(["experiment", "setting"])
    assert row.at[("paper_voc_faster_rcnn_vgg16", "augmentation"), "matches"] == "yes"
    assert row.at[("paper_voc_yolov1", "epochs, batch, warm-up"), "detbench"] == "135, 64, 258 iterations"
    assert (frame.loc[frame["matches"] == "no", "note"] != "").all(), "every deviation says why"


def test_yolo_schedule_counts_the_iterations_drop_last_gives(compose_config):
    cfg = compose_config(["experiment=paper_voc_yolov1", "dataset.root=."])
    per_epoch = 16551 // cfg.train.batch_size                       # 258: the last partial batch dropped
    assert cfg.train.warmup_iterations == per_epoch
    assert list(cfg.train.scheduler.milestones) == [75 * per_epoch, 105 * per_epoch]
