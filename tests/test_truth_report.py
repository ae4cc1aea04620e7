"""Issue 28, report row: runs are paired by image file name + content hash, never by image id
(two VOC splits by different split_seed number different images 0..N-1 alike)."""
from __future__ import annotations

import numpy as np
import torch

from analysis.significance import paired, same_images_problem
from detectors.base import Target
from experiments.data.voc import VOCDetection
from experiments.data.writers import write_voc
from experiments.evaluation.files import image_keys


def _replicates(keys: list[str], ap: float) -> dict:
    ids = np.array([[0, 1, 1], [2, 0, 1]])
    return {"image_ids": ids, "category_ids": np.array([1]), "key_ids": np.arange(len(keys)),
            "image_keys": np.array(keys), "map": np.array([ap, ap + 0.01]), "point_map": np.float64(ap)}


def test_runs_scored_on_other_images_under_the_same_ids_are_not_paired():
    a = _replicates(["a.jpg#01", "b.jpg#02", "c.jpg#03"], 0.5)
    b = _replicates(["d.jpg#04", "b.jpg#02", "c.jpg#03"], 0.3)     # same ids 0..2, image 0 differs
    problem = same_images_problem(a, b)
    assert problem.startswith("different images") and "a.jpg#01" in problem
    assert "problem" in paired({0: a}, {0: b}, "map")
    assert same_images_problem(a, _replicates(["a.jpg#01", "b.jpg#02", "c.jpg#03"], 0.3)) is None
    old = {k: v for k, v in a.items() if k not in ("key_ids", "image_keys")}
    assert "without image file names and hashes" in same_images_problem(old, a)


def _sample(image_id: int, value: float):
    boxes = torch.tensor([[2.0, 2.0, 9.0, 9.0]])
    return torch.full((3, 12, 16), value), Target(boxes=boxes, labels=torch.tensor([1]), image_id=image_id,
                                                  area=torch.tensor([49.0]), iscrowd=torch.tensor([0]))


def test_image_keys_name_the_file_and_its_content(tmp_path):
    write_voc(tmp_path / "a", [_sample(1, 0.2), _sample(2, 0.4)], ["cell"])
    write_voc(tmp_path / "b", [_sample(1, 0.2), _sample(2, 0.6)], ["cell"])   # same names, 2 differs
    keys_a = image_keys(VOCDetection(tmp_path / "a", "trainval", ["cell"]))
    keys_b = image_keys(VOCDetection(tmp_path / "b", "trainval", ["cell"]))
    assert keys_a[1] == keys_b[1] and keys_a[1].startswith("000001.png#")
    assert keys_a[2] != keys_b[2] and keys_a[2].split("#")[0] == keys_b[2].split("#")[0]
