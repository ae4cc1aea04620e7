"""SSD300 against torchvision's ssd300_vgg16, the reference implementation nobody here wrote."""
import pytest
import torch
import torchvision
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator

from detectors.ssd import SSD
from detectors.ssd_convert import convert_torchvision_ssd300_state_dict, ssd300_from_torchvision

COCO_RATIOS = [[2], [2, 3], [2, 3], [2, 3], [2], [2]]
COCO_STEPS = [8, 16, 32, 64, 100, 300]


def test_coco300_default_boxes_equal_torchvision_default_box_generator():
    generator = DefaultBoxGenerator(COCO_RATIOS, scales=[0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05], steps=COCO_STEPS)
    model = SSD(num_classes=3, width=0.125, scales="coco300", aspect_ratios=COCO_RATIOS, steps=COCO_STEPS)
    reference = generator._grid_default_boxes(model.features.map_sizes((300, 300)), [300, 300])  # cxcywh
    assert reference.shape == model.priors.shape == (8732, 4)
    assert (reference - model.priors).abs().max() < 1e-6                  # same order, no permutation
    # and as torchvision hands them to its box coder: xyxy in input pixels
    images = torchvision.models.detection.image_list.ImageList(torch.zeros(1, 3, 300, 300), [(300, 300)])
    maps = [torch.zeros(1, 1, h, w) for h, w in model.features.map_sizes((300, 300))]
    xyxy = generator(images, maps)[0]
    assert (xyxy - model.priors_xyxy * 300).abs().max() < 1e-4


@pytest.fixture(scope="module")
def models():
    """A seeded random torchvision SSD300 (no download) and detbench's SSD300 holding its weights.

    Both normalise with ImageNet's mean/std: with torchvision's default (0-255 pixels) a random
    VGG saturates the softmax to exactly 1.0 for hundreds of boxes, and the order among such
    ties (hence which 200 survive) is arbitrary in either implementation.
    """
    torch.manual_seed(0)
    reference = torchvision.models.detection.ssd300_vgg16(
        weights=None, weights_backbone=None, num_classes=21,
        image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225]).eval()
    return reference, ssd300_from_torchvision(reference).eval()


def test_converter_maps_every_key(models):
    reference, ours = models
    converted = convert_torchvision_ssd300_state_dict(reference.state_dict())
    assert set(converted) == set(ours.state_dict())
    assert ours.num_classes == 20 and ours.candidates_before_nms == 400 and ours.max_detections == 200
    with pytest.raises(ValueError, match="no rule"):
        convert_torchvision_ssd300_state_dict({"backbone.unknown.weight": torch.zeros(1)})


def test_converted_ssd300_gives_torchvision_detections(models):
    reference, ours = models
    g = torch.Generator().manual_seed(1)
    images = [torch.rand(3, 300, 300, generator=g), torch.rand(3, 240, 320, generator=g),
              torch.rand(3, 375, 500, generator=g)]
    with torch.no_grad():
        expected = reference(images)
        found = ours(images)
    for exp, got in zip(expected, found):
        assert got["labels"].shape[0] == exp["labels"].shape[0] > 0
        # the same detections in the same order, except that two detections whose scores differ by
        # float noise (< 1e-5, e.g. 0.4930975 and 0.4930958) may swap places
        swapped = (got["labels"] != exp["labels"]).nonzero().flatten()
        assert len(swapped) <= 4 and sorted(got["labels"].tolist()) == sorted(exp["labels"].tolist())
        for i in swapped.tolist():
            neighbours = [j for j in (i - 1, i + 1) if 0 <= j < len(exp["scores"])]
            assert min(abs(exp["scores"][i] - exp["scores"][j]).item() for j in neighbours) < 1e-5
        assert (got["scores"] - exp["scores"]).abs().max() < 1e-4
        kept = torch.ones(len(exp["boxes"]), dtype=torch.bool)
        kept[swapped] = False
        assert (got["boxes"][kept] - exp["boxes"][kept]).abs().max() < 0.01
        for i in swapped.tolist():   # a swapped detection's box is its neighbour's
            assert min((got["boxes"][i] - exp["boxes"][j]).abs().max().item()
                       for j in (i - 1, i + 1) if 0 <= j < len(exp["boxes"])) < 0.01
