"""``run()`` does each step once: the training set ``prepare_datasets`` scanned (bad images left
out, the class map applied) is the object trained on, and weights are loaded once.

Each test goes through ``experiments.run.run`` with the trainer replaced by a recorder (no
training happens), so the objects the stages receive can be checked."""
from __future__ import annotations

import json

import torch

from experiments import stages
from experiments.data import annotated
from experiments.run import run
from tests.test_data_bad_images import RUN, flat_voc, jpeg_bytes


class RecordingTrainer:
    """Stands in for ``experiments.training.trainer.Trainer``: keeps the dataset it was given."""
    seen: list = []

    def __init__(self, model, train_set, *args, **kwargs):
        RecordingTrainer.seen.append(train_set)
        self.train_set = train_set

    def resume(self):
        pass

    def fit(self) -> dict:
        for index in range(len(self.train_set)):   # every image a real epoch would decode
            self.train_set[index]
        return {"train_time_s": 0.0, "iterations": 1, "planned_iterations": 1, "epochs": 1,
                "final_loss": 0.0, "stopped_on_time": False, "batch_norm": "train"}


def _record_prepared(monkeypatch) -> list:
    """Wrap ``prepare_datasets`` as ``run`` calls it; returns the train sets it saw."""
    import experiments.run as run_module

    prepared, original = [], run_module.prepare_datasets

    def recording(train_set, val_set, out, *args, **kwargs):
        prepared.append(train_set)
        return original(train_set, val_set, out, *args, **kwargs)

    monkeypatch.setattr(run_module, "prepare_datasets", recording)
    return prepared


def test_a_skipped_bad_image_is_never_decoded_and_the_scanned_set_is_trained(compose_config, tmp_path,
                                                                            monkeypatch):
    root = flat_voc(tmp_path / "data", 12)
    bad = [root / f"a{i:03d}.jpg" for i in range(0, 12, 2)]   # half the files: some land in train
    for i, path in enumerate(bad):
        path.write_bytes(jpeg_bytes(i)[:300])
    decoded: list[str] = []
    original = annotated.load_image
    monkeypatch.setattr(annotated, "load_image", lambda path, **kw: (decoded.append(str(path)),
                                                                      original(path, **kw))[1])
    monkeypatch.setattr(stages, "Trainer", RecordingTrainer)
    RecordingTrainer.seen = []
    prepared = _record_prepared(monkeypatch)
    cfg = compose_config([*RUN, f"dataset.root={root}", "dataset.bad_images=skip", "train.num_workers=0",
                          "stages=[train]"])
    metrics = run(cfg, tmp_path / "run")
    assert metrics["status"] == "ok", metrics.get("error")
    assert len(prepared) == 1 and len(RecordingTrainer.seen) == 1
    trained = RecordingTrainer.seen[0]
    assert not set(decoded) & set(map(str, bad)), "a skipped image was decoded during training"
    assert trained is prepared[0], "the training set trained on is the one the scan fixed"
    assert {str(r.path) for r in trained.records}.isdisjoint(map(str, bad))
    on_disk = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert on_disk["train_images"] == len(trained) and on_disk["decode_failures"] == 0


def test_the_class_map_is_applied_to_the_trained_object(compose_config, tmp_path, monkeypatch):
    root = flat_voc(tmp_path / "data", 6)
    monkeypatch.setattr(stages, "Trainer", RecordingTrainer)
    RecordingTrainer.seen = []
    prepared = _record_prepared(monkeypatch)
    cfg = compose_config([*RUN, f"dataset.root={root}", "train.num_workers=0", "stages=[train]"])
    assert run(cfg, tmp_path / "run")["status"] == "ok"
    trained = RecordingTrainer.seen[0]
    assert trained is prepared[0]
    class_map = json.loads((tmp_path / "run" / "class_map.json").read_text())
    assert [c["name"] for c in class_map] == list(trained.class_names) == ["cell"]


def test_weights_are_loaded_once(compose_config, tmp_path, monkeypatch):
    import experiments.run as run_module

    root = flat_voc(tmp_path / "data", 6)
    first = run(compose_config([*RUN, f"dataset.root={root}", "stages=[eval]"]), tmp_path / "a")
    assert first["status"] == "ok", first.get("error")
    from experiments.build import build_detector

    cfg = compose_config([*RUN, f"dataset.root={root}", "stages=[eval]"])
    weights = tmp_path / "weights.pt"
    torch.save(build_detector(cfg.detector.model, 1).state_dict(), weights)
    loads, original = [], run_module.load_run_weights
    monkeypatch.setattr(run_module, "load_run_weights",
                        lambda model, path: (loads.append(str(path)), original(model, path))[1])
    metrics = run(compose_config([*RUN, f"dataset.root={root}", "stages=[eval]", f"weights={weights}"]),
                  tmp_path / "b")
    assert metrics["status"] == "ok", metrics.get("error")
    assert loads == [str(weights)]
    assert metrics["weights_source"] == f"file:{weights}"


def test_sweep_stages_run_before_the_report_and_one_failure_stops_none(tmp_path, monkeypatch):
    from omegaconf import OmegaConf

    seen = []

    def count_runs(cfg, sweep_dir):
        seen.append(sweep_dir)
        return {"runs": len(list(sweep_dir.glob("*/metrics.json")))}

    def broken(cfg, sweep_dir):
        raise RuntimeError("no checkpoints")

    monkeypatch.setitem(stages.SWEEP_STAGES, "count", count_runs)
    monkeypatch.setitem(stages.SWEEP_STAGES, "broken", broken)
    for name in ("0-a", "1-b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_text("{}")
    cfg = OmegaConf.create({"sweep_stages": ["broken", "count", "nope"]})
    done = stages.run_sweep_stages(cfg, tmp_path)
    assert done["count"] == "ok" and seen == [tmp_path]
    assert json.loads((tmp_path / "sweep_stages" / "count.json").read_text()) == {"runs": 2}
    assert done["broken"] == "RuntimeError: no checkpoints" and done["nope"].startswith("unknown sweep stage")
