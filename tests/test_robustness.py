"""Robustness (COCO-C corruptions, mPC / rPC) on hand-made images: determinism, severity 0 is the
clean evaluation, rPC = mPC / P, objects per size bucket, bad input."""
from __future__ import annotations

import json
import math
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf
from scipy import ndimage
from torch import nn
from torch.utils.data import DataLoader

from detectors.base import Target
from experiments.data.base import DetectionDataset
from experiments.data.collate import collate
from experiments.data.corrupted import BENCHMARK, CORRUPTIONS, HELD_OUT, CorruptedDataset, corrupt_image
from experiments.evaluation.scoring import score
from experiments.studies.robustness import objects_per_bucket, robustness_stage, summarise, weights_from_sweep
from tests.conftest import TINY_RUN


class Rectangles(DetectionDataset):
    """Saturated rectangles (one class) on a grey, lightly textured background, 96x96 pixels;
    objects of 10x10 (small), 40x40 (medium) and exactly 32x32 (area 32², both buckets)."""

    def __init__(self, num_images: int = 4, size: tuple[int, int] = (96, 96), channels: int = 3):
        super().__init__()
        self.class_names, self.label_to_category_id = ["box"], {1: 1}
        self.num_images, self.size, self.channels = num_images, size, channels

    def __len__(self):
        return self.num_images

    def __getitem__(self, index):
        if not 0 <= index < self.num_images:
            raise IndexError(index)
        g = torch.Generator().manual_seed(index)
        h, w = self.size
        image = 0.45 + 0.05 * torch.rand(3, h, w, generator=g)
        boxes = []
        for side, (y, x) in zip((10, 40, 32), ((5, 5), (50, 8), (10 + index, 55))):
            if y + side <= h and x + side <= w:
                image[:, y:y + side, x:x + side] = torch.tensor([0.9, 0.1, 0.2])[:, None, None]
                boxes.append([x, y, x + side, y + side])
        boxes_t = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
        area = (boxes_t[:, 2] - boxes_t[:, 0]) * (boxes_t[:, 3] - boxes_t[:, 1])
        if self.channels == 1:
            image = image.mean(0, keepdim=True)
        elif self.channels == 4:
            image = torch.cat([image, torch.zeros(1, h, w)])
        return image, Target(boxes=boxes_t, labels=torch.ones(len(boxes), dtype=torch.int64),
                             image_id=100 + index, area=area, iscrowd=torch.zeros(len(boxes), dtype=torch.int64))


class SaturationDetector(nn.Module):
    """A hand-made detector: boxes of the connected regions of saturated pixels (max - min
    channel > 0.4), scored by their mean saturation. Noise and blur really hurt it."""

    def forward(self, images):
        outputs = []
        for image in images:
            saturation = (image.max(0).values - image.min(0).values).numpy()
            regions, _ = ndimage.label(saturation > 0.4)
            boxes, scores = [], []
            for sl in ndimage.find_objects(regions):
                if (sl[0].stop - sl[0].start) * (sl[1].stop - sl[1].start) >= 16:
                    boxes.append([sl[1].start, sl[0].start, sl[1].stop, sl[0].stop])
                    scores.append(float(saturation[sl].mean()))
            order = np.argsort(scores)[::-1].copy()
            outputs.append({"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)[order],
                            "scores": torch.tensor(scores, dtype=torch.float32)[order],
                            "labels": torch.ones(len(boxes), dtype=torch.int64)})
        return outputs


def _stage_cfg(corruptions, severities, images=0, num_workers=0, bootstrap=0):
    return OmegaConf.create({"seed": 3, "weights": None, "stages": ["robustness"],
                             "eval": {"batch_size": 2, "backend": "faster_coco_eval", "bootstrap": bootstrap,
                                      "bootstrap_seed": 0},
                             "robustness": {"corruptions": corruptions, "severities": severities,
                                            "images": images, "num_workers": num_workers, "source": None}})


def test_same_seed_gives_identical_pixels_for_every_corruption():
    image = Rectangles(1, size=(40, 48))[0][0]
    for name in CORRUPTIONS:
        a, b = corrupt_image(image, name, 3, seed=11), corrupt_image(image, name, 3, seed=11)
        assert torch.equal(a, b), name
        assert a.shape == image.shape and a.dtype == torch.float32 and 0 <= a.min() <= a.max() <= 1
        assert not torch.equal(a, image), name  # it did corrupt
    noisy = [corrupt_image(image, "gaussian_noise", 3, seed=s) for s in (1, 2)]
    assert not torch.equal(*noisy)  # the seed matters


def test_numpy_global_state_is_left_as_it_was():
    np.random.seed(5)
    expected = np.random.rand()
    np.random.seed(5)
    corrupt_image(Rectangles(1)[0][0], "shot_noise", 2, seed=1)
    assert np.random.rand() == expected


def test_pixels_do_not_depend_on_the_loader_workers():
    dataset = CorruptedDataset(Rectangles(4), "impulse_noise", 4, seed=0)
    in_process = [im for im, _ in dataset]
    loader = DataLoader(dataset, batch_size=3, num_workers=2, collate_fn=collate)
    in_workers = [im for images, _ in loader for im in images]
    assert all(torch.equal(a, b) for a, b in zip(in_process, in_workers))


def test_severity_zero_is_the_clean_evaluation_exactly():
    dataset, model = Rectangles(4), SaturationDetector()
    clean = score(model, dataset, 2, torch.device("cpu"), "faster_coco_eval")
    assert clean.metrics["map"] > 0.5  # the hand-made detector does detect the rectangles
    for name in ("gaussian_noise", "frost"):
        zero = CorruptedDataset(dataset, name, 0)
        assert all(torch.equal(a[0], b[0]) for a, b in zip(zero, dataset))
        corrupted = score(model, zero, 2, torch.device("cpu"), "faster_coco_eval")
        assert corrupted.metrics == pytest.approx(clean.metrics, nan_ok=True, rel=0, abs=0)


def test_stage_is_deterministic_and_rpc_is_mpc_over_p(tmp_path):
    cfg = _stage_cfg(["gaussian_noise", "defocus_blur", "speckle_noise"], [1, 5], images=3)
    metrics = robustness_stage(cfg, SaturationDetector(), Rectangles(5), torch.device("cpu"), tmp_path, True)
    rows = pd.read_csv(tmp_path / "robustness.csv")
    again = tmp_path / "again"
    again.mkdir()
    robustness_stage(cfg, SaturationDetector(), Rectangles(5), torch.device("cpu"), again, True)
    pd.testing.assert_frame_equal(rows.drop(columns="time_s"),
                                  pd.read_csv(again / "robustness.csv").drop(columns="time_s"))

    assert len(rows) == 1 + 3 * 2 and set(rows["images"]) == {3}
    benchmark = rows[(rows["severity"] > 0) & ~rows["held_out"]]
    assert metrics["robust_p"] == rows.loc[rows["severity"] == 0, "map"].item()
    assert metrics["robust_mpc"] == pytest.approx(benchmark["map"].mean(), abs=1e-12)
    assert metrics["robust_rpc"] == pytest.approx(metrics["robust_mpc"] / metrics["robust_p"], abs=1e-12)
    held = rows[rows["corruption"] == "speckle_noise"]
    assert metrics["robust_mpc_heldout"] == pytest.approx(held["map"].mean(), abs=1e-12)
    cell = rows.query("corruption == 'gaussian_noise' and severity == 5")
    assert metrics["robust_map_gaussian_noise_5"] == cell["map"].item()
    assert metrics["robust_map_gaussian_noise_5"] < metrics["robust_p"]  # severity 5 noise hurts
    for size in ("small", "medium"):
        assert metrics[f"robust_rpc_{size}"] == pytest.approx(
            benchmark[f"map_{size}"].mean() / metrics[f"robust_p_{size}"], abs=1e-12)
    assert math.isnan(metrics["robust_p_large"]) and math.isnan(metrics["robust_rpc_large"])  # no large objects
    assert metrics["robust_cells"] == 4 and metrics["robust_cells_heldout"] == 2


def test_objects_per_bucket_use_cocos_inclusive_ranges(tmp_path):
    area = np.array([100.0, 32.0**2, 1600.0, 96.0**2, 96.0**2 + 1, 50.0])
    counts = objects_per_bucket(area, np.array([0, 0, 0, 0, 0, 1]))
    assert counts == {"num_gt": 5, "num_gt_small": 2, "num_gt_medium": 3, "num_gt_large": 2}
    # small + medium + large = all objects + those on a boundary (32² and 96²: counted twice)
    assert counts["num_gt_small"] + counts["num_gt_medium"] + counts["num_gt_large"] == 5 + 2

    robustness_stage(_stage_cfg(["contrast"], [2]), SaturationDetector(), Rectangles(3),
                     torch.device("cpu"), tmp_path, True)
    rows = pd.read_csv(tmp_path / "robustness.csv")
    # per image: one 10x10, one 40x40 and one 32x32 (both small and medium)
    assert (rows["num_gt"] == 9).all() and (rows["num_gt_small"] == 6).all()
    assert (rows["num_gt_medium"] == 6).all() and (rows["num_gt_large"] == 0).all()


def test_summarise_needs_one_clean_row():
    rows = pd.DataFrame({"corruption": ["fog"], "severity": [1], "held_out": [False], "map": [0.1]})
    with pytest.raises(ValueError, match="one clean row"):
        summarise(rows)


def test_unknown_corruption_and_bad_severities_are_named():
    with pytest.raises(ValueError, match=r"unknown \['fogg'\].*'fog'.*speckle_noise"):
        CorruptedDataset(Rectangles(1), "fogg", 1)
    for severity in (6, -1, 2.5, True):
        with pytest.raises(ValueError, match="severities.*1-5"):
            CorruptedDataset(Rectangles(1), "fog", severity)
    assert len(BENCHMARK) == 15 and len(HELD_OUT) == 4


def test_image_too_small_names_the_corruption_and_the_image():
    dataset = CorruptedDataset(Rectangles(1, size=(24, 64)), "motion_blur", 2)
    with pytest.raises(ValueError, match=r"Rectangles\[0\] \(image_id 100\): 24x64 .*motion_blur.*32"):
        dataset[0]


def test_grayscale_and_rgba_images_become_rgb():
    gray, rgba = Rectangles(1, channels=1)[0][0], Rectangles(1, channels=4)[0][0]
    out = corrupt_image(gray, "gaussian_blur", 1, seed=0)
    assert out.shape == (3, 96, 96) and torch.equal(out[0], out[1]) and torch.equal(out[1], out[2])
    assert corrupt_image(rgba, "jpeg_compression", 1, seed=0).shape == (3, 96, 96)
    assert torch.equal(corrupt_image(rgba, "fog", 0, seed=0), Rectangles(1)[0][0])  # alpha dropped
    with pytest.raises(ValueError, match="1, 3 or 4 channels"):
        corrupt_image(torch.rand(5, 40, 40), "fog", 1, seed=0)


def test_compatibility_layer_leaves_numpy_and_sys_modules_alone():
    had_pkg_resources = "pkg_resources" in sys.modules
    from experiments.data.corruption_library import load_corruptions

    library = load_corruptions()
    assert library.get_corruption_names("all") == list(CORRUPTIONS)  # our lists match the package's
    for family in ("noise", "blur", "weather", "digital"):
        from experiments.data.corrupted import FAMILIES
        assert library.get_corruption_names(family) == list(FAMILIES[family])
    assert ("pkg_resources" in sys.modules) == had_pkg_resources
    if np.__version__ >= "2":
        assert not hasattr(np, "float_")


def test_config_rejects_bad_robustness_settings(compose_config):
    from experiments.job.settings import check_config

    with pytest.raises(ValueError, match="unknown.*blurr"):
        check_config(compose_config(["robustness.corruptions=[blurr]"]))
    with pytest.raises(ValueError, match="severities"):
        check_config(compose_config(["robustness.severities=[1,7]"]))
    check_config(compose_config(["robustness=full", "stages=[robustness]"]))


def test_weights_from_sweep(tmp_path):
    for name, status in (("a", "ok"), ("b", "failed")):
        (tmp_path / name / "checkpoints").mkdir(parents=True)
        (tmp_path / name / "checkpoints" / "last.pt").write_bytes(b"")
        (tmp_path / name / "metrics.json").write_text(json.dumps({"detector": "yolov1_cpu", "status": status}))
    assert weights_from_sweep(tmp_path, "yolov1_cpu") == str(tmp_path / "a" / "checkpoints" / "last.pt")
    with pytest.raises(FileNotFoundError, match="0 finished runs of ssd300_cpu"):
        weights_from_sweep(tmp_path, "ssd300_cpu")


@pytest.mark.slow   # 20-45 s on a loaded 2-core machine (building YOLO v1, 5 evaluations)
def test_run_with_the_robustness_stage_writes_its_metrics(compose_config, tmp_path):
    from experiments.run import run

    cfg = compose_config(["detector=yolov1_cpu", *TINY_RUN, "stages=[robustness]",
                          "robustness.corruptions=[pixelate,saturate]", "robustness.severities=[1,3]",
                          "robustness.images=2", "robustness.num_workers=0"])
    metrics = run(cfg, tmp_path)
    assert metrics["status"] == "ok", metrics.get("error")
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    for key in ("robust_p", "robust_mpc", "robust_rpc", "robust_map_pixelate_3", "robust_mpc_small",
                "robust_mpc_heldout", "robust_corruptions"):
        assert key in on_disk, key
    assert on_disk["robust_corruptions"] == ["pixelate", "saturate"] and on_disk["robust_images"] == 2
    assert len(pd.read_csv(tmp_path / "robustness.csv")) == 5
