"""Issue 28, late failures found early and said clearly: a validation image whose header is fine
but whose pixels do not decode, under bad_images=skip, is left out and counted before training (it
crashed the evaluator after training, which got the next image twice under one id); a full disk
leaves no .tmp checkpoint and says so."""
from __future__ import annotations

import torch

from detectors.base import Target
from experiments.data.scan import scan_images
from experiments.data.voc import VOCDetection
from experiments.data.writers import write_voc
from experiments.job.preflight import drop_undecodable


def _sample(image_id: int):
    boxes = torch.tensor([[2.0, 2.0, 30.0, 30.0]])
    image = torch.rand(3, 40, 48, generator=torch.Generator().manual_seed(image_id))
    return image, Target(boxes=boxes, labels=torch.tensor([1]), image_id=image_id,
                         area=torch.tensor([784.0]), iscrowd=torch.tensor([0]))


def test_a_val_image_that_fails_its_full_decode_is_left_out_and_counted_before_training(tmp_path):
    write_voc(tmp_path, [_sample(i) for i in (1, 2, 3)], ["cell"])
    png = tmp_path / "JPEGImages" / "000002.png"
    data = bytearray(png.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(64)            # pixel data damaged; header and IEND intact
    png.write_bytes(bytes(data))
    val = VOCDetection(tmp_path, "trainval", ["cell"], bad_images="skip")
    assert scan_images(val).bad == []               # the header scan cannot see it
    assert drop_undecodable(val, 0, "validation split") == 1
    assert [r.path.name for r in val.records] == ["000001.png", "000003.png"]
    assert val.skips.counts["image_decode_failed"] == 1
    assert [val[i][1]["image_id"] for i in range(len(val))] == [1, 3]   # each image once, by its id


def test_a_full_disk_leaves_no_tmp_checkpoint_and_keeps_the_last_one(tmp_path, monkeypatch):
    import errno

    import pytest

    from experiments.training import checkpoint

    path = tmp_path / "checkpoints" / "last.pt"
    checkpoint.save_checkpoint(path, {"iteration": 1})
    before = path.read_bytes()

    def disk_full(state, f):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint.torch, "save", disk_full)
    message = r"could not write the checkpoint .*last.pt.*No space left.*previous last.pt is kept"
    with pytest.raises(OSError, match=message):
        checkpoint.save_checkpoint(path, {"iteration": 2})
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.pt"] and path.read_bytes() == before
