"""What a run writes beyond the metrics: ground_truth.json names each image's file."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import torch

from detectors.base import empty_target
from experiments.evaluation import evaluate, save_evaluation
from experiments.evaluation.files import image_file_names


def test_ground_truth_json_names_each_images_file(tmp_path):
    root = Path("/data/VOC2007/JPEGImages")
    dataset = SimpleNamespace(records=[SimpleNamespace(path=root / "000005.jpg", image_id=1),
                                       SimpleNamespace(path=root / "sub" / "000007.jpg", image_id=2)])
    names = image_file_names(dataset)
    assert names == {1: "000005.jpg", 2: "sub/000007.jpg"}
    assert image_file_names(SimpleNamespace()) == {}            # generated data: no files
    target = empty_target(1)
    target["boxes"] = torch.tensor([[1.0, 1.0, 5.0, 5.0]])
    target["labels"], target["area"] = torch.tensor([1]), torch.tensor([16.0])
    target["iscrowd"] = torch.tensor([0])
    detection = {"boxes": torch.tensor([[1.0, 1.0, 5.0, 5.0]]), "scores": torch.tensor([0.9]),
                 "labels": torch.tensor([1])}
    result = evaluate([detection, {k: v[:0] for k, v in detection.items()}], [target, empty_target(2)],
                      ["thing"], [(10, 10), (10, 10)])
    save_evaluation(result, tmp_path, names)
    images = json.loads((tmp_path / "ground_truth.json").read_text())["images"]
    assert {im["id"]: im["file_name"] for im in images} == names
