"""collate: what a DataLoader worker sends is what the dataset gave, with the Targets packed
into one tensor per field on the way."""
from __future__ import annotations

import io
import pickle
from multiprocessing.reduction import ForkingPickler

import torch
from torch.utils.data import DataLoader

from detectors.base import Target
from experiments.data.collate import TargetBatch, collate
from experiments.data.synthetic import SyntheticShapes


def targets() -> list[Target]:
    full = Target(boxes=torch.tensor([[1.0, 2, 3, 4], [5, 6, 7, 9]]), labels=torch.tensor([1, 3]),
                  image_id=7, area=torch.tensor([4.0, 6.0]), iscrowd=torch.tensor([0, 1]),
                  difficult=torch.tensor([False, True]))
    empty = Target(boxes=torch.zeros(0, 4), labels=torch.zeros(0, dtype=torch.int64), image_id=8,
                   area=torch.zeros(0), iscrowd=torch.zeros(0, dtype=torch.int64),
                   difficult=torch.zeros(0, dtype=torch.bool))
    one = Target(boxes=torch.tensor([[0.0, 0, 10, 10]]), labels=torch.tensor([2]), image_id=9,
                 area=torch.tensor([100.0]), iscrowd=torch.tensor([0]), difficult=torch.tensor([False]))
    return [full, empty, one]


def assert_same(got: list, want: list) -> None:
    assert type(got) is list and len(got) == len(want)
    for g, w in zip(got, want):
        assert list(g) == list(w)
        for key in w:
            if isinstance(w[key], torch.Tensor):
                assert g[key].dtype == w[key].dtype and torch.equal(g[key], w[key]), key
            else:
                assert g[key] == w[key], key


def test_targets_pack_into_one_tensor_per_field_and_come_back_equal():
    batch = TargetBatch(targets())
    fn, (keys, counts, packed, per_image) = batch.__reduce__()
    assert counts == [2, 0, 1] and per_image == {"image_id": [7, 8, 9]}
    assert set(packed) == {"boxes", "labels", "area", "iscrowd", "difficult"}
    assert packed["boxes"].shape == (3, 4)
    buffer = io.BytesIO()
    ForkingPickler(buffer).dump(batch)  # as a DataLoader worker's queue does
    assert_same(pickle.loads(buffer.getvalue()), targets())


def test_targets_with_different_keys_or_no_boxes_pickle_as_a_plain_list():
    mixed = targets()
    del mixed[1]["difficult"]
    assert_same(pickle.loads(pickle.dumps(TargetBatch(mixed))), mixed)
    assert pickle.loads(pickle.dumps(TargetBatch([0, 1]))) == [0, 1]
    assert pickle.loads(pickle.dumps(TargetBatch([]))) == []


def test_a_worker_delivers_what_the_dataset_gives(one_torch_thread):
    dataset = SyntheticShapes(6, image_size=64, seed=3)
    loader = DataLoader(dataset, batch_size=4, num_workers=1, collate_fn=collate)
    got_images, got_targets = [], []
    for images, batch_targets in loader:
        got_images += images
        got_targets += batch_targets
    want = [dataset[i] for i in range(len(dataset))]
    assert all(torch.equal(g, w) for g, (w, _) in zip(got_images, want))
    assert_same(got_targets, [t for _, t in want])
