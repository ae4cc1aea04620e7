"""The ssd policy's own parts against torchvision's: the YIQ hue step against ``adjust_hue``, the
fused zoom-out/crop/resize against ``pad -> crop -> resize``, and the batched IoU-crop search
against ``RandomIoUCrop``'s sequential one."""
from __future__ import annotations

import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from detectors.base import validate_target
from experiments.data.expand_crop import SSD_IOU_OPTIONS, ExpandCropResize, map_boxes, place_window
from experiments.data.iou_crop import draw_iou_crop
from experiments.data.photometric import PhotometricDistort, adjust_hue_yiq
from experiments.data.synthetic import SyntheticShapes
from experiments.data.transforms import MEAN_RGB, build_policy

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def hsv_hue(image: torch.Tensor) -> torch.Tensor:
    """[3, H, W] RGB -> [H, W] HSV hue in [0, 1) (max-channel formula)."""
    r, g, b = image
    mx, mn = image.max(0).values, image.min(0).values
    d = (mx - mn).clamp(min=1e-6)
    hue = torch.where(mx == r, ((g - b) / d) % 6, torch.where(mx == g, (b - r) / d + 2, (r - g) / d + 4))
    return hue / 6


def test_yiq_hue_turns_hue_like_torchvision_and_keeps_greys():
    torch.manual_seed(0)
    image = torch.rand(3, 64, 64)
    saturated = (image.max(0).values - image.min(0).values) > 0.3
    torch.testing.assert_close(adjust_hue_yiq(image, 0.0), image, atol=1e-5, rtol=0)
    for factor in (-0.05, 0.02, 0.05):
        ours, ref = adjust_hue_yiq(image, factor), F.adjust_hue(image, factor)
        assert ours.min() >= 0 and ours.max() <= 1
        shift = lambda x: ((hsv_hue(x) - hsv_hue(image) + 0.5) % 1 - 0.5)[saturated]  # noqa: E731
        # the median hue shift of saturated pixels is torchvision's (= the factor), same sign
        assert abs(shift(ref).median() - factor) < 1e-3
        assert abs(shift(ours).median() - factor) < 0.003
    grey = torch.linspace(0, 1, 50).expand(3, 5, 50).clone()
    torch.testing.assert_close(adjust_hue_yiq(grey, 0.3), grey, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="hue_factor"):
        adjust_hue_yiq(image, 0.7)


def test_photometric_distort_is_torchvisions_with_the_yiq_hue():
    """Every step forced on: the output is torchvision's kernels in SSD's order, with the YIQ
    hue in place of ``adjust_hue``; boxes pass through."""
    image = tv_tensors.Image(torch.rand(3, 40, 50))
    boxes = tv_tensors.BoundingBoxes(torch.tensor([[1.0, 2, 30, 20]]), format="XYXY", canvas_size=(40, 50))
    step = PhotometricDistort(p=1.0)
    orders = set()
    for seed in range(8):
        torch.manual_seed(seed)
        params = step.make_params([image, boxes])
        out = step.transform(image, params)
        assert isinstance(out, tv_tensors.Image) and out.shape == image.shape
        assert torch.equal(step.transform(boxes, params), boxes)
        x = F.adjust_brightness(image.as_subclass(torch.Tensor), params["brightness_factor"])
        if params["contrast_before"]:
            x = F.adjust_contrast(x, params["contrast_factor"])
        x = adjust_hue_yiq(F.adjust_saturation(x, params["saturation_factor"]), params["hue_factor"])
        if not params["contrast_before"]:
            x = F.adjust_contrast(x, params["contrast_factor"])
        x = F.permute_channels(x, params["channel_permutation"])
        torch.testing.assert_close(out.as_subclass(torch.Tensor), x, atol=1e-5, rtol=0)
        orders.add(params["contrast_before"])
    assert orders == {True, False}


@pytest.mark.parametrize("zoom, window", [
    ((0, 0, 1.0), (10, 20, 45, 55)),      # no zoom-out, a crop inside the image
    ((37, 91, 3.1), (0, 0, 186, 248)),    # zoom-out, the whole canvas
    ((37, 91, 3.1), (60, 80, 90, 120)),   # zoom-out, a window across the image's corner
    ((5, 2, 1.6), (3, 0, 40, 33)),        # a window on the image's top-left edge
])
def test_fused_step_equals_pad_crop_resize(zoom, window):
    """Same zoom-out and window: the image and the boxes equal torchvision's pad -> crop ->
    resize, up to rounding the image's edges in the output to whole pixels."""
    torch.manual_seed(1)
    h, w = 60, 80
    top, left, ratio = zoom
    canvas_h, canvas_w = int(h * ratio), int(w * ratio)
    image = torch.rand(3, h, w) * 0.5 + 0.25
    boxes = torch.tensor([[12.0, 15, 40, 50], [50, 5, 79, 30]])
    out_size = (96, 112)
    params = place_window((h, w), (top, left), window, out_size)
    params["keep"] = None
    fused = ExpandCropResize(out_size, fill=MEAN_RGB)
    got_image = fused.transform(image, params)
    got_boxes = map_boxes(boxes, params["src"], params["dst"])

    padding = [left, top, canvas_w - w - left, canvas_h - h - top]
    crop_top, crop_left, wh, ww = window
    ref_image = F.resize(F.crop(F.pad(image, padding, fill=list(MEAN_RGB)), crop_top, crop_left, wh, ww),
                         list(out_size), antialias=True)
    ref_boxes = (boxes + torch.tensor([left - crop_left, top - crop_top] * 2)) * torch.tensor(
        [out_size[1] / ww, out_size[0] / wh] * 2)
    assert got_image.shape == (3, *out_size)
    # the image's edges land at most half an output pixel off, so every box coordinate does
    # too (it lies between two edges), and only pixels along the edges differ much
    torch.testing.assert_close(got_boxes, ref_boxes, atol=0.5 + 1e-4, rtol=0)
    diff = (got_image - ref_image).abs()
    assert diff.mean() < 0.01 and (diff > 0.1).float().mean() < 0.02


def test_fused_step_paints_the_box_where_the_box_goes():
    """A solid square in the image lands exactly on its mapped box in the output."""
    image = torch.zeros(3, 50, 70)
    image[:, 10:30, 20:45] = 1.0
    box = tv_tensors.BoundingBoxes(torch.tensor([[20.0, 10, 45, 30]]), format="XYXY", canvas_size=(50, 70))
    step = ExpandCropResize(64, fill=(0.0, 0.0, 0.0), p=1.0, side_range=(1.5, 3.0))
    torch.manual_seed(3)
    for _ in range(10):
        params = step.make_params([tv_tensors.Image(image), box])
        out = step.transform(image, params)
        x1, y1, x2, y2 = step.transform(box, params)[0].round().long().tolist()
        if params["keep"] is not None and not params["keep"][0]:
            continue
        inside = out[0, max(y1, 0) + 1:min(y2, 64) - 1, max(x1, 0) + 1:min(x2, 64) - 1]
        assert inside.numel() > 0 and inside.min() > 0.99
        lit = (out[0] > 0.5).nonzero()
        assert lit[:, 0].min() >= y1 - 1 and lit[:, 0].max() <= y2 and \
            lit[:, 1].min() >= x1 - 1 and lit[:, 1].max() <= x2


def test_window_that_misses_the_image_is_an_error():
    with pytest.raises(ValueError, match="misses the image"):
        place_window((10, 10), (50, 50), (0, 0, 20, 20), (30, 30))


def test_ssd_policy_at_a_fixed_size_keeps_boxes_valid():
    torch.manual_seed(4)
    ds = SyntheticShapes(10, image_size=(90, 120), seed=2)
    policy = build_policy("ssd", output_size=(64, 80))
    kept = 0
    for _ in range(20):
        for i in range(len(ds)):
            image, target = policy(*ds[i])
            assert image.shape == (3, 64, 80) and 0 <= image.min() and image.max() <= 1
            validate_target(target, (64, 80), ds.num_classes, where=f"image {i}")
            kept += len(target["boxes"])
    assert kept > 0


def test_batched_search_draws_like_torchvisions_sequential_one():
    """Over many draws the share of "no crop" and the crops' mean area and aspect agree."""
    h, w = 120, 160
    boxes = torch.tensor([[10.0, 10, 30, 25], [60, 40, 150, 110], [100, 5, 115, 20]])
    image = tv_tensors.Image(torch.zeros(3, h, w))
    tv_boxes = tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(h, w))
    reference = v2.RandomIoUCrop()      # torchvision's full options, the random patch (0.0) included
    assert tuple(reference.options) == SSD_IOU_OPTIONS and reference.min_scale == 0.3

    def summary(draw) -> tuple[float, float, float]:
        crops = [draw() for _ in range(600)]
        cropped = [c for c in crops if c]
        area = sum(c["height"] * c["width"] for c in cropped) / len(cropped) / (h * w)
        aspect = sum(c["width"] / c["height"] for c in cropped) / len(cropped)
        return 1 - len(cropped) / len(crops), area, aspect

    torch.manual_seed(5)
    ours = summary(lambda: draw_iou_crop(boxes, (h, w), SSD_IOU_OPTIONS))
    ref = summary(lambda: reference.make_params([image, tv_boxes]))
    assert abs(ours[0] - ref[0]) < 0.08 and abs(ours[1] - ref[1]) < 0.04 and abs(ours[2] - ref[2]) < 0.1
