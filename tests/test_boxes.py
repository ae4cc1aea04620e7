"""Box maths: encode/decode with variances, and SSD's matching on hand-made cases."""
import torch
from torchvision.models.detection._utils import BoxCoder

from detectors.boxes import decode, encode, match


def test_encode_known_values_and_roundtrip():
    prior = torch.tensor([[50.0, 50.0, 20.0, 40.0]])             # cxcywh
    box = torch.tensor([[42.0, 34.0, 62.0, 74.0]])               # xyxy: centre (52, 54), 20 x 40
    offsets = encode(box, prior, (0.1, 0.2))
    assert torch.allclose(offsets, torch.tensor([[2.0 / 20 / 0.1, 4.0 / 40 / 0.1, 0.0, 0.0]]))
    assert torch.allclose(decode(offsets, prior, (0.1, 0.2)), box)
    wide = torch.tensor([[30.0, 30.0, 70.0, 70.0]])              # 40 x 40: log 2 / 0.2 in width
    assert torch.allclose(encode(wide, prior)[0, 2], torch.log(torch.tensor(2.0)) / 0.2)


def test_encode_decode_equal_torchvision_boxcoder_with_weights_10_10_5_5():
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(100, 2, generator=g) * 200
    priors_xyxy = torch.cat([xy, xy + 5 + torch.rand(100, 2, generator=g) * 100], dim=1)
    boxes = torch.cat([xy + 3, xy + 20 + torch.rand(100, 2, generator=g) * 80], dim=1)
    priors = torch.cat([(priors_xyxy[:, :2] + priors_xyxy[:, 2:]) / 2, priors_xyxy[:, 2:] - priors_xyxy[:, :2]], 1)
    coder = BoxCoder(weights=(10.0, 10.0, 5.0, 5.0))
    assert torch.allclose(encode(boxes, priors), coder.encode_single(boxes, priors_xyxy), atol=1e-4)
    offsets = torch.randn(100, 4, generator=g)
    assert torch.allclose(decode(offsets, priors), coder.decode_single(offsets, priors_xyxy), atol=1e-3)


def test_forced_match_below_threshold():
    priors = torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 40.0, 40.0], [100.0, 100.0, 120.0, 120.0]])
    gt = torch.tensor([[0.0, 0.0, 4.0, 4.0]])                    # IoU 0.16 with prior 0, 0 elsewhere
    matched, iou = match(gt, priors, 0.5)
    assert matched.tolist() == [0, -1, -1]
    assert abs(iou[0].item() - 0.16) < 1e-6


def test_threshold_matches_and_best_ground_truth_per_box():
    priors = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 12.0], [0.0, 0.0, 10.0, 30.0],
                           [50.0, 50.0, 60.0, 60.0]])
    gt = torch.tensor([[0.0, 0.0, 10.0, 11.0], [50.0, 50.0, 60.0, 61.0]])
    matched, _ = match(gt, priors, 0.5)
    # priors 0 and 1 overlap gt 0 above 0.5 (1 is its best); prior 2 only 11/30; prior 3 -> gt 1
    assert matched.tolist() == [0, 0, -1, 1]


def test_two_ground_truths_competing_for_one_box():
    priors = torch.tensor([[0.0, 0.0, 10.0, 10.0], [40.0, 40.0, 50.0, 50.0]])
    gt = torch.tensor([[0.0, 0.0, 9.0, 9.0],                     # IoU 0.81 with prior 0
                       [0.0, 0.0, 6.0, 6.0]])                    # IoU 0.36 with prior 0, its best too
    matched, iou = match(gt, priors, 0.5)
    assert matched.tolist() == [0, -1]                           # the stronger claim wins
    matched, _ = match(gt.flip(0), priors, 0.5)                  # whatever the order of the ground truths
    assert matched.tolist() == [1, -1]


def test_forced_match_overrides_a_box_whose_best_ground_truth_is_another():
    priors = torch.tensor([[0.0, 0.0, 10.0, 12.0], [0.0, 0.0, 10.0, 10.0]])
    gt = torch.tensor([[0.0, 0.0, 10.0, 12.0],                   # IoU 1.0 with prior 0, 0.83 with prior 1
                       [0.0, 0.0, 10.0, 8.0]])                   # IoU 0.67 with prior 0, 0.80 with prior 1 (its best)
    matched, iou = match(gt, priors, 0.5)
    # prior 1 belongs to ground truth 1 although gt 0 overlaps it more
    assert matched.tolist() == [0, 1]
    assert abs(iou[1].item() - 0.8) < 1e-6


def test_no_ground_truth_is_all_background():
    matched, iou = match(torch.zeros(0, 4), torch.rand(7, 4), 0.5)
    assert matched.tolist() == [-1] * 7 and iou.sum() == 0
