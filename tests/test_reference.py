"""torchvision's detectors under detbench's contract: each adapter trains a step, predicts, and
gives exactly what the torchvision model's own forward gives (losses and detections)."""
from __future__ import annotations

import functools

import pytest
import torch
import torchvision.models.detection as tvd
from omegaconf import OmegaConf

from detectors import reference
from detectors.base import Detector, empty_target, validate_target
from experiments.build import build_detector, load_run_weights
from experiments.data.synthetic import SyntheticShapes

NUM_CLASSES = 3
SMALL = dict(min_size=128, max_size=128)
FCOS = {"_target_": "detectors.reference.torchvision_detector", "architecture": "fcos_r50_fpn", **SMALL}
# Fewer proposals and sampled RoIs: the two-stage models' training step is then quick.
FEW_ROIS = dict(rpn_post_nms_top_n_train=300, box_batch_size_per_image=64)
# adapter builder, torchvision builder, sizes (both), options (the adapter's ``options``,
# torchvision's keyword arguments); small inputs keep it quick.
def tv(architecture: str):
    return functools.partial(reference.torchvision_detector, architecture)


ADAPTERS = {
    "tv_ssdlite320": (tv("ssdlite320"), tvd.ssdlite320_mobilenet_v3_large, {}, {}),
    "tv_frcnn_r50_fpn": (tv("frcnn_r50_fpn"), tvd.fasterrcnn_resnet50_fpn, SMALL, FEW_ROIS),
    "tv_frcnn_mbv3_fpn": (tv("frcnn_mbv3_fpn"), tvd.fasterrcnn_mobilenet_v3_large_fpn, SMALL, FEW_ROIS),
    "tv_retinanet_r50_fpn": (tv("retinanet_r50_fpn"), tvd.retinanet_resnet50_fpn, SMALL, {}),
    "tv_fcos_r50_fpn": (tv("fcos_r50_fpn"), tvd.fcos_resnet50_fpn, SMALL, {}),
}
SLOW_ADAPTERS = {"tv_ssd300": (tv("ssd300"), tvd.ssd300_vgg16, {}, {})}


pytestmark = pytest.mark.usefixtures("one_torch_thread")   # small tensors: one thread (conftest)


def build_pair(name: str, table=ADAPTERS):
    """The adapter and the torchvision model, both from seed 0: the same random weights."""
    ours, theirs, sizes, options = table[name]
    torch.manual_seed(0)
    adapter = ours(NUM_CLASSES, **sizes, options=options)
    torch.manual_seed(0)
    model = theirs(weights=None, weights_backbone=None, num_classes=NUM_CLASSES + 1, **sizes, **options)
    return adapter, model


def synthetic(n: int = 2, size: int = 128):
    dataset = SyntheticShapes(n, image_size=size, seed=1)
    images, targets = zip(*[dataset[i] for i in range(n)])
    for t in targets:  # keep labels within the adapters' 3 classes
        t["labels"] = (t["labels"] - 1) % NUM_CLASSES + 1
    return list(images), list(targets)


def check_adapter(adapter: Detector, model: torch.nn.Module) -> None:
    """Training losses and eval detections equal torchvision's; a step on images without
    objects works; detections keep the contract."""
    assert isinstance(adapter, Detector) and adapter.num_classes == NUM_CLASSES
    ours_state, theirs_state = adapter.state_dict(), model.state_dict()
    ours_state = {k.removeprefix("model."): v for k, v in ours_state.items()}
    assert ours_state.keys() == theirs_state.keys()
    assert all(torch.equal(ours_state[k], theirs_state[k]) for k in theirs_state)
    images, targets = synthetic()
    images[1] = torch.nn.functional.interpolate(images[1][None], size=(96, 140))[0]  # another size
    targets[1]["boxes"] = targets[1]["boxes"] * torch.tensor([140 / 128, 96 / 128] * 2)

    adapter.train(), model.train()
    torch.manual_seed(1)
    losses = adapter(images, targets)
    torch.manual_seed(1)
    expected = model(images, targets)
    assert set(losses) == {k if k.startswith("loss_") else f"loss_{k}" for k in expected}
    for key, value in expected.items():
        key = key if key.startswith("loss_") else f"loss_{key}"
        torch.testing.assert_close(losses[key], value)
    assert all(torch.isfinite(v) for v in losses.values())
    optimizer = torch.optim.SGD(adapter.parameters(), lr=1e-3)
    sum(losses.values()).backward()
    optimizer.step()
    # A batch without objects (two images: SSDlite's BatchNorm needs more than one 1x1 map).
    # SSD's losses are then 0 (no positives, so no hard negatives either), as in torchvision.
    empty = adapter(images, [empty_target(0), empty_target(1)])
    assert set(empty) == set(losses) and all(torch.isfinite(v) for v in empty.values())
    sum(empty.values()).backward()

    model.load_state_dict({k.removeprefix("model."): v for k, v in adapter.state_dict().items()})
    adapter.eval(), model.eval()
    with torch.no_grad():
        detections = adapter(images)
        expected = model(images)
    for image, det, exp in zip(images, detections, expected):
        keep = exp["labels"] > 0
        torch.testing.assert_close(det["boxes"], exp["boxes"][keep])
        torch.testing.assert_close(det["scores"], exp["scores"][keep])
        assert torch.equal(det["labels"], exp["labels"][keep])
        k = det["boxes"].shape[0]
        validate_target({"boxes": det["boxes"], "labels": det["labels"], "image_id": 0,
                         "area": torch.zeros(k), "iscrowd": torch.zeros(k, dtype=torch.int64)},
                        image_size=tuple(image.shape[-2:]), num_classes=NUM_CLASSES)


@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_adapter_trains_and_predicts_as_torchvision_does(name):
    check_adapter(*build_pair(name))


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SLOW_ADAPTERS))
def test_heavy_adapter_trains_and_predicts_as_torchvision_does(name):
    adapter, model = build_pair(name, SLOW_ADAPTERS)
    assert adapter.num_candidates((300, 300)) == 8732 and adapter.input_size == (300, 300)
    check_adapter(adapter, model)


def test_candidate_counts():
    torch.manual_seed(0)
    assert tv("ssdlite320")(NUM_CLASSES).num_candidates((320, 320)) == 3234
    # RetinaNet: P3..P7 of a 128x128 input are 16, 8, 4, 2, 1 cells a side, 9 anchors each.
    assert tv("retinanet_r50_fpn")(NUM_CLASSES, **SMALL).num_candidates((128, 128)) == 341 * 9
    assert tv("fcos_r50_fpn")(NUM_CLASSES, **SMALL).num_candidates((128, 128)) == 341
    # Faster R-CNN: the proposals kept at test (torchvision's 1000).
    assert tv("frcnn_r50_fpn")(NUM_CLASSES).num_candidates((800, 1333)) == 1000


def test_weights_file_round_trip_and_bad_files(tmp_path):
    torch.manual_seed(0)
    trained = tv("fcos_r50_fpn")(NUM_CLASSES, **SMALL).eval()
    torch.save(trained.model.state_dict(), tmp_path / "fcos.pt")   # torchvision's keys
    torch.save(trained.state_dict(), tmp_path / "adapter.pt")       # the adapter's (model.*)
    images, _ = synthetic(1)
    with torch.no_grad():
        expected = trained(images)[0]
    torch.manual_seed(123)  # other random weights, then overwritten by the file
    for path in (tmp_path / "fcos.pt", tmp_path / "adapter.pt"):
        loaded = build_detector(OmegaConf.create(FCOS), NUM_CLASSES).eval()
        load_run_weights(loaded, path)
        assert loaded.weights_source == f"file:{path}"
        with torch.no_grad():
            torch.testing.assert_close(loaded(images)[0]["scores"], expected["scores"])
    with pytest.raises(ValueError, match="missing.pt not found"):
        load_run_weights(build_detector(OmegaConf.create(FCOS), NUM_CLASSES), tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="fcos.pt: does not fit .*num_classes"):
        load_run_weights(build_detector(OmegaConf.create(FCOS), NUM_CLASSES + 1), tmp_path / "fcos.pt")
    torch.manual_seed(0)
    frcnn = tv("frcnn_mbv3_fpn")(NUM_CLASSES, **SMALL)
    torch.save(frcnn.state_dict(), tmp_path / "frcnn.pt")
    mbv3 = {"_target_": "detectors.reference.torchvision_detector", "architecture": "frcnn_mbv3_fpn", **SMALL}
    again = build_detector(OmegaConf.create(mbv3), NUM_CLASSES)
    load_run_weights(again, tmp_path / "frcnn.pt")
    with pytest.raises(ValueError, match=r"detector.model.weights is replaced by the run's weights="):
        build_detector(OmegaConf.create({**mbv3, "weights": str(tmp_path / "frcnn.pt")}), NUM_CLASSES)
    assert all(torch.equal(a, b) for a, b in zip(frcnn.state_dict().values(), again.state_dict().values()))
