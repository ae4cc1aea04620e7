"""The detector contract: Target/Detection shapes, validate_target, the three-stage forward."""
import pytest
import torch

from detectors.base import Batch, Detector, Target, empty_target, scale_width, validate_target


def make_target(boxes, labels=None, image_id=0) -> Target:
    boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    n = boxes.shape[0]
    labels = torch.ones(n, dtype=torch.int64) if labels is None else torch.tensor(labels)
    return Target(boxes=boxes, labels=labels, image_id=image_id,
                  area=(boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]),
                  iscrowd=torch.zeros(n, dtype=torch.int64))


def test_valid_and_empty_targets_pass():
    """validate_target raises on any breach, so returning None is the pass."""
    assert validate_target(make_target([[0, 0, 10, 10], [5, 5, 50, 40]], [1, 2]), (40, 50), 2) is None
    assert validate_target(make_target([[0, 0, 50, 40]]), (40, 50), 1) is None  # touching the edges
    assert validate_target(empty_target(3), (10, 10), 2) is None


@pytest.mark.parametrize("boxes, labels, message", [
    ([[10, 0, 10, 5]], [1], "x2 <= x1"),
    ([[0, 8, 5, 3]], [1], "x2 <= x1 or y2 <= y1"),
    ([[0, 0, float("nan"), 5]], [1], "NaN"),
    ([[0, 0, 60, 5]], [1], "outside"),
    ([[-3, 0, 6, 5]], [1], "outside"),
    ([[0, 0, 5, 5]], [0], "labels"),
    ([[0, 0, 5, 5]], [3], "labels"),
])
def test_bad_targets_name_the_problem(boxes, labels, message):
    with pytest.raises(ValueError, match=message) as info:
        validate_target(make_target(boxes, labels), (40, 50), 2, where="img_7.xml")
    assert "img_7.xml" in str(info.value)


def test_wrong_dtypes_are_refused():
    target = make_target([[0, 0, 5, 5]])
    target["labels"] = target["labels"].float()
    with pytest.raises(ValueError, match="labels must be torch.int64"):
        validate_target(target)
    del target["iscrowd"]
    with pytest.raises(ValueError, match="missing key 'iscrowd'"):
        validate_target(target)


def test_scale_width_rounds_to_eight():
    assert scale_width(512, 1.0) == 512
    assert scale_width(512, 0.25) == 128
    assert scale_width(64, 0.1) == 8
    assert scale_width(1024, 0.125) == 128


class ConstantDetector(Detector):
    """Predicts each target box back; checks that forward wires the three stages."""

    def __init__(self):
        super().__init__()
        self.num_classes, self.input_size = 1, (8, 8)
        self.scale = torch.nn.Parameter(torch.ones(()))

    def preprocess(self, images, targets=None):
        sizes = [tuple(im.shape[-2:]) for im in images]
        return Batch(torch.stack(images), sizes, sizes, targets)

    def network(self, batch):
        return batch.images.mean(dim=(1, 2, 3)) * self.scale  # [B]

    def postprocess(self, outputs, batch):
        return [dict(boxes=torch.tensor([[0.0, 0.0, w, h]]), scores=o.clamp(0, 1)[None],
                     labels=torch.ones(1, dtype=torch.int64))
                for o, (h, w) in zip(outputs, batch.original_sizes)]

    def loss(self, outputs, batch):
        return {"loss_mean": outputs.sum()}


def test_forward_dispatches_on_mode():
    model = ConstantDetector()
    images = [torch.full((3, 8, 8), 0.5), torch.full((3, 8, 8), 0.25)]
    with pytest.raises(ValueError, match="needs targets"):
        model(images)
    losses = model(images, [empty_target(0), empty_target(1)])
    assert set(losses) == {"loss_mean"} and losses["loss_mean"].item() == pytest.approx(0.75)
    model.eval()
    detections = model(images)
    assert [d["scores"].item() for d in detections] == [0.5, 0.25]
    assert detections[0]["boxes"].tolist() == [[0.0, 0.0, 8.0, 8.0]]
